"""How a report crosses the process boundary: encoded in a worker, replayed in the controller."""

from __future__ import annotations

from typing import Any

import pytest
from _pytest.runner import runtestprotocol

from pytest_poolrun import events, recording

# What plugins read of a report.
READ = (
    "nodeid",
    "location",
    "keywords",
    "outcome",
    "when",
    "duration",
    "start",
    "stop",
    "sections",
    "user_properties",
    "longrepr",
)


class _Recorder:
    def __init__(self) -> None:
        self.reports: list[pytest.TestReport] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.reports.append(report)


def _replayed(
    item: pytest.Item, hook_events: tuple[events.HookEvent, ...]
) -> list[pytest.TestReport]:
    """``hook_events`` sent as a worker sends them (one record) and replayed for ``item``."""
    config = item.config
    decoded = events.decode(events.encode(events.ItemFinished(0, hook_events)))
    assert isinstance(decoded, events.ItemFinished)
    recorder = _Recorder()
    config.pluginmanager.register(recorder, "test-recorder")
    try:
        events.replay_item(config, item, decoded.events)
    finally:
        config.pluginmanager.unregister(recorder)
    return recorder.reports


def _read(report: pytest.TestReport) -> dict[str, Any]:
    read = {name: getattr(report, name) for name in READ}
    if report.longrepr is not None:  # a failure's representation: as the terminal shows it
        read["longrepr"] = str(report.longrepr)
    return read


def test_a_compact_passing_report_replays_as_the_full_one(pytester: pytest.Pytester) -> None:
    (item,) = pytester.getitems(
        """
        import pytest
        @pytest.mark.filterwarnings("default")
        @pytest.mark.parametrize("n", [1])
        def test_func(n): pass
        """
    )
    reports = runtestprotocol(item, log=False)
    assert [report.outcome for report in reports] == ["passed"] * 3
    compact = tuple(events.plain_pass(report) for report in reports)
    assert all(isinstance(event, events.PassedReport) for event in compact)
    full = tuple(events.capture_report(item.config, report, shortcut=True) for report in reports)

    from_compact = _replayed(item, compact)  # type: ignore[arg-type]
    from_full = _replayed(item, full)

    assert [_read(report) for report in from_compact] == [_read(report) for report in from_full]
    assert [_read(report) for report in from_compact] == [_read(report) for report in reports]
    assert [vars(r).keys() for r in from_compact] == [vars(r).keys() for r in reports]
    assert {"filterwarnings", "parametrize", "test_func[1]"} <= set(from_compact[0].keywords)
    # As serially: each report its own keywords dict, the node id object shared with the item.
    assert from_compact[0].keywords is not from_compact[1].keywords
    if hasattr(item, "id"):
        assert all(report.id is item.id for report in from_compact)


@pytest.mark.parametrize(
    "body",
    [
        "assert 0",
        "print('out')",
        "request.node.user_properties.append(('k', 'v'))",
        "pytest.skip('no')",
    ],
)
def test_anything_but_a_plain_pass_takes_the_full_way(pytester: pytest.Pytester, body: str) -> None:
    item = pytester.getitem(f"import pytest\ndef test_func(request):\n    {body}\n")
    call = runtestprotocol(item, log=False)[1]
    assert events.plain_pass(call) is None


def test_a_report_with_an_attribute_a_plugin_set_takes_the_full_way(
    pytester: pytest.Pytester,
) -> None:
    item = pytester.getitem("def test_func(): pass")
    call = runtestprotocol(item, log=False)[1]
    call.extra = "set by a plugin"  # type: ignore[attr-defined]
    assert events.plain_pass(call) is None


class _HookLog:
    """Every test hook call the controller's plugins would see, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def pytest_runtest_logstart(self, nodeid: str, location: events.Location) -> None:
        self.calls.append(("logstart", (nodeid, location)))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.calls.append(("logreport", _read(report)))

    def pytest_runtest_logfinish(self, nodeid: str, location: events.Location) -> None:
        self.calls.append(("logfinish", (nodeid, location)))


def _hook_calls(item: pytest.Item, hook_events: tuple[events.HookEvent, ...]) -> list[Any]:
    decoded = events.decode(events.encode(events.ItemFinished(0, hook_events)))
    assert isinstance(decoded, events.ItemFinished)
    log = _HookLog()
    item.config.pluginmanager.register(log, "test-hook-log")
    try:
        events.replay_item(item.config, item, decoded.events)
    finally:
        item.config.pluginmanager.unregister(log)
    return log.calls


def _run_as_in_a_worker(item: pytest.Item) -> tuple[tuple[events.HookEvent, ...], list[Any]]:
    """Run ``item`` with a worker's recorder: what it sends of the item, and the hook calls the
    worker's own plugins saw."""
    forwarder = recording.Forwarder(item.config, [item], send_loose=lambda event: None)
    log = _HookLog()
    item.config.pluginmanager.register(forwarder, "test-forwarder")
    item.config.pluginmanager.register(log, "test-hook-log")
    try:
        forwarder.begin(0)
        item.ihook.pytest_runtest_protocol(item=item, nextitem=None)
        return forwarder.end(), log.calls
    finally:
        item.config.pluginmanager.unregister(log)
        item.config.pluginmanager.unregister(forwarder)


def test_a_plainly_passing_item_travels_as_one_event_with_the_same_hook_calls(
    pytester: pytest.Pytester,
) -> None:
    item = pytester.getitem("def test_func(): pass")
    sent, in_the_worker = _run_as_in_a_worker(item)

    assert [type(event) for event in sent] == [events.PassedItem]
    calls = _hook_calls(item, sent)
    assert calls == in_the_worker
    assert [name for name, _ in calls] == ["logstart"] + ["logreport"] * 3 + ["logfinish"]
    assert [fields["when"] for name, fields in calls if name == "logreport"] == [
        "setup",
        "call",
        "teardown",
    ]


@pytest.mark.parametrize("body", ["assert 0", "print('out')", "pytest.skip('no')"])
def test_an_item_that_is_not_a_plain_pass_keeps_its_hook_calls(
    pytester: pytest.Pytester, body: str
) -> None:
    item = pytester.getitem(f"import pytest\ndef test_func():\n    {body}\n")
    sent, in_the_worker = _run_as_in_a_worker(item)

    assert [type(event) for event in sent] != [events.PassedItem]
    assert len(sent) == 5  # logstart, three reports, logfinish
    assert _hook_calls(item, sent) == in_the_worker


def test_a_plain_pass_of_an_item_marked_while_it_ran_travels_in_full(
    pytester: pytest.Pytester,
) -> None:
    item = pytester.getitem(
        "def test_func(request):\n    request.node.add_marker('added_while_running')\n"
    )
    sent, in_the_worker = _run_as_in_a_worker(item)

    assert not any(isinstance(event, (events.PassedItem, events.PassedReport)) for event in sent)
    calls = _hook_calls(item, sent)
    assert calls == in_the_worker
    assert "added_while_running" in calls[2][1]["keywords"]  # the call's report


@pytest.mark.parametrize(
    "location",
    [
        ("tests/test_a.py", 3, "test_func"),
        # No line number; a file name that is not UTF-8 (a surrogate escape) and a non-ASCII id.
        ("tests/t\udcff.py", None, "TestΠ::test_func[ü-1]"),
        # A plugin's location whose line number is text: it arrives as it was, by the long way.
        ("tests/test_a.py", "7", "test_func"),
    ],
)
def test_a_passed_items_location_and_times_arrive_as_they_were_sent(
    location: events.Location,
) -> None:
    times = (0.25, 1e9, 1e9 + 0.25, 1.5e-6, 2.0, 2.000002, 0.0, 3.0, 3.0)
    sent = events.ItemFinished(7, (events.PassedItem(location, times),))

    assert events.decode(events.encode(sent)) == sent
