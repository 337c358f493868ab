"""Forked test workers that are the main process to the tests they run, not ``multiprocessing``
children.

Data flow::

    PLAIN_FORK.Process(target, args, name).start()
        ─▶ the standard streams flushed, a pipe made, os.fork()
    child:  multiprocessing's record of this process's children, finalizers and counters
            started afresh, its after-fork hooks run, stdin read from /dev/null
            ─▶ target(*args)
            ─▶ multiprocessing's exit work (finalizers, its children joined), non-daemon
               threads joined, streams flushed ─▶ os._exit(exit code)
    parent: pid, sentinel (the pipe's read end: readable once the child's copy of the write
            end is closed) ─▶ join(timeout), exitcode, terminate()

**Why not ``multiprocessing.Process``.**  A test run by one would run below its bootstrap's
frames and see itself as a child: ``multiprocessing.current_process()`` named after the worker,
``parent_process()`` set, where serially and in xdist's workers it is the main process.
Libraries notice: freezegun ignores its frozen clock for any caller with a ``multiprocessing``
frame within reach, so in a forked worker some tests got the real time.  Here the child goes on
from the controller's own stack, whose frames are pytest's and the plugin's, and
``multiprocessing`` keeps the main process as the current one.

The child does what ``multiprocessing``'s bootstrap does for the process's state: its children,
finalizers and after-fork hooks are its own, stdin does not read the terminal, and its exit
waits for what its tests left running, as the interpreter's exit would.  The exit code is
``multiprocessing``'s: 0 when the target returns, a ``SystemExit``'s code, 1 after any other
exception (its traceback written to stderr), minus the signal's number when a signal ended the
child.
"""

from __future__ import annotations

import itertools
import multiprocessing.process
import multiprocessing.util
import os
import select
import signal
import sys
import threading
import traceback
import weakref
from collections.abc import Callable, Iterable
from typing import Any, cast

from pytest_poolrun import clock

# How often ``join(timeout)`` looks for an exit that the pipe cannot show: a process the
# worker forked holds a copy of the pipe's write end until it exits too.
JOIN_POLL = 0.05


class PlainForkProcess:
    """A child forked from this process that runs ``target(*args)`` and exits; the part of
    ``multiprocessing.Process``'s interface that ``workerset`` uses."""

    def __init__(
        self,
        target: Callable[..., object],
        args: Iterable[Any] = (),
        name: str = "worker",
        daemon: bool = False,  # accepted as multiprocessing's is; a worker is never a daemon
    ) -> None:
        self._target = target
        self._args = tuple(args)
        self.name = name
        self.pid: int | None = None
        self.sentinel = -1
        self.exitcode: int | None = None

    def start(self) -> None:
        if self.pid is not None:
            raise RuntimeError(f"{self.name} was started already")
        _flush_streams()  # what sits in a buffer now would be written again by the child
        readable, writable = os.pipe()
        pid = os.fork()
        if pid == 0:
            # The child runs here, not in a method of its own: its target starts as few frames
            # below the controller's as can be (a recursion test counts how deep it may go).
            code = 1
            try:
                try:
                    os.close(readable)
                    _start_process_state_afresh()
                    _read_stdin_from_devnull()
                    try:
                        self._target(*self._args)
                    finally:
                        cast(Any, multiprocessing.util)._exit_function()
                    code = 0
                except SystemExit as stop:
                    if stop.code is None or isinstance(stop.code, int):
                        code = stop.code or 0
                    else:
                        sys.stderr.write(f"{stop.code}\n")
                except BaseException:
                    sys.stderr.write(f"Process {self.name}:\n")
                    traceback.print_exc()
                finally:
                    cast(Any, threading)._shutdown()
                    _flush_streams()
            finally:
                # Never return into the controller's frames this child was forked from.
                os._exit(code)
        os.close(writable)
        self.pid, self.sentinel = pid, readable
        weakref.finalize(self, os.close, readable)

    def join(self, timeout: float | None = None) -> None:
        """Wait until the child has exited and take its exit code, at most ``timeout`` s."""
        if self.pid is None:
            raise RuntimeError(f"{self.name} was not started")
        if timeout is None:
            self._reap(block=True)
            return
        deadline = clock.monotonic() + timeout
        while not self._reap(block=False):
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                return
            readable, _, _ = select.select([self.sentinel], [], [], min(remaining, JOIN_POLL))
            if readable:
                # Every copy of the write end is closed: the child is exiting, if not gone.
                self._reap(block=True)
                return

    def terminate(self) -> None:
        if self.pid is not None and self.exitcode is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _reap(self, block: bool) -> bool:
        if self.exitcode is None and self.pid is not None:
            try:
                pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                # Reaped by other code of this process: its exit code is lost.
                return False
            if pid == self.pid:
                self.exitcode = os.waitstatus_to_exitcode(status)
        return self.exitcode is not None


class PlainForkContext:
    """What a pool takes as its ``context``: ``Process`` starts a ``PlainForkProcess``."""

    Process = PlainForkProcess

    @staticmethod
    def get_start_method() -> str:
        return "fork"


PLAIN_FORK = PlainForkContext()


def _start_process_state_afresh() -> None:
    """What ``multiprocessing`` keeps per process: the parent's children and finalizers are not
    the child's, and the hooks registered for a fork (its locks, its queues) are run."""
    process = cast(Any, multiprocessing.process)
    process._children.clear()  # the child's copy: the parent's set is untouched
    process._process_counter = itertools.count(1)
    util = cast(Any, multiprocessing.util)
    util._finalizer_registry.clear()
    util._run_after_forkers()


def _read_stdin_from_devnull() -> None:
    """Several workers must not read the one terminal; descriptor 0 is left as it is.

    A stream that is no file (pytest's capture guard, which makes a test's read an error as
    serially, or a StringIO) reads no terminal: it is kept.
    """
    if sys.stdin is not None:
        try:
            sys.stdin.fileno()
        except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError
            return
        try:
            sys.stdin.close()
        except (OSError, ValueError):
            pass
    try:
        sys.stdin = open(os.devnull, encoding="utf-8")  # open for the process's life
    except OSError:
        pass


def _flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass
