"""Scheduling seen from a run: stored durations, order, distribution modes."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from helpers import POOL

from pytest_poolrun.durations import Durations

LEDGER = """
import os, time, pytest

@pytest.fixture(autouse=True)
def _note(request, worker_id):
    with open(os.environ["LEDGER"], "a") as ledger:
        ledger.write(f"{time.monotonic()} {worker_id} {request.node.nodeid}\\n")
"""


@pytest.fixture
def ledger(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    path = pytester.path / "ledger.txt"
    monkeypatch.setenv("LEDGER", str(path))
    pytester.makeconftest(LEDGER)

    def read() -> list[tuple[float, str, str]]:
        rows = [line.split(" ", 2) for line in path.read_text().splitlines()]
        path.unlink()
        return [(float(when), worker, nodeid) for when, worker, nodeid in rows]

    return read


def test_durations_are_stored_and_the_longest_mode_starts_the_longest_test_first(
    pytester: pytest.Pytester, ledger
) -> None:
    pytester.makepyfile(
        test_a="""
        import pytest
        @pytest.mark.parametrize("n", range(30))
        def test_fast(n): pass
        """,
        test_z="""
        import time
        def test_slow(): time.sleep(0.4)
        """,
    )
    first = pytester.runpytest_subprocess(*POOL, "--pool", "2")
    assert first.ret == 0
    stored = json.loads((pytester.path / ".pytest_cache/d/poolrun/durations.json").read_text())
    assert stored["test_z.py::test_slow"] >= 0.4
    assert len(stored) == 31
    ledger()
    # One worker: the order its tests start in is the order the chunks were planned in, where
    # two workers' interleaving depends on which one the machine lets start first.
    second = pytester.runpytest_subprocess(*POOL, "--pool", "1", "--pool-dist", "longest")
    assert second.ret == 0
    order = [nodeid for _, _, nodeid in sorted(ledger())]
    # Collected last (and started last without the durations, unless a plugin shuffled the
    # collection), it now starts first.
    assert order.index("test_z.py::test_slow") == 0, order


def test_serial_runs_store_durations_too(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_one(): pass")
    pytester.runpytest_subprocess(*POOL).assert_outcomes(passed=1)
    assert (pytester.path / ".pytest_cache/d/poolrun/durations.json").exists()


def test_durations_stored_by_0_1_0_are_read(pytester: pytest.Pytester) -> None:
    # 0.1.0 kept them as the cache value poolrun/durations.
    config = pytester.parseconfigure()
    assert config.cache is not None
    config.cache.set("poolrun/durations", {"test_a.py::test_one": 1.5})
    assert Durations.load(config).get("test_a.py::test_one") == 1.5


def test_stored_durations_are_read_back_by_the_next_run(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfigure()
    saved = Durations.load(config)
    saved.measured["test_a.py::test_one"] = 0.25
    saved.save(config)
    assert Durations.load(pytester.parseconfigure()).get("test_a.py::test_one") == 0.25


def test_a_cache_that_cannot_be_written_is_a_warning(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_one(): pass")
    (pytester.path / ".pytest_cache/d").mkdir(parents=True)
    (pytester.path / ".pytest_cache/d/poolrun").write_text("in the way")
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*PytestCacheWarning: could not store test durations*"])


def test_a_collect_only_run_leaves_no_durations_folder(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_one(): pass")
    pytester.runpytest_subprocess(*POOL, "--pool", "2", "--collect-only").assert_outcomes()
    assert not (pytester.path / ".pytest_cache/d/poolrun").exists()


MODULES = {
    f"test_m{m}": """
import pytest
@pytest.mark.parametrize("n", range(6))
def test_n(n): pass
"""
    for m in range(4)
}


def test_dist_module_keeps_each_module_on_one_worker(pytester: pytest.Pytester, ledger) -> None:
    pytester.makepyfile(**MODULES)
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2", "--pool-dist", "module")
    assert result.ret == 0
    workers_of = defaultdict(set)
    for _, worker, nodeid in ledger():
        workers_of[nodeid.split("::")[0]].add(worker)
    assert len(workers_of) == 4
    assert all(len(workers) == 1 for workers in workers_of.values()), workers_of
    assert set().union(*workers_of.values()) == {"gw0", "gw1"}


def test_dist_group_keeps_each_xdist_group_on_one_worker(pytester: pytest.Pytester, ledger) -> None:
    pytester.makepyfile(
        test_a="""
        import pytest
        @pytest.mark.xdist_group(name="db")
        def test_db_1(): pass
        @pytest.mark.parametrize("n", range(10))
        def test_free(n): pass
        """,
        test_b="""
        import pytest
        @pytest.mark.xdist_group("db")
        def test_db_2(): pass
        @pytest.mark.xdist_group("db")
        def test_db_3(): pass
        """,
    )
    result = pytester.runpytest_subprocess(
        *POOL, "--pool", "2", "--pool-dist", "group", "--pool-chunksize", "1"
    )
    assert result.ret == 0
    db_workers = {worker for _, worker, nodeid in ledger() if "test_db" in nodeid}
    assert len(db_workers) == 1


def test_long_tests_go_to_whichever_worker_is_free_first(pytester: pytest.Pytester, ledger) -> None:
    pytester.makepyfile(
        test_fast="""
        import pytest
        @pytest.mark.parametrize("n", range(20))
        def test_fast(n): pass
        """,
        test_slow="""
        import time
        def test_a(): time.sleep(0.8)
        def test_b(): time.sleep(0.3)
        def test_c(): time.sleep(0.3)
        """,
    )
    assert pytester.runpytest_subprocess(*POOL, "--pool", "2").ret == 0
    ledger()
    longest = ("--pool", "2", "--pool-dist", "longest")
    assert pytester.runpytest_subprocess(*POOL, *longest).ret == 0
    worker_of = {nodeid: worker for _, worker, nodeid in ledger()}
    # Longest first: a and b start at once on the two workers; c goes to b's worker, free
    # long before a's, instead of being promised early to a's.
    assert worker_of["test_slow.py::test_a"] != worker_of["test_slow.py::test_b"]
    assert worker_of["test_slow.py::test_c"] == worker_of["test_slow.py::test_b"]


def test_each_worker_runs_its_tests_in_collection_order_once_durations_are_stored(
    pytester: pytest.Pytester, ledger
) -> None:
    # A later, slower module leaves a setting changed; serially (and under pytest-xdist) the
    # earlier module never sees it.  Stored durations must not move the slow module first.
    pytester.makepyfile(
        state="SEPARATORS = ' \\n'",
        test_a_fast="""
        import pytest, state
        @pytest.mark.parametrize("n", range(8))
        def test_default_setting(n):
            assert state.SEPARATORS == " \\n"
        """,
        test_b_slow="""
        import time, pytest, state
        @pytest.fixture(autouse=True)
        def reset():
            state.SEPARATORS = " \\n"
        @pytest.mark.parametrize("n", range(6))
        def test_changes_the_setting(n):
            time.sleep(0.1)
            state.SEPARATORS = " "
        """,
    )
    for _ in range(2):  # the second run has every duration stored
        result = pytester.runpytest_subprocess(*POOL, "--pool", "2")
        result.assert_outcomes(passed=14)
        rows = sorted(ledger())
        for worker in {worker for _, worker, _ in rows}:
            ran = [nodeid for _, who, nodeid in rows if who == worker]
            assert ran == sorted(ran), f"{worker} ran its tests out of collection order"
