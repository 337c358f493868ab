"""Cutting the collected items into chunks: pure functions of plain data, no processes.

Data flow::

    scope keys of the items (module or class of each, in collection order), worker count,
    chunk size (fixed or automatic) ─▶ plan_chunks ─▶ [[0, 1, 2], [3, 4], …] (item indices)

Chunks are runs of consecutive items, so items sharing a module or class stay together and their
scope fixtures are set up once per chunk at most.  With an automatic size the chunks shrink as the
run goes on (guided self-scheduling): the first ones are large, so few messages travel while
plenty of work remains, and the last ones are small, so no worker is left with a long tail while
the others are idle.  A chunk's end moves to a nearby scope boundary when one is close.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Each chunk takes about 1/(SHARE_DIVISOR * workers) of the items still to hand out: large enough
# to keep messages few, small enough that the last chunks of all workers end close together.
SHARE_DIVISOR = 2
# Never cut chunks smaller than this while many items remain: a message per item costs more than
# the imbalance it would save for fast tests.
MIN_CHUNK = 1
# How far (as a fraction of the chunk's size) a chunk's end may move to land on a scope boundary.
BOUNDARY_SLACK = 0.3


def chunk_sizes(count: int, workers: int, chunksize: int | None) -> list[int]:
    """Sizes of consecutive chunks covering ``count`` items (before boundary alignment)."""
    if chunksize is not None:
        return [min(chunksize, count - start) for start in range(0, count, chunksize)]
    sizes: list[int] = []
    remaining = count
    while remaining > 0:
        size = max(MIN_CHUNK, math.ceil(remaining / (SHARE_DIVISOR * max(workers, 1))))
        size = min(size, remaining)
        sizes.append(size)
        remaining -= size
    return sizes


def _aligned_end(keys: Sequence[str], start: int, end: int, slack: int) -> int:
    """The scope boundary nearest to ``end`` within ``slack`` items, or ``end`` itself."""
    if end >= len(keys) or keys[end] != keys[end - 1]:
        return end
    for distance in range(1, slack + 1):
        for candidate in (end - distance, end + distance):
            if start < candidate < len(keys) and keys[candidate] != keys[candidate - 1]:
                return candidate
            if candidate == len(keys):
                return candidate
    return end


def plan_chunks(keys: Sequence[str], workers: int, chunksize: int | None) -> list[list[int]]:
    """Chunks of item indices, in collection order; every index appears exactly once.

    ``keys[i]`` names the scope item ``i`` belongs to (its module or class); a fixed
    ``chunksize`` is honoured exactly, an automatic one shrinks and aligns to scope boundaries.
    """
    count = len(keys)
    chunks: list[list[int]] = []
    start = 0
    planned = chunk_sizes(count, workers, chunksize)
    for size in planned:
        if start >= count:
            break
        end = min(start + size, count)
        if chunksize is None:
            end = _aligned_end(keys, start, end, int(size * BOUNDARY_SLACK))
        chunks.append(list(range(start, end)))
        start = end
    if start < count:
        # Alignment moved ends forward and used the sizes up: cut the rest afresh.
        rest = plan_chunks(keys[start:], workers, chunksize)
        chunks.extend([index + start for index in chunk] for chunk in rest)
    return chunks


def scope_key(nodeid: str) -> str:
    """The module or class part of a node id: what a chunk boundary should not split."""
    path, _, rest = nodeid.partition("::")
    parts = rest.split("::")
    return "::".join([path, *parts[:-1]])
