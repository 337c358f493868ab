"""The controller's own lines on pytest's terminal: notices, and what workers write there.

Data flow, in the controller's thread::

    Controller / SlowNotices ─▶ say(line): one line of its own ("poolrun: …", "SLOW: …")
    TerminalOutput(nodeid, text) from a worker ─▶ show(worker, output): the text as it arrives,
        under a line naming the worker and the test whenever that source changes (two workers'
        live logs or ``-s`` output would otherwise interleave anonymously)

Both write through pytest's terminal reporter, so ``-q``, colour and ``-p no:terminal`` apply.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_poolrun import events


class Console:
    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self._source: tuple[str, str | None] | None = None  # whose output shows last

    def _reporter(self) -> Any:
        return self._config.pluginmanager.getplugin("terminalreporter")

    def say(self, line: str) -> None:
        reporter = self._reporter()
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(line)
            reporter.flush()  # a notice (SLOW: …) must show now, also when stdout is a pipe

    def show(self, worker: str, output: events.TerminalOutput) -> None:
        reporter = self._reporter()
        if reporter is None:
            return
        source = (worker, output.nodeid)
        if source != self._source:
            reporter.ensure_newline()
            reporter.write_line(f"[{worker}] {output.nodeid or '(outside any test)'}")
            self._source = source
        reporter.write(output.text, flush=True)
        reporter.currentfspath = None  # the next progress line starts afresh
