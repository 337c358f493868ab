"""A replayed report's keywords: an item's keyword names, each parent's names listed once a run.

Data flow, in the controller's replay (``events.replay_item``, one ``KeywordNames`` per run,
held by the ``Replayer``)::

    item ─▶ KeywordNames.of(item) ─▶ {name: 1, ...}, the dict ``dict.fromkeys(item.keywords, 1)``
        │                            makes: the item's own names, then its parent's it lacks
        └─ its parent's names ─▶ kept by parent, with the count of keywords of the parent and
                                 of every node above it; listed again only if that count grew

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


class KeywordNames:
    """``dict.fromkeys(item.keywords, 1)`` for the items of one run, a new dict at each call."""

    def __init__(self) -> None:
        # By id of the parent: (the parent, kept alive so that its id stays its own; the
        # count of its keywords and those above it; its names then).
        self._by_parent: dict[int, tuple[Any, int, dict[str, Literal[1]]]] = {}

    def of(self, item: pytest.Item) -> dict[str, Literal[1]]:
        keywords: Any = item.keywords
        own = getattr(keywords, "_markers", None)
        parent = getattr(keywords, "parent", None)
        count = None if own is None or parent is None else _count_from(parent)
        if own is None or parent is None or count is None:
            # The session's own keywords, or keywords other than pytest's NodeKeywords.
            return dict.fromkeys(keywords, 1)
        kept = self._by_parent.get(id(parent))
        if kept is None or kept[1] != count:
            kept = self._by_parent[id(parent)] = (parent, count, dict.fromkeys(parent.keywords, 1))
        names: dict[str, Literal[1]] = dict.fromkeys(own, 1)
        names.update(kept[2])  # a name the item has keeps its own place, as in the walk
        return names


def _count_from(node: Any) -> int | None:
    """How many keywords ``node`` and the nodes above it hold, or None if one of them keeps
    its keywords other than as ``NodeKeywords`` does."""
    total = 0
    while node is not None:
        keywords = node.keywords
        own = getattr(keywords, "_markers", None)
        if own is None:
            return None
        total += len(own)
        node = getattr(keywords, "parent", None)
    return total
