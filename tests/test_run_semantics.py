"""Issue 13: options mean under --pool what they mean serially.

Each case runs real pytest sessions in subprocesses (bounded in time) and compares what the user
sees under --pool with a serial run of the same files, or with what the option promises.
"""

from __future__ import annotations

import collections
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers import POOL

from pytest_poolrun.heapfreeze import INTERPRETER_FROZEN_OBJECTS

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
    pooled.stdout.fnmatch_lines(["*KeyboardInterrupt*"])


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


# ------------------------------------------------------------ a caller that goes on after a run

CALLER = """
import gc, os, sys
import pytest

os.environ["CALLER_PID"] = str(os.getpid())
caller_objects = [[n] for n in range(100)]
if sys.argv[1:] == ["caller-froze"]:
    gc.freeze()
gc.collect()
print(f"BEFORE {gc.get_freeze_count()}")
for _ in range(2):
    code = pytest.main(["-q", "-p", "pytest_poolrun", "-p", "no:randomly", "--pool", "2"])
    gc.collect()
    tracked = {id(obj) for obj in gc.get_objects()}
    kept = not any(id(obj) in tracked for obj in caller_objects)
    print(f"RESULT exit={int(code)} frozen={gc.get_freeze_count()} caller_objects_frozen={kept}")
"""

CALLER_CONFTEST = """
import gc, os

def pytest_runtest_logreport(report):
    if report.when == "call" and os.getpid() == int(os.environ["CALLER_PID"]):
        with open("frozen-while-running.txt", "a") as out:
            out.write(f"{gc.get_freeze_count()}\\n")
"""


def caller_results(pytester: pytest.Pytester, *args: str) -> tuple[int, list[str]]:
    """How many objects the calling program had frozen (some Pythons freeze a few of their own
    at startup), and a line per run: exit code, frozen count, whether its objects were frozen."""
    pytester.makeconftest(CALLER_CONFTEST)
    pytester.makepyfile(test_some="def test_a(): pass\ndef test_b(): pass\n")
    script = pytester.makepyfile(caller=CALLER)
    ran = pytester.run(sys.executable, str(script), *args, timeout=RUN_TIMEOUT)
    before = [int(line.split()[1]) for line in ran.outlines if line.startswith("BEFORE ")]
    results = [line.split(" ", 1)[1] for line in ran.outlines if line.startswith("RESULT ")]
    assert len(before) == 1, ran.outlines
    return before[0], results


def test_a_run_gives_back_the_heap_it_kept_from_garbage_collection(
    pytester: pytest.Pytester,
) -> None:
    # The controller keeps what it collected out of the garbage collector while the run lasts;
    # a program that calls pytest.main() again and again must get it back after each run, or
    # its garbage would pile up.
    before, results = caller_results(pytester)
    assert results == [f"exit=0 frozen={before} caller_objects_frozen=False"] * 2
    while_running = [
        int(n) for n in (pytester.path / "frozen-while-running.txt").read_text().split()
    ]
    assert len(while_running) == 4 and min(while_running) > before + INTERPRETER_FROZEN_OBJECTS


def test_what_the_replay_keeps_is_kept_from_garbage_collection(pytester: pytest.Pytester) -> None:
    # The reports the terminal keeps pile up as the run goes on; each batch's survivors join
    # the frozen heap, so the controller's full collections do not walk them again and again.
    pytester.makeconftest(
        """
        import gc, os

        def pytest_runtest_logreport(report):
            if report.when == "call" and os.getpid() == int(os.environ["CONTROLLER_PID"]):
                with open("frozen.txt", "a") as out:
                    out.write(f"{gc.get_freeze_count()}\\n")

        def pytest_configure(config):
            os.environ.setdefault("CONTROLLER_PID", str(os.getpid()))
        """
    )
    pytester.makepyfile(
        "import time, pytest\n"
        "@pytest.mark.parametrize('n', range(30))\n"
        "def test_slowish(n): time.sleep(0.02)\n"
    )
    run(pytester, "--pool", "2", "--pool-chunksize", "5").assert_outcomes(passed=30)
    frozen = [int(n) for n in (pytester.path / "frozen.txt").read_text().split()]
    assert len(frozen) == 30
    # Later tests are replayed with more frozen: the reports of the batches before them.
    assert frozen[-1] > frozen[0]


def test_the_heap_stays_frozen_through_the_cleanups_of_pytest_and_other_plugins(
    pytester: pytest.Pytester,
) -> None:
    # pytest's unraisable-exception plugin ends the session with full collections from its
    # cleanup; the heap is given back after them, so that they do not walk it all (five times
    # on pytest 8.4).  A conftest's cleanup, registered at configure as pytest's own are, sees
    # it still frozen.
    pytester.makeconftest(
        """
        import gc, os

        def pytest_configure(config):
            pid = os.getpid()

            def record():
                if os.getpid() == pid:
                    with open("frozen-at-cleanup.txt", "w") as out:
                        out.write(f"{gc.get_freeze_count()}\\n")

            config.add_cleanup(record)
        """
    )
    pytester.makepyfile(test_some="def test_a(): pass\ndef test_b(): pass\n")
    run(pytester, "--pool", "2").assert_outcomes(passed=2)
    frozen = int((pytester.path / "frozen-at-cleanup.txt").read_text())
    assert frozen > INTERPRETER_FROZEN_OBJECTS


@pytest.mark.parametrize("pooled", [True, False], ids=["pool", "serial"])
def test_collection_runs_with_the_heap_frozen_under_pool_only(
    pytester: pytest.Pytester, pooled: bool
) -> None:
    # What lives when collection starts, and each module's items once it is collected, live to
    # the end of the run: collection's full garbage collections need not walk them.  A run
    # without --pool is left as it is.  (The collector lists no frozen object.)
    pytester.makeconftest(
        """
        import gc

        def pytest_collection_modifyitems(items):
            walked = {id(obj) for obj in gc.get_objects()}
            frozen_items = sum(id(item) not in walked for item in items)
            with open("frozen-at-collection.txt", "w") as out:
                out.write(f"{gc.get_freeze_count()} {frozen_items} {len(items)}\\n")
        """
    )
    pytester.makepyfile(
        test_one="def test_a(): pass\ndef test_b(): pass\n",
        test_two="class TestThem:\n    def test_c(self): pass\n",
    )
    run(pytester, *(("--pool", "2") if pooled else ())).assert_outcomes(passed=3)
    frozen, frozen_items, items = map(
        int, (pytester.path / "frozen-at-collection.txt").read_text().split()
    )
    assert items == 3
    assert (frozen > INTERPRETER_FROZEN_OBJECTS) == pooled
    assert frozen_items == (3 if pooled else 0)


def test_a_run_leaves_objects_its_caller_froze_frozen(pytester: pytest.Pytester) -> None:
    before, results = caller_results(pytester, "caller-froze")
    assert before > INTERPRETER_FROZEN_OBJECTS  # the caller froze its heap, pytest's among it
    assert [result.split(" frozen=")[0] for result in results] == ["exit=0"] * 2
    assert all(result.endswith("caller_objects_frozen=True") for result in results)
