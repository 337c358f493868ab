"""Ctrl-C in a parallel run: each worker's test interrupted and its fixtures torn down, as serially.

Data flow::

    controller: Ctrl-C (or SIGTERM) ─▶ stop_workers(pids): STOP_SIGNAL to each local worker,
        then a wait (at most STOP_GRACE) until they have exited; the pool kills what is left
        (a spawned worker's bridge passes the signal on to it, and ends when it ends: gateway)
    worker: on_stop_signal
        ─▶ a test running (``in_test``, set by itemrunner around pytest's protocol):
           KeyboardInterrupt in it ─▶ itemrunner reports it, tears every fixture down, exits
        ─▶ none: every fixture torn down now (``install``'s teardown), and the worker exits

**Why.**  A serial run's Ctrl-C lands in the running test; pytest then ends the session, and its
``pytest_sessionfinish`` tears down every fixture still set up: session fixtures stop servers,
drop databases and remove containers.  The signal reaches the controller only (each worker leads
a process group of its own), and killing the workers outright skipped all of that.  A second
Ctrl-C while the workers tear down stops the wait, and the pool kills them at once.

**Why a signal of its own.**  The worker decides where the interrupt lands: in the test, or
nowhere while it is between tests (the handler tears down and exits), never in the middle of
the worker's own messages.  SIGINT would reach a handler a test installed for itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

from pytest_poolrun import clock

# A real-time signal next to the stack dumps' (workersetup.DUMP_SIGNAL); none where there are no
# real-time signals or no way to wait for a child without reaping it: the workers are killed.
STOP_SIGNAL: int | None = (
    signal.SIGRTMIN + 5 if hasattr(signal, "SIGRTMIN") and hasattr(os, "waitid") else None
)
# How long the controller waits for its workers' teardown after Ctrl-C, and how often it looks.
STOP_GRACE = 10.0
STOP_POLL = 0.01
# A worker's exit code once it has torn down after the stop signal (pytest's INTERRUPTED).
STOPPED_EXIT_CODE = 2


class WorkerStop:
    """The worker's state the handler reads (one per process)."""

    in_test = False  # pytest's protocol runs an item: the interrupt lands in it
    finishing = False  # every fixture is being torn down already: nothing more to do
    teardown: Callable[[], None] | None = None


def install(teardown: Callable[[], None]) -> None:
    """In a worker: tear down with ``teardown`` and exit on STOP_SIGNAL (see on_stop_signal)."""
    if STOP_SIGNAL is None or threading.current_thread() is not threading.main_thread():
        return
    # A fresh state: a worker forked by a run inside a test (pytester) inherits that test's.
    WorkerStop.in_test = WorkerStop.finishing = False
    WorkerStop.teardown = teardown
    signal.signal(STOP_SIGNAL, on_stop_signal)
    # A spawned worker starts with the signal blocked (held_in_new_threads, in its bridge): its
    # execnet threads keep it so, and this thread takes it.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {STOP_SIGNAL})


@contextlib.contextmanager
def held_in_new_threads() -> Iterator[None]:
    """Threads started inside keep STOP_SIGNAL blocked, so that it reaches this thread alone:
    a signal that lands in another thread would wait for this one's next bytecode, and a thread
    blocked in a read runs none.  Processes started inside inherit the block too (``install``
    lifts it in the thread that handles the signal)."""
    if STOP_SIGNAL is None:
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {STOP_SIGNAL})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {STOP_SIGNAL})


def on_stop_signal(signum: int, frame: FrameType | None) -> None:
    # Hidden where the interrupt is placed (interruption): it lands on the test's line, as
    # Python's own handler of a serial run's Ctrl-C leaves no frame of its own.
    __tracebackhide__ = True
    if WorkerStop.in_test:
        raise KeyboardInterrupt  # as a serial run's Ctrl-C: in the test
    if WorkerStop.finishing:
        return
    WorkerStop.finishing = True
    try:
        if WorkerStop.teardown is not None:
            WorkerStop.teardown()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(STOPPED_EXIT_CODE)


def stop_workers(pids: list[int], grace: float = STOP_GRACE) -> list[int]:
    """Send STOP_SIGNAL to ``pids`` (this process's children) and wait until they have exited,
    at most ``grace`` seconds; return those still running.  They are not reaped: their pool
    does that."""
    if STOP_SIGNAL is None:
        return list(pids)
    running = []
    for pid in pids:
        try:
            os.kill(pid, STOP_SIGNAL)
        except ProcessLookupError:
            continue
        running.append(pid)
    deadline = clock.monotonic() + grace
    while running:
        running = [pid for pid in running if _running(pid)]
        if not running or clock.monotonic() >= deadline:
            break
        time.sleep(STOP_POLL)
    return running


def _running(pid: int) -> bool:
    try:
        exited = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return exited is None
