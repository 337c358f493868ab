"""Shared fixtures of the demo suite.

``corpus`` is session-scoped: a serial run builds it once, a parallel run once per worker
process that runs a test needing it. Its setup sleeps to stand for reading a data set from disk.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

# Stands for reading a data set from disk: long enough to show in the timings, short enough
# that setting it up once per worker does not eat the parallel gain.
CORPUS_LOAD_SECONDS = 0.5

# Fixed seed and size, so every process builds the same corpus and the tests are deterministic.
CORPUS_SEED = 20240501
CORPUS_WORDS = 50_000

SYLLABLES = ("ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "zu")


def make_word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3)))


@pytest.fixture(scope="session")
def syllables() -> tuple[str, ...]:
    """The alphabet the corpus words are spelled with."""
    return SYLLABLES


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    """A list of generated words, the same in every process."""
    time.sleep(CORPUS_LOAD_SECONDS)
    rng = random.Random(CORPUS_SEED)
    return [make_word(rng) for _ in range(CORPUS_WORDS)]


@pytest.fixture(scope="session")
def word_counts(corpus: list[str]) -> Counter[str]:
    return Counter(corpus)
