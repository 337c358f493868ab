"""--pool-max-tests-per-worker and --pool-max-worker-rss: workers replaced between tests, every
test run once, fixtures set up again in the new worker; bad values are usage errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import POOL, junit_outcomes, pid_noting_conftest
from test_controller import FakePool, finished
from test_controller import drive as drive  # the fake-pool fixture, used here too

from pytest_poolrun.recycling import Retired

TWENTY = """
import pytest
@pytest.mark.parametrize("n", range(20))
def test_many(n): pass
"""


def _pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


@pytest.mark.parametrize(
    "args",
    [
        ("--pool-max-tests-per-worker", "5"),
        ("-o", "pool_max_tests_per_worker=5"),
        ("--pool-max-tests-per-worker", "5", "--pool-start", "spawn"),
    ],
    ids=["option", "ini", "spawn"],
)
def test_workers_are_replaced_after_n_tests(pytester: pytest.Pytester, args: tuple[str]) -> None:
    pid_file = pytester.path / "pids.txt"
    pytester.makeconftest(pid_noting_conftest(pid_file))
    pytester.makepyfile(test_twenty=TWENTY)
    xml = pytester.path / "report.xml"
    result = pytester.runpytest_subprocess(
        *POOL, "--pool", "2", f"--junitxml={xml}", *args, timeout=120
    )
    assert result.ret == 0
    result.assert_outcomes(passed=20)
    outcomes = junit_outcomes(xml)
    assert len(outcomes) == 20 and all(o == ("passed", "") for o in outcomes.values())
    per_process = Counter(_pids(pid_file))
    assert sum(per_process.values()) == 20, "every test ran once"
    assert len(per_process) >= 4, per_process
    assert max(per_process.values()) <= 5, per_process


@pytest.mark.parametrize(
    "limit", [("--pool-max-tests-per-worker", "3"), ("--pool-max-worker-rss", "1")]
)
def test_one_worker_still_runs_the_tests_in_collection_order(
    pytester: pytest.Pytester, limit: tuple[str, str]
) -> None:
    """The items a retiring worker hands back run before the chunks it had been sent
    meanwhile (--pool-max-worker-rss 1: a new worker after every test)."""
    order = pytester.path / "order.txt"
    pytester.makepyfile(
        test_ordered=f"""
        import pytest
        @pytest.mark.parametrize("n", range(12))
        def test_noted(n):
            with open({str(order)!r}, "a") as f:
                f.write(f"{{n}}\\n")
        """
    )
    result = pytester.runpytest_subprocess(
        *POOL, "-p", "no:randomly", "--pool", "1", "--pool-chunksize", "2", *limit, timeout=120
    )
    result.assert_outcomes(passed=12)
    assert order.read_text().split() == [str(n) for n in range(12)]


def test_fixtures_are_set_up_again_in_the_new_worker(pytester: pytest.Pytester) -> None:
    log = pytester.path / "log.txt"
    pytester.makepyfile(
        test_scoped=f"""
        import os, pytest
        def note(text):
            with open({str(log)!r}, "a") as f:
                f.write(f"{{text}} {{os.getpid()}}\\n")
        @pytest.fixture(scope="module")
        def resource():
            note("setup")
            yield
            note("teardown")
        @pytest.mark.parametrize("n", range(4))
        def test_uses(resource, n): note("test")
        """
    )
    result = pytester.runpytest_subprocess(
        *POOL, "--pool", "1", "--pool-max-tests-per-worker", "2", timeout=120
    )
    assert result.ret == 0
    result.assert_outcomes(passed=4)
    lines = [line.split() for line in log.read_text().splitlines()]
    by_pid: dict[str, list[str]] = {}
    for what, pid in lines:
        by_pid.setdefault(pid, []).append(what)
    assert list(by_pid.values()) == [["setup", "test", "test", "teardown"]] * 2


def test_a_worker_past_the_memory_limit_is_replaced(pytester: pytest.Pytester) -> None:
    pid_file = pytester.path / "pids.txt"
    pytester.makeconftest(pid_noting_conftest(pid_file))
    pytester.makepyfile(
        test_memory="""
        KEPT = []
        def test_keeps_400_mb(): KEPT.append(b"x" * (400 * 1024 * 1024))
        def test_next(): pass
        def test_after(): pass
        """
    )
    result = pytester.runpytest_subprocess(
        *POOL, "--pool", "1", "--pool-max-worker-rss", "300", timeout=120
    )
    assert result.ret == 0
    result.assert_outcomes(passed=3)
    keeper, following, after = _pids(pid_file)
    assert following != keeper, "the test after the one that kept 400 MB ran in a new worker"
    assert after == following


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (("--pool-max-tests-per-worker", "0"), "a count of tests"),
        (("--pool-max-worker-rss", "lots"), "a memory size"),
        (("-o", "pool_max_worker_rss=-3"), "a memory size"),
    ],
    ids=["zero-tests", "word-rss", "ini-rss"],
)
def test_bad_limits_are_usage_errors(
    pytester: pytest.Pytester, args: tuple[str, str], what: str
) -> None:
    pytester.makepyfile(test_one="def test_one(): pass\n")
    result = pytester.runpytest_subprocess(*POOL, "--pool", "1", *args, timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"is not {what}" in result.stderr.str()


def test_controller_sends_a_retired_workers_unrun_items_again(drive: Any) -> None:
    """Driven with the fake pool of test_controller: no item is lost or run twice."""

    def script(pool: FakePool, items: list[pytest.Item]) -> None:
        pool.event("gw0", finished(items[0], 0))
        pool.submitted[0].callback(Retired("gw0", (1, 2)))
        pool.exit("gw0", 0, expected=True)
        for index in (1, 2):
            pool.event("gw1", finished(items[index], index))

    pool, recorder, _ = drive(script)
    assert [report.outcome for report in recorder.reports] == ["passed"] * 3
    assert [task.chunk for task in pool.submitted] == [[0, 1, 2], [1, 2]]
