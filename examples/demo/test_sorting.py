"""CPU-bound tests: textbook sorts in pure Python checked against ``sorted``."""

from __future__ import annotations

import random

import pytest


def insertion_sort(items: list[float]) -> list[float]:
    out = list(items)
    for i in range(1, len(out)):
        value = out[i]
        j = i - 1
        while j >= 0 and out[j] > value:
            out[j + 1] = out[j]
            j -= 1
        out[j + 1] = value
    return out


def merge_sort(items: list[str]) -> list[str]:
    if len(items) <= 1:
        return list(items)
    middle = len(items) // 2
    left, right = merge_sort(items[:middle]), merge_sort(items[middle:])
    merged: list[str] = []
    i = j = 0
    while i < len(left) and j < len(right):
        if left[i] <= right[j]:
            merged.append(left[i])
            i += 1
        else:
            merged.append(right[j])
            j += 1
    return merged + left[i:] + right[j:]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_insertion_sort_random(seed: int) -> None:
    rng = random.Random(seed)
    data = [rng.random() for _ in range(5_000)]
    assert insertion_sort(data) == sorted(data)


def test_insertion_sort_reversed_input() -> None:
    data = [float(n) for n in range(3_000, 0, -1)]
    assert insertion_sort(data) == sorted(data)


def test_merge_sort_corpus(corpus: list[str]) -> None:
    assert merge_sort(corpus) == sorted(corpus)


def test_merge_sort_is_stable_on_keys(corpus: list[str]) -> None:
    by_length = merge_sort([f"{len(w):02d}{w}" for w in corpus])
    assert [int(k[:2]) for k in by_length] == sorted(len(w) for w in corpus)
