"""What the scheduler is told of each collected item, read off pytest's objects.

Data flow, in the controller before the run::

    session.items, stored durations, the config (--ff, --nf, the cache)
        ─▶ describe(...) ─▶ [scheduling.ItemInfo(nodeid, seconds, xdist_group, asked first)]

``scheduling`` stays a module of pure functions over these records.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from pytest_poolrun import scheduling
from pytest_poolrun.durations import Durations


def describe(
    config: pytest.Config, items: Sequence[pytest.Item], durations: Durations, dist: str
) -> list[scheduling.ItemInfo]:
    first = asked_first(config)
    # Only --pool-dist group reads an item's group; looking its marks up costs per test.
    group_of = group if dist == "group" else _no_group
    # A node id is made anew at each read (pytest 9): read once per item.
    nodeids = [item.nodeid for item in items]
    return [
        scheduling.ItemInfo(nodeid, durations.get(nodeid), group_of(item), first(nodeid))
        for nodeid, item in zip(nodeids, items)
    ]


def _no_group(item: pytest.Item) -> None:
    return None


def group(item: pytest.Item) -> str | None:
    """The ``xdist_group`` mark's name, which --pool-dist group keeps on one worker."""
    marker = item.get_closest_marker("xdist_group")
    if marker is None:
        return None
    name = marker.kwargs.get("name", marker.args[0] if marker.args else None)
    return None if name is None else str(name)


def asked_first(config: pytest.Config) -> Callable[[str], bool]:
    """Which node ids the user asked to run before the others: ``--ff``'s previous failures,
    ``--nf``'s new tests (pytest's cache plugins already put them first in ``items``)."""
    failed: set[str] = set()
    if config.getoption("failedfirst", False):
        failed = set(config.cache.get("cache/lastfailed", {})) if config.cache else set()
    known: set[str] | None = None
    if config.getoption("newfirst", False) and config.cache is not None:
        known = set(config.cache.get("cache/nodeids", []))

    def first(nodeid: str) -> bool:
        return nodeid in failed or (known is not None and nodeid not in known)

    return first
