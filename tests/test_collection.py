"""The controller collects once; workers run the very same items; usage errors are clear."""

from __future__ import annotations

import os

import pytest
from helpers import POOL

COLLECTION_LOG = """
import os
def pytest_collection_finish(session):
    with open(os.environ["COLLECTION_LOG"], "a") as collection_log:
        collection_log.write(f"collected {os.getpid()}\\n")

def pytest_collection_modifyitems(items):
    items.reverse()   # a plugin that reorders: the workers must see its order
"""

TESTS = """
import os, pytest
@pytest.mark.parametrize("n", range(12))
def test_n(n, worker_id):
    with open(os.environ["COLLECTION_LOG"], "a") as collection_log:
        collection_log.write(f"ran {os.getpid()} {worker_id} {n}\\n")
"""


def test_collects_once_and_keeps_the_plugin_order(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    collection_log = pytester.path / "collection_log.txt"
    monkeypatch.setenv("COLLECTION_LOG", str(collection_log))
    pytester.makeconftest(COLLECTION_LOG)
    pytester.makepyfile(test_numbers=TESTS)
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2", "--pool-chunksize", "3")
    assert result.ret == 0
    lines = collection_log.read_text().splitlines()
    collected = [line for line in lines if line.startswith("collected")]
    assert len(collected) == 1, "collection happens once, in the controller"
    controller = collected[0].split()[1]
    ran = [line.split()[1:] for line in lines if line.startswith("ran")]
    assert sorted(int(n) for _, _, n in ran) == list(range(12))
    assert controller not in {pid for pid, _, _ in ran}
    assert len({pid for pid, _, _ in ran}) == 2
    # each worker ran whole chunks of 3 consecutive items, in the reversed order
    for worker in ("gw0", "gw1"):
        mine = [int(n) for _, w, n in ran if w == worker]
        assert len(mine) % 3 == 0
        for start in range(0, len(mine), 3):
            chunk = mine[start : start + 3]
            assert chunk == [chunk[0], chunk[0] - 1, chunk[0] - 2], mine


def test_selection_options_apply_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLECTION_LOG", str(pytester.path / "collection_log.txt"))
    pytester.makepyfile(test_numbers=TESTS)
    result = pytester.runpytest_subprocess(
        *POOL, "--pool", "2", "-k", "not 5", "--deselect", "test_numbers.py::test_n[7]"
    )
    result.assert_outcomes(passed=10, deselected=2)


def test_never_more_workers_than_items(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_one(): pass")
    result = pytester.runpytest_subprocess(*POOL, "--pool", "4")
    result.stdout.fnmatch_lines(["poolrun: 1 worker, forked after collection, for 1 item"])


def test_auto_uses_the_cpus_this_process_may_use(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.parametrize("n", range(64))
        def test_n(n): pass
        """
    )
    result = pytester.runpytest_subprocess(*POOL, "--pool", "auto")
    expected = len(os.sched_getaffinity(0))
    plural = "s" if expected != 1 else ""
    result.stdout.fnmatch_lines([f"poolrun: {expected} worker{plural}, forked after collection*"])


def test_collection_error_interrupts_before_any_worker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ok="def test_fine(): pass", test_broken="import nonexistent_module")
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*Interrupted: 1 error during collection*"])
    assert "poolrun:" not in result.stdout.str()


def test_continue_on_collection_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ok="def test_fine(): pass", test_broken="import nonexistent_module")
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2", "--continue-on-collection-errors")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["poolrun: 1 worker*", "*1 passed, 1 error*"])


def test_setup_show_runs_serially_and_says_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.fixture
        def thing(): return 1
        def test_a(thing): pass
        def test_b(thing): pass
        """
    )
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2", "--setup-show")
    result.stdout.fnmatch_lines(
        [
            "poolrun: --setup-show prints from inside each test's process, so this run is serial*",
            "*SETUP    F thing*",
        ]
    )
    assert result.ret == 0
