"""A worker's text for the terminal, forwarded to the controller as it is written.

Data flow, in a worker::

    pytest's terminal writer (live logs, pytest-timeout's stacks) ─┐
    sys.stdout / sys.stderr under -s ──────────────────────────────┴▶ ForwardedText.write
        ─▶ at each newline and each flush (a logging handler flushes after every record):
           send(text) ─▶ itemrunner: a TerminalOutput event, tagged with the running test
           ─▶ the controller's Console shows it as it arrives
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import IO


class ForwardedText(io.TextIOBase):
    """A text stream whose lines go to ``send``; ``fileno`` is the original stream's."""

    def __init__(self, original: IO[str] | None, send: Callable[[str], None]) -> None:
        super().__init__()
        self._original = original
        self._send = send
        self._parts: list[str] = []

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        if self._original is None:
            raise io.UnsupportedOperation("fileno")
        return self._original.fileno()

    def write(self, text: str) -> int:
        self._parts.append(text)
        if "\n" in text:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self._parts:
            text, self._parts = "".join(self._parts), []
            self._send(text)
