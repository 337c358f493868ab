"""``--pool-max-tests-per-worker`` and ``--pool-max-worker-rss``: replace a worker between tests.

Data flow, in a runner worker, between two items of ``itemrunner.run_chunk``::

    before the held item runs: Recycler.next_is_last(tests run)  ─┐ yes: that item runs as the
    after an item ran:         Recycler.memory_exceeded()         ─┤ worker's last (or, after a
                                                                   │ memory check, none does)
    itemrunner._retire ─▶ finish_worker (fixtures torn down, workeroutput sent)
                       ─▶ poolworker.retire_after_task: exit once the chunk's result is sent
                       ─▶ the chunk's result is a ``Retired`` record: the items not run
    controller: Retired ─▶ those items go back to the queue; the pool sees an expected exit
                (``Retiring``, as after ``maxtasksperchild`` tasks) and starts a new worker,
                whose fixtures are set up again as in any new worker

Why a count of tests and not the pool's ``maxtasksperchild``: a task of the runner is a chunk
of any length, and a worker holds a chunk's last item back until its next chunk (see
``itemrunner``); only the worker knows when a test is its N-th, and only it can run its held
item as its last (``nextitem=None``, so every fixture is torn down on the test where a serial
run of that sequence would tear it down).  What the pool's retirement gives is reused: the
``Retiring`` message, an exit that counts as expected (no restart is used up, no test is
blamed), and the replacement.

The count is known before a test runs, so the N-th test runs as the last and nothing is torn
down out of turn.  Memory is only known after a test: the test ran with the next one as its
``nextitem``, so the fixtures that next test shares are torn down between tests, outside any
test (as when a run stops early); an error there is printed by the worker.  The next test, and
the rest of the chunk, go back to the controller's queue: no test runs twice or is lost.
"""

from __future__ import annotations

import resource
import sys
from typing import NamedTuple

# /proc/self/status gives the resident size in kB.
_KB_PER_MB = 1024
_PEAK_UNITS_PER_MB = 1024 * 1024 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes / kB


class Retired(NamedTuple):
    """A chunk's result when its worker retires: the items it did not run, to send again."""

    worker: str
    returned: tuple[int, ...]


class Recycler:
    """The worker's retirement policy; ``None`` limits never retire it."""

    def __init__(self, max_tests: int | None, max_rss_mb: float | None) -> None:
        self.max_tests = max_tests
        self.max_rss_mb = max_rss_mb

    def next_is_last(self, tests_run: int) -> bool:
        """Whether the next test this worker runs must be its last."""
        return self.max_tests is not None and tests_run + 1 >= self.max_tests

    def memory_exceeded(self) -> bool:
        """Whether the worker's resident memory is past the limit (after a test)."""
        return self.max_rss_mb is not None and resident_mb() > self.max_rss_mb


def resident_mb() -> float:
    """This process's resident memory now (Linux), else its peak resident memory."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / _KB_PER_MB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / _PEAK_UNITS_PER_MB
