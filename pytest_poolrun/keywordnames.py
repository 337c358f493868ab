"""A replayed report's keywords: an item's keyword names, each parent's names listed once a run.

Data flow, in the controller's replay (``events.replay_item``, one ``KeywordNames`` per run,
held by the ``Replayer``)::

    item ─▶ KeywordNames.of(item) ─▶ {name: 1, ...}, the dict ``dict.fromkeys(item.keywords, 1)``
        │                            makes: the item's own names, then its parent's it lacks
        └─ its parent's names ─▶ kept by parent, with the count of keywords of the parent and
                                 of every node above it; listed again only if that count grew

The counts (``count_through``, ``own_count``) also tell a worker whether an item still has the
keywords it was collected with (``recording.KeywordCounts``).

**Why.**  ``NodeKeywords`` yields a node's own names and then its parent's, generator within
generator up to the session: the walk is the largest part of rebuilding a passing test's
reports.  The items of a file share every name above their own, so the controller lists them
once per parent instead of once per test.

**Why a count is enough.**  A node's keywords only grow: ``NodeKeywords`` refuses deletion,
and setting a name it has adds none.  While the counts of a parent and of the nodes above it
stay the same, its names are the same, in the same order.  The controller runs no test, so in
practice they never change; a plugin that adds a marker there during the run is still seen.
"""

from __future__ import annotations

from typing import Any, Literal

import pytest
from _pytest.nodes import Node


class KeywordNames:
    """``dict.fromkeys(item.keywords, 1)`` for the items of one run, a new dict at each call."""

    def __init__(self) -> None:
        # By id of the parent: (the parent, kept alive so that its id stays its own; the
        # count of its keywords and those above it; its names then).
        self._by_parent: dict[int, tuple[Node, int, dict[str, Literal[1]]]] = {}

    def of(self, item: pytest.Item) -> dict[str, Literal[1]]:
        keywords: Any = item.keywords
        own = getattr(keywords, "_markers", None)
        parent = item.parent
        if own is None or parent is None:
            # The session's own keywords, or keywords other than pytest's NodeKeywords.
            return dict.fromkeys(keywords, 1)
        count = count_through(parent)
        kept = self._by_parent.get(id(parent))
        if kept is None or kept[1] != count:
            kept = self._by_parent[id(parent)] = (parent, count, dict.fromkeys(parent.keywords, 1))
        names: dict[str, Literal[1]] = dict.fromkeys(own, 1)
        names.update(kept[2])  # a name the item has keeps its own place, as in the walk
        return names


def count_through(node: Node | None) -> int:
    """How many keywords ``node`` and every node above it hold, each its own (pytest's
    ``NodeKeywords``, whose node has such keywords above it too)."""
    total = 0
    while node is not None:
        total += own_count(node)
        node = node.parent
    return total


def own_count(node: Node) -> int:
    """How many keywords ``node`` holds itself (not those it reads from its parents)."""
    markers: dict[str, Any] = node.keywords._markers  # type: ignore[attr-defined]
    return len(markers)
