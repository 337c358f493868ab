"""What the scheduler is told of each collected item, read off pytest's objects.

Data flow, in the controller before the run::

    session.items, stored durations, the config (--ff, --nf, the cache, pytest-dependency's
    marks)
        ─▶ describe(...) ─▶ [scheduling.ItemInfo(nodeid, seconds, xdist_group, asked first,
                                                 tie: dependencies.ties)]

``scheduling`` stays a module of pure functions over these records.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from pytest_poolrun import dependencies, scheduling
from pytest_poolrun.durations import Durations


def describe(
    config: pytest.Config,
    items: Sequence[pytest.Item],
    nodeids: Sequence[str],
    durations: Durations,
    dist: str,
) -> list[scheduling.ItemInfo]:
    """One record per item; ``nodeids`` are the items' node ids, read once by the caller (a
    node id is made anew at each read in pytest 9).  At 50,000 tests this runs while the
    workers start, so it is built column by column, without a call per item where none is
    needed."""
    count = len(items)
    first = asked_first(config)
    # Only --pool-dist group reads an item's group; looking its marks up costs per test.
    groups = [group(item) for item in items] if dist == "group" else [None] * count
    asked = [first(nodeid) for nodeid in nodeids] if first is not None else [False] * count
    ties = dependencies.ties(config, items, nodeids) or [None] * count
    columns = zip(nodeids, durations.seconds_of(nodeids), groups, asked, ties)
    return list(map(scheduling.ItemInfo._make, columns))


def group(item: pytest.Item) -> str | None:
    """The ``xdist_group`` mark's name, which --pool-dist group keeps on one worker."""
    marker = item.get_closest_marker("xdist_group")
    if marker is None:
        return None
    name = marker.kwargs.get("name", marker.args[0] if marker.args else None)
    return None if name is None else str(name)


def asked_first(config: pytest.Config) -> Callable[[str], bool] | None:
    """Which node ids the user asked to run before the others: ``--ff``'s previous failures,
    ``--nf``'s new tests (pytest's cache plugins already put them first in ``items``); None
    when neither option is given."""
    failed_first = config.getoption("failedfirst", False)
    new_first = config.getoption("newfirst", False) and config.cache is not None
    if not failed_first and not new_first:
        return None
    failed: set[str] = set()
    if failed_first:
        failed = set(config.cache.get("cache/lastfailed", {})) if config.cache else set()
    known: set[str] | None = None
    if new_first:
        known = set(config.cache.get("cache/nodeids", []))

    def first(nodeid: str) -> bool:
        return nodeid in failed or (known is not None and nodeid not in known)

    return first
