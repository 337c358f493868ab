"""``--pool-timeout``: find tests past their time, explain them, and have their workers killed.

Data flow, in the controller's thread, between two waits on the pool::

    until_next_deadline(workers) ─▶ how long the controller may wait (ItemLedger.current)
    expire(workers) ─▶ for each test past the timeout on a local worker:
                         PostMortem.dump_stacks; the test still running? ─▶ take_output
                         ─▶ Overdue(item, message), kept
                       ─▶ the workers to kill (the caller kills them through the pool)
    the killed worker's exit ─▶ take(worker) ─▶ the crash report's text, for that item only

Behind an execnet gateway a worker's stacks and capture files are out of reach; the message
says so.

**Blame.**  The stack dump takes up to ``DUMP_WAIT``; the overdue test may end meanwhile (its
result is then in the worker's journal) and the next one start.  So ``expire`` looks at the
board again after the dump and kills only if the same test (same item, same start) still runs,
and the timeout message belongs to that item: it is never pinned on whichever test the worker
ran when it died.

**Range.**  ``--pool-timeout`` takes ``MIN_TIMEOUT`` to ``MAX_TIMEOUT`` seconds (the plugin
rejects the rest): the loop checks for overdue tests at most every ``MIN_WAKEUP``, and its wait
goes to ``epoll``, which takes at most 2**31 - 1 milliseconds (about 24.8 days).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from pytest_poolrun import clock

if TYPE_CHECKING:  # the plugin reads this module's range at start-up, before any run
    from pytest_poolrun.ledger import ItemLedger
    from pytest_poolrun.postmortem import PostMortem
    from pytest_poolrun.workerset import LiveWorker

# Never wake more often than this to check for overdue tests: a busy loop would cost CPU.
MIN_WAKEUP = 0.05
# The --pool-timeout values the loop handles (see the docstring): a shorter timeout could not
# be checked in time, a longer wait would overflow the selector.
MIN_TIMEOUT = MIN_WAKEUP
MAX_TIMEOUT = 1_000_000.0  # about 11.6 days


class Overdue(NamedTuple):
    """A test that overran the timeout, and what its report will say."""

    item: int
    message: str


class Timeouts:
    def __init__(self, timeout: float | None, ledger: ItemLedger, postmortem: PostMortem) -> None:
        self.timeout = timeout
        self._ledger = ledger
        self._postmortem = postmortem
        self._overdue: dict[str, Overdue] = {}

    def until_next_deadline(self, workers: Sequence[LiveWorker]) -> float | None:
        if self.timeout is None:
            return None
        starts = [
            current.started
            for worker in workers
            if (current := self._ledger.current(worker.name, worker.slot)) is not None
        ]
        wait = self.timeout if not starts else min(starts) + self.timeout - clock.monotonic()
        return min(max(MIN_WAKEUP, wait), MAX_TIMEOUT)

    def expire(self, workers: Sequence[LiveWorker]) -> list[str]:
        """Explain each test that overran the timeout; return the names of workers to kill."""
        if self.timeout is None:
            return []
        now = clock.monotonic()
        overdue = []
        for worker in workers:
            current = self._ledger.current(worker.name, worker.slot)
            if current is None or now - current.started < self.timeout:
                continue
            if worker.name in self._overdue:
                continue  # already explained; its kill is under way
            if worker.remote:
                stacks = "(not available: the test ran behind an execnet gateway)"
                output = ""
            else:
                stacks = self._postmortem.dump_stacks(worker.slot, worker.pid)
                if self._ledger.current(worker.name, worker.slot) != current:
                    continue  # it ended while its stacks were awaited: its result stands
                output = self._postmortem.take_output(worker.name, worker.pid)
            message = (
                f"Timeout: the test ran longer than --pool-timeout={self.timeout:g}s; "
                f"worker {worker.name} was killed and replaced.\n\nStacks of the worker when it "
                f"was stopped:\n{stacks}{output}"
            )
            self._overdue[worker.name] = Overdue(current.item, message)
            overdue.append(worker.name)
        return overdue

    def take(self, worker: str) -> Overdue | None:
        """The overdue test ``worker`` was killed for, if it was killed for a timeout."""
        return self._overdue.pop(worker, None)
