"""Fixtures in workers: set up once per stretch of items sharing them, torn down exactly once."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from helpers import POOL

FIXTURE_LOG_CONFTEST = """
import os, pytest

def note(request, what):
    with open(os.environ["FIXTURE_LOG"], "a") as fixture_log:
        fixture_log.write(f"{os.getpid()} {what}\\n")

@pytest.fixture(scope="session", autouse=True)
def session_fixture(request):
    note(request, "setup session")
    yield
    note(request, "teardown session")

@pytest.fixture(scope="module", autouse=True)
def module_fixture(request):
    note(request, f"setup module {request.module.__name__}")
    yield
    note(request, f"teardown module {request.module.__name__}")

@pytest.fixture(scope="class")
def class_fixture(request):
    note(request, "setup class")
    yield
    note(request, "teardown class")
"""

MODULE = """
import pytest
@pytest.mark.parametrize("n", range(8))
def test_n(n): pass

@pytest.mark.usefixtures("class_fixture")
class TestGroup:
    def test_a(self): pass
    def test_b(self): pass
"""


def _log_entries(path) -> list[tuple[str, str]]:
    lines = path.read_text().splitlines()
    return [tuple(line.split(" ", 1)) for line in lines]  # type: ignore[misc]


@pytest.fixture
def fixture_log(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file where the suite's fixtures note each setup and teardown, with their pid."""
    path = pytester.path / "fixture_log.txt"
    monkeypatch.setenv("FIXTURE_LOG", str(path))
    pytester.makeconftest(FIXTURE_LOG_CONFTEST)
    return path


def test_each_scope_is_set_up_and_torn_down_in_pairs(
    pytester: pytest.Pytester, fixture_log: Path
) -> None:
    pytester.makepyfile(test_one=MODULE, test_two=MODULE, test_three=MODULE)
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2")
    assert result.ret == 0
    entries = _log_entries(fixture_log)
    pids = {pid for pid, _ in entries}
    assert len(pids) == 2, "both workers ran tests"
    for pid in pids:
        events = [what for owner, what in entries if owner == pid]
        # every setup is followed by its teardown in the same worker, in stack order
        stack: list[str] = []
        for what in events:
            verb, _, scope = what.partition(" ")
            if verb == "setup":
                stack.append(scope)
            else:
                assert stack.pop() == scope, events
        assert stack == []
        counts = Counter(events)
        assert counts["setup session"] == counts["teardown session"] == 1
    # each module's fixture is set up at most once per worker that ran it
    setups = Counter(what for _, what in entries if what.startswith("setup module"))
    assert all(count <= len(pids) for count in setups.values()), setups


def test_teardown_error_lands_on_the_same_test_as_serial(
    pytester: pytest.Pytester, run_both
) -> None:
    pytester.makepyfile(
        test_a="""
        import pytest
        @pytest.fixture(scope="module")
        def resource():
            yield
            raise RuntimeError("module teardown failed")
        @pytest.mark.parametrize("n", range(5))
        def test_uses(resource, n): pass
        """,
        test_b="""
        import pytest
        @pytest.mark.parametrize("n", range(5))
        def test_other(n): pass
        """,
    )
    # Chunks of 5 keep each module on one worker, so the module is torn down once, as in serial;
    # test_uses[4] ends its chunk and is held back until the worker knows what comes next.
    serial, pooled, serial_xml, pool_xml = run_both("--pool-chunksize", "5")
    assert serial.ret == pooled.ret == 1
    assert pool_xml == serial_xml
    pooled.stdout.fnmatch_lines(["*ERROR at teardown of test_uses[[]4[]]*"])


def test_worker_identity_and_environment(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os, pytest
        seen = []
        @pytest.mark.parametrize("n", range(6))
        def test_identity(n, worker_id, testrun_uid, tmp_path):
            assert worker_id in ("gw0", "gw1")
            assert os.environ["PYTEST_XDIST_WORKER"] == worker_id
            assert os.environ["PYTEST_XDIST_WORKER_COUNT"] == "2"
            assert os.environ["PYTEST_XDIST_TESTRUNUID"] == testrun_uid
            assert len(testrun_uid) == 32
            assert f"popen-{worker_id}" in str(tmp_path)
            print(f"IDENTITY {worker_id} {testrun_uid}")
        """
    )
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2", "-s", "--pool-chunksize", "1")
    assert result.ret == 0
    seen = re.findall(r"IDENTITY (gw\d) (\w+)", result.stdout.str())
    assert {worker for worker, _ in seen} == {"gw0", "gw1"}
    assert len({uid for _, uid in seen}) == 1, "one testrun_uid for the whole run"


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_one_testrun_uid_for_every_kind_of_worker(pytester: pytest.Pytester, start: str) -> None:
    seen_file = pytester.path / "uids.txt"
    pytester.makepyfile(
        f"""
        import os, pytest
        @pytest.mark.parametrize("n", range(6))
        def test_identity(n, worker_id, testrun_uid):
            with open({str(seen_file)!r}, "a") as seen:
                env = os.environ["PYTEST_XDIST_TESTRUNUID"]
                seen.write(f"{{worker_id}} {{testrun_uid}} {{env}}\\n")
        """
    )
    result = pytester.runpytest_subprocess(
        *POOL, "--pool", "2", "--pool-start", start, "--pool-chunksize", "1"
    )
    assert result.ret == 0
    seen = [line.split() for line in seen_file.read_text().splitlines()]
    assert {worker for worker, _, _ in seen} == {"gw0", "gw1"}
    assert all(uid == env for _, uid, env in seen), "the fixture and the environment agree"
    assert len({uid for _, uid, _ in seen}) == 1, "one testrun_uid for the whole run"


def test_serial_run_sees_master(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # When this suite itself runs under --pool (or -n), the variable is inherited.
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makepyfile(
        """
        import os
        def test_identity(worker_id):
            assert worker_id == "master"
            assert "PYTEST_XDIST_WORKER" not in os.environ
        """
    )
    pytester.runpytest_subprocess(*POOL).assert_outcomes(passed=1)


def test_session_finalizers_run_in_every_worker(
    pytester: pytest.Pytester, fixture_log: Path
) -> None:
    pytester.makepyfile(test_one=MODULE, test_two=MODULE)
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2", "--pool-chunksize", "1")
    assert result.ret == 0
    entries = _log_entries(fixture_log)
    workers = {pid for pid, _ in entries}
    finalized = {pid for pid, what in entries if what == "teardown session"}
    assert finalized == workers and len(workers) == 2
