"""I/O-bound tests: a retry helper with real back-off sleeps between attempts."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


class TransientError(Exception):
    pass


def retry(call: Callable[[], T], attempts: int, backoff: float) -> T:
    """Call ``call`` up to ``attempts`` times, sleeping ``backoff * 2**k`` after failure k."""
    for attempt in range(attempts):
        try:
            return call()
        except TransientError:
            if attempt == attempts - 1:
                raise
            time.sleep(backoff * 2**attempt)
    raise AssertionError("unreachable")


def flaky(failures: int) -> Callable[[], str]:
    """A callable that raises ``TransientError`` ``failures`` times, then succeeds."""
    remaining = [failures]

    def call() -> str:
        if remaining[0] > 0:
            remaining[0] -= 1
            raise TransientError
        return "ok"

    return call


@pytest.mark.parametrize(
    ("failures", "backoff"), [(1, 0.15), (2, 0.08), (2, 0.1), (3, 0.04), (1, 0.3)]
)
def test_retry_succeeds_after_transient_failures(failures: int, backoff: float) -> None:
    started = time.monotonic()
    assert retry(flaky(failures), attempts=4, backoff=backoff) == "ok"
    waited = sum(backoff * 2**k for k in range(failures))
    assert time.monotonic() - started >= waited


def test_retry_gives_up() -> None:
    with pytest.raises(TransientError):
        retry(flaky(5), attempts=3, backoff=0.05)


def test_first_call_success_does_not_sleep() -> None:
    started = time.monotonic()
    assert retry(flaky(0), attempts=3, backoff=1.0) == "ok"
    assert time.monotonic() - started < 0.5


def test_poll_until_ready() -> None:
    ready_at = time.monotonic() + 0.3
    polls = 0
    while time.monotonic() < ready_at:
        polls += 1
        time.sleep(0.05)
    assert polls >= 5
