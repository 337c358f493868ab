"""Tests on the session-scoped ``corpus``: cheap once it is built, so their cost is the setup."""

from __future__ import annotations

from collections import Counter

import pytest


def test_corpus_size(corpus: list[str]) -> None:
    assert len(corpus) == 50_000


def test_every_word_is_made_of_syllables(corpus: list[str], syllables: tuple[str, ...]) -> None:
    for word in corpus:
        assert len(word) % 2 == 0
        assert all(word[i : i + 2] in syllables for i in range(0, len(word), 2))


@pytest.mark.parametrize("syllable", ["ka", "lo", "mi", "ne"])
def test_syllable_is_common(word_counts: Counter[str], syllable: str) -> None:
    assert word_counts[syllable] > 1_000


def test_most_common_words_are_single_syllables(
    word_counts: Counter[str], syllables: tuple[str, ...]
) -> None:
    top = [word for word, _ in word_counts.most_common(10)]
    assert sorted(top) == sorted(syllables)


def test_bigram_counts(corpus: list[str]) -> None:
    bigrams = Counter(zip(corpus, corpus[1:]))
    assert sum(bigrams.values()) == len(corpus) - 1
