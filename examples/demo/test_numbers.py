"""CPU-bound tests: number theory in pure Python, each about 0.1-0.3 s on one core."""

from __future__ import annotations

import pytest


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    factor = 3
    while factor * factor <= n:
        if n % factor == 0:
            return False
        factor += 2
    return True


def prime_count(limit: int) -> int:
    """How many primes are below ``limit``, by trial division (slow on purpose)."""
    return sum(1 for n in range(limit) if is_prime(n))


def collatz_steps(start: int) -> int:
    steps = 0
    n = start
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


# Published values of the prime-counting function pi(x).
@pytest.mark.parametrize(
    ("limit", "expected"),
    [(200_000, 17_984), (250_000, 22_044), (300_000, 25_997), (350_000, 29_977)],
)
def test_prime_count(limit: int, expected: int) -> None:
    assert prime_count(limit) == expected


def test_twin_primes_below_200k() -> None:
    twins = sum(1 for n in range(3, 200_000, 2) if is_prime(n) and is_prime(n + 2))
    assert twins == 2_160


def test_goldbach_up_to_4000() -> None:
    primes = {n for n in range(4_000) if is_prime(n)}
    for even in range(4, 4_000, 2):
        assert any(even - p in primes for p in primes if p <= even // 2), even


def test_longest_collatz_chain_below_30k() -> None:
    best = max(range(1, 30_000), key=collatz_steps)
    assert (best, collatz_steps(best)) == (26_623, 307)


def test_longest_collatz_chain_from_100k_to_125k() -> None:
    assert max(collatz_steps(n) for n in range(100_000, 125_000)) == 353
