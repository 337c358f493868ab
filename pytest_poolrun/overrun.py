"""``--pool-timeout`` in a forked worker: a test that ended while its stacks were taken fails.

Data flow, in a forked worker of a run with ``--pool-timeout``::

    the controller finds the test overdue ─▶ DUMP_SIGNAL ─▶ faulthandler writes the worker's
        stacks (in C, at once), then calls the handler it chains to: OverrunMark.on_dump (in
        Python, at the main thread's next bytecode) ─▶ the item the board shows running here,
        if it has run for the timeout ─▶ marked
    the marked item's next report (pytest_runtest_makereport, a wrapper) ─▶ failed, with the
    timeout's message; the mark is gone

**Why.**  The signal interrupts a system call that the kernel does not restart after a
handler (``sleep``, ``poll`` in C code, unlike Python's own calls, which resume): the test may
then end at once.  The controller, finding it ended when the stacks are in, does not kill the
worker, and the test's own verdict stood, a pass, though it ran past the timeout.  A test still
running when the stacks are in is killed and reported by the controller, as before; its mark
goes with the worker.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from types import FrameType

import pytest

from pytest_poolrun import clock


class OverrunMark:
    """Marks the item running past ``timeout`` when the stacks are taken (``on_dump``), and
    fails that item's next report; a plugin of the worker.

    ``running()``: (item index, start time) of the item the worker runs now, or None.
    """

    def __init__(
        self,
        timeout: float,
        items: list[pytest.Item],
        running: Callable[[], tuple[int, float] | None],
    ) -> None:
        self._timeout = timeout
        self._items = items
        self._running = running
        self._marked: pytest.Item | None = None

    def on_dump(self, signum: int, frame: FrameType | None) -> None:
        running = self._running()
        if running is not None and clock.monotonic() - running[1] >= self._timeout:
            self._marked = self._items[running[0]]

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if item is self._marked:
            self._marked = None
            message = (
                f"Timeout: the test ran longer than --pool-timeout={self._timeout:g}s; it ended "
                "while its worker's stacks were being taken."
            )
            if report.failed and report.longrepr is not None:
                message += f"\n\n{report.longrepr}"
            report.outcome = "failed"
            report.longrepr = message
        return report
