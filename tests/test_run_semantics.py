"""Issue 13: options mean under --pool what they mean serially.

Each case runs real pytest sessions in subprocesses (bounded in time) and compares what the user
sees under --pool with a serial run of the same files, or with what the option promises.
"""

from __future__ import annotations

import collections
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers import POOL

RUN_TIMEOUT = 60.0


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    try:
        return pytester.runpytest_subprocess(*POOL, *args, timeout=RUN_TIMEOUT)
    except pytester.TimeoutExpired:
        pytest.fail(f"the run {' '.join(args)} was still going after {RUN_TIMEOUT:.0f}s")


def junit_cases(path: Path) -> list[tuple[str, str]]:
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = child.tag
        cases.append((f"{case.get('classname')}::{case.get('name')}", outcome))
    return cases


def summary_lines(result: pytest.RunResult, prefix: str) -> set[str]:
    """The short test summary lines that start with ``prefix`` (FAILED, ERROR)."""
    return {line.split(" - ")[0] for line in result.stdout.lines if line.startswith(prefix + " ")}


def reported_order(result: pytest.RunResult) -> list[str]:
    """Test names in the order -v reported their verdicts."""
    pattern = re.compile(r"^\S+\.py::(\S+) (PASSED|FAILED|ERROR|SKIPPED)")
    return [match.group(1) for line in result.stdout.lines if (match := pattern.match(line))]


# ------------------------------------------------------------------------------------ --sw

STEPWISE = """
import time
def test_a(): time.sleep(0.5)
def test_b(): assert False, "b fails"
def test_c(): assert False, "c fails"
def test_d(): pass
"""


def test_stepwise_sequence_ends_as_serially(pytester: pytest.Pytester) -> None:
    """Serially the first run stops at test_b and the second starts again there.  Under --pool
    the first run recorded test_c (which finished first on the other worker), and the second run
    deselected test_b, which never passed."""
    pytester.makepyfile(test_steps=STEPWISE)
    pool = ("--pool", "2", "--pool-chunksize", "2")
    serial_first = run(pytester, "--sw", "--cache-clear")
    serial_second = run(pytester, "--sw")
    pool_first = run(pytester, "--sw", "--cache-clear", *pool)
    pool_second = run(pytester, "--sw", *pool)
    assert summary_lines(serial_first, "FAILED") == {"FAILED test_steps.py::test_b"}
    assert summary_lines(serial_second, "FAILED") == {"FAILED test_steps.py::test_b"}
    assert summary_lines(pool_first, "FAILED") == summary_lines(serial_first, "FAILED")
    assert summary_lines(pool_second, "FAILED") == summary_lines(serial_second, "FAILED")
    assert pool_second.parseoutcomes() == serial_second.parseoutcomes()
    assert pool_second.ret == serial_second.ret


# ------------------------------------------------------------------------------ --ff / --nf

SLOW_TESTS = """
import time, pytest
@pytest.mark.parametrize("n", range(13))
def test_slow(n): time.sleep(0.1)
"""


def test_failed_first_runs_the_previous_failure_first(pytester: pytest.Pytester) -> None:
    """Once the stored durations won: the fast previous failure ran near the end."""
    pytester.makepyfile(test_slow=SLOW_TESTS, test_quick="def test_failed_before(): assert 0")
    first = run(pytester)
    first.assert_outcomes(failed=1, passed=13)
    again = run(pytester, "--ff", "-v", "--pool", "2")
    order = reported_order(again)
    assert len(order) == 14
    assert "test_failed_before" in order[:2], order


def test_new_first_runs_the_new_test_first(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_slow=SLOW_TESTS)
    run(pytester).assert_outcomes(passed=13)
    pytester.makepyfile(test_new="def test_new(): pass")
    again = run(pytester, "--nf", "-v", "--pool", "2")
    order = reported_order(again)
    assert len(order) == 14
    assert "test_new" in order[:2], order


# ------------------------------------------------------------------------ KeyboardInterrupt

RAISES_KEYBOARD_INTERRUPT = """
def test_a(): pass
def test_interrupts(): raise KeyboardInterrupt
def test_c(): pass
"""


def test_a_test_raising_keyboard_interrupt_interrupts_the_run(pytester: pytest.Pytester) -> None:
    """Serially the run is interrupted (exit code 2); so it is under --pool."""
    pytester.makepyfile(test_kbi=RAISES_KEYBOARD_INTERRUPT)
    serial = run(pytester)
    assert serial.ret == pytest.ExitCode.INTERRUPTED
    pooled = run(pytester, "--pool", "2")
    assert pooled.ret == serial.ret, pooled.stdout.str()
    # The summary names where the test raised it, as serially, not a line of the plugin.
    serial.stdout.fnmatch_lines([f"{pytester.path / 'test_kbi.py'}:*: KeyboardInterrupt"])
    assert _interrupt_lines(pooled) == _interrupt_lines(serial)


INTERRUPTS_AFTER_TESTS_THAT_RUN = """
import pathlib, time, pytest

RAN = pathlib.Path(__file__).with_name("ran")

@pytest.mark.parametrize("i", range(10))
def test_before(i):
    time.sleep(0.05)
    with RAN.open("a") as ran:
        ran.write(f"test_before[{i}]\\n")

def test_interrupts(): raise KeyboardInterrupt

@pytest.mark.parametrize("i", range(10))
def test_after(i): time.sleep(0.05)
"""


def test_an_interrupt_in_collection_order_reports_the_tests_before_it_that_ran(
    pytester: pytest.Pytester,
) -> None:
    """Serially every test before the interrupting one ran and is reported, then the run ends.
    Under --pool a test before it may not have started (the stop came first); every one that
    ran is reported, in collection order, and none after it."""
    pytester.makepyfile(test_kbi=INTERRUPTS_AFTER_TESTS_THAT_RUN)
    pooled = run(
        pytester, "--pool", "2", "--pool-report-order", "collection", "-v", "-p", "no:randomly"
    )
    assert pooled.ret == pytest.ExitCode.INTERRUPTED
    ran = set((pytester.path / "ran").read_text().split())
    reported = re.findall(r"^test_kbi.py::(\S+) PASSED", pooled.stdout.str(), re.MULTILINE)
    assert reported == [f"test_before[{i}]" for i in range(10) if f"test_before[{i}]" in ran]
    assert len(reported) >= 5, pooled.stdout.str()


def _interrupt_lines(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if "KeyboardInterrupt" in line]


def test_an_interrupt_keeps_its_message_and_innermost_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        stopper="def stop(why):\n    raise KeyboardInterrupt(why)\n",
        test_kbi="import stopper\ndef test_stops(): stopper.stop('enough')\n",
    )
    serial = run(pytester)
    serial.stdout.fnmatch_lines(
        [
            "*! KeyboardInterrupt: enough !*",
            f"{pytester.path / 'stopper.py'}:*: KeyboardInterrupt: enough",
        ]
    )
    pooled = run(pytester, "--pool", "2", "--pool-start", "spawn")
    assert pooled.ret == serial.ret == pytest.ExitCode.INTERRUPTED
    assert _interrupt_lines(pooled) == _interrupt_lines(serial)


# -------------------------------------------------------------------------------------- -x

TWO_FAILURES = """
import pathlib, time

STARTED = pathlib.Path(__file__).with_name("slow-started")

def test_fails_slowly():
    STARTED.write_text("yes")
    time.sleep(0.5)
    assert False, "failed after the stop"

def test_fails_fast():
    deadline = time.monotonic() + 10
    while not STARTED.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert False, "first failure"
"""


def test_exitfirst_reports_a_failure_that_was_already_running(pytester: pytest.Pytester) -> None:
    """test_fails_slowly started before test_fails_fast failed (it waits for that), so it ran to
    completion and failed; once it appeared neither on the terminal nor in junitxml."""
    pytester.makepyfile(test_two=TWO_FAILURES)
    xml = pytester.path / "report.xml"
    pooled = run(pytester, "-x", "--pool", "2", "--pool-chunksize", "1", f"--junitxml={xml}")
    assert pooled.ret == pytest.ExitCode.TESTS_FAILED
    assert summary_lines(pooled, "FAILED") == {
        "FAILED test_two.py::test_fails_fast",
        "FAILED test_two.py::test_fails_slowly",
    }
    cases = junit_cases(xml)
    assert collections.Counter(cases) == {
        ("test_two::test_fails_fast", "failure"): 1,
        ("test_two::test_fails_slowly", "failure"): 1,
    }


STOP_WHILE_ANOTHER_MODULE_RUNS = {
    "test_a": """
import pathlib, time

def test_fails_once_b_runs():
    deadline = time.monotonic() + 10
    while not pathlib.Path("b-started").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert False, "first failure"
""",
    "test_b": """
import pathlib, time, pytest

def teardown_module(module):
    print("module b torn down")
    raise ValueError("module b teardown failed")

@pytest.mark.parametrize("n", range(3))
def test_b(n):
    pathlib.Path("b-started").touch()
    time.sleep(0.5)
""",
}


@pytest.mark.skipif(
    tuple(int(part) for part in pytest.__version__.split(".")[:2]) < (8, 2),
    reason="pytest tears every fixture down with the last test of a stopped run from 8.2 on",
)
def test_exitfirst_tears_the_running_test_down_with_its_module(pytester: pytest.Pytester) -> None:
    """A worker told to stop in the middle of a test tears every fixture down with it, as a
    serial run does with its last test: a module's teardown error is that test's, never a loose
    line; under collection order, nothing past the failure shows, as serially."""
    pytester.makepyfile(**STOP_WHILE_ANOTHER_MODULE_RUNS)
    args = ("-x", "-rA", "--pool", "2", "--pool-chunksize", "1", "-p", "no:randomly")
    in_order = run(pytester, *args, "--pool-report-order", "collection")
    assert in_order.ret == pytest.ExitCode.TESTS_FAILED
    assert in_order.parseoutcomes() == {"failed": 1}
    assert "module b" not in in_order.stdout.str()
    (pytester.path / "b-started").unlink()
    pooled = run(pytester, *args)
    assert pooled.parseoutcomes() == {"failed": 1, "passed": 1, "errors": 1}
    pooled.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_b[[]0[]]*",
            "*Captured stdout teardown*",
            "module b torn down",
            "ERROR test_b.py::test_b[[]0[]]*",
        ]
    )
    assert "poolrun: error while tearing" not in pooled.stdout.str()


JUNIT_RECORDS = """
import pytest

@pytest.fixture(scope="session", autouse=True)
def arch(record_testsuite_property):
    record_testsuite_property("ARCH", "x86")
    yield
    record_testsuite_property("CLEANED", "yes")

@pytest.mark.parametrize("n", range(4))
def test_requirement(n, record_xml_attribute, record_property):
    record_xml_attribute("assertions", f"REQ-{n}")
    record_property("example_key", n)
"""


def junit_records(path: Path) -> tuple[list[tuple[str, str]], dict[str, tuple[str, str, str]]]:
    """The suite's properties, and each case's recorded attribute and property."""
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    suite_properties = suite.find("properties")
    properties = [] if suite_properties is None else list(suite_properties)
    cases = {
        str(case.get("name")): (
            str(case.get("assertions")),
            *next((str(p.get("name")), str(p.get("value"))) for p in case.iter("property")),
        )
        for case in suite.iter("testcase")
    }
    return [(str(p.get("name")), str(p.get("value"))) for p in properties], cases


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_junit_records_of_tests_reach_the_file_as_serially(
    pytester: pytest.Pytester, start: str
) -> None:
    """record_testsuite_property and record_xml_attribute write into junitxml's writer, which
    only the controller's writes out (pytest-xdist loses both)."""
    pytester.makepyfile(test_records=JUNIT_RECORDS)
    args = ("-o", "junit_family=xunit1", "-W", "ignore::pytest.PytestExperimentalApiWarning")
    serial_xml, pool_xml = pytester.path / "serial.xml", pytester.path / "pool.xml"
    run(pytester, *args, f"--junitxml={serial_xml}", "-p", "no:pytest_poolrun")
    pooled = run(pytester, *args, f"--junitxml={pool_xml}", "--pool", "2", "--pool-start", start)
    pooled.assert_outcomes(passed=4)
    serial = junit_records(serial_xml)
    assert serial == (
        [("ARCH", "x86"), ("CLEANED", "yes")],
        {f"test_requirement[{n}]": (f"REQ-{n}", "example_key", str(n)) for n in range(4)},
    )
    assert junit_records(pool_xml) == serial


# ------------------------------------------------------------------------- live logs, -s

LOGGING = """
import logging, pytest
@pytest.mark.parametrize("n", range(6))
def test_logs(n): logging.getLogger(__name__).warning("live line %d", n)
"""


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_live_logs_are_shown(pytester: pytest.Pytester, start: str) -> None:
    pytester.makepyfile(test_logging=LOGGING)
    serial = run(pytester, "--log-cli-level=WARNING")
    expected = [f"*WARNING*live line {n}*" for n in range(6)]
    serial.stdout.fnmatch_lines_random(expected)
    pooled = run(pytester, "--log-cli-level=WARNING", "--pool", "2", "--pool-start", start)
    pooled.assert_outcomes(passed=6)
    pooled.stdout.fnmatch_lines_random(expected)
    # Each block is labelled with its worker and test.
    pooled.stdout.fnmatch_lines_random(["[[]gw?[]] test_logging.py::test_logs[[]*[]]"])


PRINTING = """
import pytest
@pytest.mark.parametrize("n", range(6))
def test_prints(n): print(f"printed line {n}")
"""


def test_no_capture_shows_prints_of_spawned_workers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_printing=PRINTING)
    expected = [f"*printed line {n}*" for n in range(6)]
    run(pytester, "-s").stdout.fnmatch_lines_random(expected)
    pooled = run(pytester, "-s", "--pool", "2", "--pool-start", "spawn")
    pooled.assert_outcomes(passed=6)
    pooled.stdout.fnmatch_lines_random(expected)


STANDARD_STREAMS = """
import sys
import pytest

@pytest.mark.parametrize("name", ["stdout", "stderr"])
def test_stream_is_a_text_file(name):
    stream = getattr(sys, name)
    original = getattr(sys, "__" + name + "__")
    assert (stream.encoding, stream.errors) == (original.encoding, original.errors)
    assert stream.name == original.name
    stream.reconfigure(line_buffering=True)

def test_bytes_through_buffer():
    sys.stdout.buffer.write("bytes through the buffer \\u2713\\n".encode(sys.stdout.encoding))

def test_line_without_newline():
    print("a line without its newline", end="")
"""


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_no_capture_gives_tests_real_text_streams(pytester: pytest.Pytester, start: str) -> None:
    # Under -s, tests use sys.stdout as the file it is serially: its buffer, encoding, errors,
    # name and reconfigure; what they write, bytes and unfinished lines too, is shown.
    pytester.makepyfile(test_streams=STANDARD_STREAMS)
    expected = ["*bytes through the buffer \u2713*", "*a line without its newline*"]
    run(pytester, "-s").stdout.fnmatch_lines_random(expected)
    pooled = run(pytester, "-s", "--pool", "2", "--pool-start", start)
    pooled.assert_outcomes(passed=4)
    pooled.stdout.fnmatch_lines_random(expected)


# ------------------------------------------------------------------------ --pool-dist module

INTERLEAVE = """
import itertools, os, pytest

def pytest_collection_modifyitems(items):
    # What pytest-order or any reordering plugin may do: modules no longer contiguous.
    modules = {}
    for item in items:
        modules.setdefault(item.module.__name__, []).append(item)
    rows = itertools.zip_longest(*modules.values())
    items[:] = [item for row in rows for item in row if item is not None]

@pytest.fixture(autouse=True)
def _note_worker(request):
    with open(os.environ["WORKER_LEDGER"], "a") as ledger:
        ledger.write(f"{request.module.__name__} {os.environ.get('PYTEST_XDIST_WORKER')}\\n")
"""

MODULE = """
import time, pytest
@pytest.mark.parametrize("n", range(4))
def test_in_module(n): time.sleep(0.05)
"""


def test_dist_module_keeps_a_reordered_module_on_one_worker(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = pytester.path / "workers.txt"
    monkeypatch.setenv("WORKER_LEDGER", str(ledger))
    pytester.makeconftest(INTERLEAVE)
    pytester.makepyfile(test_one=MODULE, test_two=MODULE, test_three=MODULE)
    pooled = run(pytester, "--pool", "2", "--pool-dist", "module", "-v")
    pooled.assert_outcomes(passed=12)
    workers: dict[str, set[str]] = collections.defaultdict(set)
    for line in ledger.read_text().splitlines():
        module, worker = line.split()
        workers[module].add(worker)
    assert set(workers) == {"test_one", "test_two", "test_three"}
    split = {module: sorted(names) for module, names in workers.items() if len(names) > 1}
    assert split == {}, f"modules run on more than one worker: {split}"


# -------------------------------------------------------------- the garbage collector, as found

SEES_EVERY_OBJECT = """
import gc, os

class Marker:
    pass

KEPT = Marker()


def seen(where):
    found = any(type(obj) is Marker for obj in gc.get_objects())
    with open(f"seen-{os.getpid()}.txt", "a") as out:
        out.write(f"{where} referrers={bool(gc.get_referrers(KEPT))} objects={found}\\n")


def pytest_configure(config):
    os.environ.setdefault("CONTROLLER_PID", str(os.getpid()))


def pytest_collection_modifyitems(items):
    seen("collection")


def pytest_runtest_logreport(report):
    # In the controller: the report hooks run in the workers too.
    if report.when == "call" and os.getpid() == int(os.environ["CONTROLLER_PID"]):
        seen("replay")


def pytest_terminal_summary():
    seen("summary")
"""


@pytest.mark.parametrize("pooled", [True, False], ids=["pool", "serial"])
def test_tests_and_hooks_see_every_object_through_the_garbage_collector(
    pytester: pytest.Pytester, pooled: bool
) -> None:
    # gc.get_objects() and gc.get_referrers() leave frozen objects out: a run that froze its
    # heap failed leak tests, and a hypothesis warning (an error under -W error) failed
    # jinja2's suite at its summary.  Every test and hook sees what it would serially.
    pytester.makeconftest(SEES_EVERY_OBJECT)
    pytester.makepyfile(
        """
        import conftest

        def test_a():
            conftest.seen("test")

        def test_b():
            conftest.seen("test")
        """
    )
    run(pytester, *(("--pool", "2") if pooled else ())).assert_outcomes(passed=2)
    lines = sorted(
        line for path in pytester.path.glob("seen-*.txt") for line in path.read_text().splitlines()
    )
    assert lines == sorted(
        [f"{where} referrers=True objects=True" for where in ("collection", "summary")]
        + ["replay referrers=True objects=True"] * 2
        + ["test referrers=True objects=True"] * 2
    )


def test_tests_see_the_garbage_collector_thresholds_the_run_found(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
        import gc

        def pytest_configure(config):
            gc.set_threshold(500, 7, 9)
        """
    )
    pytester.makepyfile(
        """
        import gc

        def test_a():
            assert gc.get_threshold() == (500, 7, 9)

        def test_b():
            assert gc.get_threshold() == (500, 7, 9)
        """
    )
    run(pytester, "--pool", "2").assert_outcomes(passed=2)


@pytest.mark.parametrize("pooled", [True, False], ids=["pool", "serial"])
def test_the_controller_collects_everything_once_from_collection_to_its_unconfigure(
    pytester: pytest.Pytester, pooled: bool
) -> None:
    # Each full collection would walk the collected session, and the reports kept so far,
    # again; once the workers are forked, it would also copy every page of them they share.
    # The one full collection is made just before the fork; the collections held off are not
    # owed at the session's end either, where pytest makes a full one of its own.  A serial
    # run of the same conftest makes more: its collection and replay keep many objects.
    pytester.makeconftest(
        """
        import gc, os

        KEEP = []
        FULL = []
        COUNTING = []
        PID = os.getpid()

        def count(phase, info):
            if phase == "start" and info["generation"] == 2 and COUNTING and os.getpid() == PID:
                FULL.append(1)

        gc.callbacks.append(count)

        def pytest_collection(session):
            COUNTING.append(1)

        def pytest_collection_modifyitems(items):
            KEEP.extend([n] for n in range(200_000))

        def pytest_runtest_logreport(report):
            if os.getpid() == PID:
                KEEP.extend([n] for n in range(50_000))

        def pytest_sessionfinish(session):
            KEEP.extend([n] for n in range(50_000))  # as a summary that keeps what it read

        def pytest_unconfigure(config):
            COUNTING.clear()
            with open("full-collections.txt", "w") as out:
                out.write(str(len(FULL)))
        """
    )
    pytester.makepyfile(
        "import pytest\n@pytest.mark.parametrize('n', range(6))\ndef test_it(n): pass\n"
    )
    run(pytester, *(("--pool", "2") if pooled else ())).assert_outcomes(passed=6)
    full = int((pytester.path / "full-collections.txt").read_text())
    assert (full == 1) == pooled and full >= 1, full


def test_a_forked_worker_starts_no_full_collection_of_what_it_inherited(
    pytester: pytest.Pytester,
) -> None:
    # The controller held its full collections off while it collected; a worker inheriting
    # what they owed made a full one at its first young collection, walking (and copying)
    # every page it shared with the controller.  Tests here allocate enough for young ones.
    pytester.makeconftest(
        """
        import gc, os

        KEEP = []
        PID = os.getpid()

        def count(phase, info):
            if phase == "start" and os.getpid() != PID:
                with open(f"worker-{os.getpid()}.txt", "a") as out:
                    out.write(f"{info['generation']}\\n")

        gc.callbacks.append(count)

        def pytest_collection_modifyitems(items):
            KEEP.extend([n] for n in range(200_000))
        """
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("n", range(20))
        def test_it(n):
            kept = [[i] for i in range(5_000)]
            assert len(kept) == 5_000
        """
    )
    run(pytester, "--pool", "2").assert_outcomes(passed=20)
    generations = [
        int(line)
        for path in pytester.path.glob("worker-*.txt")
        for line in path.read_text().split()
    ]
    assert 0 in generations  # the tests did start young collections in the workers
    assert 2 not in generations, generations


CALLER = """
import gc, sys
import pytest

if sys.argv[1:] == ["own-thresholds"]:
    gc.set_threshold(600, 8, 11)
print(f"BEFORE {gc.get_threshold()}")
for _ in range(2):
    code = pytest.main(["-q", "-p", "pytest_poolrun", "-p", "no:randomly", "--pool", "2"])
    print(f"RESULT exit={int(code)} thresholds={gc.get_threshold()}")
"""

CALLER_CONFTEST = """
import gc, os

def pytest_configure(config):
    os.environ.setdefault("CALLER_PID", str(os.getpid()))

def pytest_runtest_logreport(report):
    if report.when == "call" and os.getpid() == int(os.environ["CALLER_PID"]):
        with open("while-running.txt", "a") as out:
            out.write(f"{gc.get_threshold()[2]}\\n")
"""


@pytest.mark.parametrize("own", [False, True], ids=["default", "own-thresholds"])
def test_a_run_gives_its_caller_back_the_thresholds_it_found(
    pytester: pytest.Pytester, own: bool
) -> None:
    # A program that calls pytest.main() again and again must get the collector back as it
    # was after each run, or its garbage in reference cycles would pile up.
    pytester.makeconftest(CALLER_CONFTEST)
    pytester.makepyfile(test_some="def test_a(): pass\ndef test_b(): pass\n")
    script = pytester.makepyfile(caller=CALLER)
    ran = pytester.run(
        sys.executable, str(script), *(["own-thresholds"] if own else []), timeout=RUN_TIMEOUT
    )
    before = [line.split(" ", 1)[1] for line in ran.outlines if line.startswith("BEFORE ")]
    results = [line.split(" ", 1)[1] for line in ran.outlines if line.startswith("RESULT ")]
    assert len(before) == 1, ran.outlines
    assert results == [f"exit=0 thresholds={before[0]}"] * 2
    while_running = (pytester.path / "while-running.txt").read_text().split()
    assert len(while_running) == 4
    assert all(int(old) > 1_000_000 for old in while_running)  # held off in the controller


KEEPS_STREAMS_AT_IMPORT = """
import logging, sys

STDOUT_AT_IMPORT = sys.stdout
log = logging.getLogger("kept")
log.addHandler(logging.StreamHandler())  # holds sys.stderr as the module is imported
log.propagate = False

def test_same_stream_object():
    assert STDOUT_AT_IMPORT is sys.stdout

def test_output_through_kept_streams():
    STDOUT_AT_IMPORT.write("through the stdout kept at import\\n")
    log.warning("through a handler made at import")
    assert False
"""


@pytest.mark.parametrize("capture", ["fd", "sys", "tee-sys"])
def test_streams_a_module_kept_at_import_are_captured_as_serially(
    pytester: pytest.Pytester, capture: str
) -> None:
    """A module imported during collection holds the capture's streams; its output from a test
    belongs to that test's report, and no stream is swapped under it."""
    pytester.makepyfile(KEEPS_STREAMS_AT_IMPORT)
    pooled = run(pytester, "--pool", "2", f"--capture={capture}", "-rA")
    serial = run(pytester, "-p", "no:pytest_poolrun", f"--capture={capture}", "-rA")
    for result in (pooled, serial):
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(
            [
                "*- Captured stdout call -*",
                "through the stdout kept at import",
                "*- Captured stderr call -*",
                "through a handler made at import",
            ]
        )
    if capture == "tee-sys":
        return  # its live copy is printed as the worker's output is, on a line of its own
    # Nothing of it is printed elsewhere (after the summary, from a capture file shared with
    # the controller).
    for text in ("through the stdout kept at import", "through a handler made at import"):
        seen = [(r.outlines + r.errlines).count(text) for r in (pooled, serial)]
        assert seen[0] == seen[1], (text, seen)


def test_tests_that_ran_look_to_the_sessions_end_as_after_a_serial_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest drops a test's request and fixture values at the end of its protocol; the
    controller's copies of the tests, which run nothing, kept theirs to the end, where a
    plugin reading them at the session's end found what no serial run leaves."""
    pytester.makeconftest(
        """
        import json, os

        def pytest_sessionfinish(session):
            if "PYTEST_XDIST_WORKER" in os.environ:
                return
            seen = {item.name: [repr(item.funcargs), repr(item._request)] for item in session.items}
            with open(os.environ["ITEMS_SEEN"], "w") as out:
                json.dump(seen, out, sort_keys=True)
        """
    )
    pytester.makepyfile(
        test_ends="""
        import pytest

        @pytest.fixture
        def value():
            return 1

        def test_passes(value):
            pass

        def test_fails(value):
            assert value == 2

        @pytest.mark.skip(reason="not today")
        def test_skipped(value):
            pass

        @pytest.mark.parametrize("n", range(6))
        def test_many(n, value):
            pass
        """
    )
    seen = {}
    for name, args in (("serial", ("-p", "no:pytest_poolrun")), ("pooled", ("--pool", "2"))):
        monkeypatch.setenv("ITEMS_SEEN", str(pytester.path / f"{name}.json"))
        run(pytester, *args).assert_outcomes(passed=7, failed=1, skipped=1)
        seen[name] = json.loads((pytester.path / f"{name}.json").read_text())
    assert seen["pooled"] == seen["serial"]
    assert len(seen["serial"]) == 9


# The conftest of the tests below: batches of results an hour long (forked workers inherit the
# setting), the controller's reports noted as files, and a fixture that waits for such a file.
_NOTED_REPORTS_CONFTEST = """
import os
import pathlib
import time

import pytest

from pytest_poolrun import itemrunner

itemrunner.BATCH_SECONDS = 3600.0
HERE = pathlib.Path(__file__).parent


def pytest_runtest_logreport(report):
    if "PYTEST_XDIST_WORKER" not in os.environ:  # the controller's
        name = report.nodeid.rpartition("::")[2]
        (HERE / f"reported-{name}-{report.when}-{report.outcome}").touch()


@pytest.fixture
def wait_for_report():
    def wait(name):
        deadline = time.monotonic() + 10
        while not (HERE / f"reported-{name}").exists():
            assert time.monotonic() < deadline, f"{name} was not reported meanwhile"
            time.sleep(0.01)

    return wait
"""


def test_a_chunks_results_are_reported_before_its_last_tests_end(
    pytester: pytest.Pytester,
) -> None:
    """Passing results waited for the batch to be due or for the chunk's end: tests that ended
    quickly one after another, just before a long test at a chunk's end, were shown only once
    that test ended, and the worker then waited for the controller to report them all before
    it got its next chunk.  With hour-long batches, the chunk's last but one test waits for the
    controller's report of the test before it."""
    pytester.makeconftest(_NOTED_REPORTS_CONFTEST)
    pytester.makepyfile(
        test_chunk="""
        def test_first():
            pass

        def test_second():
            pass

        def test_third():
            pass

        def test_waits_for_the_report_of_the_test_before(wait_for_report):
            wait_for_report("test_third-call-passed")

        def test_last():  # the chunk's last test: held back until the next chunk, or the end
            pass
        """
    )
    result = run(pytester, "--pool", "1", "--pool-chunksize", "5")
    result.assert_outcomes(passed=5)


def test_a_failure_is_reported_while_the_next_test_runs(pytester: pytest.Pytester) -> None:
    """A worker sends passing results in batches, every 50 ms; a failure waited for the batch
    to be due, so it was shown only once the next test ended, however long that took.  With
    hour-long batches, the next test waits for the controller's report of the failure."""
    pytester.makeconftest(_NOTED_REPORTS_CONFTEST)
    pytester.makepyfile(
        test_order="""
        def test_passes():
            pass

        def test_fails():
            assert 1 == 2

        def test_waits_for_the_report_of_the_failure(wait_for_report):
            wait_for_report("test_fails-call-failed")

        # Enough tests left in the chunk that its results so far are not sent for its end.
        def test_after():
            pass

        def test_after_that():
            pass

        def test_last():  # the chunk's last test: held back until the next chunk, or the end
            pass
        """
    )
    result = run(pytester, "--pool", "1", "--pool-chunksize", "6")
    result.assert_outcomes(failed=1, passed=5)
