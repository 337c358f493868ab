"""The lazy imap's read-ahead on plain data: a Dispatcher, fake workers, an iterator that counts.

No processes: these check how many chunks of which input ``plan_feeding`` reads, and what one
read of an input gives.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_poolrun.dispatch import (
    MIN_IN_FLIGHT,
    READ_AHEAD_PER_WORKER,
    Dispatcher,
    Feeder,
)


@dataclass
class FakeWorker:
    jobs: deque[Any] = field(default_factory=deque)
    takes_tasks: bool = True


@dataclass
class Taken:
    """Stands for the IMapIterator: how many chunks came back, and how many its caller took."""

    taken: int = 0
    delivered: int = 0


def feeder(items: Iterator[Any], size: int = 1, taken: int = 0) -> Feeder:
    return Feeder(items, size, b"f", 1, None, Taken(taken, taken))  # type: ignore[arg-type]


def going(items: Iterator[Any]) -> Feeder:
    """An input past its first chunk, whose result the caller took."""
    started = feeder(items, taken=1)
    started.next_index = 1
    return started


def plan(dispatcher: Dispatcher, workers: list[FakeWorker], closing: bool = False) -> list[int]:
    counts = dispatcher.plan_feeding(workers, len(workers), closing)  # type: ignore[arg-type]
    for chosen, _ in counts:
        chosen.busy = False
    return [count for _, count in counts]


def test_reads_as_much_as_the_workers_have_room_for() -> None:
    dispatcher = Dispatcher(None)
    dispatcher.feeders.append(going(itertools.count()))
    workers = [FakeWorker(), FakeWorker(deque([object()]))]
    assert plan(dispatcher, workers) == [2 * MIN_IN_FLIGHT - 1]


def test_reads_one_chunk_when_nothing_is_outstanding_even_without_room() -> None:
    dispatcher = Dispatcher(None)
    dispatcher.feeders.append(feeder(itertools.count()))
    full = [FakeWorker(deque([object()] * MIN_IN_FLIGHT)) for _ in range(2)]
    assert plan(dispatcher, full) == [1]
    stopping = [FakeWorker(takes_tasks=False)]  # shutting down, retiring, or held back
    assert plan(dispatcher, stopping) == [1]


def test_room_is_shared_round_robin_across_inputs() -> None:
    dispatcher = Dispatcher(None)
    dispatcher.feeders.extend([going(itertools.count()), going(itertools.count())])
    assert sorted(plan(dispatcher, [FakeWorker(), FakeWorker()])) == [2, 2]


def test_a_new_input_gives_its_first_chunk_alone_and_its_result_comes_first() -> None:
    dispatcher = Dispatcher(None)
    new = feeder(itertools.count())
    dispatcher.feeders.append(new)
    workers = [FakeWorker(), FakeWorker()]
    assert plan(dispatcher, workers) == [1]
    new.next_index = 1  # read, its result not back yet
    assert plan(dispatcher, workers) == []
    assert plan(dispatcher, workers, closing=True) == [2 * MIN_IN_FLIGHT]
    new.results.delivered = 1
    assert plan(dispatcher, workers) == [2 * MIN_IN_FLIGHT]


def test_an_input_much_slower_than_its_tasks_is_read_once_their_results_are_back() -> None:
    dispatcher = Dispatcher(None)
    dispatcher._task_seconds = 0.001
    slow = going(itertools.count())
    dispatcher.feeders.append(slow)
    slow.next_index = 2  # one chunk in flight
    slow.read_seconds = 1.0
    workers = [FakeWorker(), FakeWorker()]
    assert plan(dispatcher, workers) == []
    slow.results.delivered = 2
    room = 2 * dispatcher.in_flight_limit()
    assert plan(dispatcher, workers) == [room]
    slow.results.delivered = 1
    slow.read_seconds = 0.008  # about as slow as its tasks: read on, the two overlap
    assert plan(dispatcher, workers) == [room]


def test_a_read_measures_its_slowest_chunk() -> None:
    def slow_second() -> Iterator[int]:
        yield 0
        time.sleep(0.05)
        yield 1

    reader = feeder(slow_second())
    assert reader.read(2).chunks == [[0], [1]]
    assert reader.read_seconds >= 0.05


def test_read_ahead_of_the_caller_is_bounded_until_the_pool_closes() -> None:
    dispatcher = Dispatcher(MIN_IN_FLIGHT * 1000)  # room far beyond the bound
    behind = feeder(itertools.count())
    behind.next_index = READ_AHEAD_PER_WORKER  # read, none taken: one worker's bound reached
    dispatcher.feeders.append(behind)
    assert plan(dispatcher, [FakeWorker()]) == []
    assert plan(dispatcher, [FakeWorker()], closing=True) == [MIN_IN_FLIGHT * 1000]


def test_a_busy_or_ended_input_is_not_planned() -> None:
    dispatcher = Dispatcher(None)
    busy, ended = feeder(itertools.count()), feeder(itertools.count())
    busy.busy, ended.ended = True, True
    dispatcher.feeders.extend([busy, ended])
    assert dispatcher.plan_feeding([FakeWorker()], 1, False) == []  # type: ignore[list-item]


def failing_after(count: int) -> Iterator[int]:
    yield from range(count)
    raise KeyError("broken input")


@pytest.mark.parametrize(
    ("size", "chunks"),
    [(1, [[0], [1], [2], [3], [4]]), (2, [[0, 1], [2, 3]]), (3, [[0, 1, 2]])],
)
def test_an_input_error_replaces_the_chunk_being_read(size: int, chunks: list[list[int]]) -> None:
    read = feeder(failing_after(5), size).read(100)
    assert read.chunks == chunks
    assert isinstance(read.error, KeyError)
    assert read.ended


def test_a_read_ends_with_a_short_last_chunk() -> None:
    read = feeder(iter(range(5)), 2).read(100)
    assert read == ([[0, 1], [2, 3], [4]], None, True)
    assert feeder(iter(range(4)), 2).read(1) == ([[0, 1]], None, False)
