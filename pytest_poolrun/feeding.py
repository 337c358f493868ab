"""The imap inputs: read in the caller's thread without the lock, enqueued as jobs under it.

Data flow, in the thread holding the I/O token (``waiting.py``), at the start of each pump::

    Manager.feed ─▶ Dispatcher.plan_feeding (under the lock): which Feeders to read, how many
      │             chunks each; those feeders are marked busy
      ▼
    Feeding.read(plan) ─▶ Feeder.read(count) for each (unlocked: the input's own code runs)
      │                   ─▶ Read: chunks, whether the input ended, the error it raised
      ▼  under the lock
    enqueue ─▶ Dispatcher.enqueue, one Job per chunk ─▶ its result goes to IMapIterator.chunk_done
      │        (results.py) under the chunk's index
      └─▶ end(feeder, error) once the input ended: the error (if any) takes the place of the next
          chunk, IMapIterator.set_length, the Feeder leaves Dispatcher.feeders

**Why a part of its own.**  Reading an input runs the caller's code (a generator may be slow,
or raise), so it happens without the lock, by one thread at a time per feeder; what it read is
handed to the dispatcher afterwards, unless the pool was reset or terminated meanwhile (the
feeder ended), in which case it is dropped.  ``dispatch`` decides how much to read; this module
does the reading and the bookkeeping of indices and ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from pytest_poolrun import codec
from pytest_poolrun.dispatch import Dispatcher, Feeder, Read
from pytest_poolrun.eventloop import Callbacks


class Feeding:
    """Reads the planned chunks of the imap inputs and turns them into jobs, or ends the input."""

    def __init__(self, dispatcher: Dispatcher, callbacks: Callbacks, lock: threading.RLock) -> None:
        self._dispatcher = dispatcher
        self._callbacks = callbacks
        self._lock = lock

    def read(self, plan: list[tuple[Feeder, int]], then: Callable[[], None]) -> bool:
        """Read ``plan`` unlocked, enqueue what was read, then call ``then`` under the lock.

        Returns whether an input ended (or failed) meanwhile.
        """
        reads: list[tuple[Feeder, Read]] = []
        try:
            for feeder, count in plan:
                reads.append((feeder, feeder.read(count)))
        finally:
            with self._lock:
                for feeder, _ in plan:
                    feeder.busy = False
                for feeder, read in reads:
                    self._enqueue(feeder, read)
                then()
        return any(feeder.ended for feeder, _ in plan)

    def _enqueue(self, feeder: Feeder, read: Read) -> None:
        if feeder.ended:
            return  # failed meanwhile (reset, terminate): what was read is dropped
        error: Exception | None = read.error
        for chunk in read.chunks:
            index = feeder.next_index
            try:
                self._dispatcher.enqueue(
                    feeder.function,
                    feeder.mode,
                    chunk,
                    {},
                    feeder.results.chunk_done(index),
                    feeder.timeout,
                    index * feeder.size,
                )
            except codec.SendError as exc:
                error = exc
                break
            feeder.next_index += 1
        if error is not None:
            self.end(feeder, error)
        elif read.ended:
            self.end(feeder, None)

    def end(self, feeder: Feeder, error: BaseException | None) -> None:
        """The input ended, or ``error`` takes the place of its next chunk and ends it."""
        if feeder.ended:
            return
        feeder.ended = True
        if error is not None:
            self._callbacks.add(feeder.results.chunk_done(feeder.next_index), False, error)
            feeder.next_index += 1
        feeder.results.set_length(feeder.next_index)
        if feeder in self._dispatcher.feeders:
            self._dispatcher.feeders.remove(feeder)

    def end_all(self, error: BaseException) -> None:
        """Fail every input not yet read to its end with ``error`` (under the lock)."""
        for feeder in list(self._dispatcher.feeders):
            self.end(feeder, error)
