"""The controller's ledger of items: which are queued, running, held back, aborted or done.

Data flow, in the controller's thread::

    ItemStarted / ItemAborted (a fresh worker's announcement) ─▶ started(worker, item)
    the shared Board (a forked worker writes its slot; no message) ─▶ current(worker, slot)
    ItemFinished / SessionExit / a synthetic report  ─▶ done(item)
    a chunk task's result (worker, held item)         ─▶ hold(worker, item)
    the worker ended ─▶ ended(worker, slot): the item it ran (to report), the one it held
                        (to send out again), and how it stopped if it said so (ItemAborted)

An item is dispatched again only while it is ``QUEUED``: once a worker said it started it, or
the board shows it, the item's only outcomes are its own reports or a crash report, unless a
plugin turns that crash into a rerun (pytest-rerunfailures, through ``requeue``).  And since a
worker runs its chunk in order, an item of a dead worker's chunk that comes before one known to
have started had started too, even with no trace of it left (``after_death``).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import NamedTuple

from pytest_poolrun import clock, events
from pytest_poolrun.board import Board


class ItemState(Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


class Running(NamedTuple):
    item: int
    started: float  # clock.monotonic()


class EndedWorker(NamedTuple):
    """What the ledger knew of a worker when it ended."""

    running: int | None  # the item it was running and that has no outcome yet
    held: int | None  # the item it held back, not started: to send out again
    aborted: events.ItemAborted | None  # the worker's own word on how the item stopped


class ItemLedger:
    def __init__(self, items: int, board: Board) -> None:
        self.state = [ItemState.QUEUED] * items
        self._board = board
        self._running: dict[str, Running] = {}
        self._held: dict[str, int] = {}
        self._aborted: dict[str, events.ItemAborted] = {}
        # Which dispatch (a chunk handed to the pool) holds each item last: an item a plugin
        # sends out again (requeue) no longer belongs to the chunk it crashed in.
        self._dispatch = [0] * items
        self._dispatches = 0

    def started(self, worker: str, item: int) -> None:
        self._running[worker] = Running(item, clock.monotonic())
        self.state[item] = ItemState.RUNNING
        if self._held.get(worker) == item:
            del self._held[worker]

    def aborted(self, worker: str, event: events.ItemAborted) -> None:
        """Known before the failed chunk's callback: that item must not go out again."""
        self.started(worker, event.item)
        self._aborted[worker] = event

    def finished(self, worker: str, item: int) -> None:
        self._running.pop(worker, None)
        self.done(item)

    def done(self, item: int) -> None:
        self.state[item] = ItemState.DONE

    def is_done(self, item: int) -> bool:
        return self.state[item] is ItemState.DONE

    def requeue(self, item: int) -> None:
        """A plugin asked for the crashed ``item`` to run again (pytest_handlecrashitem)."""
        self.state[item] = ItemState.QUEUED

    def is_queued(self, item: int) -> bool:
        return self.state[item] is ItemState.QUEUED

    def unstarted(self, chunk: Iterable[int]) -> list[int]:
        return [item for item in chunk if self.is_queued(item)]

    def dispatched(self, chunk: Iterable[int]) -> int:
        """``chunk`` goes out to the pool; returns its dispatch number, for ``after_death``."""
        self._dispatches += 1
        for item in chunk:
            self._dispatch[item] = self._dispatches
        return self._dispatches

    def after_death(self, dispatch: int, chunk: list[int]) -> tuple[list[int], list[int]]:
        """A dead worker's chunk: (items that started but have no outcome, items never started).

        Call it once the dead worker's journal was read and its running item accounted for.
        Items sent out again since (a plugin's rerun of a crash) are no longer the chunk's.
        """
        chunk = [item for item in chunk if self._dispatch[item] == dispatch]
        started = [position for position, item in enumerate(chunk) if not self.is_queued(item)]
        if not started:
            return [], self.unstarted(chunk)
        last = started[-1]
        return self.unstarted(chunk[:last]), self.unstarted(chunk[last + 1 :])

    def hold(self, worker: str, item: int | None) -> None:
        """The worker's chunk is done and it holds ``item`` back until its next chunk."""
        if item is not None and self.is_queued(item):
            self._held[worker] = item

    def current(self, worker: str, slot: int, pid: int | None = None) -> Running | None:
        """What ``worker`` runs now, from its announcement or, for a forked one, the board
        (with ``pid``: only what that process marked there, not its replacement)."""
        if worker in self._running:
            return self._running[worker]
        on_board = self._board.running(slot, pid)
        return None if on_board is None else Running(*on_board)

    def ended(self, worker: str, slot: int, pid: int | None = None) -> EndedWorker:
        """Forget ``worker`` (process ``pid``); the item it ran is done from now on (its crash
        gets reported)."""
        current = self.current(worker, slot, pid)
        # The slot's next worker starts with a clean slate: a crashed worker leaves its item
        # marked, which would otherwise be blamed again when that next worker ends.  Only the
        # dead worker's mark goes: the replacement may already have marked an item of its own.
        self._board.clear(slot, pid)
        self._running.pop(worker, None)
        aborted = self._aborted.pop(worker, None)
        held = self._held.pop(worker, None)
        running = None
        if current is not None and self.state[current.item] is not ItemState.DONE:
            running = current.item
            self.done(running)
        if held is not None and not self.is_queued(held):
            held = None
        return EndedWorker(running, held, aborted)
