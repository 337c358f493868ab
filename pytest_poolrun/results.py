"""The caller's handles on submitted work: ``AsyncResult``, ``MapResult``, ``IMapIterator``.

Data flow, in the caller threads::

    Pool.apply_async ─▶ AsyncResult ◀── on_result(ok, value), called by the manager's loop
    Pool.map_async   ─▶ MapResult   ◀── one chunk_done(index) per chunk; complete when all are
    Pool.imap        ─▶ IMapIterator ◀── one chunk_done(index) per chunk, as its input is read
                                         (dispatch.Feeder); set_length once the input ended;
                                         yields in order (or in arrival order, unordered)
    get / wait / ready / next ─▶ IoToken.wait_until or poll (waiting.py): the pool's loop runs
                                 meanwhile

Any thread may wait on any result.  ``on_result`` runs in one thread at a time (the one driving
the pool's I/O), unlocked; a result counts as ready only once its callback has returned.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from pytest_poolrun.poolerrors import PoolTerminatedError

T = TypeVar("T")


class Waiter(Protocol):
    """What a result needs of the pool: to run its loop while the caller waits."""

    @property
    def terminated(self) -> bool: ...

    def wait_until(self, done: Callable[[], bool], timeout: float | None) -> bool: ...

    def poll(self) -> None: ...


def _terminated_error() -> PoolTerminatedError:
    return PoolTerminatedError("the pool was terminated before this result arrived")


class AsyncResult(Generic[T]):
    """The future outcome of one ``apply_async`` (or, as ``MapResult``, of a whole map).

    ``callback`` and ``error_callback`` run in a caller's thread: the one whose pool call is
    driving the pool's I/O when the result arrives.  They may submit work; they must not wait on
    the pool themselves (that raises ``RuntimeError``); an exception they raise is re-raised by
    that pool call.  ``ready()`` and ``get()`` see the result only once its callback returned.
    """

    def __init__(
        self,
        waiter: Waiter,
        callback: Callable[[Any], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> None:
        self._waiter = waiter
        self._callback = callback
        self._error_callback = error_callback
        self._settled = False
        self._done = False
        self._ok = False
        self._value: Any = None

    def on_result(self, ok: bool, value: Any) -> None:
        """The outcome arrived (called by the pool's loop): keep it, run the callback."""
        if self._settled:
            return
        self._settled, self._ok, self._value = True, ok, value
        try:
            if ok and self._callback is not None:
                self._callback(value)
            if not ok and self._error_callback is not None:
                self._error_callback(value)
        finally:
            self._done = True

    def ready(self) -> bool:
        if not self._done:
            self._waiter.poll()
        return self._done

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._ok

    def wait(self, timeout: float | None = None) -> None:
        self._waiter.wait_until(lambda: self._done, timeout)

    def get(self, timeout: float | None = None) -> T:
        self.wait(timeout)
        if not self._done:
            if self._waiter.terminated:
                raise _terminated_error()
            raise multiprocessing.TimeoutError
        if self._ok:
            return self._value  # type: ignore[no-any-return]
        raise self._value


class MapResult(AsyncResult[list[T]]):
    """A map's outcome: its chunks' lists joined in order, or the first chunk's error."""

    def __init__(
        self,
        waiter: Waiter,
        chunks: int,
        callback: Callable[[list[T]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> None:
        super().__init__(waiter, callback, error_callback)
        self._parts: list[list[T] | None] = [None] * chunks
        self._missing = chunks
        if chunks == 0:
            self.on_result(True, [])

    def chunk_done(self, index: int) -> Callable[[bool, Any], None]:
        """The ``on_result`` of chunk ``index``."""
        return partial(self._chunk_arrived, index)

    def _chunk_arrived(self, index: int, ok: bool, value: Any) -> None:
        if self._settled:
            return
        if not ok:
            self.on_result(False, value)
            return
        self._parts[index] = value
        self._missing -= 1
        if self._missing == 0:
            self.on_result(True, [item for part in self._parts for item in part or ()])


class IMapIterator(Iterator[T]):
    """Iterates over an ``imap``'s results as their chunks arrive; ``next(timeout)`` as well.

    Ordered, it yields chunk 0's items first, then chunk 1's…; unordered, whole chunks in the
    order they arrive.  A chunk that failed raises its error when its turn comes; so does an
    error of the input, in place of the chunk being read when it was raised.  The input is read
    as the workers need it (``dispatch.Feeder``); its length is known once it has ended.
    """

    def __init__(self, waiter: Waiter, ordered: bool) -> None:
        self._waiter = waiter
        self._ordered = ordered
        self._length: int | None = None
        self._arrived: dict[int, tuple[bool, Any]] = {}
        self._order: deque[int] = deque()
        # Chunks taken by the caller (the next one's index, when ordered).
        self.taken = 0
        self._current: Iterator[T] = iter(())

    @property
    def delivered(self) -> int:
        """Chunks whose results arrived (taken by the caller or not)."""
        return self.taken + len(self._arrived)

    def chunk_done(self, index: int) -> Callable[[bool, Any], None]:
        """The ``on_result`` of chunk ``index``."""
        return partial(self._chunk_arrived, index)

    def _chunk_arrived(self, index: int, ok: bool, value: Any) -> None:
        self._arrived[index] = (ok, value)
        if not self._ordered:
            self._order.append(index)

    def set_length(self, chunks: int) -> None:
        """The input has ended after ``chunks`` chunks (counting one its error replaced)."""
        self._length = chunks

    def __iter__(self) -> IMapIterator[T]:
        return self

    def __next__(self, timeout: float | None = None) -> T:
        # As multiprocessing's (whose __next__ is its next): iterator.__next__(timeout) works.
        return self.next(timeout)

    def next(self, timeout: float | None = None) -> T:
        """The next result; ``multiprocessing.TimeoutError`` if none arrives within ``timeout``."""
        while True:
            for value in self._current:
                return value
            self._current = iter(self._next_chunk(timeout))

    def _ended(self) -> bool:
        return self._length is not None and self.taken >= self._length

    def _next_ready(self) -> bool:
        if self._ordered:
            return self.taken in self._arrived or self._ended()
        return bool(self._order) or self._ended()

    def _next_chunk(self, timeout: float | None) -> list[T]:
        if not self._waiter.wait_until(self._next_ready, timeout):
            if self._waiter.terminated:
                raise _terminated_error()
            raise multiprocessing.TimeoutError
        if self._ended():
            raise StopIteration
        index = self.taken if self._ordered else self._order.popleft()
        ok, value = self._arrived.pop(index)
        self.taken += 1
        if not ok:
            raise value
        chunk: list[T] = value
        return chunk
