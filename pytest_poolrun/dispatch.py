"""The pool's jobs: queued, handed to workers with a little prefetch, timed, requeued or failed.

Data flow, in the pool's thread::

    Pool.apply_async / map chunks ─▶ enqueue ─▶ queue ─▶ assign: to the least loaded started
                                                          workers, up to in_flight_limit() each
                                                          ─▶ WorkerProcess.jobs + Task on its end
    Ready from a worker  ─▶ started(worker): its first job's deadline starts counting
    Result from a worker ─▶ finished(worker, task_id) ─▶ the Job, whose on_result the pool calls
    the worker ended     ─▶ take_back(worker): the job it ran (blamed, unless the exit was
                            expected), its unstarted jobs back to the front of the queue
    overdue(now)         ─▶ (worker, job) pairs whose running job passed its deadline
    Pool.imap ─▶ Feeder ─▶ plan_feeding: how many chunks of its input to read now ─▶
                 Feeding (feeding.py) reads them (unlocked) and enqueues them as jobs

**Prefetch.**  Each worker holds its running task plus a couple of milliseconds' worth of the
next ones (by the running estimate of a task's duration, 2 to 64 tasks), so it never waits for a
round trip between tiny tasks, while slow tasks are handed out one by one.  Tasks held but not
started by a worker that dies go back to the queue.

**Lazy imap.**  An ``imap``'s input is read a chunk at a time, only while the workers have room
under their in-flight limit and the queue is empty (at least one chunk while none is
outstanding; one read stops after ``READ_SECONDS``), round-robin across the imaps, so that an
endless input does not starve other work.  The first chunk is read alone, and its result comes
back before more is read; so do the results of an input much slower than its tasks
(``Dispatcher._waits``): the input is read in the caller's thread, and a result must not wait
there for the input's next item, which may even wait for that result.  The read-ahead is
bounded: at most ``READ_AHEAD_PER_WORKER`` chunks per worker slot read but not yet taken by the
caller's iterator, so memory stays flat however long the input.  Once the pool is closing the
bound is lifted: as with ``multiprocessing.Pool``, ``close`` and ``join`` then run the whole
input without a reader.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from pytest_poolrun import clock, codec
from pytest_poolrun.poolworker import APPLY
from pytest_poolrun.wire import Task
from pytest_poolrun.workerset import WorkerProcess

if TYPE_CHECKING:
    from pytest_poolrun.results import IMapIterator

# How much work a worker holds beyond the task it runs, in seconds of recent tasks: enough to
# cover the controller's reaction time between two results, so a worker never idles waiting for
# its next task, and little enough that few tasks wait behind a slow one.
PREFETCH_SECONDS = 0.002
# Tasks in flight per worker.  At least 2, so the next task is always at hand; at most 64, so a
# dead worker sends few tasks back to the queue and tiny tasks still share one system call.
MIN_IN_FLIGHT = 2
MAX_IN_FLIGHT = 64
# Weight of the newest task's duration when the estimate falls (it rises at once: a slow task
# must shrink the prefetch before more tasks queue behind the next one).
DURATION_DECAY = 0.1
# Durations below this are clock noise; it keeps the prefetch arithmetic finite.
MIN_DURATION = 1e-6
# multiprocessing.Pool's automatic chunksize: about four chunks per worker.
CHUNKS_PER_WORKER = 4
# Chunks of one imap's input read ahead of its caller, per worker slot: twice the most a worker
# holds in flight, so that the workers stay busy while the caller takes as many results.
READ_AHEAD_PER_WORKER = 2 * MAX_IN_FLIGHT
# How long one read of an imap's input may go on before its chunks are handed out (after the
# first chunk): a slow input is then read a chunk or so at a time, and the results of what was
# read meanwhile reach the caller, instead of waiting for a whole read-ahead.
READ_SECONDS = 0.005
# An input whose chunk takes this many times a task's time to read is read only once the
# results of its chunks in flight are back (see Dispatcher._waits).
SLOW_INPUT_RATIO = 10
# The end of the message when an argument cannot be sent.
SEND_ADVICE = "pass something picklable, or create it inside the task"

OnResult = Callable[[bool, Any], None]


@dataclass(eq=False)
class Job:
    """One task: its pickled function and arguments, and who hears of its outcome."""

    task_id: int
    function: bytes
    args: bytes
    on_result: OnResult
    timeout: float | None
    deadline: float | None = None
    finished: bool = False


class Read(NamedTuple):
    """What one read of an imap's input gave: whole chunks, then maybe its error, or its end."""

    chunks: list[list[Any]]
    error: Exception | None
    ended: bool


@dataclass(eq=False)
class Feeder:
    """An imap's input, read lazily: chunks of ``size`` items become jobs as workers need them.

    ``read`` runs without the pool's lock (the input's own code may be slow or wait), by one
    thread at a time (``busy``); everything else runs under the lock.
    """

    items: Iterator[Any]
    size: int
    function: bytes
    mode: int
    timeout: float | None
    results: IMapIterator[Any]
    next_index: int = 0
    busy: bool = False
    ended: bool = False
    planned: int = field(default=0, repr=False)
    # How long the slowest chunk of the last read took to read, in seconds.
    read_seconds: float = 0.0

    @property
    def outstanding(self) -> int:
        """Chunks read but not yet taken by the caller's iterator."""
        return self.next_index - self.results.taken

    def read(self, count: int) -> Read:
        """Read up to ``count`` chunks (less after READ_SECONDS); an error replaces a chunk."""
        chunks: list[list[Any]] = []
        started = clock.monotonic()
        stop = started + READ_SECONDS
        self.read_seconds = 0.0
        for _ in range(count):
            if chunks and clock.monotonic() > stop:
                break
            try:
                chunk = list(itertools.islice(self.items, self.size))
            except Exception as exc:
                return Read(chunks, exc, True)
            finally:
                now = clock.monotonic()
                self.read_seconds = max(self.read_seconds, now - started)
                started = now
            if chunk:
                chunks.append(chunk)
            if len(chunk) < self.size:
                return Read(chunks, None, True)
        return Read(chunks, None, False)


class Dispatcher:
    """The queue of jobs not yet handed out, and the rules for handing them out."""

    def __init__(
        self,
        in_flight: int | None,
        main_at_workers: Callable[[], codec.MainAtReceiver] | None = None,
    ) -> None:
        # Tasks a worker may hold at once; None: as many as cover PREFETCH_SECONDS of recent tasks.
        self._in_flight = in_flight
        self.queue: deque[Job] = deque()
        # The imaps whose input is not yet read to its end.
        self.feeders: deque[Feeder] = deque()
        self._ids = itertools.count()
        self._task_seconds: float | None = None
        # What the workers have of the main script (see codec.dumps): the worker set's, in a pool.
        self.main_at_workers = main_at_workers or _other_main

    def enqueue(
        self,
        function: bytes,
        mode: int,
        args: Any,
        kwargs: Mapping[str, Any],
        on_result: OnResult,
        timeout: float | None,
        first: int = 0,
        ahead: bool = False,
    ) -> None:
        """Queue one task (``ahead``: before those waiting); ``first`` is a map chunk's
        position in its iterable, for messages."""
        try:
            # ``first`` too: the worker names a map's result that does not pickle by its input.
            args_blob = codec.dumps((mode, args, dict(kwargs), first), self.main_at_workers())
        except Exception:
            _raise_send_error(mode, args, kwargs, first)
        job = Job(next(self._ids), function, args_blob, on_result, timeout)
        if ahead:
            self.queue.appendleft(job)
        else:
            self.queue.append(job)

    def enqueue_chunks(
        self,
        function: bytes,
        mode: int,
        items: list[Any],
        size: int,
        chunk_done: Callable[[int], OnResult],
        timeout: float | None,
    ) -> None:
        """Queue a map's items in chunks of ``size``; chunk ``i`` reports to ``chunk_done(i)``."""
        for index, start in enumerate(range(0, len(items), size)):
            chunk = items[start : start + size]
            self.enqueue(function, mode, chunk, {}, chunk_done(index), timeout, start)

    def plan_feeding(
        self, workers: Iterable[WorkerProcess], slots: int, closing: bool
    ) -> list[tuple[Feeder, int]]:
        """How many chunks to read from which imap inputs now; marks those feeders busy."""
        idle = [feeder for feeder in self.feeders if not (feeder.busy or feeder.ended)]
        if not idle:
            return []
        limit = self.in_flight_limit()
        room = sum(max(0, limit - len(worker.jobs)) for worker in workers if worker.takes_tasks)
        room -= len(self.queue)
        cap = slots * READ_AHEAD_PER_WORKER
        for feeder in idle:
            feeder.planned = 1 if feeder.outstanding == 0 else 0
            room -= feeder.planned
        # An input not read yet gives its first chunk alone.
        open_feeders = [
            feeder for feeder in idle if feeder.next_index and not self._waits(feeder, closing)
        ]
        while room > 0 and open_feeders:
            still_open = []
            for feeder in open_feeders:
                if room <= 0:
                    break
                if not closing and feeder.outstanding + feeder.planned >= cap:
                    continue
                feeder.planned += 1
                room -= 1
                still_open.append(feeder)
            open_feeders = still_open
        self.feeders.rotate(-1)  # the next plan starts with another imap
        plan = [(feeder, feeder.planned) for feeder in idle if feeder.planned]
        for feeder, _ in plan:
            feeder.busy = True
        return plan

    def _waits(self, feeder: Feeder, closing: bool) -> bool:
        """Whether ``feeder`` is better not read before the results of its chunks in flight
        come back: its first result (the input's pace is not known yet), or results expected
        well before its next chunk (an input much slower than the tasks).

        The caller's thread reads the input, and while it waits there, results that came back
        wait for it (``multiprocessing.Pool`` reads in a thread of its own).  Waiting for them
        first hands each result out as soon as it is done, at the cost of a task's time, in
        which the workers may idle, per chunk read: worth it for an input much slower than the
        tasks, not for one about as fast (then the input and the tasks overlap, as before).
        """
        in_flight = feeder.next_index - feeder.results.delivered
        if closing or in_flight == 0:
            return False
        if feeder.results.delivered == 0:
            return True
        task_seconds = self._task_seconds or 0.0
        return feeder.read_seconds > max(READ_SECONDS, SLOW_INPUT_RATIO * task_seconds)

    def in_flight_limit(self) -> int:
        if self._in_flight is not None:
            return self._in_flight
        if self._task_seconds is None:
            return MIN_IN_FLIGHT
        wanted = 1 + math.ceil(PREFETCH_SECONDS / max(self._task_seconds, MIN_DURATION))
        return max(MIN_IN_FLIGHT, min(MAX_IN_FLIGHT, wanted))

    def assign(self, workers: Iterable[WorkerProcess]) -> set[WorkerProcess]:
        """Hand queued jobs to the least loaded workers with room; returns those to flush."""
        limit = self.in_flight_limit()
        open_workers = [
            worker for worker in workers if worker.takes_tasks and len(worker.jobs) < limit
        ]
        touched: set[WorkerProcess] = set()
        while self.queue and open_workers:
            worker = min(open_workers, key=_load)
            job = self.queue.popleft()
            if not worker.jobs and worker.ready:
                job.deadline = _deadline(job.timeout)
            worker.jobs.append(job)
            worker.end.send(Task(job.task_id, job.function, job.args))
            touched.add(worker)
            if len(worker.jobs) >= limit:
                open_workers.remove(worker)
        return touched

    @staticmethod
    def started(worker: WorkerProcess) -> None:
        """The worker sent ``Ready``: its first job's timeout counts from now."""
        worker.ready = True
        if worker.jobs:
            worker.jobs[0].deadline = _deadline(worker.jobs[0].timeout)

    def finished(self, worker: WorkerProcess, task_id: int, seconds: float) -> Job:
        """The worker's oldest job has its result; the next one's timeout starts counting."""
        self._note_duration(seconds)
        job = worker.jobs.popleft()
        assert job.task_id == task_id, "results arrive in the order tasks were sent"
        if worker.jobs:
            worker.jobs[0].deadline = _deadline(worker.jobs[0].timeout)
        return job

    def take_back(self, worker: WorkerProcess, crashed: bool) -> Job | None:
        """Requeue an ended worker's unstarted jobs; return the running one a crash is blamed on."""
        jobs = [job for job in worker.jobs if not job.finished]
        worker.jobs.clear()
        running = None
        if jobs and crashed:
            running = jobs.pop(0)
            running.finished = True
        self.queue.extendleft(reversed(jobs))
        return running

    def next_deadline(self, workers: Iterable[WorkerProcess]) -> float | None:
        """Seconds until the earliest running job's deadline, if any job has one."""
        deadlines = [
            worker.jobs[0].deadline
            for worker in workers
            if worker.jobs and worker.jobs[0].deadline is not None
        ]
        return max(0.0, min(deadlines) - clock.monotonic()) if deadlines else None

    @staticmethod
    def overdue(workers: Iterable[WorkerProcess]) -> list[tuple[WorkerProcess, Job]]:
        now = clock.monotonic()
        late = []
        for worker in workers:
            job = worker.jobs[0] if worker.jobs else None
            if job is not None and not job.finished and job.deadline is not None:
                if job.deadline <= now:
                    late.append((worker, job))
        return late

    def _note_duration(self, seconds: float) -> None:
        current = self._task_seconds
        if current is None or seconds > current:
            self._task_seconds = seconds
        else:
            self._task_seconds = current + DURATION_DECAY * (seconds - current)


def auto_chunksize(length: int, processes: int) -> int:
    """``multiprocessing.Pool``'s choice when a map is given no chunksize."""
    chunksize, extra = divmod(length, processes * CHUNKS_PER_WORKER)
    return chunksize + 1 if extra else max(chunksize, 1)


def _load(worker: WorkerProcess) -> tuple[bool, int]:
    """Started workers first, then the fewest tasks in flight."""
    return not worker.ready, len(worker.jobs)


def _other_main() -> codec.MainAtReceiver:
    return codec.OTHER_MAIN


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else clock.monotonic() + timeout


def _raise_send_error(mode: int, args: Any, kwargs: Mapping[str, Any], first: int) -> NoReturn:
    """Raise ``SendError`` naming the argument or item that does not pickle."""
    if mode == APPLY:
        codec.dump_value(tuple(args), "args", SEND_ADVICE)
        codec.dump_value(dict(kwargs), "kwds", SEND_ADVICE)
    else:
        for index, item in enumerate(args, first):
            codec.dump_value(item, f"iterable[{index}]", SEND_ADVICE)
    codec.dump_value((args, dict(kwargs)), "the arguments", SEND_ADVICE)
    raise AssertionError("unreachable: the arguments did not pickle as a whole")
