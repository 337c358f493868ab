"""A worker's text for the terminal, forwarded to the controller as it is written.

Data flow, in a worker::

    pytest's terminal writer (live logs, pytest-timeout's stacks) ─┐
    sys.stdout / sys.stderr under -s (text, or bytes through .buffer) ┴▶ forwarded_text(...):
        a TextIOWrapper, line buffered, with the original stream's encoding and errors
        ─▶ at each newline and each flush (a logging handler flushes after every record) its
           bytes reach ForwardedBytes.write ─▶ decoded ─▶ send(text) ─▶ itemrunner: a
           TerminalOutput event, tagged with the running test ─▶ the controller's Console
           shows it as it arrives

**Why a real text stream.**  Under ``-s`` a test's ``sys.stdout`` is serially the process's own:
a ``TextIOWrapper`` with a ``buffer`` for bytes, an ``encoding``, ``errors``, a ``name`` and
``reconfigure``, which tests and the libraries they call use.  The forwarded stream is one too,
over a raw stream that hands what it is given to ``send``.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Callable
from typing import IO, Any


class ForwardedBytes(io.RawIOBase):
    """A raw binary stream whose bytes, decoded, go to ``send``; ``fileno`` and ``name`` are
    the original stream's."""

    def __init__(
        self, original: IO[str] | None, encoding: str, send: Callable[[str], None]
    ) -> None:
        super().__init__()
        self._original = original
        self._send = send
        # Incremental: a character cut in two by a buffer's edge is sent whole, with its rest.
        # What does not decode is replaced: it is shown, not handled, in the controller.
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        self.name: Any = getattr(original, "name", "<forwarded>")

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        # The controller shows the text; a worker has no terminal of its own (nor has an xdist
        # worker's stream).
        return False

    def fileno(self) -> int:
        if self._original is None:
            raise io.UnsupportedOperation("fileno")
        return self._original.fileno()

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        text = self._decoder.decode(chunk)
        if text:
            self._send(text)
        return len(chunk)


def forwarded_text(original: IO[str] | None, send: Callable[[str], None]) -> io.TextIOWrapper:
    """A text stream like ``original`` (its encoding and errors, or UTF-8 and strict) whose
    lines go to ``send`` (see the module docstring)."""
    encoding = getattr(original, "encoding", None) or "utf-8"
    errors = getattr(original, "errors", None) or "strict"
    raw = ForwardedBytes(original, encoding, send)
    return io.TextIOWrapper(
        io.BufferedWriter(raw), encoding=encoding, errors=errors, line_buffering=True
    )
