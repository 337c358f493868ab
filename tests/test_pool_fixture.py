"""The ``pool`` fixture: one start-up per session, nothing carried from one test to the next."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import POOL

from pytest_poolrun.pool import available_cpus

# Each test of the inner sessions appends what it saw of its pool to this file, one JSON a line.
RECORD = """
import json, os

def record(pool, **extra):
    seen = {"processes": pool.processes, "pids": sorted(pool.worker_pids()), **extra}
    with open(os.environ["POOL_RECORD"], "a") as out:
        out.write(json.dumps(seen) + "\\n")
"""


@pytest.fixture
def records(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the inner session's tests record their pools; the inner session is a plain one."""
    path = pytester.path / "records.jsonl"
    monkeypatch.setenv("POOL_RECORD", str(path))
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    pytester.makepyfile(record=RECORD)
    return path


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie waiting to be reaped does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_start_once_and_are_reused_by_every_test(
    pytester: pytest.Pytester, records: Path
) -> None:
    pytester.makepyfile(
        test_reuse="""
        import pytest
        from record import record

        @pytest.mark.parametrize("n", range(3))
        def test_uses_pool(pool, n):
            assert pool.map(abs, [-n, n]) == [n, n]
            record(pool)
        """
    )
    result = pytester.runpytest_subprocess(*POOL)
    result.assert_outcomes(passed=3)
    seen = read_records(records)
    assert [entry["pids"] for entry in seen] == [seen[0]["pids"]] * 3
    assert seen[0]["processes"] == available_cpus()
    assert not [pid for pid in seen[0]["pids"] if alive(pid)]


def test_nothing_a_test_does_to_the_pool_reaches_the_next(
    pytester: pytest.Pytester, records: Path
) -> None:
    pytester.makepyfile(
        test_isolation="""
        import os, time
        import pytest
        from pytest_poolrun.pool import TaskCancelledError
        from record import record

        LEFT = []

        def write_ledger(_):
            with open(os.environ["POOL_RECORD"] + ".ledger", "a") as ledger:
                ledger.write("a leftover task ran\\n")

        def test_leaves_tasks_running_and_queued(pool):
            record(pool)
            for _ in range(pool.processes):
                LEFT.append(pool.apply_async(time.sleep, (60,)))
            LEFT.append(pool.map_async(write_ledger, range(20), 1))

        def test_gets_an_idle_pool_then_crashes_a_worker(pool):
            for leftover in LEFT:
                assert leftover.ready()
                with pytest.raises(TaskCancelledError):
                    leftover.get(0)
            record(pool)
            assert pool.map(abs, [-1, -2]) == [1, 2]
            pool.apply_async(os._exit, (3,))

        def test_gets_all_workers_then_terminates(pool):
            record(pool)
            assert pool.map(abs, range(-4, 0), 1) == [4, 3, 2, 1]
            pool.terminate()

        def test_gets_a_working_pool(pool):
            record(pool)
            assert pool.apply(abs, (-5,)) == 5
        """
    )
    result = pytester.runpytest_subprocess(*POOL, "--pool-fixture-workers", "2")
    result.assert_outcomes(passed=4)
    assert not Path(f"{records}.ledger").exists()
    seen = read_records(records)
    assert [len(entry["pids"]) for entry in seen] == [2, 2, 2, 2]
    every_pid = {pid for entry in seen for pid in entry["pids"]}
    assert not [pid for pid in every_pid if alive(pid)]


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (("-o", "pool_fixture_workers=3"), None, 3),
        (("-o", "pool_fixture_workers=3", "--pool-fixture-workers", "1"), None, 1),
        ((), "2", max(1, available_cpus() // 2)),
    ],
    ids=["ini", "option-over-ini", "shared-with-runner-workers"],
)
def test_size_comes_from_option_ini_or_a_share_of_the_cpus(
    pytester: pytest.Pytester,
    records: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    env: str | None,
    expected: int,
) -> None:
    if env is not None:
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", env)
    pytester.makepyfile(
        test_size="""
        from record import record

        def test_size(pool):
            record(pool)
        """
    )
    pytester.runpytest_subprocess(*POOL, *args).assert_outcomes(passed=1)
    assert read_records(records)[0]["processes"] == expected


def test_invalid_size_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nothing="def test_nothing(): pass")
    result = pytester.runpytest_subprocess(*POOL, "--pool-fixture-workers", "none")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--pool-fixture-workers is 'none'*whole number >= 1*"])


def test_inside_the_runners_workers_the_cpus_are_shared(
    pytester: pytest.Pytester, records: Path
) -> None:
    pytester.makepyfile(
        test_in_workers="""
        import os
        import pytest
        from record import record

        @pytest.mark.parametrize("n", range(4))
        def test_uses_pool(pool, n):
            assert pool.apply(abs, (-n,)) == n
            record(pool, runner=os.getpid())
        """
    )
    pytester.runpytest_subprocess(*POOL, "--pool", "2").assert_outcomes(passed=4)
    seen = read_records(records)
    assert {entry["processes"] for entry in seen} == {max(1, available_cpus() // 2)}
    pools = {entry["runner"]: entry["pids"] for entry in seen}
    for entry in seen:
        assert entry["pids"] == pools[entry["runner"]]  # one start-up per runner worker
    every_pid = {pid for entry in seen for pid in entry["pids"]}
    assert not [pid for pid in every_pid if alive(pid)]
    assert os.getpid() not in pools


@pytest.mark.parametrize(
    "workers",
    [("--pool", "1", "--pool-start", "spawn"), ("--pool-tx", "popen"), ("-p", "xdist", "-n", "1")],
    ids=["spawn", "execnet", "xdist"],
)
def test_behind_an_execnet_gateway_the_fixture_starts_its_pool_without_a_warning(
    pytester: pytest.Pytester, workers: tuple[str, ...]
) -> None:
    """execnet's receiver thread runs in such a worker: the pool starts its workers through a
    forkserver there by choice, with no warning about the thread (an error under -W error)."""
    pytester.makepyfile(
        """
        def test_uses_the_pool(pool):
            assert pool.map(abs, [-1, -2]) == [1, 2]
            assert pool.start_method == "forkserver"
        """
    )
    result = pytester.runpytest_subprocess(*POOL, "-W", "error", *workers, timeout=120)
    result.assert_outcomes(passed=1)
