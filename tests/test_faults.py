"""Faults: crashed workers, hung tests, -x, Ctrl-C, SIGTERM, a dead controller, internal errors.

Every case checks what the user sees (outcome and message of the guilty test, exit code), that
every other test has exactly one outcome in --junitxml, and that no process of the run is left.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    POOL,
    assert_no_process_left,
    broken_makereport_conftest,
    junit_outcomes,
    pid_noting_conftest,
)

BYSTANDERS = """
import pytest
@pytest.mark.parametrize("n", range(8))
def test_bystander(n): pass
"""


@pytest.fixture
def pid_file(pytester: pytest.Pytester) -> Path:
    """Where every test of the run notes its process id."""
    path = pytester.path / "pids.txt"
    pytester.makeconftest(pid_noting_conftest(path))
    pytester.makepyfile(test_bystanders=BYSTANDERS)
    return path


def _run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict]:
    xml = pytester.path / "report.xml"
    result = pytester.runpytest_subprocess(*POOL, f"--junitxml={xml}", *args)
    return result, junit_outcomes(xml)


def _assert_bystanders_passed(outcomes: dict) -> None:
    bystanders = {key: value for key, value in outcomes.items() if "bystander" in key}
    assert len(bystanders) == 8
    assert all(outcome == ("passed", "") for outcome in bystanders.values()), bystanders


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "import ctypes; ctypes.string_at(0)",
            "*worker gw? died while running it: signal 11 (SIGSEGV)*",
        ),
        ("import os; os._exit(3)", "*worker gw? died while running it: exit code 3*"),
        (
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
            "*worker gw? died while running it: signal 9 (SIGKILL)*",
        ),
    ],
    ids=["segfault", "os._exit", "sigkill"],
)
def test_a_test_that_kills_its_worker_fails_once(
    pytester: pytest.Pytester, pid_file: Path, body: str, message: str
) -> None:
    pytester.makepyfile(
        test_guilty=f"""
        def test_before(): pass
        def test_guilty():
            print("said before dying")
            {body}
        def test_after(): pass
        """
    )
    result, outcomes = _run(pytester, "--pool", "2", "--pool-chunksize", "2")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            message,
            "*- Captured stdout *",
            "said before dying",
            "*1 failed, 10 passed*",
        ]
    )
    assert outcomes["test_guilty::test_guilty"][0] == "failure"
    assert (
        outcomes["test_guilty::test_before"]
        == outcomes["test_guilty::test_after"]
        == (
            "passed",
            "",
        )
    )
    _assert_bystanders_passed(outcomes)
    assert len(outcomes) == 11
    assert_no_process_left(pid_file)


def test_segfault_report_carries_the_fatal_traceback(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import ctypes
        def crash_here(): ctypes.string_at(0)
        def test_guilty(): crash_here()
        """
    )
    result, _ = _run(pytester, "--pool", "1")
    result.stdout.fnmatch_lines(["*Fatal Python error: Segmentation fault*", "*in crash_here*"])


def test_sys_exit_and_other_base_exceptions_fail_like_serial(
    pytester: pytest.Pytester, pid_file: Path
) -> None:
    pytester.makepyfile(
        test_guilty="""
        import sys
        class Custom(BaseException): pass
        def test_sys_exit(): sys.exit(4)
        def test_custom(): raise Custom("out of band")
        """
    )
    result, outcomes = _run(pytester, "--pool", "2")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines_random(
        ["FAILED test_guilty.py::test_sys_exit - SystemExit: 4", "FAILED *test_custom*out of band"]
    )
    _assert_bystanders_passed(outcomes)
    assert_no_process_left(pid_file)


def test_restarts_are_bounded(pytester: pytest.Pytester, pid_file: Path) -> None:
    pytester.makepyfile(
        test_guilty="""
        import os
        def test_die_first(): os._exit(1)
        def test_never_started(): pass
        """
    )
    result, outcomes = _run(
        pytester, "--pool", "1", "--pool-max-restarts", "0", "-p", "no:randomly"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*no worker is left*limit of 0 restarts*"])
    not_run = [key for key, (_, message) in outcomes.items() if "not run" in message]
    assert "test_guilty::test_never_started" in not_run
    assert len(outcomes) == 10, "every collected test has one outcome"
    assert_no_process_left(pid_file)


def test_pool_timeout_dumps_stacks_and_goes_on(pytester: pytest.Pytester, pid_file: Path) -> None:
    pytester.makepyfile(
        test_guilty="""
        import time
        def spin():
            while True: pass
        def test_sleeps():
            print("about to sleep")
            time.sleep(60)
        def test_spins(): spin()
        """
    )
    result, outcomes = _run(pytester, "--pool", "2", "--pool-timeout", "1")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines_random(
        [
            "*Timeout: the test ran longer than --pool-timeout=1s*",
            "Captured stdout so far:",
            "about to sleep",
            '*test_guilty.py", line * in test_sleeps',
            '*test_guilty.py", line * in spin',
        ]
    )
    assert outcomes["test_guilty::test_sleeps"][0] == "failure"
    assert outcomes["test_guilty::test_spins"][0] == "failure"
    _assert_bystanders_passed(outcomes)
    assert_no_process_left(pid_file)


def test_timed_out_test_shows_its_output_once(pytester: pytest.Pytester, pid_file: Path) -> None:
    pytester.makepyfile(
        test_guilty="""
        import time
        def test_sleeps():
            print("printed-" + "before-the-timeout")
            time.sleep(60)
        """
    )
    result, outcomes = _run(pytester, "--pool", "1", "--pool-timeout", "1")
    assert outcomes["test_guilty::test_sleeps"][0] == "failure"
    assert result.stdout.str().count("printed-before-the-timeout") == 1
    assert_no_process_left(pid_file)


def test_test_that_ends_as_its_stacks_are_taken_still_times_out(
    pytester: pytest.Pytester, pid_file: Path
) -> None:
    # The signal that takes the stacks cuts the C library's sleep short; the test then ends,
    # and once passed, though it ran past the timeout.  The test after it is not touched.
    pytester.makepyfile(
        test_guilty="""
        import ctypes
        def test_sleeps_in_c():
            ctypes.CDLL(None).sleep(30)
        def test_after_it(): pass
        """
    )
    result, outcomes = _run(pytester, "--pool", "1", "--pool-timeout", "1", "-rA")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert outcomes["test_guilty::test_sleeps_in_c"][0] == "failure"
    assert outcomes["test_guilty::test_after_it"] == ("passed", "")
    result.stdout.fnmatch_lines(
        [
            "Timeout: the test ran longer than --pool-timeout=1s; it ended while its worker's "
            "stacks were being taken.",
        ]
    )
    result.stdout.fnmatch_lines(["*= 1 failed, 9 passed in *"])
    assert_no_process_left(pid_file)


def test_exitfirst_stops_every_worker(pytester: pytest.Pytester, pid_file: Path) -> None:
    pytester.makepyfile(
        test_guilty="""
        import time
        def test_fails(): assert False
        def test_slow(): time.sleep(0.5)
        """
    )
    result, _ = _run(pytester, "--pool", "2", "-x", "--pool-chunksize", "1")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*stopping after 1 failures*"])
    assert_no_process_left(pid_file)


def _start_hanging_run(pytester: pytest.Pytester, pid_file: Path) -> subprocess.Popen[bytes]:
    started = pytester.path / "started"
    pytester.makepyfile(
        test_guilty=f"""
        import time, pathlib
        def test_hangs():
            pathlib.Path({str(started)!r}).write_text("yes")
            time.sleep(60)
        """
    )
    return _start_run_until(started, pytester.path, "--pool", "2", "--junitxml=report.xml")


def _start_run_until(started: Path, cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    """A pytest run in ``cwd``, once a test of it has written ``started``."""
    started.unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", *POOL, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while not started.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run never started"
        time.sleep(0.02)
    return process


def _interrupted(
    process: subprocess.Popen[bytes], signum: int = signal.SIGINT
) -> tuple[str, float]:
    """Send the run ``signum``; its output and the seconds it took to stop, interrupted."""
    sent = time.monotonic()
    process.send_signal(signum)
    output, _ = process.communicate(timeout=30)
    elapsed = time.monotonic() - sent
    text = output.decode()
    assert process.returncode == pytest.ExitCode.INTERRUPTED, text
    return text, elapsed


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_stops_within_two_seconds(
    pytester: pytest.Pytester, pid_file: Path, signum: int
) -> None:
    text, elapsed = _interrupted(_start_hanging_run(pytester, pid_file), signum)
    assert elapsed < 2.0, f"took {elapsed:.1f}s to stop"
    assert "KeyboardInterrupt" in text
    assert "passed" in text.splitlines()[-1], "the summary of what ran is printed"
    assert "poolworker" not in text, "no traceback from a worker reaches the terminal"
    assert_no_process_left(pid_file)


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_ctrl_c_names_the_line_the_running_test_was_at_as_serially(
    pytester: pytest.Pytester, start: str
) -> None:
    """Ctrl-C reaches the controller only (each worker leads a process group of its own): the
    summary named a line of the plugin's event loop, where a serial run names the test's.  The
    test's thread is named, not another one the test started.  A forked worker's stacks show
    the line; a spawned worker's interrupted test reports it as it stops.  The sleeper waits
    for the quick test, as serially, so that the interrupt finds one test running; spawned, the
    sleeper runs alone: a fresh worker may still be finishing the quick test (importing what
    its first test needs) when the interrupt comes, and the longest-running test is named."""
    started, quick = pytester.path / "started", pytester.path / "quick"
    pytester.makepyfile(
        test_sleeper=f"""
        import pathlib, threading, time
        def dozes():
            time.sleep(60)
        def test_quick():
            pathlib.Path({str(quick)!r}).write_text("done")
        def test_sleeps():
            threading.Thread(target=dozes, daemon=True).start()
            waited = time.monotonic() + 30
            while not pathlib.Path({str(quick)!r}).exists() and time.monotonic() < waited:
                time.sleep(0.01)
            pathlib.Path({str(started)!r}).write_text("yes")
            time.sleep(60)
        """
    )
    named = {}
    for mode in ("serial", "pool"):
        workers = ["--pool", "2", "--pool-start", start] if mode == "pool" else []
        quick.unlink(missing_ok=True)
        if mode == "pool" and start == "spawn":
            workers += ["-k", "test_sleeps"]
            quick.write_text("deselected")
        text, _ = _interrupted(_start_run_until(started, pytester.path, *workers))
        named[mode] = [line for line in text.splitlines() if line.endswith("KeyboardInterrupt")]
    sleep_line = f"{pytester.path / 'test_sleeper.py'}:12: KeyboardInterrupt"
    assert named["serial"][-1] == sleep_line, named
    assert named["pool"] == named["serial"]


@pytest.mark.parametrize(
    "workers", ["1", "2"], ids=["test-in-a-chunk", "test-held-to-the-workers-end"]
)
@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_ctrl_c_tears_the_fixtures_down_as_serially(
    pytester: pytest.Pytester, workers: str, start: str
) -> None:
    """Serially, pytest's session end tears down every fixture of an interrupted run; the
    workers were killed outright, and a session fixture's teardown (a server stopped, a
    database dropped) never ran."""
    started = pytester.path / "started"
    log = pytester.path / "teardowns.log"
    pytester.makepyfile(
        test_interrupted=f"""
        import pathlib, time, pytest
        def note(text):
            with open({str(log)!r}, "a") as out:
                out.write(text + "\\n")
        @pytest.fixture(scope="session")
        def server():
            yield
            note("session fixture torn down")
        @pytest.fixture
        def connection(server):
            yield
            note("function fixture torn down")
        def test_sleeps(connection):
            pathlib.Path({str(started)!r}).write_text("yes")
            time.sleep(60)
        def test_after():
            pass
        """
    )
    torn = {}
    for mode in ("serial", "pool"):
        log.unlink(missing_ok=True)
        args = ["--pool", workers, "--pool-start", start] if mode == "pool" else []
        text, _ = _interrupted(_start_run_until(started, pytester.path, *args))
        assert "Traceback" not in text
        torn[mode] = log.read_text().splitlines() if log.exists() else []
    assert torn["serial"] == ["function fixture torn down", "session fixture torn down"]
    assert torn["pool"] == torn["serial"]


def test_workers_exit_when_the_controller_is_killed(
    pytester: pytest.Pytester, pid_file: Path
) -> None:
    process = _start_hanging_run(pytester, pid_file)
    process.kill()
    process.communicate(timeout=10)
    assert_no_process_left(pid_file)


def test_error_outside_any_test_is_an_internal_error(
    pytester: pytest.Pytester, pid_file: Path
) -> None:
    pytester.makeconftest(
        pid_noting_conftest(pid_file)
        + """
import os
def pytest_runtest_logreport(report):
    if os.environ.get("PYTEST_XDIST_WORKER") and report.when == "call":
        raise RuntimeError("plugin hook broke in the worker")
"""
    )
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2")
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    result.stdout.fnmatch_lines(["INTERNALERROR>*RuntimeError: plugin hook broke in the worker*"])
    assert_no_process_left(pid_file)


@pytest.mark.parametrize("where", ["in a chunk", "last of all"])
def test_a_hook_failing_while_a_test_runs_reports_no_verdict_for_it(
    pytester: pytest.Pytester, where: str
) -> None:
    """pytest's protocol raising in a worker is an INTERNALERROR, also in the item a worker
    runs last (at its shutdown); the test gets no verdict, as serially, and the warning the
    broken wrapper caused while it ran is counted, as serially."""
    pytester.makeconftest(broken_makereport_conftest("test_broken"))
    tests = "def test_a(): pass\ndef test_b(): pass\ndef test_broken(): pass\n"
    if where == "in a chunk":
        tests += "def test_c(): pass\ndef test_d(): pass\n"
    pytester.makepyfile(tests)
    serial = pytester.runpytest_subprocess("-p", "no:pytest_poolrun")
    pooled = pytester.runpytest_subprocess(*POOL, "--pool", "1", "--pool-chunksize", "3")
    outcomes = []
    for result in (serial, pooled):
        assert result.ret == pytest.ExitCode.INTERNAL_ERROR
        result.stdout.fnmatch_lines(["INTERNALERROR>*TypeError: a plugin's bug*"])
        outcomes.append(result.parseoutcomes())
    # Other installed plugins may warn too (the same in both runs): the broken wrapper's
    # warning is one of them.
    assert outcomes[0] == outcomes[1]
    assert outcomes[0]["passed"] == 2 and outcomes[0]["warnings"] >= 1


def test_processes_a_test_starts_can_be_interrupted(pytester: pytest.Pytester) -> None:
    # Workers must not pass an ignored SIGINT on to the processes their tests start.
    pytester.makepyfile(
        """
        import signal, subprocess, sys
        def test_interrupts_its_child():
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
            child.send_signal(signal.SIGINT)
            assert child.wait(timeout=10) != 0
        """
    )
    pytester.runpytest_subprocess(*POOL, "--pool", "1").assert_outcomes(passed=1)


def test_a_plugin_failing_in_a_fresh_worker_is_named_with_its_traceback(
    pytester: pytest.Pytester,
) -> None:
    """A plugin whose pytest_configure raises in a worker that starts fresh (it reads what
    pytest-xdist would have put in workerinput): the run says which error, where, and why the
    tests did not run."""
    pytester.makeconftest(
        """
        def pytest_configure(config):
            if hasattr(config, "workerinput"):
                config.workerinput["port_of_a_server"]
        """
    )
    pytester.makepyfile("def test_a(): pass\n")
    result = pytester.runpytest_subprocess(*POOL, "--pool", "1", "--pool-start", "spawn")
    result.stdout.fnmatch_lines(
        [
            "poolrun: worker gw0 could not start: KeyError: 'port_of_a_server'",
            "Traceback (most recent call last):",
            "*conftest.py*, in pytest_configure",
            "*no worker is left*",
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
