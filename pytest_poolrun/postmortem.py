"""What a dead or overdue worker left behind: fault files, stack dumps and capture files.

Data flow, in the controller's thread (Linux for the capture files: they are read through
``/proc``)::

    forked worker ─ CaptureFiles(pid, fds) ─▶ keep_capture_files: opened now, so that they stay
                                              readable after the worker dies
    overdue test  ─▶ dump_stacks: DUMP_SIGNAL, then the slot's fault file grows by its stacks
                  ─▶ take_output: the capture files read, and closed, for the timeout message
    worker died   ─▶ fault_text: what faulthandler wrote (a fatal error's traceback)
                  ─▶ crash_reason: the report's message (overdue, torn report, died)
                  ─▶ capture_sections: the capture files read, and closed, as report sections

``_read_captures`` is the one reader of capture files, and it closes what it reads: a test's
output appears in one place of its report, whichever of the two ways asked first.  The fault
files are ``SlotFiles`` (one per slot, made before the pool forks, without a name, so nothing
is left behind even if the controller is SIGKILLed); ``_fault_read`` is how far each was read,
so that a replacement worker's crash does not repeat its predecessor's dump.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, BinaryIO

from pytest_poolrun import clock, events, itemrunner
from pytest_poolrun.slotfiles import SlotFiles

if TYPE_CHECKING:  # timeouts imports this module
    from pytest_poolrun.ledger import EndedWorker
    from pytest_poolrun.timeouts import Overdue
    from pytest_poolrun.workerset import WorkerExit

# How long to wait for a worker to write its stacks after DUMP_SIGNAL, and how often to look.
DUMP_WAIT = 1.0
DUMP_POLL = 0.02
# How much of a test's captured output goes into its report (the end is kept).
CAPTURE_LIMIT = 10_000
# The descriptors a worker's stdout and stderr capture files sit on while a test runs.
STDOUT_FD, STDERR_FD = 1, 2


class PostMortem:
    def __init__(self, slots: int) -> None:
        self.fault_files = SlotFiles(slots, "poolrun-faults")
        self._fault_read = [0] * slots
        self._captures: dict[str, list[tuple[str, BinaryIO]]] = {}

    def cleanup(self) -> None:
        for worker in list(self._captures):
            self._read_captures(worker)
        self.fault_files.close()

    def keep_capture_files(self, worker: str, event: events.CaptureFiles) -> None:
        """Open the worker's capture files now: they stay readable after it dies."""
        self._read_captures(worker)
        kept: list[tuple[str, BinaryIO]] = []
        for name, fd in (("stdout", event.stdout_fd), ("stderr", event.stderr_fd)):
            if fd is None:
                continue
            link = f"/proc/{event.pid}/fd/{fd}"
            try:
                if not os.path.isfile(link):
                    continue  # a terminal, pipe or socket: not a capture file
                kept.append((name, open(link, "rb")))
            except OSError:
                continue  # not Linux, or the worker is already gone
        self._captures[worker] = kept

    def take_output(self, worker: str, pid: int) -> str:
        """What the overdue test printed so far, for its timeout message.

        A worker that did not announce its capture files (a spawned one) has them on its
        standard descriptors while a test runs.
        """
        if worker not in self._captures:
            self.keep_capture_files(worker, events.CaptureFiles(pid, STDOUT_FD, STDERR_FD))
        return "".join(
            f"\n\nCaptured {name} so far:\n{text}" for name, text in self._read_captures(worker)
        )

    def capture_sections(self, worker: str) -> list[tuple[str, str]]:
        """What the dead worker's capture files hold, as report sections."""
        return [
            (f"Captured {name} (until the worker died)", text)
            for name, text in self._read_captures(worker)
        ]

    def _read_captures(self, worker: str) -> list[tuple[str, str]]:
        read = []
        for name, capture in self._captures.pop(worker, []):
            with capture:
                capture.seek(0)
                text = capture.read()[-CAPTURE_LIMIT:].decode("utf-8", "replace")
            if text:
                read.append((name, text))
        return read

    def dump_stacks(self, slot: int, pid: int) -> str:
        """Have the worker write its stacks (faulthandler, on DUMP_SIGNAL) and read them."""
        files = self.fault_files
        before = files.size(slot)
        try:
            os.kill(pid, itemrunner.DUMP_SIGNAL)
        except ProcessLookupError:
            return "(the worker had already exited)"
        # faulthandler writes from its signal handler; wait until the file stops growing.
        deadline = clock.monotonic() + DUMP_WAIT
        last = before
        while clock.monotonic() < deadline:
            time.sleep(DUMP_POLL)
            size = files.size(slot)
            if size > before and size == last:
                break
            last = size
        return _trim_stacks(self._read_faults(slot, before)) or "(no stacks were written)"

    def fault_text(self, slot: int) -> str:
        """What the dead worker of ``slot`` wrote to its fault file (a fatal error's traceback)."""
        start = self._fault_read[slot] if 0 <= slot < len(self._fault_read) else 0
        return _trim_stacks(self._read_faults(slot, start))

    def _read_faults(self, slot: int, start: int) -> str:
        data = self.fault_files.read(slot, start)
        if 0 <= slot < len(self._fault_read):
            self._fault_read[slot] = start + len(data)
        return data.decode("utf-8", "replace")

    def crash_reason(
        self,
        ended: WorkerExit,
        left: EndedWorker,
        overdue: Overdue | None,
        overran: str | None,
        torn: int | None,
    ) -> str:
        """Why ``left.running`` failed when its worker ended: the first of these that applies.

        The test overran --pool-timeout (``overdue``); another test (``overran``) did, and the
        kill came as this one started; its report was torn by the worker's death (``torn``);
        or the worker died under it.  (A test whose protocol raised, ``left.aborted``, gets no
        report: it interrupted the run, or ended it with an INTERNALERROR.)
        """
        assert left.running is not None
        if overdue is not None and overdue.item == left.running:
            return overdue.message
        if overdue is not None:
            return (
                f"worker {ended.name} was killed because {overran} overran --pool-timeout, "
                "just as that test ended and this one started; it is not run again"
            )
        if torn == left.running:
            return (
                f"the test ran, but worker {ended.name} died while writing its report "
                f"({ended.describe()}); it is not run again"
            )
        why = f"worker {ended.name} died while running it: {ended.describe()}"
        fault = self.fault_text(ended.slot)
        return f"{why}\n\n{fault}" if fault else why


def _trim_stacks(dump: str) -> str:
    """Drop the frames below the worker's item loop: a forked worker inherits the controller's
    call stack, which says nothing about the test."""
    kept: list[str] = []
    skipping = False
    for line in dump.splitlines():
        if line.lstrip().startswith("File ") and "pytest_poolrun" in line:
            skipping = True
            continue
        if not line.lstrip().startswith("File "):
            skipping = False
        if not skipping:
            kept.append(line)
    return "\n".join(kept).strip()
