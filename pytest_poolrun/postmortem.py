"""What a dead or overdue worker left behind: fault files, stack dumps and capture files.

Data flow, in the controller's thread (Linux for the capture files: they are read through
``/proc``)::

    forked worker ─ CaptureFiles(pid, fds) ─▶ keep_capture_files: opened now, so that they stay
                                              readable after the worker dies
    overdue test  ─▶ dump_stacks: DUMP_SIGNAL, then the worker's fault file grows by its stacks
                  ─▶ take_output: the capture files read, and closed, for the timeout message
    worker died   ─▶ fault_text: what faulthandler wrote (a fatal error's traceback)
                  ─▶ capture_sections: the capture files read, and closed, as report sections

``_read_captures`` is the one reader of capture files, and it closes what it reads: a test's
output appears in one place of its report, whichever of the two ways asked first.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

from pytest_poolrun import events, itemrunner

# How long to wait for a worker to write its stacks after DUMP_SIGNAL, and how often to look.
DUMP_WAIT = 1.0
DUMP_POLL = 0.02
# How much of a test's captured output goes into its report (the end is kept).
CAPTURE_LIMIT = 10_000
# The descriptors a worker's stdout and stderr capture files sit on while a test runs.
STDOUT_FD, STDERR_FD = 1, 2


class PostMortem:
    def __init__(self) -> None:
        self.fault_dir = Path(tempfile.mkdtemp(prefix="poolrun-faults-"))
        self._captures: dict[str, list[tuple[str, BinaryIO]]] = {}

    def cleanup(self) -> None:
        for worker in list(self._captures):
            self._read_captures(worker)
        shutil.rmtree(self.fault_dir, ignore_errors=True)

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

    def dump_stacks(self, worker: str, pid: int) -> str:
        """Have the worker write its stacks (faulthandler, on DUMP_SIGNAL) and read them."""
        path = itemrunner.fault_path(self.fault_dir, worker, pid)
        before = _size(path)
        try:
            os.kill(pid, itemrunner.DUMP_SIGNAL)
        except ProcessLookupError:
            return "(the worker had already exited)"
        # faulthandler writes from its signal handler; wait until the file stops growing.
        deadline = time.monotonic() + DUMP_WAIT
        last = before
        while time.monotonic() < deadline:
            time.sleep(DUMP_POLL)
            size = _size(path)
            if size > before and size == last:
                break
            last = size
        try:
            with open(path) as dump:
                dump.seek(before)
                return _trim_stacks(dump.read()) or "(no stacks were written)"
        except OSError:
            return "(no stacks were written)"

    def fault_text(self, worker: str) -> str:
        """What the dead ``worker`` wrote to its fault files (a fatal error's traceback)."""
        texts = []
        for path in sorted(self.fault_dir.glob(f"{worker}-*.txt")):
            text = path.read_text()
            if text:
                texts.append(_trim_stacks(text))
                path.unlink()
        return "\n".join(texts)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


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
