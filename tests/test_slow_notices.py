"""--pool-slow: a line for a test still running past the threshold; the unfinished ones listed
when the run is interrupted; bad values are usage errors."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from helpers import POOL

from pytest_poolrun.ledger import Running
from pytest_poolrun.slowtests import SlowNotices
from pytest_poolrun.workerset import LiveWorker


def test_a_slow_test_is_named_while_it_runs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_slow="""
        import time
        def test_takes_three_seconds(): time.sleep(3)
        def test_quick(): pass
        """
    )
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2", "--pool-slow", "1", timeout=60)
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "SLOW: test_slow.py::test_takes_three_seconds still running on gw? after 1s",
            "SLOW: test_slow.py::test_takes_three_seconds still running on gw? after 2s",
        ]
    )
    assert "test_quick still running" not in result.stdout.str()


def test_the_ini_key_sets_the_threshold(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\npool_slow = 1\n")
    pytester.makepyfile(test_slow="import time\ndef test_sleeps(): time.sleep(1.5)\n")
    result = pytester.runpytest_subprocess(*POOL, "--pool", "1", timeout=60)
    result.stdout.fnmatch_lines(["SLOW: test_slow.py::test_sleeps still running on gw0 after 1s"])


@pytest.mark.parametrize("threshold", ["1e20", "inf"])
def test_a_threshold_past_any_run_turns_the_notices_off(
    pytester: pytest.Pytester, threshold: str
) -> None:
    # Once, the next notice's deadline reached the selector unclamped: INTERNALERROR.
    pytester.makepyfile("def test_one(): pass\ndef test_two(): pass\n")
    result = pytester.runpytest_subprocess(
        *POOL, "--pool", "2", "--pool-slow", threshold, timeout=60
    )
    assert result.ret == 0
    result.assert_outcomes(passed=2)
    assert "SLOW" not in result.stdout.str()


def test_interrupted_summary_lists_the_unfinished_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_hang="import time\ndef test_hangs(): time.sleep(60)\n")
    pytester.makepyfile(test_other="def test_quick(): pass\n")
    args = [sys.executable, "-m", "pytest", *POOL, "--pool", "2", "--pool-slow", "0.5"]
    process = pytester.popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    seen = []
    for line in process.stdout:  # the notice says the test is under way: interrupt it then
        seen.append(line.decode())
        if seen[-1].startswith("SLOW: test_hang.py::test_hangs"):
            break
    process.terminate()
    process.wait(timeout=30)  # the rest of its output is small: it fits in the pipe
    text = "".join(seen) + process.stdout.read().decode()
    assert process.returncode == pytest.ExitCode.INTERRUPTED, text
    assert "unfinished tests when the run was interrupted" in text, text
    assert "test_hang.py::test_hangs (on gw" in text, text


@pytest.mark.parametrize(
    "args",
    [("--pool-slow", "0"), ("--pool-slow", "soon"), ("-o", "pool_slow=-1")],
    ids=["zero", "word", "ini"],
)
def test_bad_threshold_is_a_usage_error(pytester: pytest.Pytester, args: tuple[str, str]) -> None:
    pytester.makepyfile(test_one="def test_one(): pass\n")
    result = pytester.runpytest_subprocess(*POOL, "--pool", "1", *args, timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "is not a duration" in result.stderr.str()


class _Ledger:
    """Stands in for ItemLedger: worker name ─▶ (item, start time)."""

    def __init__(self, running: dict[str, Running]) -> None:
        self.running = running

    def current(self, worker: str, slot: int) -> Running | None:
        return self.running.get(worker)


def test_notices_name_each_multiple_once_and_wake_at_the_next() -> None:
    started = time.monotonic() - 2.5
    ledger = _Ledger({"gw0": Running(3, started)})
    said: list[str] = []
    notices = SlowNotices(1.0, ledger, lambda item: f"t.py::test_{item}", said.append)  # type: ignore[arg-type]
    workers = [LiveWorker("gw0", 0, 1234, False), LiveWorker("gw1", 1, 1235, False)]
    wait = notices.until_next_notice(workers)
    assert wait is not None and 0 < wait <= 0.5
    notices.announce(workers)
    notices.announce(workers)
    assert said == ["SLOW: t.py::test_3 still running on gw0 after 2s"]
    ledger.running["gw0"] = Running(4, time.monotonic() - 1.2)  # the next test on that worker
    notices.announce(workers)
    assert said[-1] == "SLOW: t.py::test_4 still running on gw0 after 1s"
    assert SlowNotices(None, ledger, str, said.append).until_next_notice(workers) is None  # type: ignore[arg-type]


def test_a_multiple_crossed_just_after_an_announce_is_due_at_once() -> None:
    # The controller woke a hair before the test's first second was up and said nothing; by
    # the time it asks when to wake next, the second is up: the notice is due now, not a
    # second later (a test of 1.5 s would have ended by then, unnamed).
    ledger = _Ledger({"gw0": Running(3, time.monotonic() - 0.95)})
    said: list[str] = []
    notices = SlowNotices(1.0, ledger, lambda item: f"t.py::test_{item}", said.append)  # type: ignore[arg-type]
    workers = [LiveWorker("gw0", 0, 1234, False)]
    notices.announce(workers)
    assert said == []
    time.sleep(0.1)  # the first second is now up
    wait = notices.until_next_notice(workers)
    assert wait is not None and wait <= 0.05
    notices.announce(workers)
    assert said == ["SLOW: t.py::test_3 still running on gw0 after 1s"]


def test_ctrl_c_reports_the_tests_that_finished_before_it(pytester: pytest.Pytester) -> None:
    """A worker sends a quick test's result with a later batch; a Ctrl-C while the next test
    ran lost it ("no tests ran"), where a serial run reports that test's failure."""
    pytester.makepyfile(
        test_order="""
        import time

        def test_fails_fast():
            assert 1 == 2

        def test_hangs():
            time.sleep(60)

        def test_after():
            pass
        """
    )
    args = [sys.executable, "-m", "pytest", *POOL, "--pool", "1", "--pool-chunksize", "3"]
    process = pytester.popen(
        [*args, "--pool-slow", "0.5"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line.decode())
        if seen[-1].startswith("SLOW: test_order.py::test_hangs"):
            break
    process.send_signal(signal.SIGINT)
    process.wait(timeout=30)
    text = "".join(seen) + process.stdout.read().decode()
    assert process.returncode == pytest.ExitCode.INTERRUPTED, text
    assert "FAILED test_order.py::test_fails_fast - assert 1 == 2" in text, text
    assert text.splitlines()[-1].startswith("=") and " 1 failed in " in text.splitlines()[-1]
