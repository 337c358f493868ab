"""CI shards: ``--pool-shard K/N`` runs a deterministic, duration-balanced part of the suite.

Data flow::

    collected items + durations (pytest's cache, or --pool-durations FILE) + their ties
    (``dependencies``: a test and the tests it depends on)
        ─▶ split(): longest-processing-time first, each test (each tie's tests together) to the
           shard with the least work so far (equal loads: lowest shard number; equal durations
           keep collection order)
        ─▶ pytest_collection_modifyitems keeps shard K's items, reports the rest as deselected

Every machine computes the same split from the same collection and the same durations, so N CI
jobs together run each test exactly once.  Tests without a stored duration get the mean of the
known ones (see ``scheduling.estimates``).
"""

from __future__ import annotations

import argparse
import heapq
from typing import NamedTuple

from pytest_poolrun.scheduling import ItemInfo, estimates


class Shard(NamedTuple):
    """Shard ``number`` (1-based, as users write it) of ``total``."""

    number: int
    total: int

    def __str__(self) -> str:
        return f"{self.number}/{self.total}"


def parse_shard(text: str) -> Shard:
    """``"2/4"`` → Shard(2, 4); an argparse type, so bad input is a usage error."""
    index_text, slash, count_text = text.partition("/")
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        index = count = 0
    if not slash or count < 1 or not 1 <= index <= count:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a shard; write K/N with 1 <= K <= N, e.g. 2/4"
        )
    return Shard(index, count)


def split(items: list[ItemInfo], count: int) -> list[list[int]]:
    """Item indices of each of ``count`` shards, in collection order within each shard; the
    items of one tie go to one shard."""
    seconds = estimates(items)
    groups: list[list[int]] = []
    by_tie: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        if item.tie is None:
            groups.append([index])
        elif item.tie in by_tie:
            by_tie[item.tie].append(index)
        else:
            by_tie[item.tie] = [index]
            groups.append(by_tie[item.tie])
    weights = [sum(map(seconds.__getitem__, group)) for group in groups]
    order = sorted(range(len(groups)), key=lambda number: (-weights[number], groups[number][0]))
    loads = [(0.0, shard) for shard in range(count)]
    shards: list[list[int]] = [[] for _ in range(count)]
    for number in order:
        load, shard = heapq.heappop(loads)
        shards[shard].extend(groups[number])
        heapq.heappush(loads, (load + weights[number], shard))
    return [sorted(shard) for shard in shards]
