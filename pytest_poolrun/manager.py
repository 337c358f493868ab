"""The pool's manager: what happens when the caller waits, in four named steps.

Data flow, in the caller's thread, inside any call that waits (``get``, ``wait``, ``map``,
iterating ``imap``, ``join``, ``ready``)::

    pump ─▶ EventLoop.wait ─▶ handle(worker, message), by the message's type:
      │        Ready      ─▶ Dispatcher.started: the first job's timeout counts from now
      │        Result     ─▶ Dispatcher.finished ─▶ job.on_result (AsyncResult, callbacks)
      │        Event      ─▶ hooks.on_event(worker name, payload)
      │        Retiring   ─▶ the coming exit is expected (maxtasksperchild)
      │        SetupFailed ─▶ WorkerSet.disable: the slot is not refilled
      ├─▶ account_for_exit(worker) ─▶ WorkerSet.reap ─▶ WorkerExit
      │        unstarted jobs back to the queue, the running one fails with WorkerLostError,
      │        a replacement starts if the restart policy allows, hooks.on_worker_exit(exit)
      ├─▶ expire_overdue ─▶ kill the worker of a job past its deadline ─▶ TaskTimeoutError
      └─▶ dispatch ─▶ Dispatcher.assign, each touched socket flushed once; idle workers told
                      to shut down once the pool is closing

    Pool facade ─▶ close / retire_when_idle / reset / terminate / join: the lifecycle, on the
                   same parts

**Callbacks without threads.**  ``multiprocessing.Pool`` runs helper threads in the caller's
process; a process with threads must not fork (Python 3.12+ warns, and ``-W error`` suites then
fail), yet this pool forks replacement workers at any time.  So all I/O happens here, in the
caller's thread, when the caller waits; a submission only writes.  Callbacks run in that thread,
in the order results arrive; see ``EventLoop.running`` for their exceptions and re-entry.
"""

from __future__ import annotations

import os
import pickle
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.pool import CLOSE, RUN, TERMINATE
from typing import Any

from pytest_poolrun import codec, wire
from pytest_poolrun.dispatch import Dispatcher, Job
from pytest_poolrun.eventloop import EventLoop
from pytest_poolrun.poolerrors import PoolExhaustedError, TaskTimeoutError, WorkerLostError
from pytest_poolrun.workerset import WorkerExit, WorkerProcess, WorkerSet


@dataclass(frozen=True)
class PoolHooks:
    """What a program built on the pool (the test runner) hears of beyond results.

    ``on_event(worker name, payload)`` receives what tasks ``emit``; ``on_worker_exit(exit)``
    hears of every worker that ended; both run in the caller's thread, inside the pool's loop,
    under the rules of callbacks.  ``finalizer`` runs in each worker when it is shut down in an
    orderly way (``close``, ``shutdown_idle``), not when it crashes or is killed.
    """

    on_event: Callable[[str, Any], None] | None = None
    on_worker_exit: Callable[[WorkerExit], None] | None = None
    finalizer: Callable[[], object] | None = None


class Manager:
    """The workers, the queue and the loop, kept consistent by the four steps of ``pump``."""

    def __init__(self, workers: WorkerSet, dispatcher: Dispatcher, hooks: PoolHooks) -> None:
        self.workers = workers
        self.dispatcher = dispatcher
        self.loop = EventLoop()
        self._hooks = hooks
        # multiprocessing.pool's RUN, CLOSE or TERMINATE: what the caller asked for.
        self.state = RUN
        self.retire_idle = False
        # The loop is closed and no worker is left (terminate, or join after close).
        self.stopped = False
        self.owner_pid = os.getpid()
        for worker in workers.start_all():
            self.loop.watch(worker)
        self.warn_fallback()

    @property
    def closing(self) -> bool:
        """Whether jobs are refused: ``close`` or ``terminate`` was called."""
        return self.state != RUN

    @property
    def terminated(self) -> bool:
        """Whether the pool has stopped: nothing more will arrive."""
        return self.stopped

    def close(self) -> None:
        """Accept no more jobs; workers are told to shut down once the queue is empty."""
        if self.state == RUN:
            self.state = CLOSE
        self.maybe_shut_down()

    def retire_when_idle(self) -> None:
        """Tell each worker to shut down whenever it is idle and no job waits."""
        self.retire_idle = True
        self.maybe_shut_down()

    def start_worker(self, slot: int) -> None:
        self.loop.watch(self.workers.start(slot))

    def warn_fallback(self) -> None:
        """Give the start method's fallback warning, once the pool's state is consistent."""
        notice = self.workers.take_fallback_warning()
        if notice is not None:
            warnings.warn(notice, RuntimeWarning, stacklevel=4)

    # --------------------------------------------------------------------------- the steps

    def pump(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` seconds for I/O and handle everything that arrived."""
        if self.terminated:
            return
        with self.loop.running():
            wait = _earliest(timeout, self.dispatcher.next_deadline(self.workers))
            arrivals = self.loop.wait(wait)
            for worker, messages in arrivals.messages:
                for message in messages:
                    self.handle(worker, message)
            for worker in arrivals.ended:
                self.account_for_exit(worker)
            self.expire_overdue()
            self.dispatch()
        self.warn_fallback()

    def handle(self, worker: WorkerProcess, message: wire.ToController) -> None:
        if isinstance(message, wire.Result):
            job = self.dispatcher.finished(worker, message.task_id, message.seconds)
            if not job.finished:
                self.deliver(job, *codec.load_outcome(message.ok, message.payload))
        elif isinstance(message, wire.Event):
            if self._hooks.on_event is not None:
                self.loop.guarded(_emit_event, self._hooks.on_event, worker.name, message.payload)
        elif isinstance(message, wire.Ready):
            self.dispatcher.started(worker)
        elif isinstance(message, wire.Retiring):
            worker.retiring = True
        elif isinstance(message, wire.SetupFailed):
            self.workers.disable(worker, codec.load_error(message.payload))
        else:
            raise TypeError(f"unknown message from worker {worker.name}: {message!r}")

    def account_for_exit(self, worker: WorkerProcess) -> None:
        """Fail or requeue an ended worker's jobs, maybe replace it, tell the hooks."""
        if not self.workers.is_current(worker):
            return
        messages, _ = worker.end.feed()
        for message in messages:
            self.handle(worker, message)
        self.loop.forget(worker)
        ended = self.workers.reap(worker)
        running = self.dispatcher.take_back(worker, crashed=not ended.expected)
        if (
            not self.terminated
            and (self.dispatcher.queue or not self.closing)
            and self.workers.may_replace(worker, ended)
        ):
            self.start_worker(worker.info.slot)
        if self._hooks.on_worker_exit is not None:
            self.loop.guarded(self._hooks.on_worker_exit, ended)
        if running is not None:
            self.deliver(running, False, WorkerLostError.died(ended))

    def expire_overdue(self) -> None:
        for worker, job in self.dispatcher.overdue(self.workers):
            job.finished = True
            self.workers.kill(worker)
            # An exit we caused, with its running task accounted for: the tasks queued behind
            # it go back to the queue instead of the next one being blamed for the kill.
            worker.retiring = True
            self.account_for_exit(worker)
            assert job.timeout is not None, "only a job with a timeout has a deadline"
            self.deliver(job, False, TaskTimeoutError.killed(worker.name, job.timeout))

    def dispatch(self) -> None:
        """Hand queued jobs to workers with room, then flush each socket once."""
        queue = self.dispatcher.queue
        if queue and not self.terminated and len(self.workers) < self.workers.slots:
            for slot in self.workers.empty_slots():
                self.start_worker(slot)
        if queue and not len(self.workers) and not self.terminated:
            why = self.workers.exhausted_reason()
            self.fail_queued(PoolExhaustedError(f"no worker is left: {why}"))
        if queue:
            for worker in self.dispatcher.assign(self.workers):
                self.loop.flush(worker)
        self.maybe_shut_down()

    def maybe_shut_down(self) -> None:
        if not (self.closing or self.retire_idle) or self.dispatcher.queue:
            return
        for worker in self.workers:
            if not worker.jobs and not worker.stopping:
                worker.stopping = True
                worker.end.send(wire.Shutdown())
                self.loop.flush(worker)

    # ---------------------------------------------------------------------------- lifecycle

    def reset(self, error: BaseException) -> None:
        """Cancel queued jobs, kill busy workers (replaced); unfinished jobs fail with ``error``."""
        if self.terminated:
            return
        queue = self.dispatcher.queue
        queued = list(queue)
        queue.clear()
        try:
            self.pump(0)  # notice workers that died since the last wait, so they are replaced
        finally:
            queue.extend(queued)
            busy = [worker for worker in self.workers if worker.jobs]
            for worker in busy:
                WorkerSet.kill(worker)
            for worker in busy:
                worker.retiring = True  # an exit asked for: replaced, and not counted as a crash
                self.account_for_exit(worker)
            self.fail_queued(error)

    def terminate(self, error: BaseException) -> None:
        """Kill every worker now; unfinished jobs fail with ``error``."""
        if self.terminated:
            return
        self.state, self.stopped = TERMINATE, True
        if os.getpid() != self.owner_pid:
            return  # a forked copy of the pool: its workers belong to the parent process
        workers = list(self.workers)
        for worker in workers:
            WorkerSet.kill(worker)
        for worker in workers:
            worker.stopping = True  # asked for: not counted against max_restarts
            self.loop.forget(worker)
            self.workers.reap(worker)
        self.loop.close()
        for worker in workers:
            for job in worker.jobs:
                if not job.finished:
                    self.deliver(job, False, error)
        self.fail_queued(error)

    def join(self, timeout: float | None) -> bool:
        """Wait until no job is queued and every worker has exited."""
        if not self.wait_until(
            lambda: not len(self.workers) and not self.dispatcher.queue, timeout
        ):
            return False
        if not self.stopped:
            self.stopped = True
            self.loop.close()
        return True

    # ------------------------------------------------------------------------------ helpers

    def _idle(self) -> bool:
        return not len(self.workers) and not self.dispatcher.queue

    def deliver(self, job: Job, ok: bool, value: Any) -> None:
        job.finished = True
        self.loop.guarded(job.on_result, ok, value)

    def fail_queued(self, error: BaseException) -> None:
        queue = self.dispatcher.queue
        while queue:
            self.deliver(queue.popleft(), False, error)
        self.loop.raise_deferred()

    def check_owner(self) -> None:
        if os.getpid() != self.owner_pid:
            raise RuntimeError(
                f"this Pool belongs to process {self.owner_pid} and reached process "
                f"{os.getpid()} through a fork, where it cannot work; create a new Pool here"
            )

    def submit_chunks(
        self,
        function: bytes,
        mode: int,
        items: list[Any],
        size: int,
        chunk_done: Callable[[int], Callable[[bool, Any], None]],
        timeout: float | None,
    ) -> None:
        self.dispatcher.enqueue_chunks(function, mode, items, size, chunk_done, timeout)
        self.dispatch()

    def check_submission(self, timeout: float | None) -> None:
        self.check_owner()
        if self.closing or self.terminated:
            raise ValueError("Pool not running")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")

    def poll(self) -> None:
        """Handle what has arrived without waiting (unless a callback is running now)."""
        if not self.loop.running_callbacks:
            self.pump(0)

    def wait_until(self, done: Callable[[], bool], timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        if not done():
            self.check_owner()
        while not done():
            if self.terminated:
                return done()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self.pump(remaining)
        return True


def _emit_event(on_event: Callable[[str, Any], None], name: str, payload: bytes) -> None:
    on_event(name, pickle.loads(payload))


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
