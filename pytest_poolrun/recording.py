"""What a worker records of each test: the hook calls the controller replays.

Data flow, in a worker (``Forwarder`` is registered as a plugin after collection)::

    itemrunner: begin(index) ─▶ the item runs; its hook calls are recorded
    pytest_runtest_logstart / logreport / logfinish, warning_recorded (every plugin's, as usual)
        ─▶ Forwarder: trylast, so the report is as the other plugins left it
           ├─ a plainly passing report of the running item ─▶ kept as it is, to travel
           │  compact (the controller rebuilds it from its own copy of the item)
           └─ anything else ─▶ events.capture_report / capture_warning (pickled, or through
              pytest's serializable-report hooks)
        ─▶ kept with the running item's hook calls; a hook call outside any item goes out at
           once (send_loose)
    itemrunner: end() ─▶ the item's hook calls: a plainly passing item as one PassedItem; else
        each kept report as a PassedReport if the item's keywords are as collected, or
        captured in full ─▶ sent (at once when a report failed: ``failed``)
"""

from __future__ import annotations

import importlib
import operator
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from pytest_poolrun import events, keywordnames

_FAILED_SUBTESTS: Any
try:  # pytest's subtests count a test's failed subtests here, by the test's node id
    # Imported by name so that type checking against pytest 8 (no such module) passes too.
    _FAILED_SUBTESTS = importlib.import_module("_pytest.subtests").failed_subtests_key
except ImportError:  # pytest < 9: no subtests of its own
    _FAILED_SUBTESTS = None


_PARENT = operator.attrgetter("parent")

# Plugins whose pytest_report_teststatus only reads the report (pytest-rerunfailures' names its
# "rerun" outcome), except pytest's subtests for a test with failed subtests (_status_settled):
# nothing shows its answer in a worker, so asking them there would change nothing.
READ_ONLY_TESTSTATUS = frozenset({"terminal", "runner", "skipping", "subtests", "rerunfailures"})


class Forwarder:
    """Records the hook calls that the controller must replay (registered in each worker, after
    collection and before the first item runs)."""

    def __init__(
        self,
        config: pytest.Config,
        items: Sequence[pytest.Item],
        send_loose: Callable[[events.HookEvent], None],
        keywords: KeywordCounts | None = None,
    ) -> None:
        self.config = config
        self._send_loose = send_loose  # send a hook call made outside any item at once
        self.shortcut = events.only_builtin_serializers(config)
        self.items = items
        # Counted before the fork when given: once for all forked workers, and without the
        # page copies a walk over every item makes in a forked one.
        self.keywords = KeywordCounts(items) if keywords is None else keywords
        # The item being recorded (begin, end): its index and node id, and its hook calls so
        # far, where a plainly passing report of it is the report itself (see end).
        self.running: int | None = None
        self._nodeid: str | None = None
        # Whether a report of the item begun last failed: its record then goes out at once.
        self.failed = False
        self._recorded: list[events.HookEvent | pytest.TestReport] = []
        # pytest's subtests' count of failed subtests by test, a dict as old as the config.
        self._failed_subtests: dict[Any, int] | None = (
            None if _FAILED_SUBTESTS is None else config.stash.get(_FAILED_SUBTESTS, None)
        )
        names = {impl.plugin_name for impl in config.hook.pytest_report_teststatus.get_hookimpls()}
        self.status_reads_only = names <= READ_ONLY_TESTSTATUS and (
            "subtests" not in names or _FAILED_SUBTESTS is not None
        )

    def begin(self, index: int) -> None:
        """Item ``index`` starts: the hook calls from now on are its own, until ``end``."""
        self.running, self._nodeid = index, self.items[index].nodeid
        self._recorded = []
        self.failed = False
        self.keywords.note(index)

    def end(self) -> tuple[events.HookEvent, ...]:
        """The running item's hook calls, as they are sent; hook calls after this go out at
        once, as made outside any item.  With no item begun, an empty tuple.

        A plainly passing report travels compact (its times, see ``events.plain_pass``) only
        while the controller's copy of the item can stand in for the rest, so only if the item
        (and its parents) still has the keywords it was collected with; else it goes the full
        way.  Keywords only grow, so one check when the item ends covers all its reports.  A
        plainly passing item then travels as one ``PassedItem`` (``events.passed_item``).
        """
        index, nodeid, recorded = self.running, self._nodeid, self._recorded
        self.running = self._nodeid = None
        self._recorded = []
        if index is None or nodeid is None:
            return ()
        as_collected = self.keywords.as_collected(index)
        if as_collected:
            passed = events.passed_item(nodeid, recorded)
            if passed is not None:
                return (passed,)
        return tuple(self._as_sent(event, as_collected) for event in recorded)

    def _as_sent(
        self, event: events.HookEvent | pytest.TestReport, compact: bool
    ) -> events.HookEvent:
        if not isinstance(event, pytest.TestReport):
            return event
        passed = events.plain_pass(event) if compact else None
        return passed or events.capture_report(self.config, event, self.shortcut)

    def _record(self, event: events.HookEvent) -> None:
        if self.running is None:
            self._send_loose(event)
        else:
            self._recorded.append(event)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logstart(self, nodeid: str, location: events.Location) -> None:
        self._record(events.LogStart(nodeid, location))

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # The terminal reporter, unregistered here, would have asked for the test status; some
        # plugins settle a report's outcome in that hook (pytest's subtests fails a test whose
        # subtests failed, from counts only this process has), so ask as it would have.
        if not self._status_settled(report):
            self.config.hook.pytest_report_teststatus(report=report, config=self.config)
        if report.failed:
            self.failed = True
        if report.nodeid == self._nodeid and events.is_plain_pass(report):
            # Of the item being recorded (None: none is): which form it travels in is settled
            # when the item ends, see end().
            self._recorded.append(report)
        else:
            self._record(events.capture_report(self.config, report, self.shortcut))

    def _status_settled(self, report: pytest.TestReport) -> bool:
        """Whether asking pytest_report_teststatus would change nothing: its implementations
        only read the report, and pytest's subtests counted no failed subtest for it."""
        if not self.status_reads_only:
            return False
        failed = self._failed_subtests
        if not failed or report.when != "call":
            return True  # subtests settles the "call" report only, of a test with failures
        return not failed.get(getattr(report, "_id", None), 0)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logfinish(self, nodeid: str, location: events.Location) -> None:
        self._record(events.LogFinish(nodeid, location))

    @pytest.hookimpl(trylast=True)
    def pytest_warning_recorded(
        self,
        warning_message: Any,
        when: str,
        nodeid: str,
        location: events.Location | None,
    ) -> None:
        # The hook is historic: registering this plugin replays the configuration and
        # collection warnings, which the controller has reported already.
        if when != "runtest":
            return
        self._record(events.capture_warning(warning_message, when, nodeid, location))


class KeywordCounts:
    """Whether an item and its parents still hold the keywords they were collected with.

    A node's keywords only grow (``NodeKeywords`` refuses deletion), so unchanged totals mean
    the keywords that the controller's copy, which runs nothing, still has: a marker added while
    tests run (``request.node.add_marker``, on the item or on its module) makes a total larger.
    The parents are counted before any test runs (in the controller before it forks, or as a
    fresh worker starts); an item itself when it begins (``note``), since only its own run adds
    to it.
    """

    def __init__(self, items: Sequence[pytest.Item]) -> None:
        self._items = items
        self._known = all(hasattr(item.keywords, "_markers") for item in items[:1])
        # Items share their parents: each is counted once (a few per module), not once per item.
        parents = {id(parent): parent for parent in map(_PARENT, items)} if self._known else {}
        self._above = {key: keywordnames.count_through(parent) for key, parent in parents.items()}
        self._own: int | None = None  # the running item's count, when it began

    def note(self, index: int) -> None:
        """Item ``index`` begins."""
        if self._known:
            self._own = keywordnames.own_count(self._items[index])

    def as_collected(self, index: int) -> bool:
        """Whether item ``index``, which began last (``note``), has the keywords it was
        collected with."""
        own, self._own = self._own, None
        if own is None:
            return False
        item = self._items[index]
        collected = own + self._above[id(item.parent)]
        return keywordnames.count_through(item) == collected
