"""Issue 12: no result lost, doubled or pinned on the wrong test, and no run that never ends.

Each case runs a real pytest session in a subprocess, bounded in time (a run that would loop or
hang fails the test instead), and checks what the user sees against the serial verdicts: exit
code, which tests failed and passed, every test exactly once in --junitxml, and no process of the
run left behind.  Where a ledger is kept, every test writes its own line once per run of it, so a
test that ran twice shows up even when its second verdict replaced the first.
"""

from __future__ import annotations

import collections
import functools
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers import POOL, assert_no_process_left, file_a_conftest_writes, junit_outcomes

from pytest_poolrun import Pool
from pytest_poolrun.manager import PoolHooks

# No case below needs more than a few seconds; a run still going after this is a hang.
RUN_TIMEOUT = 40.0

PID_LEDGER = """
import os, pytest

@pytest.fixture(autouse=True)
def _note_pid():
    with open(os.environ["PID_LEDGER"], "a") as ledger:
        ledger.write(f"{os.getpid()}\\n")
    yield
"""


# ------------------------------------------------------------------------------------ helpers


def junit_cases(path: Path) -> list[tuple[str, str, str]]:
    """(classname::name, outcome, message) for every testcase, duplicates kept."""
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome, message = child.tag, child.get("message", "")
        cases.append((f"{case.get('classname')}::{case.get('name')}", outcome, message))
    return cases


def verdicts(path: Path) -> dict[str, str]:
    """test → outcome, after checking that every test appears exactly once."""
    cases = junit_cases(path)
    counts = collections.Counter(key for key, _, _ in cases)
    doubled = {key: count for key, count in counts.items() if count != 1}
    assert doubled == {}, f"tests listed more than once in junitxml: {doubled}"
    return {key: outcome for key, outcome, _ in cases}


def run(
    pytester: pytest.Pytester, *args: str, xml: str = "report.xml", timeout: float = RUN_TIMEOUT
) -> tuple[pytest.RunResult, Path]:
    path = pytester.path / xml
    started = time.monotonic()
    try:
        result = pytester.runpytest_subprocess(*POOL, f"--junitxml={path}", *args, timeout=timeout)
    except pytester.TimeoutExpired:
        pytest.fail(
            f"the run {' '.join(args)} was still going after {time.monotonic() - started:.0f}s "
            "(killed): it never ends"
        )
    return result, path


def run_serial_then_pooled(
    pytester: pytest.Pytester, *pool_args: str, timeout: float = RUN_TIMEOUT
) -> tuple[pytest.RunResult, Path, pytest.RunResult, Path]:
    """The suite serially (where it passes), then with ``pool_args``; both results and reports."""
    serial, serial_xml = run(pytester, xml="serial.xml")
    assert serial.ret == pytest.ExitCode.OK
    pooled, pool_xml = run(pytester, *pool_args, timeout=timeout)
    return serial, serial_xml, pooled, pool_xml


@pytest.fixture
def pids(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every process that runs a test notes its id here (through an autouse fixture)."""
    return file_a_conftest_writes(pytester, monkeypatch, "pids.txt", "PID_LEDGER", PID_LEDGER)


def ledger_counts(path: Path) -> collections.Counter[str]:
    return collections.Counter(path.read_text().split()) if path.exists() else collections.Counter()


# ------------------------------------------------- a report that cannot be sent, plugin modules

UNPICKLABLE_LAST = """
import threading
def test_first(): pass
def test_lock_property(record_property):
    record_property("lock", threading.Lock())
"""


def test_unpicklable_report_as_last_of_chunk_ends_with_serial_verdicts(
    pytester: pytest.Pytester, pids: Path
) -> None:
    """Serially junitxml writes str(value); under --pool the held item's report could not be sent
    and the worker was restarted about a hundred times a second, forever."""
    pytester.makepyfile(test_lock=UNPICKLABLE_LAST)
    serial, serial_xml, pooled, pool_xml = run_serial_then_pooled(
        pytester, "--pool", "1", "--pool-max-restarts", "0", timeout=20
    )
    assert pooled.ret == serial.ret
    assert verdicts(pool_xml) == verdicts(serial_xml)
    assert_no_process_left(pids)


UNPICKLABLE_MIDDLE = """
import threading, pytest
@pytest.mark.parametrize("n", range(10))
def test_before(n): pass
def test_lock_property(record_property):
    record_property("lock", threading.Lock())
@pytest.mark.parametrize("n", range(10))
def test_after(n): pass
"""


def test_unpicklable_report_in_the_middle_of_a_chunk_reports_every_test(
    pytester: pytest.Pytester, pids: Path
) -> None:
    """Once: INTERNALERROR, and 0 to 3 of the 21 tests reported."""
    pytester.makepyfile(test_lock=UNPICKLABLE_MIDDLE)
    serial, serial_xml, pooled, pool_xml = run_serial_then_pooled(
        pytester, "--pool", "1", "--pool-chunksize", "21", timeout=20
    )
    assert pooled.ret == serial.ret, pooled.stdout.str()[-2000:]
    assert verdicts(pool_xml) == verdicts(serial_xml)
    assert len(verdicts(pool_xml)) == 21
    assert_no_process_left(pids)


PURGE_PLUGIN_MODULES = """
import sys
def test_first(): pass
def test_second(): pass
def test_purges_plugin_modules():
    for name in [name for name in sys.modules if name.startswith("pytest_poolrun")]:
        del sys.modules[name]
"""


@pytest.mark.parametrize("start", ["fork", "spawn"])
@pytest.mark.parametrize("then", ["", "def test_after(): pass\n"], ids=["last", "then-another"])
def test_a_test_that_unloads_the_plugin_modules_ends_with_serial_verdicts(
    pytester: pytest.Pytester, pids: Path, start: str, then: str
) -> None:
    """Once the worker could not pickle its events any more (their classes are no longer the ones in
    sys.modules); as the last of its chunk it starts the same endless restart loop.  A spawned
    worker died at its next message."""
    pytester.makepyfile(test_purge=PURGE_PLUGIN_MODULES + then)
    serial, serial_xml, pooled, pool_xml = run_serial_then_pooled(
        pytester, "--pool", "1", "--pool-start", start, timeout=20
    )
    assert "Traceback" not in pooled.stdout.str() + pooled.stderr.str()
    assert pooled.ret == serial.ret, pooled.stdout.str()[-2000:]
    assert verdicts(pool_xml) == verdicts(serial_xml)
    assert_no_process_left(pids)


# --------------------------------------------------- durable results around a crash or a kill

FAILS_ONCE_THEN_CRASH = """
import os, pathlib, pytest

def test_a_fails_on_first_run():
    ran_before = pathlib.Path(os.environ["MARKER"])
    if not ran_before.exists():
        ran_before.write_text("ran")
        assert False, "first run fails"

def test_b_crashes_its_worker():
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os._exit(3)

@pytest.mark.parametrize("n", range(4))
def test_c_after(n): pass
"""


def test_a_finished_failure_is_not_rerun_and_turned_into_a_pass_by_a_crash(
    pytester: pytest.Pytester, pids: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure sat in the worker's 50 ms batch when the next test crashed the worker: it was
    lost, the test ran again elsewhere, passed, and the run reported it PASSED."""
    pytester.makepyfile(test_flaky=FAILS_ONCE_THEN_CRASH)
    monkeypatch.setenv("MARKER", str(pytester.path / "serial-marker"))
    serial, serial_xml = run(pytester, xml="serial.xml")
    monkeypatch.setenv("MARKER", str(pytester.path / "pool-marker"))
    pooled, pool_xml = run(pytester, "--pool", "1", "--pool-chunksize", "6")
    assert serial.ret == pooled.ret == pytest.ExitCode.TESTS_FAILED
    serial_verdicts, pool_verdicts = verdicts(serial_xml), verdicts(pool_xml)
    assert serial_verdicts["test_flaky::test_a_fails_on_first_run"] == "failure"
    assert pool_verdicts["test_flaky::test_a_fails_on_first_run"] == "failure"
    # The crash is the only verdict a serial run cannot give.
    assert pool_verdicts.pop("test_flaky::test_b_crashes_its_worker") == "failure"
    serial_verdicts.pop("test_flaky::test_b_crashes_its_worker")
    assert pool_verdicts == serial_verdicts
    assert_no_process_left(pids)


LEDGER_CHUNK = """
import os, time, pytest

@pytest.mark.parametrize("n", range(40))
def test_fast(n):
    with open(os.environ["TEST_LEDGER"], "a") as ledger:
        ledger.write(f"test_fast[{{n}}]\\n")
    if n == 20 and os.environ.get("PYTEST_XDIST_WORKER"):
        {fault}
"""


@pytest.mark.parametrize(
    ("fault", "options"),
    [
        ("os._exit(3)", ()),
        ("time.sleep(60)", ("--pool-timeout", "1")),
    ],
    ids=["crash", "timeout-kill"],
)
def test_a_fault_in_the_middle_of_a_chunk_runs_every_test_exactly_once(
    pytester: pytest.Pytester,
    pids: Path,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
    options: tuple[str, ...],
) -> None:
    """With larger chunks, twenty already-finished tests ran twice around one crash."""
    ledger = pytester.path / "ledger.txt"
    monkeypatch.setenv("TEST_LEDGER", str(ledger))
    pytester.makepyfile(test_ledger=LEDGER_CHUNK.format(fault=fault))
    pooled, pool_xml = run(pytester, "--pool", "1", "--pool-chunksize", "40", *options)
    assert pooled.ret == pytest.ExitCode.TESTS_FAILED
    ran = ledger_counts(ledger)
    twice = sorted(name for name, count in ran.items() if count != 1)
    assert twice == [], f"tests that ran more than once: {twice}"
    assert len(ran) == 40
    outcomes = verdicts(pool_xml)
    assert len(outcomes) == 40
    assert [key for key, outcome in outcomes.items() if outcome != "passed"] == [
        "test_ledger::test_fast[20]"
    ]
    assert_no_process_left(pids)


# ------------------------------------------------------------- signals inherited or redirected

SIGTERM_CHILD = """
import multiprocessing, os, time

def test_a_crashes_its_worker():
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os._exit(3)

def test_b_terminates_its_child():
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,))
    child.start()
    child.terminate()
    child.join(10)
    assert child.exitcode == -15
"""


def test_a_replacement_worker_does_not_pass_the_controllers_sigterm_handler_on(
    pytester: pytest.Pytester, pids: Path
) -> None:
    """Once the child exited with code 1 ("KeyboardInterrupt: received SIGTERM") instead of -15
    when its worker was forked after the controller installed its SIGTERM handler."""
    pytester.makepyfile(test_child=SIGTERM_CHILD)
    serial, _ = run(pytester, xml="serial.xml")
    serial.assert_outcomes(passed=2)
    xdist = pytester.runpytest_subprocess("-n", "1", "-p", "xdist", timeout=RUN_TIMEOUT)
    xdist.assert_outcomes(failed=1, passed=1)  # the crash; the child test passes
    pooled, pool_xml = run(pytester, "--pool", "1", "--pool-chunksize", "1")
    outcomes = verdicts(pool_xml)
    assert outcomes["test_child::test_b_terminates_its_child"] == "passed", pooled.stdout.str()
    assert_no_process_left(pids)


FORK_CHILD_RETURNS = """
import os
def test_1(): pass
def test_2(): pass
def test_forks():
    pid = os.fork()
    if pid == 0:
        return  # the child goes on instead of calling os._exit
    os.waitpid(pid, 0)
def test_4(): pass
def test_5(): pass
"""


def test_a_forked_child_that_returns_does_not_corrupt_the_run(
    pytester: pytest.Pytester, pids: Path
) -> None:
    """Once: INTERNALERROR (IndexError: pop from an empty deque) and 7 junit cases for 5 tests."""
    pytester.makepyfile(test_fork=FORK_CHILD_RETURNS)
    serial, serial_xml, pooled, pool_xml = run_serial_then_pooled(
        pytester, "--pool", "1", "--pool-chunksize", "5"
    )
    assert "INTERNALERROR" not in pooled.stdout.str()
    assert pooled.ret == serial.ret
    assert verdicts(pool_xml) == verdicts(serial_xml)
    assert_no_process_left(pids)


OWN_SIGUSR1 = """
import os, signal, time

def test_a_overdue():
    with open(os.environ["TEST_LEDGER"], "a") as ledger:
        ledger.write("test_a_overdue\\n")
    signal.signal(signal.SIGUSR1, lambda signum, frame: None)
    time.sleep(2.5)

def test_b_next():
    with open(os.environ["TEST_LEDGER"], "a") as ledger:
        ledger.write("test_b_next\\n")
    time.sleep(1.5)

def test_c_last(): pass
"""


def test_the_overdue_test_is_blamed_even_if_it_handles_the_dump_signal(
    pytester: pytest.Pytester, pids: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stack dump (SIGUSR1) did not stop a test with its own SIGUSR1 handler; the worker was
    killed a second later while it ran the next test, which was reported as timed out, and the
    overdue test ran a second time."""
    ledger = pytester.path / "ledger.txt"
    monkeypatch.setenv("TEST_LEDGER", str(ledger))
    pytester.makepyfile(test_usr1=OWN_SIGUSR1)
    pooled, pool_xml = run(pytester, "--pool", "1", "--pool-chunksize", "3", "--pool-timeout", "2")
    outcomes = verdicts(pool_xml)
    assert outcomes["test_usr1::test_b_next"] == "passed", pooled.stdout.str()
    assert outcomes["test_usr1::test_c_last"] == "passed"
    assert ledger_counts(ledger)["test_a_overdue"] == 1, "the overdue test ran once"
    if outcomes["test_usr1::test_a_overdue"] != "passed":
        pooled.stdout.fnmatch_lines(["*test_a_overdue*", "*Timeout: the test ran longer*"])
    assert_no_process_left(pids)


# ------------------------------------------------------------------------- option values

THREE_PASSING = """
import pytest
@pytest.mark.parametrize("n", range(3))
def test_passes(n): pass
"""


@pytest.mark.parametrize("value", ["inf", "1e308"])
def test_a_huge_pool_timeout_is_no_internal_error(
    pytester: pytest.Pytester, pids: Path, value: str
) -> None:
    """Once: INTERNALERROR (OverflowError) from the loop's wait.  Either 'no timeout' (the run
    passes) or a one-line usage error is fine."""
    pytester.makepyfile(test_three=THREE_PASSING)
    pooled, pool_xml = run(pytester, "--pool", "2", "--pool-timeout", value)
    assert "INTERNALERROR" not in pooled.stdout.str() + pooled.stderr.str()
    assert pooled.ret in (pytest.ExitCode.OK, pytest.ExitCode.USAGE_ERROR)
    if pooled.ret == pytest.ExitCode.OK:
        assert verdicts(pool_xml) == {f"test_three::test_passes[{n}]": "passed" for n in range(3)}
    assert_no_process_left(pids)


CONTROLLER_CPU = """
import os, resource, time

def pytest_configure(config):
    config._cpu_wall_start = time.monotonic()

def pytest_unconfigure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.monotonic() - config._cpu_wall_start
    with open(os.environ["CPU_REPORT"], "w") as report:
        report.write(f"{usage.ru_utime + usage.ru_stime} {wall}")
"""

SLEEPERS = """
import time, pytest
@pytest.mark.parametrize("n", range(2))
def test_sleeps(n): time.sleep(1)
"""


def test_a_tiny_pool_timeout_does_not_make_the_controller_spin(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once --pool-timeout 1e-9 kept the controller at full CPU.  Either a usage error, or each
    test fails as timed out while the controller mostly waits."""
    report = pytester.path / "cpu.txt"
    monkeypatch.setenv("CPU_REPORT", str(report))
    pytester.makeconftest(CONTROLLER_CPU)
    pytester.makepyfile(test_sleepers=SLEEPERS)
    pooled, pool_xml = run(pytester, "--pool", "2", "--pool-timeout", "1e-9", timeout=20)
    assert "INTERNALERROR" not in pooled.stdout.str()
    if pooled.ret == pytest.ExitCode.USAGE_ERROR:
        return
    outcomes = verdicts(pool_xml)
    assert len(outcomes) == 2
    cpu, wall = map(float, report.read_text().split())
    # Collection and start-up cost well under half a second of CPU; the rest is the loop.
    assert cpu < 0.5 * wall + 0.5, f"the controller used {cpu:.2f}s of CPU in {wall:.2f}s"


# ------------------------------------------------------------------------------------- minor

DIES_FIRST = """
import os
def test_die_first(): os._exit(1)
def test_never_started(): pass
"""


def test_tests_not_run_after_the_restart_limit_are_failed_as_the_readme_says(
    pytester: pytest.Pytester, pids: Path
) -> None:
    """README: 'the tests never started are reported as failed with `not run`'; once ERROR."""
    pytester.makepyfile(test_guilty=DIES_FIRST)
    pooled, pool_xml = run(pytester, "--pool", "1", "--pool-max-restarts", "0")
    assert pooled.ret == pytest.ExitCode.TESTS_FAILED
    cases = {key: (outcome, message) for key, outcome, message in junit_cases(pool_xml)}
    outcome, message = cases["test_guilty::test_never_started"]
    assert "not run" in message
    assert outcome == "failure"
    pooled.stdout.fnmatch_lines(["FAILED test_guilty.py::test_never_started*not run*"])
    assert_no_process_left(pids)


SIGINT_IN_DEL = """
import gc, os, signal, sys
from pytest_poolrun import Pool

def test_ctrl_c_while_a_pool_is_collected():
    pool = Pool(1)
    assert pool.apply(abs, (-1,)) == 1
    sent = []
    warning = []  # the frame of Pool.__del__ while it runs

    def ctrl_c_in_the_pools_code(frame, event, arg):
        # Ctrl-C lands at the first line of the pool's code that runs while it is collected,
        # __del__'s warning aside (see the test).
        code = frame.f_code
        if "pytest_poolrun" not in code.co_filename:
            return
        if code.co_name == "__del__":
            if event == "call":
                warning.append(frame)
            elif event == "return" and frame in warning:
                warning.remove(frame)
        elif event == "call" and not sent and not warning:
            sys.setprofile(None)
            sent.append(code.co_name)
            os.kill(os.getpid(), signal.SIGINT)

    sys.setprofile(ctrl_c_in_the_pools_code)
    del pool  # the last reference
    gc.collect()  # the pool may sit in a reference cycle: it is collected by now in any case
    sys.setprofile(None)
    if not sent:  # no Python code of the pool ran: Ctrl-C lands just after
        os.kill(os.getpid(), signal.SIGINT)
"""


def test_ctrl_c_that_lands_in_pool_del_interrupts_the_run(pytester: pytest.Pytester) -> None:
    """A SIGINT that arrived while Pool.__del__ shut a dropped pool down was swallowed
    ('Exception ignored in'), and the run ended with exit code 0.  The signal is sent from the
    first line of the pool's code that runs while the pool is collected, so that the
    one-in-twenty race happens every time: the workers of a dropped pool are now killed by
    finalizers that run no Python code.

    The ResourceWarning that ``Pool.__del__`` gives for a pool dropped while running is left
    out: an exception raised inside any finalizer is only printed by CPython, so a Ctrl-C that
    lands in those few lines is lost, as in ``multiprocessing.Pool.__del__``, which gives the
    same warning.  Whether the pool is collected by reference counting or by a collection, and
    so whether the race could be forced at all, depended on the interpreter's allocations: the
    test passed or failed with the plugin's bytecode cached or not."""
    pytester.makepyfile(test_del=SIGINT_IN_DEL)
    result = pytester.runpytest_subprocess(*POOL, timeout=RUN_TIMEOUT)
    assert result.ret == pytest.ExitCode.INTERRUPTED, result.stdout.str() + result.stderr.str()


def test_no_fault_directory_is_left_when_the_controller_is_killed(
    pytester: pytest.Pytester, pids: Path
) -> None:
    tmpdir = pytester.path / "tmp"
    tmpdir.mkdir()
    started = pytester.path / "started"
    pytester.makepyfile(
        test_hangs=f"""
        import time, pathlib
        def test_hangs():
            pathlib.Path({str(started)!r}).write_text("yes")
            time.sleep(60)
        def test_other(): pass
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", *POOL, "--pool", "2", "-p", "no:cacheprovider"],
        cwd=pytester.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(tmpdir), "PID_LEDGER": str(pids)},
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not started.exists():
            assert process.poll() is None and time.monotonic() < deadline, "the run never started"
            time.sleep(0.02)
    finally:
        process.kill()
        process.wait(10)
    assert_no_process_left(pids)
    assert list(tmpdir.glob("poolrun-faults-*")) == []


# ---------------------------------------------------- further cases of the bullets

UNPICKLABLE_ATTRIBUTE = """
import threading, pytest

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if item.name == "test_lock_attribute" and call.when == "call":
        outcome.get_result().lock = threading.Lock()
"""


def test_a_report_attribute_that_cannot_be_sent_fails_that_test_by_name(
    pytester: pytest.Pytester, pids: Path
) -> None:
    """Not a user property (serially nothing pickles it): that test fails, saying which
    attribute of which type, and every other test keeps its verdict."""
    pytester.makeconftest(PID_LEDGER + UNPICKLABLE_ATTRIBUTE)
    pytester.makepyfile(
        test_attr="def test_before(): pass\ndef test_lock_attribute(): pass\ndef test_after(): pass"
    )
    pooled, pool_xml = run(pytester, "--pool", "1", "--pool-chunksize", "3")
    assert pooled.ret == pytest.ExitCode.TESTS_FAILED
    assert verdicts(pool_xml) == {
        "test_attr::test_before": "passed",
        "test_attr::test_lock_attribute": "failure",
        "test_attr::test_after": "passed",
    }
    pooled.stdout.fnmatch_lines(["*report.lock is a _thread.lock, which does not pickle*"])
    assert_no_process_left(pids)


def test_a_worker_dying_in_its_finalizer_counts_against_the_restart_limit() -> None:
    exits = []
    pool = _one_task_then_close(PoolHooks(on_worker_exit=exits.append, finalizer=_exit_three))
    assert [(ended.exitcode, ended.expected) for ended in exits] == [(3, False)]
    assert pool.restarts == 1


def _one_task_then_close(hooks: PoolHooks) -> Pool:
    """A one-worker pool that ran a task and was closed and joined: its finalizer has run."""
    pool = Pool(1, hooks=hooks)
    try:
        assert pool.apply(abs, (-1,)) == 1
        pool.close()
        assert pool.join(timeout=RUN_TIMEOUT)
    finally:
        pool.terminate()
    return pool


def _exit_three() -> None:
    os._exit(3)


@pytest.mark.parametrize(
    ("stopping", "clean"),
    [(KeyboardInterrupt(), False), (SystemExit(), True), (SystemExit(3), False)],
    ids=["KeyboardInterrupt", "sys.exit()", "sys.exit(3)"],
)
def test_a_finalizer_that_stops_its_worker_prints_no_traceback(
    capfd: pytest.CaptureFixture[str], stopping: BaseException, clean: bool
) -> None:
    """A finalizer may stop its worker as a task may: the worker ends without a traceback on
    the terminal, what it printed is not lost, and the pool reports the exit, a clean one for
    sys.exit(), as Python ends a process."""
    exits = []
    finalizer = functools.partial(_print_and_raise, stopping)
    _one_task_then_close(PoolHooks(on_worker_exit=exits.append, finalizer=finalizer))
    out, err = capfd.readouterr()
    assert "finalizer ran" in out
    assert "Traceback" not in err
    assert [ended.expected for ended in exits] == [clean]


def _print_and_raise(stopping: BaseException) -> None:
    print("finalizer ran", end="")  # no newline: only a flush gets it out
    raise stopping


REPORTS_BY_PROCESS = """
import os

def pytest_runtest_logreport(report):
    if report.nodeid.endswith("test_forks"):
        with open(os.environ["TEST_LEDGER"], "a") as ledger:
            ledger.write(f"{os.getpid()}-{report.when}\\n")
"""


def test_a_forked_child_that_returns_runs_nothing_more_of_the_protocol(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child leaves as soon as its test returns: no report, hook or teardown of its own."""
    ledger = file_a_conftest_writes(
        pytester, monkeypatch, "ledger.txt", "TEST_LEDGER", REPORTS_BY_PROCESS
    )
    pytester.makepyfile(test_fork=FORK_CHILD_RETURNS)
    pooled, _ = run(pytester, "--pool", "1", "--pool-chunksize", "5")
    assert pooled.ret == pytest.ExitCode.OK
    lines = [line.split("-") for line in ledger.read_text().split()]
    # Each phase's report once in the worker and once replayed in the controller, no more.
    assert len({pid for pid, _ in lines}) == 2
    assert collections.Counter(when for _, when in lines) == {"setup": 2, "call": 2, "teardown": 2}


FORKS_ELSEWHERE = {
    "the child raises": """
import os
def test_forks():
    pid = os.fork()
    if pid == 0:
        raise AssertionError("in the child")
    os.waitpid(pid, 0)
""",
    "a fixture's child returns": """
import os, pytest
@pytest.fixture
def forking():
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
def test_forks(forking): pass
""",
    "a plugin registered during the run forks": """
import os, pytest
class Forking:
    @pytest.hookimpl(trylast=True)  # after the test: the runner's guard is behind it
    def pytest_runtest_call(self, item):
        if item.name == "test_forks" and os.fork() == 0:
            return
@pytest.fixture
def registers(request):
    request.config.pluginmanager.register(Forking(), "forking")
def test_registers(registers): pass
def test_forks(): pass
""",
}


@pytest.mark.parametrize("module", FORKS_ELSEWHERE.values(), ids=FORKS_ELSEWHERE)
def test_a_forked_child_leaves_wherever_it_returns_to_pytest(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, module: str
) -> None:
    """The child of a test that raises, of a fixture, of a plugin that came during the run:
    each leaves when its code returns to pytest, and the test is reported once, as serially."""
    ledger = file_a_conftest_writes(
        pytester, monkeypatch, "ledger.txt", "TEST_LEDGER", REPORTS_BY_PROCESS
    )
    pytester.makepyfile(test_fork=module)
    pooled, _ = run(pytester, "--pool", "1")
    assert pooled.ret == pytest.ExitCode.OK
    lines = [line.split("-") for line in ledger.read_text().split()]
    assert len({pid for pid, _ in lines}) == 2  # the worker's reports and the replay's
    assert collections.Counter(when for _, when in lines) == {"setup": 2, "call": 2, "teardown": 2}


BOXED_PROTOCOL = """
import os, pickle
import pytest
from _pytest.runner import runtestprotocol

# What pytest-forked does: the whole protocol runs in a child, whose reports the parent logs.
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    readable, writable = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(readable)
        try:
            reports = runtestprotocol(item, log=False, nextitem=nextitem)
            with os.fdopen(writable, "wb") as out:
                pickle.dump([item.config.hook.pytest_report_to_serializable(
                    config=item.config, report=report) for report in reports], out)
        finally:
            os._exit(0)
    os.close(writable)
    with os.fdopen(readable, "rb") as data:
        raw = data.read()
    os.waitpid(pid, 0)
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for serialized in pickle.loads(raw) if raw else ():
        report = item.config.hook.pytest_report_from_serializable(
            config=item.config, data=serialized)
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
"""


def test_a_plugin_running_each_protocol_in_a_child_gets_serial_verdicts(
    pytester: pytest.Pytester,
) -> None:
    """pytest-forked's way: the child forked before the phases runs them to their end."""
    pytester.makeconftest(BOXED_PROTOCOL)
    pytester.makepyfile(
        """
        import pytest
        @pytest.fixture
        def resource():
            yield 1
        def test_passes(resource): assert resource == 1
        def test_fails(): assert 1 == 2, "boxed failure"
        @pytest.mark.skip(reason="skipped in the box")
        def test_skipped(): pass
        """
    )
    serial, serial_path = run(pytester, "-p", "no:pytest_poolrun", xml="serial.xml")
    pooled, pooled_path = run(pytester, "--pool", "2")
    serial.assert_outcomes(passed=1, failed=1, skipped=1)
    pooled.assert_outcomes(passed=1, failed=1, skipped=1)
    outcomes = junit_outcomes(pooled_path)
    assert outcomes == junit_outcomes(serial_path)
    assert any(
        message.startswith("AssertionError: boxed failure") for _, message in outcomes.values()
    )
