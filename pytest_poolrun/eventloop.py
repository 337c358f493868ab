"""The pool's event loop: one selector over every worker's socket and exit descriptor.

Data flow (which thread: see ``waiting``; its users are ``manager`` and ``waiting``)::

    watch(worker) ─▶ selector: socket (read, and write while its outgoing buffer is not empty)
                               + exit descriptor (pidfd or sentinel)
    select(seconds)  ─▶ what became ready; the one call made without the pool's lock, by the
                        thread that drives the I/O, so that other threads may submit meanwhile
    collect(ready)   ─▶ Arrivals: complete messages per worker, in arrival order, and the workers
                        that ended (exit descriptor readable, or end-of-file on the socket)
    wake()           ─▶ any thread: makes a ``select`` in progress return now (a byte on a socket
                        pair the selector watches, the self-pipe of asyncio's call_soon_threadsafe)
    flush(worker)    ─▶ writes what the socket takes now; write interest only while bytes wait

The loop decodes but does not interpret.  ``Callbacks`` holds the rules for the code it leads to:
callbacks (result callbacks, the hooks) are queued while the pool's state changes under its lock
and run afterwards, unlocked, in the order they were queued; one that raises does not stop the
others, and the first exception is raised once all have run.
"""

from __future__ import annotations

import selectors
import socket
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple, cast

from pytest_poolrun.wire import ToController
from pytest_poolrun.workerset import WorkerProcess

# What a selector key's data says a readable descriptor is.
SOCKET, EXIT, WAKEUP = "socket", "exit", "wakeup"
# Bytes drained from the wake-up socket at a time (each wake-up writes one).
WAKEUP_DRAIN = 4096
# The longest single wait, in seconds; a longer timeout waits again (epoll takes at most 2**31
# ms, a lock at most threading.TIMEOUT_MAX: get(9999999) is a common way to wait for ever).
LONGEST_WAIT = 3600.0

Selected = list[tuple[selectors.SelectorKey, int]]


class Arrivals(NamedTuple):
    messages: list[tuple[WorkerProcess, list[ToController]]]
    ended: list[WorkerProcess]


class EventLoop:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._write_interest: set[int] = set()
        self._wake_in, self._wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        self._wake_out.setblocking(False)
        self._selector.register(self._wake_in, selectors.EVENT_READ, (None, WAKEUP))
        # Closed by close(), or when a dropped pool's loop is collected: the pool has warned
        # then, and its sockets must not warn again whenever the collector gets to them.  As
        # workerset's finalizers, these run no Python code of the pool, and not at exit (the
        # pools still running are terminated then, through this loop).
        self._closers = tuple(
            weakref.finalize(self, sock.close) for sock in (self._wake_in, self._wake_out)
        )
        for closer in self._closers:
            cast(Any, closer).atexit = False  # typeshed omits it on older Pythons

    def watch(self, worker: WorkerProcess) -> None:
        self._selector.register(worker.end.sock, selectors.EVENT_READ, (worker, SOCKET))
        self._selector.register(worker.exit_fd, selectors.EVENT_READ, (worker, EXIT))

    def forget(self, worker: WorkerProcess) -> None:
        for fd in (worker.end.fileno(), worker.exit_fd):
            try:
                self._selector.unregister(fd)
            except (KeyError, ValueError):
                pass
        self._write_interest.discard(id(worker))

    def close(self) -> None:
        self._selector.close()
        for closer in self._closers:
            closer()

    def wake(self) -> None:
        """Make a ``select`` in progress (or the next one) return at once; from any thread."""
        try:
            self._wake_out.send(b"\0")
        except OSError:
            pass  # a wake-up is already pending (the buffer is full), or the loop is closed

    def flush(self, worker: WorkerProcess) -> None:
        worker.end.flush()
        wants = worker.end.wants_write
        if wants == (id(worker) in self._write_interest) or worker.end.closed:
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if wants else 0)
        self._selector.modify(worker.end.sock, events, (worker, SOCKET))
        if wants:
            self._write_interest.add(id(worker))
        else:
            self._write_interest.discard(id(worker))

    def select(self, seconds: float | None) -> Selected:
        """Wait up to ``seconds`` for I/O (or a wake-up); the caller need not hold the lock."""
        return self._selector.select(None if seconds is None else min(seconds, LONGEST_WAIT))

    def collect(self, ready: Selected) -> Arrivals:
        """Flush writable sockets and read what arrived (under the pool's lock)."""
        arrivals = Arrivals([], [])
        for key, mask in ready:
            worker, what = key.data
            if what == WAKEUP:
                self._drain_wakeups()
            elif what == EXIT:
                if worker not in arrivals.ended:
                    arrivals.ended.append(worker)
            else:
                if mask & selectors.EVENT_WRITE:
                    self.flush(worker)
                if mask & selectors.EVENT_READ and not worker.end.closed:
                    messages, eof = worker.end.feed()
                    arrivals.messages.append((worker, messages))
                    if eof and worker not in arrivals.ended:
                        arrivals.ended.append(worker)
        return arrivals

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_in.recv(WAKEUP_DRAIN):
                pass
        except OSError:
            pass  # drained (BlockingIOError), or closed


class Callbacks:
    """Callbacks queued under the pool's lock, run after it is released, in queued order.

    A callback runs in whichever caller thread takes the batch: the thread driving the I/O for
    results and hooks, the calling thread for errors that ``terminate``, ``reset`` or
    ``cancel_queued`` give.  It may submit work; it must not wait on the pool if that thread
    drives the I/O (``IoToken.wait_until`` refuses that with ``RuntimeError``).
    """

    def __init__(self) -> None:
        self._pending: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(self, callback: Callable[..., object], *args: Any) -> None:
        self._pending.append((callback, args))

    def take(self) -> list[tuple[Callable[..., object], tuple[Any, ...]]]:
        batch = list(self._pending)
        self._pending.clear()
        return batch

    @staticmethod
    def run(batch: list[tuple[Callable[..., object], tuple[Any, ...]]]) -> None:
        """Run a batch; raise the first ``Exception`` a callback raised once all have run.

        An exception escaping half-way through a batch would lose the rest of it.
        """
        error: Exception | None = None
        for callback, args in batch:
            try:
                callback(*args)
            except Exception as exc:
                if error is None:
                    error = exc
        if error is not None:
            raise error
