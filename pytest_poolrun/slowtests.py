"""``--pool-slow``: name the tests still running past a threshold, and the unfinished ones.

Data flow, in the controller's thread, between two waits on the pool (as ``timeouts``)::

    until_next_notice(workers) ─▶ how long the controller may wait: until the next multiple of
                                  the threshold of some running test (ItemLedger.current)
    announce(workers) ─▶ one line per test that crossed a new multiple since the last look:
                         "SLOW: <nodeid> still running on gw1 after 120s"
    interrupted(workers) ─▶ the running tests, kept for the terminal summary (Ctrl-C, SIGTERM)
    pytest_terminal_summary ─▶ "unfinished tests (slowest first)" section

The controller knows, without any message, which item each worker runs and since when (the
board for forked workers, announcements for fresh ones), so notices cost the workers nothing;
the wait loop only wakes at the next multiple, never on a fixed tick.  Lines go through the
controller's terminal reporter, between progress lines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import pytest

from pytest_poolrun import clock
from pytest_poolrun.ledger import ItemLedger, Running
from pytest_poolrun.workerset import LiveWorker

# Never wake more often than this for a notice: a busy loop would cost CPU (as timeouts').
MIN_WAKEUP = 0.05
# How many unfinished tests the interrupted summary lists.
UNFINISHED_SHOWN = 10


class Unfinished(NamedTuple):
    nodeid: str
    worker: str
    seconds: float


class SlowNotices:
    """Tracks, per worker, which multiple of ``threshold`` its running test was last named at."""

    def __init__(
        self,
        threshold: float | None,
        ledger: ItemLedger,
        nodeid: Callable[[int], str],
        say: Callable[[str], None],
    ) -> None:
        self.threshold = threshold
        self._ledger = ledger
        self._nodeid = nodeid
        self._say = say
        # worker ─▶ (item, start time, multiples already announced)
        self._announced: dict[str, tuple[int, float, int]] = {}
        self.unfinished: list[Unfinished] = []

    def until_next_notice(self, workers: Sequence[LiveWorker]) -> float | None:
        if self.threshold is None:
            return None
        now = clock.monotonic()
        waits = []
        for worker in workers:
            current = self._ledger.current(worker.name, worker.slot)
            if current is None:
                continue
            # The first multiple not named yet: one just crossed since the last announce is
            # due now, not a threshold later (the test may end before then).
            due = current.started + (self._said(worker.name, current) + 1) * self.threshold
            waits.append(due - now)
        if not waits:
            return self.threshold  # a test that starts now is slow after that long at the least
        return max(MIN_WAKEUP, min(waits))

    def _said(self, worker: str, current: Running) -> int:
        """How many multiples of the threshold were announced for the test ``worker`` runs."""
        item, started, said = self._announced.get(worker, (current.item, current.started, 0))
        return said if (item, started) == (current.item, current.started) else 0

    def announce(self, workers: Sequence[LiveWorker]) -> None:
        """Say which tests crossed a new multiple of the threshold since the last call."""
        if self.threshold is None:
            return
        now = clock.monotonic()
        for worker in workers:
            current = self._ledger.current(worker.name, worker.slot)
            if current is None:
                self._announced.pop(worker.name, None)
                continue
            multiples = math.floor((now - current.started) / self.threshold)
            said = self._said(worker.name, current)
            if multiples > said:
                self._say(
                    f"SLOW: {self._nodeid(current.item)} still running on {worker.name} "
                    f"after {multiples * self.threshold:g}s"
                )
            self._announced[worker.name] = (current.item, current.started, max(said, multiples))

    def interrupted(
        self, workers: Sequence[LiveWorker], plugins: pytest.PytestPluginManager
    ) -> None:
        """Keep the tests running now, slowest first, for the summary of an interrupted run
        (this object then takes part in the summary as a plugin)."""
        now = clock.monotonic()
        running = [
            Unfinished(self._nodeid(current.item), worker.name, now - current.started)
            for worker in workers
            if (current := self._ledger.current(worker.name, worker.slot)) is not None
        ]
        self.unfinished = sorted(running, key=lambda entry: -entry.seconds)
        if self.unfinished and not plugins.is_registered(self):
            plugins.register(self, "poolrun-unfinished")

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.unfinished:
            return
        terminalreporter.write_sep("=", "unfinished tests when the run was interrupted")
        for entry in self.unfinished[:UNFINISHED_SHOWN]:
            terminalreporter.write_line(
                f"{entry.seconds:.1f}s {entry.nodeid} (on {entry.worker}, still running)"
            )
        hidden = len(self.unfinished) - UNFINISHED_SHOWN
        if hidden > 0:
            terminalreporter.write_line(f"({hidden} more)")


def earliest(*waits: float | None) -> float | None:
    """The shortest of the waits that are set (None: wait without a deadline)."""
    known = [wait for wait in waits if wait is not None]
    return min(known) if known else None
