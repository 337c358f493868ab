"""The pool's event loop: one selector over every worker's socket and exit descriptor.

Data flow, in the pool's (the caller's) thread::

    watch(worker) ─▶ selector: socket (read, and write while its outgoing buffer is not empty)
                               + exit descriptor (pidfd or sentinel)
    wait(seconds) ─▶ Arrivals: complete messages per worker, in arrival order, and the workers
                     that ended (exit descriptor readable, or end-of-file on the socket)
    flush(worker) ─▶ writes what the socket takes now; write interest only while bytes wait

The loop decodes but does not interpret: the manager handles what ``wait`` returns inside
``running()``, which refuses re-entry (a callback that waits on the pool would re-enter it) and,
once the batch is handled, raises the first exception a callback raised (``guarded`` keeps it,
so that one failing callback does not lose the rest of a batch).
"""

from __future__ import annotations

import selectors
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from pytest_poolrun.wire import ToController
from pytest_poolrun.workerset import WorkerProcess

# What a selector key's data says a readable descriptor is.
SOCKET, EXIT = "socket", "exit"


class Arrivals(NamedTuple):
    messages: list[tuple[WorkerProcess, list[ToController]]]
    ended: list[WorkerProcess]


class EventLoop:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._write_interest: set[int] = set()
        self._running = False
        self._callback_error: Exception | None = None

    @property
    def running_callbacks(self) -> bool:
        """Whether the caller is inside ``running()``, that is, inside a callback."""
        return self._running

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

    def wait(self, seconds: float | None) -> Arrivals:
        """Wait up to ``seconds`` for I/O; flush writable sockets, read what arrived."""
        watching = bool(self._selector.get_map())
        ready = self._selector.select(seconds) if watching else []
        if not watching and seconds:
            time.sleep(seconds)
        arrivals = Arrivals([], [])
        for key, mask in ready:
            worker, what = key.data
            if what == EXIT:
                if worker not in arrivals.ended:
                    arrivals.ended.append(worker)
                continue
            if mask & selectors.EVENT_WRITE:
                self.flush(worker)
            if mask & selectors.EVENT_READ and not worker.end.closed:
                messages, eof = worker.end.feed()
                arrivals.messages.append((worker, messages))
                if eof and worker not in arrivals.ended:
                    arrivals.ended.append(worker)
        return arrivals

    @contextmanager
    def running(self) -> Iterator[None]:
        """Handle a batch: no re-entry, and a callback's exception raised once it is done."""
        if self._running:
            raise RuntimeError(
                "a callback waited for a pool result: callbacks run inside the pool's event "
                "loop, so they must return without waiting; collect results after the call "
                "that ran the callback has returned"
            )
        self._running = True
        try:
            yield
        finally:
            self._running = False
        self.raise_deferred()

    def guarded(self, callback: Callable[..., object], *args: Any) -> None:
        """Run a callback; keep its exception for ``raise_deferred`` instead of unwinding.

        An exception escaping half-way through a batch of messages would lose the rest of them.
        """
        try:
            callback(*args)
        except Exception as exc:
            if self._callback_error is None:
                self._callback_error = exc

    def raise_deferred(self) -> None:
        """Raise the first exception a callback raised, once the loop is consistent again."""
        error = self._callback_error
        if error is not None and not self._running:
            self._callback_error = None
            raise error
