"""A small board of shared memory between the controller and the workers it forks.

Data flow::

    controller: Board(slots) before forking ─ inherited by every forked worker (MAP_SHARED)
    worker slot k: set_running(k, item, start time) before each item, clear(k) after it
    controller:    running(k) when worker k dies or overruns --pool-timeout; request_stop()
    worker:        stop_requested() between items

Writing a slot costs no message and no system call, so a forked worker need not tell the
controller that an item starts: it reports finished items in batches (and in its results
journal, see ``itemrunner``), and the board still says which item a crashed worker was
running.  Workers started fresh (spawn, execnet) do not share it and announce each item
instead.  Each slot is written by one worker only; a reader may see a slot mid-update, which at
worst names the previous or the next item of that worker.
"""

from __future__ import annotations

import mmap
import struct

_STOP = struct.Struct("B")
# item index (-1: none), clock.monotonic() when it started, pid of the worker that wrote it
_SLOT = struct.Struct("qdq")


class Board:
    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._memory = mmap.mmap(-1, _STOP.size + _SLOT.size * max(slots, 1))
        for slot in range(slots):
            self.clear(slot)

    def _offset(self, slot: int) -> int:
        return _STOP.size + _SLOT.size * slot

    def request_stop(self) -> None:
        _STOP.pack_into(self._memory, 0, 1)

    def stop_requested(self) -> bool:
        return bool(_STOP.unpack_from(self._memory, 0)[0])

    def set_running(self, slot: int, item: int, started: float, pid: int = 0) -> None:
        if 0 <= slot < self.slots:
            _SLOT.pack_into(self._memory, self._offset(slot), item, started, pid)

    def clear(self, slot: int, pid: int | None = None) -> None:
        """Mark ``slot`` idle; with ``pid``, only if that process wrote what it holds."""
        if pid is None or self._writer(slot) == pid:
            self.set_running(slot, -1, 0.0)

    def running(self, slot: int, pid: int | None = None) -> tuple[int, float] | None:
        """(item index, start time) of what the worker in ``slot`` runs now, if anything.

        With ``pid``: only what that process wrote.  A slot's replacement worker may start an
        item before the controller hears that its predecessor ended, and that item is not the
        one the predecessor died under.
        """
        if not 0 <= slot < self.slots:
            return None
        item, started, writer = _SLOT.unpack_from(self._memory, self._offset(slot))
        if item < 0 or (pid is not None and writer != pid):
            return None
        return item, started

    def _writer(self, slot: int) -> int | None:
        if not 0 <= slot < self.slots:
            return None
        return int(_SLOT.unpack_from(self._memory, self._offset(slot))[2])
