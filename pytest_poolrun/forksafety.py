"""May this process fork now?  Which threads stand in the way, and why the others do not.

Data flow, in the thread that is about to fork::

    plugin (start of a --pool run) ─┐
    workerset.WorkerSet.start ──────┴▶ fork_blockers() ─▶ [] : fork
                                                       └▶ ["thread 'X' (module.func)", …] : start
                                                          fresh workers instead, and say why
    workerset.WorkerSet.start, forking ─▶ quiet_fork(): Python 3.12+'s fork-with-threads
                                          DeprecationWarning, only while every thread is known idle

**Why fork at all with a thread running.**  A forked child holds a copy of every lock as it was
at the fork, but only the forking thread: a lock another thread held stays locked in the child
forever.  Forking is therefore refused while any thread runs, except threads this module knows
by their target function and finds parked in a call that holds no lock of the Python level:
pytest-rerunfailures, whenever pytest-xdist is installed, starts a status server thread in
``pytest_configure`` that waits in ``accept()``, and one thread per connected worker waiting in
``recv()``.  Neither holds a lock there (a socket call releases the GIL and takes none), and a
forked worker never touches the server's objects.  The locks of the ``threading`` module itself
are made anew in the child by CPython.  Any other thread, and any native thread not started by
Python (``/proc/self/task`` counts them), blocks the fork: the header of the run names it.
A known thread on its way to its parking call (a connection's thread, started as a forked
worker connects, while the next worker is launched) is waited for, ``THREAD_PARK_GRACE`` at
most, unless another thread blocks the fork anyway; then it blocks the fork as any other.

**Native threads that a fork ends.**  Some libraries end their thread pools before every fork
themselves (a ``pthread_atfork`` handler) and start them again at their next call, in the
parent and in the child: OpenBLAS, numpy's and scipy's, whose pool starts at numpy's import.
After ``os.fork()`` with numpy imported, both processes list one thread where the parent listed
two.  So where native threads stand in the way, the process first forks once, its child
leaving at once, which runs those handlers, and then counts again: what a fork ends is no
obstacle, what it leaves (MKL's, OpenMP's pools, a library's own threads) still is.  The child
does nothing but exit; if it has not within ``TRIAL_FORK_GRACE`` it is killed and the threads
count.  Importing numpy at collection then no longer makes a run spawn its workers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

from pytest_poolrun import clock

# How long a thread that Python has joined may take to leave the kernel's list (a few ms on a
# busy machine), and how often to look meanwhile.
THREAD_EXIT_GRACE = 0.05
THREAD_EXIT_POLL = 0.001
# How long the child of the fork that lets libraries end their pools may take to exit.
TRIAL_FORK_GRACE = 1.0
# How long a thread known to park idle may take to get there: pytest-rerunfailures starts a
# connection's thread as a forked worker connects, which may be while the next one is launched.
THREAD_PARK_GRACE = 0.5


@dataclass(frozen=True)
class IdleThread:
    """A thread known to hold no lock while its innermost Python frame is in ``waiting_in``."""

    target: str  # module and qualified name of the thread's target function
    waiting_in: frozenset[str]  # names of the innermost Python functions where it is parked


KNOWN_IDLE = (
    # pytest-rerunfailures' ServerStatusDB: the server waits for a worker to connect …
    IdleThread("pytest_rerunfailures.ServerStatusDB.run_server", frozenset({"accept"})),
    # … and a connection's thread waits for that worker's next request.
    IdleThread(
        "pytest_rerunfailures.ServerStatusDB.run_connection",
        # (_sock_recv in releases before 16.7, _sock_recv_bytes since)
        frozenset({"_sock_recv_bytes", "_sock_recv", "recv", "recv_into"}),
    ),
)


def platform_forks_safely() -> bool:
    """Fork exists, and the platform's libraries survive it (macOS's may crash in a child)."""
    return hasattr(os, "fork") and sys.platform != "darwin"


def fork_blockers() -> list[str]:
    """The threads that make a fork from this thread unsafe now, described for a user."""
    deadline = clock.monotonic() + THREAD_PARK_GRACE
    while True:
        python_threads = threading.enumerate()
        blockers, parking = _python_blockers(python_threads)
        if not parking or clock.monotonic() >= deadline:
            break
        time.sleep(THREAD_EXIT_POLL)
    native = _native_threads(len(python_threads))
    # Not while a Python thread stands in the way: the run spawns anyway, and the throwaway
    # child would inherit whatever locks that thread holds.
    if native and not blockers and _let_libraries_park_their_threads():
        native = _native_threads(len(python_threads))
    if native:
        blockers.append(f"{native} native thread{'s' if native != 1 else ''} not started by Python")
    return blockers


def _python_blockers(threads: list[threading.Thread]) -> tuple[list[str], bool]:
    """The threads among ``threads`` that are not parked idle, described; and whether each of
    them is a thread known to park (``KNOWN_IDLE``) that is not there yet, so that waiting may
    clear them all (any other thread blocks the fork however long one waits)."""
    blockers: list[str] = []
    parking = True
    frames = sys._current_frames()
    for thread in threads:
        if thread is threading.current_thread():
            continue
        target = _target_name(thread)
        if not _is_known_idle(target, frames.get(thread.ident or -1)):
            blockers.append(f"thread {thread.name!r} ({target or type(thread).__qualname__})")
            parking = parking and any(rule.target == target for rule in KNOWN_IDLE)
    return blockers, parking and bool(blockers)


def behind_execnet_gateway() -> bool:
    """Every other Python thread is an execnet gateway's receiver: this process is a worker
    behind a gateway (pytest-xdist's, or this runner's spawned and execnet workers), which
    ``fork_blockers`` never lets fork (the receiver is not idle while it handles a message).
    Native threads are not looked at: with the receiver running, no fork happens anyway."""
    me = threading.get_ident()
    others = [frame for ident, frame in sys._current_frames().items() if ident != me]
    return bool(others) and all(map(_in_execnet_receiver, others))


def _in_execnet_receiver(frame: FrameType | None) -> bool:
    while frame is not None:
        if (
            frame.f_code.co_name == "_thread_receiver"
            and frame.f_globals.get("__name__") == "execnet.gateway_base"
        ):
            return True
        frame = frame.f_back
    return False


def _let_libraries_park_their_threads() -> bool:
    """Fork once, the child leaving at once, so that libraries that end their thread pools
    before every fork (OpenBLAS) do it now, in this process too (see the module docstring).

    False if the child did not leave within ``TRIAL_FORK_GRACE`` (it is killed): then the
    threads are not known to be harmless to a child, and count as they are.
    """
    with quiet_fork():
        pid = os.fork()
    if pid == 0:
        os._exit(0)
    deadline = clock.monotonic() + TRIAL_FORK_GRACE
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if clock.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return False
        time.sleep(THREAD_EXIT_POLL)
    return True


@contextlib.contextmanager
def quiet_fork() -> Iterator[None]:
    """Fork here without Python 3.12+'s warning about threads, which ``fork_blockers`` vetted."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"This process .* is multi-threaded", category=DeprecationWarning
        )
        yield


def _target_name(thread: threading.Thread) -> str | None:
    target = getattr(thread, "_target", None)  # set by Thread(target=...); private but stable
    function = getattr(target, "__func__", target)
    name = getattr(function, "__qualname__", None)
    module = getattr(function, "__module__", None)
    return None if name is None else f"{module}.{name}"


def _is_known_idle(target: str | None, frame: FrameType | None) -> bool:
    if target is None or frame is None:
        return False
    return any(
        rule.target == target and frame.f_code.co_name in rule.waiting_in for rule in KNOWN_IDLE
    )


def _native_threads(python_threads: int) -> int:
    """Threads the kernel lists beyond Python's own (Linux); 0 where that cannot be known.

    A thread that Python has just joined lingers in the kernel's list for a moment while it
    finishes exiting, so a surplus counts only if it is still there after a short grace.
    """
    deadline = clock.monotonic() + THREAD_EXIT_GRACE
    while True:
        try:
            surplus = len(os.listdir("/proc/self/task")) - python_threads
        except OSError:
            return 0
        if surplus <= 0 or clock.monotonic() >= deadline:
            return max(0, surplus)
        time.sleep(THREAD_EXIT_POLL)
