"""What a worker records of each test: the hook calls the controller replays.

Data flow, in a worker (``Forwarder`` is registered as a plugin after collection)::

    pytest_runtest_logstart / logreport / logfinish, warning_recorded (every plugin's, as usual)
        ─▶ Forwarder: trylast, so the report is as the other plugins left it
           ├─ a plainly passing report of the running item ─▶ PassedReport (compact; the
           │  controller rebuilds it from its own copy of the item)
           └─ anything else ─▶ events.capture_report / capture_warning (pickled, or through
              pytest's serializable-report hooks)
        ─▶ record(event): kept with the running item's events; a hook call outside any item
           goes out at once (send_loose)
    item ends ─▶ settled(index, its events): compact reports kept only if the item's keywords
        are as collected; a plainly passing item as one PassedItem ─▶ itemrunner sends them
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from _pytest.nodes import Node

from pytest_poolrun import events

_FAILED_SUBTESTS: Any
try:  # pytest's subtests count a test's failed subtests here, by the test's node id
    # Imported by name so that type checking against pytest 8 (no such module) passes too.
    _FAILED_SUBTESTS = importlib.import_module("_pytest.subtests").failed_subtests_key
except ImportError:  # pytest < 9: no subtests of its own
    _FAILED_SUBTESTS = None


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
        running: Callable[[], int | None],
        record: Callable[[events.HookEvent], None],
        send_loose: Callable[[events.HookEvent], None],
    ) -> None:
        self.config = config
        self._running = running  # the index of the item that runs now, if any
        self._keep = record  # add to that item's recorded hook calls
        self._send_loose = send_loose  # send a hook call made outside any item at once
        self.shortcut = events.only_builtin_serializers(config)
        self.items = items
        self.keywords = _KeywordCounts(items)
        # The running item's compact reports, with the reports they stand for (see settled).
        self._compacted: list[tuple[events.PassedReport, pytest.TestReport]] = []
        names = {impl.plugin_name for impl in config.hook.pytest_report_teststatus.get_hookimpls()}
        self.status_reads_only = names <= READ_ONLY_TESTSTATUS and (
            "subtests" not in names or _FAILED_SUBTESTS is not None
        )

    def _record(self, event: events.HookEvent) -> None:
        if self._running() is None:
            self._send_loose(event)
        else:
            self._keep(event)

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
        index = self._running()
        passed = None if index is None else events.plain_pass(report)
        if passed is not None and index is not None and report.nodeid == self.items[index].nodeid:
            # Provisional until the item ends: see settled().
            self._compacted.append((passed, report))
            self._keep(passed)
        else:
            self._record(events.capture_report(self.config, report, self.shortcut))

    def _status_settled(self, report: pytest.TestReport) -> bool:
        """Whether asking pytest_report_teststatus would change nothing: its implementations
        only read the report, and pytest's subtests counted no failed subtest for it."""
        if not self.status_reads_only:
            return False
        if _FAILED_SUBTESTS is None or report.when != "call":
            return True  # subtests settles the "call" report only
        failed = self.config.stash.get(_FAILED_SUBTESTS, None)
        return not failed or not failed.get(getattr(report, "_id", None), 0)

    def settled(
        self, index: int, recorded: Sequence[events.HookEvent]
    ) -> tuple[events.HookEvent, ...]:
        """``recorded``, the hook events of item ``index``, as they are sent when it ends.

        A ``PassedReport`` stands for a report only while the controller's copy of the item can
        stand in for the rest (see ``events.plain_pass``), so only if the item (and its parents)
        still has the keywords it was collected with; else each goes the full way.  Keywords
        only grow, so one check when the item ends covers all its reports.  A plainly passing
        item then travels as one ``PassedItem`` (``events.compact_item``).
        """
        compacted, self._compacted = self._compacted, []
        if compacted and not self.keywords.as_collected(index):
            full = {
                id(passed): events.capture_report(self.config, report, self.shortcut)
                for passed, report in compacted
            }
            return tuple(full.get(id(event), event) for event in recorded)
        return events.compact_item(self.items[index].nodeid, recorded)

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


class _KeywordCounts:
    """How many keywords each node (the items, their parents) holds itself, as collected.

    A node's keywords only grow (``NodeKeywords`` refuses deletion), so an item whose own count
    and every parent's are unchanged has the keywords that the controller's copy, which runs
    nothing, still has: a marker added while tests run (``request.node.add_marker``, on the item
    or on its module) shows as a larger count.
    """

    def __init__(self, items: Sequence[pytest.Item]) -> None:
        self._items = items
        self._known = all(hasattr(item.keywords, "_markers") for item in items[:1])
        self._own = [_own_keywords(item) for item in items] if self._known else []
        self._parents: dict[int, int] = {}
        for item in items if self._known else ():
            node = item.parent
            while node is not None and id(node) not in self._parents:
                self._parents[id(node)] = _own_keywords(node)
                node = node.parent

    def as_collected(self, index: int) -> bool:
        """Whether item ``index`` has the keywords it was collected with."""
        if not self._known:
            return False
        item = self._items[index]
        if _own_keywords(item) != self._own[index]:
            return False
        node = item.parent
        while node is not None:
            if _own_keywords(node) != self._parents.get(id(node)):
                return False
            node = node.parent
        return True


def _own_keywords(node: Node) -> int:
    markers: dict[str, Any] = node.keywords._markers  # type: ignore[attr-defined]
    return len(markers)
