"""The report replayer: workers' recorded hook calls, and synthetic reports, into pytest's hooks.

Data flow, in the controller's thread::

    ItemFinished(item, hook events) ─▶ in_order(item, replay) ─▶ events.replay_item, in order:
                                        pytest_runtest_logstart / logreport / logfinish
                                        (through directhooks' callers of the item's hook
                                        proxy, made once per test file), warning_recorded
                                        (terminal, junitxml, cache…); then the item left
                                        as pytest's protocol leaves a test that ran
    a crash, a timeout   ─▶ crash_report(item, why, sections): one failed "call" report,
                            which pytest_handlecrashitem may turn into a rerun ─▶ report_crash
    a pool out of workers ─▶ report_not_run(item, why): one failed "call" report ("not run: …")
    after each replay: session.shouldfail / shouldstop (-x, --maxfail) ─▶ on_stop()

``in_order`` replays at once (``--pool-report-order completion``) or once every earlier item
is replayed (``collection``), so that the output is a serial run's line for line.  Once the run
stops (``-x``, ``--maxfail``), collection order replays nothing more (the items past the
failing one would not have run serially); completion order goes on reporting the tests that
were running and ran to their end, since they did run.  A test that raises KeyboardInterrupt
stops the run at once, but in collection order it is replayed in its turn: the tests before it
that ran are reported first (``interrupted_by``, ``release_through``).

**Whose hooks.**  A serial run calls an item's report hooks through ``item.ihook``: the
plugins, and the conftests of the item's directory and those above it, not a conftest of
another directory.  The replay calls them through the same proxy (kept by ``hookproxies``,
one per test file), so a conftest in ``tests/unit`` sees the reports of ``tests/unit``'s tests only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import pytest
from _pytest._code.code import ReprFileLocation, TerminalRepr
from _pytest._io import TerminalWriter

from pytest_poolrun import directhooks, events, hookproxies, keywordnames


class SyntheticFailure(TerminalRepr):
    """A synthetic report's text, with a crash line (its first line) as pytest's own have.

    The short summary (``FAILED id - message``) and junitxml's ``message`` read the crash line;
    for plain text pytest before 9 shows no message at all.
    """

    def __init__(self, text: str, location: events.Location) -> None:
        self.text = text
        path, lineno, _ = location
        first_line = text.strip().splitlines()[0] if text.strip() else text
        self.reprcrash = ReprFileLocation(path, (lineno or 0) + 1, first_line)

    def toterminal(self, tw: TerminalWriter) -> None:
        for line in self.text.splitlines():
            tw.line(line)


def _as_after_its_protocol(item: pytest.Item) -> None:
    """Leave the controller's copy of a test that ran as pytest leaves a test at its protocol's
    end: without its request and fixture values, so that a hook reading them after the run (at
    the session's end, say) sees what it would see serially, not the request made at
    collection for a test that never ran here."""
    if hasattr(item, "_request"):
        function: Any = item  # a Function, or a plugin's item built like one
        function._request = False
        function.funcargs = None


class Replayer:
    def __init__(
        self, session: pytest.Session, report_order: str, on_stop: Callable[[], None]
    ) -> None:
        self._session = session
        self._config = session.config
        self._in_collection_order = report_order == "collection"
        self._on_stop = on_stop
        self.stopped = False
        # Why the run stopped, as pytest said it then ("stopping after 1 failures"): a report
        # replayed later must not change the reason a serial run would print.
        self._stop_reason: str | bool = False
        self._pending: dict[int, Callable[[], None]] = {}
        self._hooks = directhooks.report_hooks(self._config)
        # Each file's report hooks (see "Whose hooks"); no forgetting: the controller imports
        # no conftest while the pool runs.
        self._hooks_by_file = hookproxies.PerFile(self._report_hooks_at)
        self._keyword_names = keywordnames.KeywordNames()
        self._next = 0

    def stop(self) -> bool:
        """The run stops (see the module docstring); True the first time (the caller then
        stops handing out work)."""
        first, self.stopped = not self.stopped, True
        if first:
            self._stop_reason = self._session.shouldfail
        return first

    def in_order(self, item: int, replay: Callable[[], None]) -> None:
        """Run ``replay`` for ``item`` now, or once every earlier item's replay has run."""
        if not self._in_collection_order:
            replay()
            return
        self._pending[item] = replay
        while self._next in self._pending and not self.stopped:
            self._pending.pop(self._next)()
            self._next += 1

    def interrupted_by(self, item: int, replay: Callable[[], None]) -> None:
        """Test ``item`` interrupted the run (KeyboardInterrupt): ``replay`` runs, and the run
        stops, at once in completion order; in collection order in its turn (``release_through``
        at the latest), after the tests before it that ran, and nothing after it is replayed
        (serially, nothing past it ran)."""

        def replay_and_stop() -> None:
            replay()
            self.stop()

        if self._in_collection_order:
            self.in_order(item, replay_and_stop)
        else:
            replay_and_stop()

    def release_through(self, item: int) -> None:
        """At the run's end, in collection order: the replays of the items up to ``item`` that
        wait for an earlier item, which never ran, in order."""
        for index in sorted(index for index in self._pending if index <= item):
            if self.stopped:
                break
            self._pending.pop(index)()

    def finished(self, event: events.ItemFinished) -> None:
        self.in_order(event.item, partial(self.replay, event.events, event.item))

    def replay(self, hook_events: Sequence[events.HookEvent], item: int | None = None) -> None:
        """Replay the hook calls recorded while item ``item`` ran (None: outside any item)."""
        if self._drops_after_stop():
            return
        if item is None:
            events.replay_item(self._config, None, hook_events, self._hooks)
        else:
            node = self._session.items[item]
            events.replay_item(
                self._config, node, hook_events, self._hooks_of(node), self._keyword_names.of
            )
            _as_after_its_protocol(node)
        self._check_stop()

    def _hooks_of(self, item: pytest.Item) -> directhooks.ReportHooks:
        """The report hooks a serial run calls for ``item`` (see the module docstring)."""
        return self._hooks_by_file(item.path)

    def _report_hooks_at(self, path: os.PathLike[str]) -> directhooks.ReportHooks:
        relay = self._session.gethookproxy(path)
        if relay is self._config.hook:  # every conftest applies: the common case
            return self._hooks
        return directhooks.report_hooks(self._config, relay)

    def crash_report(
        self, item: int, why: str, sections: Sequence[tuple[str, str]] = ()
    ) -> pytest.TestReport:
        """The failed "call" report of an item whose worker died, not yet reported."""
        return self._synthetic(item, why, "call", sections)

    def report_crash(self, item: int, report: pytest.TestReport) -> None:
        """Report ``crash_report``'s report (a plugin may have made it a rerun meanwhile).

        A rerun is reported on its own: the item's next run ends it with a report of its own.
        """
        replay = partial(self._log_synthetic, item, report)
        # pytest-rerunfailures sets an outcome that pytest's own type does not list.
        if str(report.outcome) == "rerun":
            replay()
        else:
            self.in_order(item, replay)

    def report_not_run(self, item: int, why: str) -> None:
        # A "call" report: junitxml and the summary show a failure, as the README says, not an
        # error in a fixture.
        report = self._synthetic(item, f"not run: {why}", "call", ())
        self.in_order(item, partial(self._log_synthetic, item, report))

    def _synthetic(
        self, index: int, longrepr: str, when: str, sections: Sequence[tuple[str, str]]
    ) -> pytest.TestReport:
        item = self._session.items[index]
        return pytest.TestReport(
            nodeid=item.nodeid,
            location=item.location,
            keywords={name: 1 for name in item.keywords},
            outcome="failed",
            longrepr=SyntheticFailure(longrepr, item.location),
            when=when,  # type: ignore[arg-type]
            sections=list(sections),
            duration=0.0,
            start=0.0,
            stop=0.0,
            user_properties=list(item.user_properties),
        )

    def _log_synthetic(self, index: int, report: pytest.TestReport) -> None:
        if self._drops_after_stop() or (self.stopped and report.when == "setup"):
            return  # a not-run report: after a stop, the item was simply not run
        item = self._session.items[index]
        hooks = self._hooks_of(item)
        hooks.logstart(nodeid=item.nodeid, location=item.location)
        hooks.logreport(report=report)
        hooks.logfinish(nodeid=item.nodeid, location=item.location)
        self._check_stop()

    def _drops_after_stop(self) -> bool:
        """Once stopped, collection order replays nothing more (serially, nothing past the
        failing test ran); completion order still reports every test that ran to its end."""
        return self.stopped and self._in_collection_order

    def _check_stop(self) -> None:
        if self.stopped and self._stop_reason:
            self._session.shouldfail = self._stop_reason
        elif self._session.shouldfail or self._session.shouldstop:
            self._on_stop()
