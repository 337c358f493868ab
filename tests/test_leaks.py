"""--pool-leaks: a process a test leaves running fails the test and is killed before the
worker's next test (fail), or, still running when the worker has torn every fixture down, is
named in a warning on its test and killed then (warn, the default: no verdict changes); the
processes of wider fixtures, of the pool fixture and of multiprocessing's helpers are no leaks."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import POOL, assert_no_process_left

LEAKY = """
import subprocess, pytest
def test_leaves_sleep():
    child = subprocess.Popen(["sleep", "30"])
    with open({pids!r}, "a") as f:
        f.write(f"{{child.pid}}\\n")
@pytest.mark.parametrize("n", range(3))
def test_clean(n): pass
"""


def _leaky_suite(pytester: pytest.Pytester) -> Path:
    pid_file = pytester.path / "children.txt"
    pytester.makepyfile(test_leak=LEAKY.format(pids=str(pid_file)))
    return pid_file


def test_fail_mode_fails_the_test_naming_the_process(pytester: pytest.Pytester) -> None:
    pid_file = _leaky_suite(pytester)
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2", "--pool-leaks", "fail", timeout=60)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=3, failed=1)
    (pid,) = pid_file.read_text().split()
    result.stdout.fnmatch_lines(
        [
            "*test_leak.py::test_leaves_sleep left 1 process running after it ended (killed now):",
            f"*pid {pid}: sleep 30",
            "FAILED test_leak.py::test_leaves_sleep*",
        ]
    )
    assert_no_process_left(pid_file)


@pytest.mark.parametrize("args", [(), ("-o", "pool_leaks=warn")], ids=["default", "ini"])
def test_warn_mode_names_the_test_in_a_warning(pytester: pytest.Pytester, args: tuple[str]) -> None:
    pid_file = _leaky_suite(pytester)
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2", *args, timeout=60)
    assert result.ret == 0
    result.assert_outcomes(passed=4, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*warnings summary*",
            "test_leak.py::test_leaves_sleep",
            "*LeakedProcessWarning: test_leak.py::test_leaves_sleep left 1 process running*",
            "*: sleep 30",
        ]
    )
    assert_no_process_left(pid_file)


def test_the_ini_key_can_fail_and_warning_filters_apply(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\npool_leaks = fail\n")
    pid_file = _leaky_suite(pytester)
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2", timeout=60)
    result.assert_outcomes(passed=3, failed=1)
    category = "pytest_poolrun.leaks.LeakedProcessWarning"
    # The warning comes once the test's reports are out: -W error cannot fail the test any
    # more, so the warning is shown as it is; -W ignore silences it.
    errors = pytester.runpytest_subprocess(
        *POOL, "--pool", "2", "--pool-leaks", "warn", "-W", f"error::{category}", timeout=60
    )
    errors.assert_outcomes(passed=4, warnings=1)
    errors.stdout.fnmatch_lines(["*left 1 process running after it ended*", "*pid *: sleep 30"])
    ignored = pytester.runpytest_subprocess(
        *POOL, "--pool", "2", "--pool-leaks", "warn", "-W", f"ignore::{category}", timeout=60
    )
    ignored.assert_outcomes(passed=4)
    assert "left 1 process running" not in ignored.stdout.str()
    assert_no_process_left(pid_file)


def test_warn_mode_leaves_a_helper_that_a_session_fixture_stops(pytester: pytest.Pytester) -> None:
    """A function fixture starts a helper process lazily and a session fixture keeps it for
    later tests and stops it at the session's end (execnet's own suite keeps its gateways so):
    serially every test passes, so under the default mode too, with no warning."""
    pytester.makeconftest(
        """
        import subprocess, pytest

        @pytest.fixture(scope="session")
        def cache():
            kept = {}
            yield kept
            for process in kept.values():
                process.kill()
                process.wait()

        @pytest.fixture
        def helper(cache):
            if "helper" not in cache:
                cache["helper"] = subprocess.Popen(["sleep", "30"])
            return cache["helper"]
        """
    )
    pytester.makepyfile(
        test_helper="""
        import pytest

        @pytest.mark.parametrize("n", range(6))
        def test_helper_alive(helper, n):
            assert helper.poll() is None, f"helper ended: {helper.returncode}"
        """
    )
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2", "--pool-dist", "load", timeout=60)
    result.assert_outcomes(passed=6)
    assert "LeakedProcessWarning" not in result.stdout.str()


def test_ignore_mode_says_nothing(pytester: pytest.Pytester) -> None:
    pid_file = _leaky_suite(pytester)
    result = pytester.runpytest_subprocess(
        *POOL, "--pool", "2", "--pool-leaks", "ignore", timeout=60
    )
    assert result.ret == 0
    result.assert_outcomes(passed=4)
    assert "left 1 process running" not in result.stdout.str()
    assert_no_process_left(pid_file)  # the worker's process group goes with it


def test_processes_of_fixtures_and_pools_are_no_leaks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_owned="""
        import multiprocessing, subprocess, pytest

        @pytest.fixture(scope="module")
        def server():
            process = subprocess.Popen(["sleep", "30"])
            yield process
            process.kill()
            process.wait()

        @pytest.fixture
        def started():
            processes = []
            yield processes
            for process in processes:
                process.kill()
                process.wait()

        def test_uses_server(server): assert server.poll() is None
        def test_uses_server_again(server): assert server.poll() is None
        def test_stops_its_child_in_a_fixture(started):
            started.append(subprocess.Popen(["sleep", "30"]))
        def test_pool_fixture(pool): assert pool.map(abs, [-1, -2]) == [1, 2]
        def test_pool_fixture_again(pool): assert pool.apply(abs, (-3,)) == 3
        def test_multiprocessing_helpers():
            context = multiprocessing.get_context("forkserver")
            process = context.Process(target=print)
            process.start()
            process.join()
        """
    )
    result = pytester.runpytest_subprocess(
        *POOL, "--pool", "1", "--pool-leaks", "fail", "-p", "no:cacheprovider", timeout=120
    )
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=6)


SERVING_FILE = """
import subprocess, pytest

def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".srv":
        return ServingFile.from_parent(parent, path=file_path)

class ServingFile(pytest.File):
    # Like nbval's notebook: setup() starts what the file's items share; teardown() stops it.
    def setup(self):
        self.process = subprocess.Popen(["sleep", "30"])
    def teardown(self):
        self.process.kill()
        self.process.wait()
    def collect(self):
        for n in range(3):
            yield ServedItem.from_parent(self, name=f"step{n}")

class ServedItem(pytest.Item):
    def runtest(self):
        assert self.parent.process.poll() is None, "the file's server is dead"
"""


@pytest.mark.parametrize("mode", ["warn", "fail"])
def test_processes_a_collectors_setup_starts_are_no_leaks(
    pytester: pytest.Pytester, mode: str
) -> None:
    """They serve the collector's items until its teardown: killing them after its first
    item failed the rest (nbval's notebook kernel)."""
    pytester.makeconftest(SERVING_FILE)
    pytester.path.joinpath("one.srv").write_text("")
    result = pytester.runpytest_subprocess(
        *POOL, "--pool", "1", "--pool-leaks", mode, "-p", "no:cacheprovider", timeout=60
    )
    result.assert_outcomes(passed=3)
    assert "LeakedProcessWarning" not in result.stdout.str()


LEAKS_AMONG_CLEAN_TESTS = """
import subprocess, pytest

@pytest.fixture(scope="module")
def server(request):
    process = subprocess.Popen(["sleep", "30"])
    request.addfinalizer(process.kill)
    return process

def _start(seconds):
    child = subprocess.Popen(["sleep", seconds])
    with open({pids!r}, "a") as f:
        f.write(f"{{child.pid}}\\n")

@pytest.mark.parametrize("n", range(5))
def test_clean_before(n): pass
def test_first_leak(): _start("31")
def test_uses_server(server): assert server.poll() is None
@pytest.mark.parametrize("n", range(5))
def test_clean_between(n): pass
def test_second_leak(): _start("32")
def test_clean_after(): pass
"""


def test_each_leak_is_found_among_many_clean_tests(pytester: pytest.Pytester) -> None:
    """One worker runs clean tests, a leak, a fixture's server, clean tests and a second leak:
    the checks after clean tests are skipped cheaply, yet each leak is named on its own test."""
    pid_file = pytester.path / "children.txt"
    pytester.makepyfile(test_mixed=LEAKS_AMONG_CLEAN_TESTS.format(pids=str(pid_file)))
    result = pytester.runpytest_subprocess(
        *POOL, "--pool", "1", "--pool-leaks", "fail", "-p", "no:cacheprovider", timeout=120
    )
    result.assert_outcomes(passed=12, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*_ test_first_leak _*",
            "*test_mixed.py::test_first_leak left 1 process running after it ended*",
            "*pid *: sleep 31",
            "*_ test_second_leak _*",
            "*test_mixed.py::test_second_leak left 1 process running after it ended*",
            "*pid *: sleep 32",
        ]
    )
    assert ": sleep 30" not in result.stdout.str()
    assert_no_process_left(pid_file)


@pytest.mark.parametrize("args", [("--pool-leaks", "maybe"), ("-o", "pool_leaks=maybe")])
def test_a_bad_mode_is_a_usage_error(pytester: pytest.Pytester, args: tuple[str, str]) -> None:
    pytester.makepyfile(test_one="def test_one(): pass\n")
    result = pytester.runpytest_subprocess(*POOL, "--pool", "1", *args, timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "'maybe'" in result.stderr.str()
