"""A process pool with ``multiprocessing.Pool``'s API that never hangs on a dead worker.

Data flow (one controller thread, N worker processes)::

    caller ── apply_async / map_async / imap ──▶ _Job queue
                                                   │ _dispatch: a few ms of work per worker
                                                   ▼
    ControllerEnd.send(Task) ── socket pair ──▶ worker_main (poolworker.py) runs it
                                                   │
    _pump ◀── Ready / Result / Event / Retiring ───┘
      │  Ready  ─▶ the worker has started: its first task's timeout starts counting
      │  Result ─▶ job.on_result ─▶ AsyncResult filled, callback or error_callback called
      │  Event  ─▶ on_event(worker name, payload)
      │  worker exited (pidfd / sentinel) ─▶ its running job fails with WorkerLostError,
      │                                      its unstarted jobs go back to the queue,
      │                                      a replacement worker starts
      └  a running job past its timeout ─▶ its worker is killed, the job fails with TaskTimeout

**Callbacks without threads.**  ``multiprocessing.Pool`` runs three helper threads in the caller's
process; a process with threads must not fork (Python 3.12+ warns, and ``-W error`` suites then
fail), yet this pool forks replacement workers at any time.  So this pool has no threads: all
I/O is done by ``_pump``, which runs in the caller's thread whenever the caller waits
(``get``, ``wait``, ``map``, iterating ``imap``, ``join``, and ``ready`` without blocking);
a submission only writes.  Callbacks therefore run in the caller's thread, inside one of those
calls, in the order results arrive; a result that arrives while the caller does something else
waits in the socket until the next such call.  An exception raised by a callback is re-raised by
that call once the batch of messages being handled is accounted for, and a callback that waits
on the pool itself is refused (it would re-enter the loop).  The pool is meant to be used from
one thread, and from the process that created it: a copy reaching a child through a fork
refuses work.

**Prefetch.**  Each worker holds its running task plus a couple of milliseconds' worth of the
next ones (by the pool's running estimate of a task's duration, 2 to 64 tasks), so it never waits
for a round trip between tiny tasks, while slow tasks are handed out one by one.  Tasks held but
not started by a worker that dies go back to the queue.

**Start methods.**  ``start_method`` is ``"fork"``, ``"forkserver"`` or ``"spawn"``.  The default
is ``"fork"`` where the platform has it and ``"spawn"`` elsewhere, whatever the interpreter's own
default.  A fork is only done from a process with no other thread running; when a thread is
running at that moment, that worker is started with ``"forkserver"`` instead.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
import pickle
import selectors
import signal
import socket
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, TypeVar

from pytest_poolrun import codec
from pytest_poolrun.gateway import bridge_main, expand_specs
from pytest_poolrun.poolworker import APPLY, MAP, STARMAP, WorkerInfo, describe_exit, worker_main
from pytest_poolrun.wire import (
    ControllerEnd,
    Event,
    Ready,
    Retiring,
    SetupFailed,
    Shutdown,
    Task,
    ToController,
)

T = TypeVar("T")
START_METHODS = ("fork", "forkserver", "spawn")
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
# The end of the message when an argument cannot be sent.
SEND_ADVICE = "pass something picklable, or create it inside the task"
# Durations below this are clock noise; it keeps the prefetch arithmetic finite.
MIN_DURATION = 1e-6
# multiprocessing.Pool's automatic chunksize: about four chunks per worker.
CHUNKS_PER_WORKER = 4
# How long a thread that Python has joined may take to leave the kernel's list (a few ms on a
# busy machine), and how often to look meanwhile.
THREAD_EXIT_GRACE = 0.05
THREAD_EXIT_POLL = 0.001
# How long a worker that was asked to stop may take before it is killed.
STOP_GRACE = 2.0


class WorkerLostError(RuntimeError):
    """The worker running a task died (signal, ``os._exit``, OOM killer) before it finished."""


class TaskTimeoutError(TimeoutError):
    """A task ran longer than its ``timeout``; its worker was killed and replaced."""


class PoolTerminatedError(RuntimeError):
    """The pool was terminated before the task finished."""


class PoolExhaustedError(WorkerLostError):
    """No worker is left: more died than ``max_restarts`` allows, so queued tasks cannot run."""


class TaskCancelledError(RuntimeError):
    """The task was still queued when ``cancel_queued`` was called."""


RemoteTraceback = codec.RemoteTraceback
SendError = codec.SendError
ReceiveError = codec.ReceiveError


def default_start_method() -> str:
    return "fork" if hasattr(os, "fork") and sys.platform != "darwin" else "spawn"


def threads_running() -> bool:
    """Whether another thread than this one exists (Python's or, on Linux, any native one).

    A thread that Python has just joined lingers in the kernel's list for a moment while it
    finishes exiting, so a native thread counts only if it is still there after a short grace.
    """
    if threading.active_count() > 1:
        return True
    deadline = time.monotonic() + THREAD_EXIT_GRACE
    while True:
        try:
            if len(os.listdir("/proc/self/task")) <= 1:
                return False
        except OSError:
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(THREAD_EXIT_POLL)


# Controller ends of every pool's sockets in this process: a forked child closes them, so that
# only the controller holds them and a worker's exit is seen as end-of-file.
_controller_sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
_live_pools: weakref.WeakSet[Pool] = weakref.WeakSet()


def _close_inherited_sockets() -> None:
    for sock in list(_controller_sockets):
        try:
            sock.close()
        except OSError:
            pass
    _controller_sockets.clear()
    _live_pools.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_sockets)


@dataclass(eq=False)
class _Job:
    task_id: int
    function: bytes
    args: bytes
    on_result: Callable[[bool, Any], None]
    timeout: float | None
    deadline: float | None = None
    finished: bool = False


@dataclass(eq=False)
class _Worker:
    info: WorkerInfo
    process: multiprocessing.process.BaseProcess
    end: ControllerEnd
    exit_fd: int
    jobs: deque[_Job] = field(default_factory=deque)
    # Whether the worker has started (sent ``Ready``).  Tasks go to started workers first, and
    # a task's timeout only counts from then: a worker's start-up is not the task's time.
    ready: bool = False
    retiring: bool = False
    stopping: bool = False
    exitcode: int | None = None

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid


class Pool:
    """A pool of worker processes with the API of ``multiprocessing.Pool``.

    Beyond it: a dead worker fails only the task it was running (``WorkerLostError``) and is
    replaced; ``timeout=`` on every call kills the worker of an overdue task (one ``apply``, or
    one chunk of a map) and fails it with ``TaskTimeoutError``; lambdas and closures can be sent;
    remote exceptions keep their type with the worker's traceback as their cause; workers may
    start processes of their own; ``start_method`` is an argument (see the module docstring).

    Extensions used by the test runner: ``on_event`` receives what tasks ``emit``;
    ``on_worker_exit(name, exitcode, expected)`` hears of every worker that ended; ``finalizer``
    runs in each worker when it is shut down in an orderly way; ``name_prefix`` names the
    workers (prefix + slot); ``max_restarts`` bounds the replacements of dead workers;
    ``in_flight`` fixes how many tasks a worker holds at once (for tasks of very uneven length,
    where a duration estimate would mislead); ``tx`` adds workers behind execnet gateways.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        *,
        start_method: str | None = None,
        on_event: Callable[[str, Any], None] | None = None,
        on_worker_exit: Callable[[str, int | None, bool], None] | None = None,
        finalizer: Callable[[], object] | None = None,
        name_prefix: str = "pool",
        max_restarts: int | None = None,
        tx: Sequence[str] = (),
        in_flight: int | None = None,
    ) -> None:
        specs = expand_specs(list(tx))
        if processes is None:
            processes = 0 if specs else available_cpus()
        if not isinstance(processes, int) or processes < (0 if specs else 1):
            raise ValueError(f"Number of processes must be at least 1, not {processes!r}")
        if maxtasksperchild is not None and (
            not isinstance(maxtasksperchild, int) or maxtasksperchild < 1
        ):
            raise ValueError("maxtasksperchild must be a positive int or None")
        method = start_method or default_start_method()
        if method not in START_METHODS:
            choices = ", ".join(START_METHODS)
            raise ValueError(f"start_method must be one of {choices}, not {method!r}")
        # One entry per slot: None for a local worker, an execnet spec for a gateway worker.
        self._slot_specs: list[str | None] = [None] * processes + list(specs)
        self._processes = len(self._slot_specs)
        self._disabled_slots: set[int] = set()
        # Functions travel by value when some worker may not import this process's modules.
        self._remote = bool(specs)
        # Tasks a worker may hold at once; None: as many as cover PREFETCH_SECONDS of recent tasks.
        self._in_flight = in_flight
        self.setup_errors: dict[str, BaseException] = {}
        self._method = method
        self._maxtasks = maxtasksperchild
        self._setup = codec.dumps((initializer, tuple(initargs), finalizer))
        self._on_event = on_event
        self._on_worker_exit = on_worker_exit
        self._name_prefix = name_prefix
        self._max_restarts = max_restarts
        self.restarts = 0
        self._task_seconds: float | None = None
        self._ids = itertools.count()
        self._queue: deque[_Job] = deque()
        self._workers: dict[int, _Worker] = {}
        self._selector = selectors.DefaultSelector()
        self._write_interest: set[int] = set()
        self._closing = False
        self._retire_idle = False
        self._terminated = False
        self._pumping = False
        self._callback_error: Exception | None = None
        self._owner_pid = os.getpid()
        _live_pools.add(self)
        for index in range(self._processes):
            self._start_worker(index)

    # ----------------------------------------------------------------------------- workers

    @property
    def processes(self) -> int:
        return self._processes

    @property
    def start_method(self) -> str:
        return self._method

    @property
    def accepting(self) -> bool:
        """Whether tasks may be submitted: neither ``close`` nor ``terminate`` was called."""
        return not (self._closing or self._terminated)

    def kill(self, name: str) -> None:
        """Kill worker ``name`` with its process group; the pool then handles it as crashed."""
        for worker in self._workers.values():
            if worker.info.name == name:
                self._kill(worker)
                return

    def worker_names(self) -> list[str]:
        """Names of the live workers."""
        return [worker.info.name for worker in self._workers.values()]

    def pid_of(self, name: str) -> int | None:
        """Process id of the live local process behind worker ``name`` (its bridge, for execnet)."""
        for worker in self._workers.values():
            if worker.info.name == name:
                return worker.pid
        return None

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for tests and diagnostics)."""
        return [worker.pid for worker in self._workers.values()]

    def _start_worker(self, index: int) -> None:
        method = self._method
        if method == "fork" and threads_running():
            method = "forkserver"
        context: Any = multiprocessing.get_context(method)
        ours, theirs = socket.socketpair()
        info = WorkerInfo(f"{self._name_prefix}{index}", index)
        spec = self._slot_specs[index]
        target: Callable[..., None] = worker_main if spec is None else bridge_main
        args: tuple[Any, ...] = (theirs, info, self._setup, self._maxtasks)
        process = context.Process(
            target=target,
            args=args if spec is None else (*args, spec),
            name=info.name,
            daemon=False,
        )
        _controller_sockets.add(ours)
        process.start()
        theirs.close()
        end = ControllerEnd(ours)
        exit_fd = _exit_fd(process)
        worker = _Worker(info, process, end, exit_fd)
        self._workers[index] = worker
        self._selector.register(end.sock, selectors.EVENT_READ, (worker, "end"))
        self._selector.register(exit_fd, selectors.EVENT_READ, (worker, "exit"))

    def _forget_worker(self, worker: _Worker) -> None:
        for fd in (worker.end.fileno(), worker.exit_fd):
            try:
                self._selector.unregister(fd)
            except (KeyError, ValueError):
                pass
        self._write_interest.discard(id(worker))
        worker.end.close()
        if worker.exit_fd != worker.process.sentinel:
            os.close(worker.exit_fd)
        if self._workers.get(worker.info.slot) is worker:
            del self._workers[worker.info.slot]

    def _kill(self, worker: _Worker) -> None:
        """Kill a worker and every process in its group (it leads its own group)."""
        for kill in (os.killpg, os.kill):
            try:
                kill(worker.pid, signal.SIGKILL)
                return
            except (ProcessLookupError, PermissionError):
                continue

    def _worker_exited(self, worker: _Worker) -> None:
        """Account for a worker that has ended: fail or requeue its jobs, maybe replace it."""
        if self._workers.get(worker.info.slot) is not worker:
            return
        messages, _ = worker.end.feed()
        for message in messages:
            self._handle(worker, message)
        worker.process.join(STOP_GRACE)
        if worker.process.exitcode is None:
            self._kill(worker)
            worker.process.join()
        worker.exitcode = worker.process.exitcode
        # Whatever else lived in the worker's process group goes with it.
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._forget_worker(worker)
        disabled = worker.info.slot in self._disabled_slots
        expected = worker.retiring or worker.stopping
        jobs = [job for job in worker.jobs if not job.finished]
        worker.jobs.clear()
        if jobs and not expected:
            running, unstarted = jobs[0], jobs[1:]
            running.finished = True
        else:
            running, unstarted = None, jobs
        self._queue.extendleft(reversed(unstarted))
        if not expected and not disabled:
            self.restarts += 1
        within_limit = self._max_restarts is None or self.restarts <= self._max_restarts
        if (
            not self._terminated
            and not disabled
            and not worker.stopping
            and (self._queue or not self._closing)
            and (expected or within_limit)
        ):
            self._start_worker(worker.info.slot)
        if self._on_worker_exit is not None:
            self._guarded(self._on_worker_exit, worker.info.name, worker.exitcode, expected)
        if running is not None:
            self._deliver(
                running,
                False,
                WorkerLostError(
                    f"worker {worker.info.name} (pid {worker.pid}) died while running this task: "
                    f"{describe_exit(worker.exitcode)}; it was replaced.  Look for os._exit, a "
                    "crash in native code, or memory use (the OOM killer sends SIGKILL)"
                ),
            )

    def _fail_queued(self, error: BaseException) -> None:
        while self._queue:
            self._deliver(self._queue.popleft(), False, error)
        self._raise_deferred()

    def _deliver(self, job: _Job, ok: bool, value: Any) -> None:
        job.finished = True
        self._guarded(job.on_result, ok, value)

    def _guarded(self, callback: Callable[..., object], *args: Any) -> None:
        """Run a callback; keep its exception for ``_raise_deferred`` instead of unwinding the loop.

        An exception escaping half-way through a batch of messages would lose the rest of them.
        """
        try:
            callback(*args)
        except Exception as exc:
            if self._callback_error is None:
                self._callback_error = exc

    def _raise_deferred(self) -> None:
        """Raise the first exception a callback raised, once the event loop is consistent again."""
        error = self._callback_error
        if error is not None and not self._pumping:
            self._callback_error = None
            raise error

    # ------------------------------------------------------------------------------ the loop

    def _enqueue(
        self,
        function: bytes,
        mode: int,
        args: Any,
        kwargs: Mapping[str, Any],
        on_result: Callable[[bool, Any], None],
        timeout: float | None,
        first: int = 0,
    ) -> None:
        """Queue one task; the caller then calls ``_dispatch`` once for all it queued.

        ``first`` is the position in the iterable of a map chunk's first item, for error messages.
        """
        try:
            args_blob = codec.dumps((mode, args, dict(kwargs)))
        except Exception:
            _raise_send_error(mode, args, kwargs, first)
        self._queue.append(_Job(next(self._ids), function, args_blob, on_result, timeout))

    def _check_owner(self) -> None:
        if os.getpid() != self._owner_pid:
            raise RuntimeError(
                f"this Pool belongs to process {self._owner_pid} and reached process "
                f"{os.getpid()} through a fork, where it cannot work; create a new Pool here"
            )

    def _check_submission(self, timeout: float | None) -> None:
        self._check_owner()
        if self._closing or self._terminated:
            raise ValueError("Pool not running")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")

    def _in_flight_limit(self) -> int:
        if self._in_flight is not None:
            return self._in_flight
        if self._task_seconds is None:
            return MIN_IN_FLIGHT
        wanted = 1 + math.ceil(PREFETCH_SECONDS / max(self._task_seconds, MIN_DURATION))
        return max(MIN_IN_FLIGHT, min(MAX_IN_FLIGHT, wanted))

    def _note_duration(self, seconds: float) -> None:
        current = self._task_seconds
        if current is None or seconds > current:
            self._task_seconds = seconds
        else:
            self._task_seconds = current + DURATION_DECAY * (seconds - current)

    def _dispatch(self) -> None:
        """Hand queued jobs to the least loaded workers with room, then flush each socket once."""
        self._fill_empty_slots()
        if self._queue and not self._workers and not self._terminated:
            if len(self._disabled_slots) == self._processes:
                why = "every worker failed to start (its initializer raised; see above)"
            else:
                why = f"{self.restarts} died, more than the limit of {self._max_restarts} restarts"
            self._fail_queued(PoolExhaustedError(f"no worker is left: {why}"))
        if self._queue:
            limit = self._in_flight_limit()
            open_workers = [
                worker
                for worker in self._workers.values()
                if not (worker.retiring or worker.stopping) and len(worker.jobs) < limit
            ]
            touched: set[_Worker] = set()
            while self._queue and open_workers:
                worker = min(open_workers, key=_load)
                job = self._queue.popleft()
                if not worker.jobs and worker.ready:
                    job.deadline = _deadline(job.timeout)
                worker.jobs.append(job)
                worker.end.send(Task(job.task_id, job.function, job.args))
                touched.add(worker)
                if len(worker.jobs) >= limit:
                    open_workers.remove(worker)
            for worker in touched:
                self._flush(worker)
        self._maybe_shut_down()

    def _fill_empty_slots(self) -> None:
        """Start workers in slots left empty by workers that retired while idle, if work waits."""
        if not self._queue or self._terminated or len(self._workers) == self._processes:
            return
        if self._max_restarts is not None and self.restarts > self._max_restarts:
            return
        for slot in range(self._processes):
            if slot not in self._workers and slot not in self._disabled_slots:
                self._start_worker(slot)

    def _maybe_shut_down(self) -> None:
        if not (self._closing or self._retire_idle) or self._queue:
            return
        for worker in self._workers.values():
            if not worker.jobs and not worker.stopping:
                worker.stopping = True
                worker.end.send(Shutdown())
                self._flush(worker)

    def _flush(self, worker: _Worker) -> None:
        worker.end.flush()
        self._watch_writes(worker)

    def _watch_writes(self, worker: _Worker) -> None:
        wants = worker.end.wants_write
        if wants == (id(worker) in self._write_interest) or worker.end.closed:
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if wants else 0)
        self._selector.modify(worker.end.sock, events, (worker, "end"))
        if wants:
            self._write_interest.add(id(worker))
        else:
            self._write_interest.discard(id(worker))

    def _handle(self, worker: _Worker, message: ToController) -> None:
        if isinstance(message, SetupFailed):
            # The initializer failed; a replacement would fail the same way.
            self._disabled_slots.add(worker.info.slot)
            self.setup_errors[worker.info.name] = codec.load_error(message.payload)
            return
        if isinstance(message, Event):
            if self._on_event is not None:
                self._guarded(self._emit_event, self._on_event, worker.info.name, message.payload)
            return
        if isinstance(message, Ready):
            worker.ready = True
            if worker.jobs:
                worker.jobs[0].deadline = _deadline(worker.jobs[0].timeout)
            return
        if isinstance(message, Retiring):
            worker.retiring = True
            return
        self._note_duration(message.seconds)
        job = worker.jobs.popleft()
        assert job.task_id == message.task_id, "results arrive in the order tasks were sent"
        if worker.jobs:
            worker.jobs[0].deadline = _deadline(worker.jobs[0].timeout)
        if job.finished:
            return
        self._deliver(job, *codec.load_outcome(message.ok, message.payload))

    @staticmethod
    def _emit_event(on_event: Callable[[str, Any], None], name: str, payload: bytes) -> None:
        on_event(name, pickle.loads(payload))

    def _pump(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` seconds for I/O and handle everything that arrived.

        Callbacks run in here; one that waits on the pool would re-enter it and is refused.
        """
        if self._terminated:
            return
        if self._pumping:
            raise RuntimeError(
                "a callback waited for a pool result: callbacks run inside the pool's event "
                "loop, so they must return without waiting; collect results after the call "
                "that ran the callback has returned"
            )
        self._pumping = True
        try:
            self._pump_once(timeout)
        finally:
            self._pumping = False
        self._raise_deferred()

    def _pump_once(self, timeout: float | None) -> None:
        wait = _earliest(timeout, self._next_deadline())
        ready = self._selector.select(wait) if self._selector.get_map() else []
        if not self._selector.get_map() and wait:
            time.sleep(wait)
        exited: list[_Worker] = []
        for key, mask in ready:
            worker, what = key.data
            if what == "exit":
                exited.append(worker)
                continue
            if mask & selectors.EVENT_WRITE:
                self._flush(worker)
            if mask & selectors.EVENT_READ and not worker.end.closed:
                messages, eof = worker.end.feed()
                for message in messages:
                    self._handle(worker, message)
                if eof and worker not in exited:
                    exited.append(worker)
        for worker in exited:
            self._worker_exited(worker)
        self._expire_overdue()
        self._dispatch()

    def _next_deadline(self) -> float | None:
        deadlines = [
            worker.jobs[0].deadline
            for worker in self._workers.values()
            if worker.jobs and worker.jobs[0].deadline is not None
        ]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _expire_overdue(self) -> None:
        now = time.monotonic()
        for worker in list(self._workers.values()):
            if not worker.jobs:
                continue
            job = worker.jobs[0]
            if job.deadline is None or job.deadline > now or job.finished:
                continue
            job.finished = True
            self._kill(worker)
            # An exit we caused, with its running task accounted for: the tasks queued behind
            # it go back to the queue instead of the next one being blamed for the kill.
            worker.retiring = True
            self._worker_exited(worker)
            self._deliver(
                job,
                False,
                TaskTimeoutError(
                    f"task ran longer than its timeout of {job.timeout:g} s; worker "
                    f"{worker.info.name} was killed and replaced.  Raise the timeout if the "
                    "task needs longer"
                ),
            )

    def _wait_until(self, done: Callable[[], bool], timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        if not done():
            self._check_owner()
        while not done():
            if self._terminated and not done():
                return done()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._pump(remaining)
        return True

    # ---------------------------------------------------------------------------- public API

    def apply_async(
        self,
        func: Callable[..., T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
        callback: Callable[[T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        timeout: float | None = None,
    ) -> AsyncResult[T]:
        self._check_submission(timeout)
        result: AsyncResult[T] = AsyncResult(self, callback, error_callback)
        function = _dump_function(func, self._remote)
        self._enqueue(function, APPLY, tuple(args), kwds or {}, result._set, timeout)
        self._dispatch()
        return result

    def apply(
        self,
        func: Callable[..., T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> T:
        return self.apply_async(func, args, kwds, timeout=timeout).get()

    def _map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        mode: int,
        chunksize: int | None,
        callback: Callable[[list[Any]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        timeout: float | None,
    ) -> MapResult[Any]:
        self._check_submission(timeout)
        items = list(iterable)
        size = self._auto_chunksize(len(items)) if chunksize is None else chunksize
        if size < 1:
            raise ValueError(f"chunksize must be at least 1, not {size!r}")
        starts = range(0, len(items), size)
        result: MapResult[Any] = MapResult(self, len(starts), callback, error_callback)
        function = _dump_function(func, self._remote)
        for index, start in enumerate(starts):
            chunk = items[start : start + size]
            self._enqueue(function, mode, chunk, {}, result._chunk_setter(index), timeout, start)
        self._dispatch()
        return result

    def _auto_chunksize(self, length: int) -> int:
        chunksize, extra = divmod(length, self._processes * CHUNKS_PER_WORKER)
        return chunksize + 1 if extra else max(chunksize, 1)

    def map_async(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[list[T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        timeout: float | None = None,
    ) -> MapResult[T]:
        return self._map_async(func, iterable, MAP, chunksize, callback, error_callback, timeout)

    def map(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        timeout: float | None = None,
    ) -> list[T]:
        return self.map_async(func, iterable, chunksize, timeout=timeout).get()

    def starmap_async(
        self,
        func: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        timeout: float | None = None,
    ) -> MapResult[T]:
        args = [tuple(arg) for arg in iterable]
        return self._map_async(func, args, STARMAP, chunksize, callback, error_callback, timeout)

    def starmap(
        self,
        func: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        timeout: float | None = None,
    ) -> list[T]:
        return self.starmap_async(func, iterable, chunksize, timeout=timeout).get()

    def imap(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int = 1,
        *,
        timeout: float | None = None,
    ) -> Iterator[T]:
        return self._imap(func, iterable, chunksize, timeout, ordered=True)

    def imap_unordered(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int = 1,
        *,
        timeout: float | None = None,
    ) -> Iterator[T]:
        return self._imap(func, iterable, chunksize, timeout, ordered=False)

    def _imap(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int,
        timeout: float | None,
        ordered: bool,
    ) -> Iterator[T]:
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize!r}")
        self._check_submission(timeout)
        items = list(iterable)
        starts = range(0, len(items), chunksize)
        arrived: dict[int, tuple[bool, Any]] = {}
        order: deque[int] = deque()
        function = _dump_function(func, self._remote)

        def setter(index: int) -> Callable[[bool, Any], None]:
            def record(ok: bool, value: Any) -> None:
                arrived[index] = (ok, value)
                order.append(index)

            return record

        for index, start in enumerate(starts):
            chunk = items[start : start + chunksize]
            self._enqueue(function, MAP, chunk, {}, setter(index), timeout, start)
        self._dispatch()
        return self._imap_results(len(starts), arrived, order, ordered)

    def _imap_results(
        self,
        chunks: int,
        arrived: dict[int, tuple[bool, Any]],
        order: deque[int],
        ordered: bool,
    ) -> Iterator[Any]:
        for position in range(chunks):
            if ordered:
                index = position
                self._wait_until(lambda: index in arrived, None)  # noqa: B023 (used at once)
            else:
                self._wait_until(lambda: bool(order), None)
                index = order.popleft()
            if index not in arrived:
                raise PoolTerminatedError("the pool was terminated before this result arrived")
            ok, value = arrived.pop(index)
            if not ok:
                raise value
            yield from value

    def cancel_queued(self) -> None:
        """Fail every task not yet sent to a worker with ``TaskCancelledError``."""
        self._fail_queued(TaskCancelledError("the task was cancelled before it started"))

    def shutdown_idle(self) -> None:
        """Let each worker that is idle while no task waits run the finalizer and exit.

        Unlike ``close``, tasks are still accepted afterwards; they start new workers as needed.
        ``join`` then waits until every task is done and every worker has exited.
        """
        self._retire_idle = True
        self._maybe_shut_down()

    def close(self) -> None:
        """Accept no more tasks; workers exit once the submitted ones are done."""
        self._closing = True
        self._maybe_shut_down()

    def reset(self) -> None:
        """Make the pool idle and ready again, with all its workers, without a new start-up.

        Queued tasks are cancelled; workers busy with a task are killed (with the processes
        their tasks started) and replaced.  Every unfinished task fails with
        ``TaskCancelledError``.  The ``pool`` fixture calls this between tests.
        """
        if self._terminated:
            return
        error = TaskCancelledError(
            "the task was cancelled: the pool was reset (as the pool fixture does after each "
            "test) before it finished; wait for a task's result before the test ends"
        )
        queued = list(self._queue)
        self._queue.clear()
        try:
            self._pump(0)  # notice workers that died since the last wait, so they are replaced
        finally:
            self._queue.extend(queued)
            busy = [worker for worker in self._workers.values() if worker.jobs]
            for worker in busy:
                self._kill(worker)
            for worker in busy:
                worker.retiring = True  # an exit asked for: replaced, and not counted as a crash
                self._worker_exited(worker)
            self._fail_queued(error)

    def terminate(self) -> None:
        """Stop every worker now; unfinished tasks fail with ``PoolTerminatedError``."""
        if self._terminated:
            return
        self._closing = True
        self._terminated = True
        if os.getpid() != self._owner_pid:
            return  # a forked copy of the pool: its workers belong to the parent process
        workers = list(self._workers.values())
        for worker in workers:
            self._kill(worker)
        for worker in workers:
            worker.process.join()
            self._forget_worker(worker)
        self._selector.close()
        error = PoolTerminatedError(
            "the pool was terminated before this task finished; call close() and join() "
            "instead of terminate() to let submitted tasks finish"
        )
        _live_pools.discard(self)
        for worker in workers:
            for job in worker.jobs:
                if not job.finished:
                    self._deliver(job, False, error)
        self._fail_queued(error)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the workers to exit; call ``close`` or ``terminate`` first.

        With a ``timeout``, return False if they are still running when it has passed (an
        extension: the caller can do periodic work between waits).
        """
        if not (self._closing or self._retire_idle):
            raise ValueError("Pool is still running")
        if not self._wait_until(lambda: not self._workers and not self._queue, timeout):
            return False
        if not self._terminated:
            self._terminated = True
            self._selector.close()
            _live_pools.discard(self)
        return True

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()

    def __del__(self) -> None:
        if getattr(self, "_terminated", True) is False and self._workers:
            self.terminate()

    def __repr__(self) -> str:
        state = "terminated" if self._terminated else "closing" if self._closing else "running"
        return f"<Pool state={state} processes={self._processes} start_method={self._method}>"


class AsyncResult(Generic[T]):
    """The future outcome of one ``apply_async`` (or, as ``MapResult``, of a whole map).

    ``callback`` and ``error_callback`` run in the caller's thread, inside whichever pool call
    is waiting when the result arrives.  They must not wait on the pool themselves (that raises
    ``RuntimeError``); an exception they raise is re-raised by that pool call.
    """

    def __init__(
        self,
        pool: Pool,
        callback: Callable[[Any], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> None:
        self._pool = pool
        self._callback = callback
        self._error_callback = error_callback
        self._done = False
        self._ok = False
        self._value: Any = None

    def _set(self, ok: bool, value: Any) -> None:
        if self._done:
            return
        self._done, self._ok, self._value = True, ok, value
        if ok and self._callback is not None:
            self._callback(value)
        if not ok and self._error_callback is not None:
            self._error_callback(value)

    def ready(self) -> bool:
        if not self._done and not self._pool._pumping:
            self._pool._pump(0)
        return self._done

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._ok

    def wait(self, timeout: float | None = None) -> None:
        self._pool._wait_until(lambda: self._done, timeout)

    def get(self, timeout: float | None = None) -> T:
        self.wait(timeout)
        if not self._done:
            if self._pool._terminated:
                raise PoolTerminatedError("the pool was terminated before this result arrived")
            raise multiprocessing.TimeoutError
        if self._ok:
            return self._value  # type: ignore[no-any-return]
        raise self._value


class MapResult(AsyncResult[list[T]]):
    def __init__(
        self,
        pool: Pool,
        chunks: int,
        callback: Callable[[list[T]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> None:
        super().__init__(pool, callback, error_callback)
        self._parts: list[list[T] | None] = [None] * chunks
        self._missing = chunks
        if chunks == 0:
            self._set(True, [])

    def _chunk_setter(self, index: int) -> Callable[[bool, Any], None]:
        def record(ok: bool, value: Any) -> None:
            if self._done:
                return
            if not ok:
                self._set(False, value)
                return
            self._parts[index] = value
            self._missing -= 1
            if self._missing == 0:
                self._set(True, [item for part in self._parts for item in part or ()])

        return record


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity), not merely the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _dump_function(func: Callable[..., Any], by_value: bool = False) -> bytes:
    if not callable(func):
        raise TypeError(f"the function to run must be callable, not {type(func).__qualname__}")
    if by_value:
        try:
            return codec.dumps_by_value(func)
        except Exception:
            pass  # the checks below name what does not pickle
    return codec.dump_value(func, "the function", "pass a picklable function")


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


def _load(worker: _Worker) -> tuple[bool, int]:
    """Started workers first, then the fewest tasks in flight."""
    return not worker.ready, len(worker.jobs)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _exit_fd(process: multiprocessing.process.BaseProcess) -> int:
    """A descriptor that becomes readable when the process exits.

    A pidfd sees the exit even when the worker's own children still hold its sentinel pipe open;
    the sentinel serves where pidfds are missing.
    """
    assert process.pid is not None
    if hasattr(os, "pidfd_open"):
        try:
            return os.pidfd_open(process.pid)
        except OSError:
            pass
    return process.sentinel


def _terminate_live_pools() -> None:
    for pool in list(_live_pools):
        pool.terminate()


import atexit  # noqa: E402  (registered after multiprocessing's own exit handler, so runs first)

atexit.register(_terminate_live_pools)
