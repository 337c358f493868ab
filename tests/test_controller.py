"""The controller without processes: a fake pool plays the workers' part, as pytest-xdist's
scheduler tests play theirs with fake nodes.  Each test scripts what the workers send; the
controller's reports are read back from a recorder plugin."""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from typing import Any

import pytest

from pytest_poolrun import events, itemrunner
from pytest_poolrun.board import Board
from pytest_poolrun.ledger import ItemLedger
from pytest_poolrun.manager import PoolHooks
from pytest_poolrun.poolerrors import PoolExhaustedError, WorkerLostError
from pytest_poolrun.runner import Controller, RunOptions
from pytest_poolrun.workerset import LiveWorker, WorkerExit

THREE_TESTS = "def test_a(): pass\ndef test_b(): pass\ndef test_c(): pass\n"


# The pid of every fake worker: what a forked worker marks on the board with its items.
FAKE_PID = 4242


class Submitted:
    """One chunk task the controller handed to the fake pool."""

    def __init__(
        self,
        chunk: list[int],
        callback: Callable[[Any], object],
        error_callback: Callable[[BaseException], object],
    ) -> None:
        self.chunk = chunk
        self.callback = callback
        self.error_callback = error_callback


class FakePool:
    """Takes the controller's chunks; ``join`` runs the test's script once, in its place."""

    def __init__(self, script: Callable[[FakePool], None], hooks: PoolHooks) -> None:
        self.script = script
        self.hooks = hooks
        self.submitted: list[Submitted] = []
        self.killed: list[str] = []
        self.cancelled = False

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Any = (),
        kwds: None = None,
        callback: Any = None,
        error_callback: Any = None,
        *,
        ahead: bool = False,
    ) -> object:
        assert func is itemrunner.run_chunk
        self.submitted.append(Submitted(list(args[0]), callback, error_callback))
        return None

    def event(self, worker: str, *batch: events.WorkerEvent) -> None:
        assert self.hooks.on_event is not None
        self.hooks.on_event(worker, tuple(events.encode(event) for event in batch))

    def exit(self, worker: str, exitcode: int, expected: bool = False) -> None:
        assert self.hooks.on_worker_exit is not None
        slot = int(worker[len("gw") :])
        self.hooks.on_worker_exit(WorkerExit(worker, slot, FAKE_PID, exitcode, expected))

    def cancel_queued(self) -> None:
        self.cancelled = True

    def shutdown_idle(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> bool:
        self.script(self)
        return True

    def terminate(self) -> None:
        pass

    def kill(self, name: str) -> None:
        self.killed.append(name)

    def live_workers(self) -> list[LiveWorker]:
        return []

    def take_events(self) -> None:
        pass


class Recorder:
    def __init__(self) -> None:
        self.reports: list[pytest.TestReport] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.reports.append(report)


def finished(item: pytest.Item, index: int) -> events.ItemFinished:
    """What a worker sends for a test that passed."""
    report = pytest.TestReport(item.nodeid, item.location, {}, "passed", None, "call", duration=0.0)
    return events.ItemFinished(index, (events.PlainReport(pickle.dumps(report.__dict__)),))


@pytest.fixture
def drive(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[FakePool, Recorder, list[pytest.Item]]]:
    # The fake workers share nothing with this process: nothing to hand over before a fork.
    monkeypatch.setattr(itemrunner, "prepare", lambda *args: lambda: None)

    def run(
        script: Callable[[FakePool, list[pytest.Item]], None], report_order: str = "completion"
    ) -> tuple[FakePool, Recorder, list[pytest.Item]]:
        items = pytester.getitems(THREE_TESTS)
        session = items[0].session
        session.items = items
        recorder = Recorder()
        session.config.pluginmanager.register(recorder)
        options = RunOptions(2, 3, None, None, "load", (), "fork", report_order, "uid")
        pools: list[FakePool] = []

        def factory(*args: Any, hooks: PoolHooks, **kwargs: Any) -> FakePool:
            pools.append(FakePool(lambda pool: script(pool, items), hooks))
            return pools[0]

        Controller(session, options, pool_factory=factory).run()
        return pools[0], recorder, items

    return run


def test_a_crash_fails_the_running_item_and_sends_the_rest_out_again(drive: Any) -> None:
    def script(pool: FakePool, items: list[pytest.Item]) -> None:
        first = pool.submitted[0]
        pool.event("gw0", events.ItemStarted(first.chunk[0], 4242))
        pool.exit("gw0", -11)
        first.error_callback(WorkerLostError("worker gw0 died", worker="gw0", exitcode=-11))

    pool, recorder, items = drive(script)
    [crash] = recorder.reports
    assert crash.failed and crash.nodeid == items[0].nodeid
    assert "worker gw0 died while running it: signal 11 (SIGSEGV)" in str(crash.longrepr)
    assert [task.chunk for task in pool.submitted] == [[0, 1, 2], [1, 2]]


def test_collection_order_holds_a_finished_item_until_those_before_it(drive: Any) -> None:
    def script(pool: FakePool, items: list[pytest.Item]) -> None:
        pool.event("gw1", finished(items[2], 2))
        pool.event("gw0", finished(items[1], 1))
        pool.event("gw0", finished(items[0], 0))

    _, recorder, items = drive(script, report_order="collection")
    assert [report.nodeid for report in recorder.reports] == [item.nodeid for item in items]


def test_an_exhausted_pool_reports_the_unstarted_items_as_not_run(drive: Any) -> None:
    def script(pool: FakePool, items: list[pytest.Item]) -> None:
        pool.event("gw0", finished(items[0], 0))
        pool.submitted[0].error_callback(PoolExhaustedError("no worker is left"))

    _, recorder, items = drive(script)
    outcomes = [(report.nodeid, report.outcome, report.when) for report in recorder.reports]
    assert outcomes == [
        (items[0].nodeid, "passed", "call"),
        (items[1].nodeid, "failed", "call"),
        (items[2].nodeid, "failed", "call"),
    ]
    assert "not run: no worker is left" in str(recorder.reports[1].longrepr)


def test_a_held_item_goes_out_again_when_its_worker_dies_idle(drive: Any) -> None:
    def script(pool: FakePool, items: list[pytest.Item]) -> None:
        first = pool.submitted[0]
        for index in (0, 1):
            pool.event("gw0", finished(items[index], index))
        first.callback(("gw0", 2))  # the chunk is done; gw0 holds item 2 back
        pool.exit("gw0", -9)

    pool, recorder, _ = drive(script)
    assert [report.outcome for report in recorder.reports] == ["passed", "passed"]
    assert [task.chunk for task in pool.submitted] == [[0, 1, 2], [2]]


def _controller(pool: FakePool) -> Controller:
    on_event: Any = pool.hooks.on_event
    controller: Controller = on_event.__self__
    return controller


def test_a_dead_workers_journal_is_replayed_and_its_running_item_not_sent_again(
    drive: Any,
) -> None:
    def script(pool: FakePool, items: list[pytest.Item]) -> None:
        controller = _controller(pool)
        controller.journal.append(0, events.encode(finished(items[0], 0)))  # never sent
        controller.board.set_running(0, 1, time.monotonic(), FAKE_PID)
        pool.exit("gw0", -9)
        pool.submitted[0].error_callback(WorkerLostError("died", worker="gw0", exitcode=-9))

    pool, recorder, items = drive(script)
    assert [(report.nodeid, report.outcome) for report in recorder.reports] == [
        (items[0].nodeid, "passed"),
        (items[1].nodeid, "failed"),
    ]
    assert "worker gw0 died while running it" in str(recorder.reports[1].longrepr)
    assert [task.chunk for task in pool.submitted] == [[0, 1, 2], [2]]


def test_a_record_torn_by_the_kill_is_reported_lost_not_run_again(drive: Any) -> None:
    def script(pool: FakePool, items: list[pytest.Item]) -> None:
        controller = _controller(pool)
        controller.journal.append(0, events.encode(finished(items[0], 0)))
        controller.journal.append(0, events.encode(finished(items[1], 1))[:-3])  # torn
        controller.board.set_running(0, 1, time.monotonic(), FAKE_PID)
        pool.exit("gw0", -9)
        pool.submitted[0].error_callback(WorkerLostError("died", worker="gw0", exitcode=-9))

    pool, recorder, _ = drive(script)
    assert [report.outcome for report in recorder.reports] == ["passed", "failed"]
    assert "died while writing its report" in str(recorder.reports[1].longrepr)
    assert [task.chunk for task in pool.submitted] == [[0, 1, 2], [2]]


def test_an_item_before_the_running_one_without_a_result_is_lost_not_rerun(drive: Any) -> None:
    def script(pool: FakePool, items: list[pytest.Item]) -> None:
        pool.event("gw0", finished(items[0], 0))
        _controller(pool).board.set_running(
            0, 2, time.monotonic(), FAKE_PID
        )  # item 1 left no trace
        pool.exit("gw0", -9)
        pool.submitted[0].error_callback(WorkerLostError("died", worker="gw0", exitcode=-9))

    pool, recorder, items = drive(script)
    outcomes = {
        report.nodeid: (report.outcome, str(report.longrepr)) for report in recorder.reports
    }
    assert outcomes[items[1].nodeid][0] == "failed"
    assert "its report was lost when worker gw0 died" in outcomes[items[1].nodeid][1]
    assert outcomes[items[2].nodeid][0] == "failed"
    assert [task.chunk for task in pool.submitted] == [[0, 1, 2]]


def test_a_chunk_whose_worker_died_before_starting_it_goes_out_whole(drive: Any) -> None:
    def script(pool: FakePool, items: list[pytest.Item]) -> None:
        pool.exit("gw0", 75)
        pool.submitted[0].error_callback(WorkerLostError("died", worker="gw0", exitcode=75))

    pool, recorder, _ = drive(script)
    assert recorder.reports == []
    assert [task.chunk for task in pool.submitted] == [[0, 1, 2], [0, 1, 2]]


def test_a_replacement_workers_item_is_not_blamed_on_its_predecessor() -> None:
    """The slot's next worker may mark an item before the controller hears of the exit."""
    board = Board(1)
    ledger = ItemLedger(3, board)
    board.set_running(0, 1, time.monotonic(), FAKE_PID + 1)  # the replacement's mark
    assert ledger.ended("gw0", 0, FAKE_PID).running is None
    assert board.running(0) is not None  # and it stays


def test_a_result_that_arrives_twice_is_reported_once(drive: Any) -> None:
    def script(pool: FakePool, items: list[pytest.Item]) -> None:
        controller = _controller(pool)
        controller.journal.append(0, events.encode(finished(items[0], 0)))
        pool.exit("gw0", 0, expected=True)  # its journal is read: item 0 is reported
        pool.event("gw0", finished(items[0], 0))  # and the same record comes over the socket

    _, recorder, items = drive(script)
    assert [report.nodeid for report in recorder.reports] == [items[0].nodeid]


@pytest.mark.parametrize(
    ("start", "tx", "stoppable"),
    [
        ("fork", (), {0, 1, 2}),
        ("spawn", (), {0, 1, 2}),
        ("fork", ("popen//python=python3", "ssh=ci-host"), {0, 1}),
    ],
    ids=["forked", "spawned", "forked-popen-ssh"],
)
def test_ctrl_c_stops_the_local_workers_only(
    start: str, tx: tuple[str, ...], stoppable: set[int]
) -> None:
    """Ctrl-C's stop signal goes to workers on this machine (forked, or behind a popen
    gateway); a remote one cannot get it and is stopped at once."""
    options = RunOptions(3, None, None, None, "load", tx, start, "completion", "uid")
    assert options.stoppable_slots() == stoppable
