"""The pool's manager: what happens when a caller waits, in four named steps.

Data flow, in a caller's thread, inside any call that waits (``get``, ``wait``, ``map``,
iterating ``imap``, ``join``, ``ready``), by the one caller thread that holds the I/O token
(``waiting.py``: which thread that is, and how the others wait)::

    pump ─▶ feed: Dispatcher.plan_feeding, then Feeding.read (feeding.py): the imap inputs that
      │           have room are read (unlocked) and their chunks enqueued
      ├─▶ EventLoop.select (unlocked) ─▶ under the lock: EventLoop.collect ─▶ handle(worker,
      │     message), by the message's type:
      │        Ready      ─▶ Dispatcher.started: the first job's timeout counts from now
      │        Result     ─▶ Dispatcher.finished ─▶ job.on_result queued (AsyncResult, callbacks)
      │        Event      ─▶ hooks.on_event(worker name, payload) queued
      │        Retiring   ─▶ the coming exit is expected (maxtasksperchild)
      │        SetupFailed ─▶ WorkerSet.disable: the slot is not refilled
      ├─▶ account_for_exit(worker) ─▶ WorkerSet.reap ─▶ WorkerExit
      │        unstarted jobs back to the queue, the running one fails with WorkerLostError,
      │        a replacement starts if the restart policy allows, hooks.on_worker_exit(exit)
      │        queued (the replacement takes no task until that hook has returned)
      ├─▶ expire_overdue ─▶ kill the worker of a job past its deadline ─▶ TaskTimeoutError
      ├─▶ IoToken.run_callbacks: the queued callbacks (unlocked), in order
      └─▶ dispatch ─▶ Dispatcher.assign, each touched socket flushed once; idle workers told
                      to shut down once the pool is closing

    Pool facade ─▶ submit / add_feeder / close / retire_when_idle: under the lock, from any
                   thread (they only write);  reset / terminate / join: take the token first

**Callbacks without threads.**  ``multiprocessing.Pool`` runs helper threads in the caller's
process; a process with threads must not fork (Python 3.12+ warns, and ``-W error`` suites then
fail), yet this pool forks replacement workers at any time.  So all I/O happens here, in a
caller's thread, when the caller waits; a submission only writes, then wakes the thread that
drives the I/O, if another (``IoToken.after_change``).

**The parts.**  This class owns the pool's state (``state``, ``stopped``) and the steps;
``IoToken`` (``waiting.py``) owns the lock and decides which caller thread runs ``pump``;
``Feeding`` (``feeding.py``) reads the imap inputs.  ``reset``, ``terminate`` and ``join`` take
the token before they touch the selector or the workers.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.pool import CLOSE, RUN, TERMINATE
from os import getpid  # bound once: a test may patch os.getpid
from typing import Any

from pytest_poolrun import codec, wire
from pytest_poolrun.dispatch import Dispatcher, Feeder, Job
from pytest_poolrun.eventloop import Callbacks, EventLoop
from pytest_poolrun.feeding import Feeding
from pytest_poolrun.poolerrors import PoolExhaustedError, TaskTimeoutError, WorkerLostError
from pytest_poolrun.waiting import IoToken
from pytest_poolrun.workerset import WorkerExit, WorkerProcess, WorkerSet


@dataclass(frozen=True)
class PoolHooks:
    """What a program built on the pool (the test runner) hears of beyond results.

    ``on_event(worker name, payload)`` receives what tasks ``emit``; ``on_worker_exit(exit)``
    hears of every worker that ended; both run in the caller thread driving the pool's loop,
    under the rules of callbacks.  The worker that takes an ended worker's slot gets no task
    until ``on_worker_exit`` has returned for its predecessor, so what a program keeps per slot
    (the runner's results journal) is the ended worker's alone while the hook reads it.
    ``finalizer`` runs in each worker when it is shut down in an orderly way (``close``,
    ``shutdown_idle``), not when it crashes or is killed.
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
        self.callbacks = Callbacks()
        self._hooks = hooks
        # multiprocessing.pool's RUN, CLOSE or TERMINATE: what the caller asked for.
        self.state = RUN
        self.retire_idle = False
        # Slots whose ended workers on_worker_exit has not heard of yet (how many, by slot).
        self._unannounced: dict[int, int] = {}
        # The loop is closed and no worker is left (terminate, or join after close).
        self.stopped = False
        self.token = IoToken(self.loop, self.callbacks, self.pump, lambda: self.stopped)
        self.lock = self.token.lock
        self.feeding = Feeding(dispatcher, self.callbacks, self.lock)

    def adopt(self, started: list[WorkerProcess]) -> None:
        """Watch the first workers (``WorkerSet.start_all``, called by the pool itself so that
        its workers start as few frames deep as can be: a test counts them)."""
        for worker in started:
            self.loop.watch(worker)
        try:
            self.warn_fallback()
        except BaseException:  # the warning is an error here (-W error): no worker may outlive it
            self.terminate(RuntimeError("the pool was not created"))
            raise

    @property
    def closing(self) -> bool:
        """Whether jobs are refused: ``close`` or ``terminate`` was called."""
        return self.state != RUN

    @property
    def terminated(self) -> bool:
        """Whether the pool has stopped: nothing more will arrive."""
        return self.stopped

    def start_worker(self, slot: int) -> None:
        worker = self.workers.start(slot)
        worker.awaiting_predecessor = slot in self._unannounced
        self.loop.watch(worker)

    def warn_fallback(self) -> None:
        """Give the start method's fallback warning (when the pool is created)."""
        notice = self.workers.take_fallback_warning()
        if notice is not None:
            warnings.warn(notice, RuntimeWarning, stacklevel=4)

    # ------------------------------------------------------------------ submitting (any thread)

    def submit(self, timeout: float | None, enqueue: Callable[[Dispatcher], None]) -> None:
        """Queue jobs (``enqueue`` runs under the lock) and hand them out."""
        with self.lock:
            self.check_submission(timeout)
            enqueue(self.dispatcher)
            self.dispatch()
        self.token.after_change()

    def add_feeder(self, feeder: Feeder) -> None:
        """Start an imap: its input is read as the workers need it, from the caller's next wait."""
        with self.lock:
            self.check_submission(feeder.timeout)
            self.dispatcher.feeders.append(feeder)
        self.token.after_change()

    def close(self) -> None:
        """Accept no more jobs; workers are told to shut down once the queue is empty."""
        with self.lock:
            if self.state == RUN:
                self.state = CLOSE
            self.maybe_shut_down()
        self.token.after_change()

    def retire_when_idle(self) -> None:
        """Tell each worker to shut down whenever it is idle and no job waits."""
        with self.lock:
            self.retire_idle = True
            self.maybe_shut_down()
        self.token.after_change()

    def cancel_queued(self, error: BaseException) -> None:
        with self.lock:
            self.fail_queued(error)
        self.token.after_change()

    # --------------------------------------------------------------------------- the steps

    def pump(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` seconds for I/O and handle everything that arrived.

        Called by the token's holder, without the lock.  The imap inputs are read first, so
        that workers have their next chunks before this thread blocks.
        """
        input_ended = bool(self.dispatcher.feeders) and self.feed()
        with self.lock:
            if self.stopped:
                return
            wait = _earliest(timeout, self.dispatcher.next_deadline(self.workers))
        # An input that ended (or failed) may be all an iterator waits for: no I/O will follow.
        ready = self.loop.select(0 if input_ended else wait)
        with self.lock:
            arrivals = self.loop.collect(ready)
            for worker, messages in arrivals.messages:
                for message in messages:
                    self.handle(worker, message)
            for worker in arrivals.ended:
                self.account_for_exit(worker)
            self.expire_overdue()
        # The callbacks run before the next jobs go out: one that cancels the queue (the test
        # runner stopping at a failure) stops what this batch would otherwise hand out.
        self.token.run_callbacks()
        with self.lock:
            if not self.stopped:
                self.dispatch()
        self.token.run_callbacks()

    def take_events(self) -> None:
        """Hand the events that have arrived from the workers to ``on_event``, without waiting;
        every other message, and every exit, is left unhandled: for a caller about to terminate
        the pool (the test runner after Ctrl-C, once its workers have stopped)."""
        taken = self.token.take_token()
        try:
            with self.lock:
                for worker in list(self.workers):
                    messages, _ = worker.end.feed()
                    for message in messages:
                        if isinstance(message, wire.Event):
                            self.handle(worker, message)
            self.token.run_callbacks()
        finally:
            if taken:
                self.token.release_token()

    def handle(self, worker: WorkerProcess, message: wire.ToController) -> None:
        if isinstance(message, wire.Result):
            job = self.dispatcher.finished(worker, message.task_id, message.seconds)
            if not job.finished:
                self.deliver(job, *codec.load_outcome(message.ok, message.payload))
        elif isinstance(message, wire.Event):
            if self._hooks.on_event is not None:
                self.callbacks.add(_emit_event, self._hooks.on_event, worker.name, message.payload)
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
        if self._hooks.on_worker_exit is not None:
            slot = worker.info.slot
            self._unannounced[slot] = self._unannounced.get(slot, 0) + 1
            self.callbacks.add(self._announce_exit, ended)
        if (
            not self.terminated
            and (self.work_waiting or not self.closing)
            and self.workers.may_replace(worker, ended)
        ):
            self.start_worker(worker.info.slot)
        if running is not None:
            self.deliver(running, False, WorkerLostError.died(ended))

    def _announce_exit(self, ended: WorkerExit) -> None:
        """Tell ``on_worker_exit`` (a callback); then the slot's next worker may take tasks."""
        assert self._hooks.on_worker_exit is not None
        try:
            self._hooks.on_worker_exit(ended)
        finally:
            with self.lock:
                left = self._unannounced.pop(ended.slot, 1) - 1
                if left:
                    self._unannounced[ended.slot] = left
                else:
                    for worker in self.workers:
                        if worker.info.slot == ended.slot:
                            worker.awaiting_predecessor = False
                    if not self.stopped:
                        self.dispatch()

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
        waiting = self.work_waiting
        if waiting and not self.terminated and len(self.workers) < self.workers.slots:
            for slot in self.workers.empty_slots():
                self.start_worker(slot)
        if waiting and not len(self.workers) and not self.terminated:
            why = self.workers.exhausted_reason()
            self.fail_queued(PoolExhaustedError(f"no worker is left: {why}"))
        if queue:
            for worker in self.dispatcher.assign(self.workers):
                self.loop.flush(worker)
        self.maybe_shut_down()

    def feed(self) -> bool:
        """Read the next chunks of the imap inputs that have room, and hand them out.

        The inputs' own code runs without the lock, so that a slow input does not hold up the
        other threads; a feeder is read by one thread at a time.  Returns whether an input
        ended (or failed) meanwhile.
        """
        with self.lock:
            if self.stopped:
                return False
            plan = self.dispatcher.plan_feeding(self.workers, self.workers.slots, self.closing)
        return bool(plan) and self.feeding.read(plan, self.dispatch)

    def maybe_shut_down(self) -> None:
        if not (self.closing or self.retire_idle) or self.work_waiting:
            return
        for worker in self.workers:
            if not worker.jobs and not worker.stopping:
                worker.stopping = True
                worker.end.send(wire.Shutdown())
                self.loop.flush(worker)

    @property
    def work_waiting(self) -> bool:
        """Jobs queued, or imap inputs not yet read to their end."""
        return bool(self.dispatcher.queue) or bool(self.dispatcher.feeders)

    # ---------------------------------------------------------------------------- lifecycle

    def reset(self, error: BaseException) -> None:
        """Cancel queued jobs, kill busy workers (replaced); unfinished jobs fail with ``error``."""
        taken = self.token.take_token()
        try:
            with self.lock:
                if self.terminated:
                    return
                queue = self.dispatcher.queue
                queued = list(queue)
                queue.clear()
                self.feeding.end_all(error)
            try:
                self.pump(0)  # notice workers that died since the last wait, so they are replaced
            finally:
                with self.lock:
                    queue.extend(queued)
                    busy = [worker for worker in self.workers if worker.jobs]
                    for worker in busy:
                        WorkerSet.kill(worker)
                    for worker in busy:
                        worker.retiring = True  # an exit asked for: replaced, not a crash
                        self.account_for_exit(worker)
                    self.fail_queued(error)
                self.token.run_callbacks()
        finally:
            if taken:
                self.token.release_token()

    def terminate(self, error: BaseException) -> None:
        """Kill every worker now; unfinished jobs fail with ``error``."""
        if getpid() != self.token.owner_pid:
            # A forked copy of the pool: its workers (and its lock) belong to the parent process.
            self.state, self.stopped = TERMINATE, True
            return
        taken = self.token.take_token()
        try:
            with self.lock:
                if self.terminated:
                    # Stopped on its own (joined after shutdown_idle): now terminated as asked,
                    # so that the pool is not taken for one left running when it is collected.
                    self.state = TERMINATE
                    return
                self.state, self.stopped = TERMINATE, True
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
            self.token.run_callbacks()
        finally:
            if taken:
                self.token.release_token()

    def join(self, timeout: float | None) -> bool:
        """Wait until no job is queued and every worker has exited."""
        if not self.token.wait_until(
            lambda: not len(self.workers) and not self.work_waiting, timeout
        ):
            return False
        taken = self.token.take_token()
        try:
            with self.lock:
                if not self.stopped:
                    self.stopped = True
                    self.loop.close()
        finally:
            if taken:
                self.token.release_token()
        return True

    # ------------------------------------------------------------------------------ helpers

    def deliver(self, job: Job, ok: bool, value: Any) -> None:
        job.finished = True
        self.callbacks.add(job.on_result, ok, value)

    def fail_queued(self, error: BaseException) -> None:
        queue = self.dispatcher.queue
        while queue:
            self.deliver(queue.popleft(), False, error)
        self.feeding.end_all(error)

    def check_submission(self, timeout: float | None) -> None:
        self.token.check_owner()
        if self.closing or self.terminated:
            raise ValueError("Pool not running")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")


def _emit_event(on_event: Callable[[str, Any], None], name: str, payload: bytes) -> None:
    on_event(name, pickle.loads(payload))


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
