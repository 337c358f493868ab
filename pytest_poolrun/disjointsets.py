"""Disjoint sets of the positions 0..n-1: which were joined, directly or through others.

Data flow::

    DisjointSets(n) ─▶ join(a, b), as links are found ─▶ leader(p): the smallest position
    joined to p, the same for every position of a set

Used to gather tests tied by their dependencies (``dependencies``) and the scheduler's units
holding one tie (``scheduling.tied``).
"""

from __future__ import annotations


class DisjointSets:
    """Union-find with path halving; a set's leader is its smallest position."""

    def __init__(self, count: int) -> None:
        self._parents = list(range(count))

    def leader(self, position: int) -> int:
        parents = self._parents
        while parents[position] != position:
            parents[position] = parents[parents[position]]
            position = parents[position]
        return position

    def join(self, one: int, other: int) -> None:
        first, second = self.leader(one), self.leader(other)
        if first != second:
            self._parents[max(first, second)] = min(first, second)
