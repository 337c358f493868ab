"""Cutting the collected items into chunks: pure functions of plain data, no processes.

Data flow::

    items as ItemInfo (node id, module, class, xdist_group, estimated seconds, asked first,
    tie), worker count, distribution mode, fixed or automatic chunk size
        ─▶ units: runs of items that share a module (load, longest), or that must stay on one
                  worker (module, class, group modes: wherever their items stand)
        ─▶ tied: the units holding items of one tie (a test and the tests it depends on)
                 merged into one, at the first one's place, which no chunk boundary cuts
        ─▶ order: the items asked for first (--ff, --nf) ahead of everything; then collection
                  order, or in the longest mode, once durations are known, each long test and
                  then each unit longest first (longest-processing-time first)
        ─▶ plan_chunks: [[0, 1, 2], [7, 8], …] (item indices, each exactly once)

**Order.**  The workers take the chunks in the order planned, so outside the longest mode each
worker runs its tests in collection order, as under pytest-xdist: a suite whose tests leave
state behind for later ones (a module-level setting changed and not restored) then gives the
verdicts it gives under xdist.  The longest mode ends sooner where a few tests are long, but a
worker may run a later module's tests before an earlier one's.

Chunk sizes are measured in estimated seconds.  With an automatic size each chunk takes about
``1 / (SHARE_DIVISOR * workers)`` of the time still to hand out (guided self-scheduling): the
first chunks are large, so few messages travel while plenty of work remains, and the last ones are
small, so no worker is left with a long tail while the others are idle.  A chunk takes whole units
(modules) when they fit, so module fixtures are set up few times; a unit longer than a chunk is
cut, at a nearby class boundary where the class after it carries a setup (its first test takes
longer than the others), or at any nearby class boundary while no durations are known.

How small the last chunks get depends on what a cut costs.  A unit whose first test, or the
first test of one of its classes, takes longer than its tests on average carries a setup there
(a module or class fixture, ``setup_module``): each piece cut off and run on another worker pays
it again, so such a unit is cut no finer than the floor (``MIN_CHUNK_SECONDS``, or
``1 / (TAIL_CHUNKS_PER_WORKER * workers)`` of a short run).  A unit without one (none longer by
more than the finer floor) costs only a message to cut, so its floor is
``FREE_UNIT_FLOOR_DIVISOR`` times lower, and the workers end closer together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from pytest_poolrun.disjointsets import DisjointSets

DIST_MODES = ("load", "longest", "module", "class", "group")
# Each chunk takes about 1/(SHARE_DIVISOR * workers) of the time still to hand out: large enough
# to keep messages few, small enough that the last chunks of all workers end close together.
SHARE_DIVISOR = 2
# Once durations are known, no automatic chunk of a unit with a setup (see above) is planned
# shorter than this: cutting finer costs a message and a module-fixture setup per chunk, for an
# imbalance at the end of the run of at most this long.  Without durations, chunks are cut by
# count down to a single item.
MIN_CHUNK_SECONDS = 0.2
# A short run is cut into at least this many chunks per worker, whatever MIN_CHUNK_SECONDS says.
TAIL_CHUNKS_PER_WORKER = 8
# Units with no setup to pay again when cut (see above) are cut this much finer at the end: a cut
# costs them a message.  In a run of 5,000 trivial tests on two workers, the last chunks then take
# about 15 ms instead of a tenth of a second, which one worker would otherwise spend alone.
FREE_UNIT_FLOOR_DIVISOR = 8
# A chunk may grow this much past its target to take a whole unit (module) instead of cutting it.
UNIT_SLACK = 0.5
# How far (as a fraction of the chunk's items) a cut inside a unit may move to a class boundary.
BOUNDARY_SLACK = 0.3
# A test longer than 1/LONG_ITEM_DIVISOR of the first chunk's time is scheduled on its own.
LONG_ITEM_DIVISOR = 2
# Estimate for a test never timed when no test has been timed either: small, so that a first run
# cuts chunks by count much as a count-based scheduler would.
DEFAULT_SECONDS = 0.01


class ItemInfo(NamedTuple):
    """What the scheduler knows of one collected item.

    ``first``: the user asked for this item to run before the others (``--ff``'s previous
    failures, ``--nf``'s new tests); such items go out first, in collection order, and
    durations order only the rest.

    ``tie``: items with the same tie run on one worker, in the order given, whatever the mode
    (``dependencies``: a test and the tests it depends on).
    """

    nodeid: str
    seconds: float | None = None
    group: str | None = None
    first: bool = False
    tie: str | None = None

    @property
    def module(self) -> str:
        return self.nodeid.partition("::")[0]

    @property
    def scope(self) -> str:
        """Module and class: what a cut inside a module should not split."""
        return scope_key(self.nodeid)


def scope_key(nodeid: str) -> str:
    """The module or class part of a node id: what a chunk boundary should not split."""
    scope, separator, _ = nodeid.rpartition("::")
    return scope if separator else nodeid


def estimates(items: Sequence[ItemInfo]) -> list[float]:
    """Seconds per item: its stored duration, or the mean of the known ones for a new test."""
    known = [item.seconds for item in items if item.seconds is not None]
    fallback = sum(known) / len(known) if known else DEFAULT_SECONDS
    return [fallback if item.seconds is None else item.seconds for item in items]


def units(items: Sequence[ItemInfo], dist: str) -> list[list[int]]:
    """Groups of item indices that a chunk takes whole when it can (load) or always (others)."""
    if dist == "group":
        groups: dict[str, list[int]] = {}
        loose: list[int] = []
        for index, item in enumerate(items):
            if item.group is None:
                loose.append(index)
            else:
                groups.setdefault(item.group, []).append(index)
        rest = units([items[index] for index in loose], "load")
        # In collection order, by each unit's first item, as the other modes keep it.
        return sorted(
            [*groups.values(), *([loose[i] for i in unit] for unit in rest)], key=lambda u: u[0]
        )
    if dist in ("module", "class"):
        # One unit per module (class) wherever its items stand: a plugin that reorders items
        # (pytest-order, pytest-randomly) may have interleaved modules.
        by_scope: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            by_scope.setdefault(item.scope if dist == "class" else item.module, []).append(index)
        return list(by_scope.values())
    result: list[list[int]] = []
    previous: str | None = None
    for index, item in enumerate(items):
        module = item.module
        if result and module == previous:
            result[-1].append(index)
        else:
            result.append([index])
        previous = module
    return result


def plan_chunks(
    items: Sequence[ItemInfo],
    workers: int,
    chunksize: int | None = None,
    dist: str = "load",
) -> list[list[int]]:
    """Chunks of item indices; every index appears exactly once.

    ``chunksize`` fixes the number of items per chunk (units are still kept whole in the
    module, class and group modes); ``None`` sizes chunks by estimated time.
    """
    if dist not in DIST_MODES:
        raise ValueError(f"unknown distribution mode {dist!r}; use one of {', '.join(DIST_MODES)}")
    # An item tied to others keeps its place among them: serially it runs where --ff or --nf
    # put it, and so it does in its tie's unit.
    first = [index for index, item in enumerate(items) if item.first and item.tie is None]
    divisible = dist in ("load", "longest")  # a unit may be cut across chunks
    if first and divisible:
        # Each item the user asked to see first is a chunk of its own, ahead of everything, so
        # that the workers start on them at once; the rest is planned as usual.
        chosen = set(first)
        others = [index for index in range(len(items)) if index not in chosen]
        planned = plan_chunks([items[index] for index in others], workers, chunksize, dist)
        return [[index] for index in first] + [[others[i] for i in chunk] for chunk in planned]
    seconds = estimates(items)
    grouped, whole = tied(units(items, "load" if divisible else dist), items)
    timed = any(item.seconds is not None for item in items)
    if timed and dist == "longest":
        long_items, rest = _isolate_long_items(grouped, whole, seconds, max(workers, 1))
        # Longest work first (LPT): each long test, longest first, then the divisible units
        # (cut into chunks as needed), longest first; sorted() is stable, so ties keep
        # collection order.
        ordered = sorted(long_items, key=lambda unit: -seconds[unit[0][0]]) + sorted(
            rest, key=lambda unit: -sum(map(seconds.__getitem__, unit[0]))
        )
        grouped, whole = [unit for unit, _ in ordered], [keep for _, keep in ordered]
    if not divisible and first:
        # Units holding an item asked for first keep their place ahead of the rest.
        grouped = sorted(grouped, key=lambda unit: not any(items[i].first for i in unit))
    if not divisible:
        return _whole_units(grouped, chunksize)
    if chunksize is not None:
        return _fixed(grouped, whole, chunksize)
    scopes = [scope_key(item.nodeid) for item in items]
    return _guided(grouped, whole, seconds, scopes, max(workers, 1), timed)


def tied(grouped: list[list[int]], items: Sequence[ItemInfo]) -> tuple[list[list[int]], list[bool]]:
    """The units holding items of one tie, merged into one unit at the first one's place:
    (units, whether each must stay whole).  A unit holding a tied item stays whole, so that a
    test runs after the tests it depends on, on their worker, in the order given."""
    if all(item.tie is None for item in items):
        return grouped, [False] * len(grouped)
    holder: dict[str, int] = {}  # tie → the first unit holding one of its items
    sets = DisjointSets(len(grouped))
    for position, unit in enumerate(grouped):
        for index in unit:
            tie = items[index].tie
            if tie is not None:
                sets.join(position, holder.setdefault(tie, position))
    merged: dict[int, list[int]] = {}
    for position, unit in enumerate(grouped):
        merged.setdefault(sets.leader(position), []).extend(unit)
    tied_units = {sets.leader(position) for position in holder.values()}
    return (
        [sorted(unit) if lead in tied_units else unit for lead, unit in merged.items()],
        [lead in tied_units for lead in merged],
    )


def _isolate_long_items(
    grouped: list[list[int]], whole: list[bool], seconds: list[float], workers: int
) -> tuple[list[tuple[list[int], bool]], list[tuple[list[int], bool]]]:
    """Make each long test a unit of its own, so that LPT can start it early: (long, rest),
    each unit with whether it must stay whole.

    A test longer than a guided chunk would be cut around anyway; keeping it inside its module's
    unit would leave it wherever the module happens to fall, often at the end of the run.  Tests
    shorter than the smallest chunk stay with their module, and tied tests with their tie.
    """
    threshold = max(MIN_CHUNK_SECONDS, sum(seconds) / (SHARE_DIVISOR * workers * LONG_ITEM_DIVISOR))
    long_items: list[tuple[list[int], bool]] = []
    rest_units: list[tuple[list[int], bool]] = []
    for unit, keep in zip(grouped, whole):
        if keep:
            rest_units.append((unit, True))
            continue
        rest: list[int] = []
        for index in unit:
            if seconds[index] >= threshold:
                long_items.append(([index], False))
            else:
                rest.append(index)
        if rest:
            rest_units.append((rest, False))
    return long_items, rest_units


def _whole_units(grouped: list[list[int]], chunksize: int | None) -> list[list[int]]:
    """Modes that keep units on one worker: one chunk per unit, or several small units merged."""
    if chunksize is None:
        return grouped
    chunks: list[list[int]] = []
    for unit in grouped:
        if chunks and len(chunks[-1]) + len(unit) <= chunksize:
            chunks[-1].extend(unit)
        else:
            chunks.append(list(unit))
    return chunks


def _fixed(grouped: list[list[int]], whole: list[bool], chunksize: int) -> list[list[int]]:
    """Chunks of ``chunksize`` items in the units' order; a unit that must stay whole starts a
    chunk of its own where it would not fit in the current one, and is never cut."""
    chunks: list[list[int]] = [[]]
    for unit, keep in zip(grouped, whole):
        if keep:
            if chunks[-1] and len(chunks[-1]) + len(unit) > chunksize:
                chunks.append([])
            chunks[-1].extend(unit)
            continue
        for index in unit:
            if len(chunks[-1]) >= chunksize:
                chunks.append([])
            chunks[-1].append(index)
    return [chunk for chunk in chunks if chunk]


def _guided(
    grouped: list[list[int]],
    whole: list[bool],
    seconds: list[float],
    scopes: list[str],
    workers: int,
    timed: bool,
) -> list[list[int]]:
    """Guided chunks of ``grouped``; ``timed``: the estimates come from stored durations."""
    remaining = sum(seconds)
    # In a short run the floor shrinks: it must leave each worker several chunks, or the end of
    # the run would wait for one worker's last chunk; where a cut costs no setup, further.
    # Without durations chunks are cut by count, down to a single item.
    floor = min(MIN_CHUNK_SECONDS if timed else 0.0, remaining / (workers * TAIL_CHUNKS_PER_WORKER))
    fine_floor = floor / FREE_UNIT_FLOOR_DIVISOR
    floors = [
        fine_floor if _setup_seconds(unit, seconds, scopes) <= fine_floor else floor
        for unit in grouped
    ]
    pending = [list(unit) for unit in grouped]
    chunks: list[list[int]] = []
    position = 0
    while position < len(pending):
        target = max(floors[position], remaining / (SHARE_DIVISOR * workers))
        chunk: list[int] = []
        taken = 0.0
        while position < len(pending):
            unit = pending[position]
            unit_seconds = sum(map(seconds.__getitem__, unit))
            if taken + unit_seconds <= target * (1 + UNIT_SLACK):
                chunk.extend(unit)
                taken += unit_seconds
                position += 1
                if taken >= target:
                    break
                continue
            if whole[position]:
                # Never cut: the chunk ends before it, or is this unit alone.
                if not chunk:
                    chunk, taken = list(unit), unit_seconds
                    position += 1
                break
            if not chunk:
                # A class whose first test takes this long carries a setup (None: any may).
                setup_first = unit_seconds / len(unit) + fine_floor if timed else None
                head, tail = _cut(unit, seconds, scopes, target, setup_first)
                chunk, taken = head, sum(map(seconds.__getitem__, head))
                if tail:
                    pending[position] = tail
                else:
                    position += 1
            break
        chunks.append(chunk)
        remaining -= taken
    return chunks


def _setup_seconds(unit: list[int], seconds: list[float], scopes: list[str]) -> float:
    """How much longer the unit's first test, or the first of one of its classes, takes than
    the unit's tests on average: the setup (of a module or class fixture) that a piece cut off
    the unit pays again on another worker."""
    if len(unit) < 2:
        return 0.0
    mean = sum(map(seconds.__getitem__, unit)) / len(unit)
    firsts = [unit[0]] + [
        index for previous, index in zip(unit, unit[1:]) if scopes[index] != scopes[previous]
    ]
    return max(map(seconds.__getitem__, firsts)) - mean


def _cut(
    unit: list[int],
    seconds: list[float],
    scopes: list[str],
    target: float,
    setup_first: float | None,
) -> tuple[list[int], list[int]]:
    """Split a unit longer than ``target`` after about ``target`` seconds, near a class edge
    where the class after it carries a setup: its first test takes longer than ``setup_first``
    seconds (``None``: no durations are known, so any class edge may)."""
    end, taken = 0, 0.0
    while end < len(unit) and (taken < target or end == 0):
        taken += seconds[unit[end]]
        end += 1
    slack = int(end * BOUNDARY_SLACK)
    for distance in range(slack + 1):
        for candidate in (end - distance, end + distance):
            if (
                0 < candidate < len(unit)
                and scopes[unit[candidate]] != scopes[unit[candidate - 1]]
                and (setup_first is None or seconds[unit[candidate]] > setup_first)
            ):
                return unit[:candidate], unit[candidate:]
    # No class edge near that saves a setup: cut where the time says.  Consecutive classes
    # without one may hand state on (an "enable" class before the class that relies on it);
    # cutting between them buys nothing, and would part them more often than chance.
    return unit[:end], unit[end:]
