"""Append-only files, one per worker slot, that outlive the worker writing them.

Data flow::

    controller: SlotFiles(slots) before the pool forks: one anonymous file per slot, opened with
                O_APPEND; every forked worker inherits all of them, replacements included
    worker in slot k: append(k, data), one os.write (a result record, see itemrunner), or
                faulthandler writing into fd(k) (tracebacks, stack dumps); truncate(k)
    controller: size(k), read(k, start) with os.pread, after worker k died or while it overran

The runner keeps two sets: each worker's results journal and its fault file.

**Why these files.**  Data a worker has written is in the kernel's page cache once ``write``
returns, so it survives the worker's SIGKILL, segfault or OOM kill.  The controller opened the
files before any worker existed, so it needs no ``/proc`` look-up that could come too late (a
dead process's descriptors are gone).  The files have no name (``memfd_create`` on Linux,
elsewhere a temporary file unlinked at once), so nothing is left on disk even when the
controller itself is SIGKILLed.  ``O_APPEND`` makes every write land at the end whatever the
shared file offset says, and the controller reads with ``pread``, which never moves that offset:
the worker generations of a slot and the controller can share one open file.
"""

from __future__ import annotations

import os
import tempfile

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows, which runs no forked workers
    fcntl = None  # type: ignore[assignment]

# How much the controller reads at once.
READ_BLOCK = 1 << 20


def _anonymous_file(name: str) -> int:
    if hasattr(os, "memfd_create"):
        try:
            fd = os.memfd_create(name, os.MFD_CLOEXEC)
        except OSError:
            pass
        else:
            return _appending(fd)
    fd, path = tempfile.mkstemp(prefix=f"{name}-")
    os.unlink(path)
    return _appending(fd)


def _appending(fd: int) -> int:
    if fcntl is not None:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
    return fd


class SlotFiles:
    """One anonymous append-only file per slot; slots out of range have none (reads are empty)."""

    def __init__(self, slots: int, name: str) -> None:
        self._fds = [_anonymous_file(f"{name}-{slot}") for slot in range(slots)]

    def fd(self, slot: int) -> int | None:
        return self._fds[slot] if 0 <= slot < len(self._fds) else None

    def append(self, slot: int, data: bytes) -> None:
        """Write ``data`` at the end of the slot's file (raises OSError, e.g. on a full disk)."""
        fd = self._fds[slot]
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def truncate(self, slot: int) -> None:
        os.ftruncate(self._fds[slot], 0)

    def size(self, slot: int) -> int:
        fd = self.fd(slot)
        return 0 if fd is None else os.fstat(fd).st_size

    def read(self, slot: int, start: int = 0) -> bytes:
        """What the slot's file holds from ``start`` to its end."""
        fd = self.fd(slot)
        if fd is None:
            return b""
        parts: list[bytes] = []
        while True:
            block = os.pread(fd, READ_BLOCK, start)
            if not block:
                return b"".join(parts)
            parts.append(block)
            start += len(block)

    def close(self) -> None:
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []
