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

**OpenBLAS's pool** (numpy's, scipy's) is the one kind of native thread let through.  OpenBLAS
ends its pool before every fork itself (a ``pthread_atfork`` handler) and starts it again at
its next call, in the parent and in the child: after ``os.fork()`` with numpy imported, both
processes list one thread, where the parent listed two before.  So as many native threads as
the loaded OpenBLAS libraries' pools hold (their thread count less one) are not counted.
Importing numpy at collection then no longer makes a run spawn its workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

# How long a thread that Python has joined may take to leave the kernel's list (a few ms on a
# busy machine), and how often to look meanwhile.
THREAD_EXIT_GRACE = 0.05
THREAD_EXIT_POLL = 0.001


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
    blockers: list[str] = []
    frames = sys._current_frames()
    python_threads = threading.enumerate()
    for thread in python_threads:
        if thread is threading.current_thread():
            continue
        target = _target_name(thread)
        if not _is_known_idle(target, frames.get(thread.ident or -1)):
            blockers.append(f"thread {thread.name!r} ({target or type(thread).__qualname__})")
    native = _native_threads(len(python_threads))
    if native:
        native = max(0, native - _openblas_pool_threads())
    if native:
        blockers.append(f"{native} native thread{'s' if native != 1 else ''} not started by Python")
    return blockers


# What OpenBLAS calls the function that tells its thread count, by build: plain, 64-bit
# integers, and the builds bundled in numpy's and scipy's wheels.
_OPENBLAS_THREAD_COUNTS = (
    "openblas_get_num_threads",
    "openblas_get_num_threads64_",
    "scipy_openblas_get_num_threads64_",
    "scipy_openblas_get_num_threads",
)


def _openblas_pool_threads() -> int:
    """How many threads the pools of the OpenBLAS libraries loaded here hold (see the module
    docstring): each keeps one thread fewer than its thread count, the caller doing a share."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split(maxsplit=5)[-1].strip() for line in maps if "openblas" in line}
    except OSError:
        return 0
    pool = 0
    for path in sorted(paths):
        try:
            # Only one already loaded (RTLD_NOLOAD): nothing is loaded or initialised here.
            library = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_LOCAL)
        except OSError:
            continue
        count = next(
            (getattr(library, name) for name in _OPENBLAS_THREAD_COUNTS if hasattr(library, name)),
            None,
        )
        if count is not None:
            count.restype = ctypes.c_int
            pool += max(0, count() - 1)
    return pool


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
    deadline = time.monotonic() + THREAD_EXIT_GRACE
    while True:
        try:
            surplus = len(os.listdir("/proc/self/task")) - python_threads
        except OSError:
            return 0
        if surplus <= 0 or time.monotonic() >= deadline:
            return max(0, surplus)
        time.sleep(THREAD_EXIT_POLL)
