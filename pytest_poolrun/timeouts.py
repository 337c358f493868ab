"""``--pool-timeout``: find tests past their time, explain them, and have their workers killed.

Data flow, in the controller's thread, between two waits on the pool::

    until_next_deadline(workers) ─▶ how long the controller may wait (ItemLedger.current)
    expire(workers) ─▶ for each test past the timeout on a local worker:
                         PostMortem.dump_stacks + take_output ─▶ the timeout message, kept
                       ─▶ the workers to kill (the caller kills them through the pool)
    the killed worker's exit ─▶ take_message(worker) ─▶ the crash report's text

Behind an execnet gateway a worker's stacks and capture files are out of reach; the message
says so.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from pytest_poolrun.ledger import ItemLedger
from pytest_poolrun.postmortem import PostMortem
from pytest_poolrun.workerset import LiveWorker

# Never wake more often than this to check for overdue tests: a busy loop would cost CPU.
MIN_WAKEUP = 0.05


class Timeouts:
    def __init__(self, timeout: float | None, ledger: ItemLedger, postmortem: PostMortem) -> None:
        self.timeout = timeout
        self._ledger = ledger
        self._postmortem = postmortem
        self._messages: dict[str, str] = {}

    def until_next_deadline(self, workers: Sequence[LiveWorker]) -> float | None:
        if self.timeout is None:
            return None
        starts = [
            current.started
            for worker in workers
            if (current := self._ledger.current(worker.name, worker.slot)) is not None
        ]
        if not starts:
            return self.timeout
        return max(MIN_WAKEUP, min(starts) + self.timeout - time.monotonic())

    def expire(self, workers: Sequence[LiveWorker]) -> list[str]:
        """Explain each test that overran the timeout; return the names of workers to kill."""
        if self.timeout is None:
            return []
        now = time.monotonic()
        overdue = []
        for worker in workers:
            current = self._ledger.current(worker.name, worker.slot)
            if current is None or now - current.started < self.timeout:
                continue
            if worker.name in self._messages:
                continue  # already explained; its kill is under way
            if worker.remote:
                stacks = "(not available: the test ran behind an execnet gateway)"
                output = ""
            else:
                stacks = self._postmortem.dump_stacks(worker.name, worker.pid)
                output = self._postmortem.take_output(worker.name, worker.pid)
            self._messages[worker.name] = (
                f"Timeout: the test ran longer than --pool-timeout={self.timeout:g}s; "
                f"worker {worker.name} was killed and replaced.\n\nStacks of the worker when it "
                f"was stopped:\n{stacks}{output}"
            )
            overdue.append(worker.name)
        return overdue

    def take_message(self, worker: str) -> str | None:
        """The timeout message of ``worker``, if it was killed for a timeout."""
        return self._messages.pop(worker, None)
