"""Verdicts, output and reports of a --pool run match those of a serial run."""

from __future__ import annotations

import os
import re
import sys

import pytest
from helpers import POOL, broken_makereport_conftest, junit_outcomes

BROKEN_FIXTURES = """
import pytest, warnings

@pytest.fixture
def broken_setup():
    raise RuntimeError("setup broke")

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown broke")
"""

EVERY_OUTCOME = (
    BROKEN_FIXTURES
    + """
def test_pass(): pass
def test_fail():
    print("printed before failing")
    assert 1 + 1 == 3
def test_error_in_setup(broken_setup): pass
def test_error_in_teardown(broken_teardown): pass
@pytest.mark.skip(reason="not today")
def test_skip(): pass
@pytest.mark.xfail(reason="known bug")
def test_xfail(): assert 0
@pytest.mark.xfail(reason="fixed now")
def test_xpass(): pass
@pytest.mark.xfail(strict=True, reason="must fail")
def test_strict_xpass(): pass
def test_warns(): warnings.warn(UserWarning("mind the gap"))
@pytest.mark.parametrize("n", range(6))
def test_param(n): assert n != 4
"""
)


def test_every_outcome_matches_serial(pytester: pytest.Pytester, run_both) -> None:
    pytester.makepyfile(test_outcomes=EVERY_OUTCOME)
    serial, pooled, serial_xml, pool_xml = run_both("-rA")
    assert pooled.ret == serial.ret == 1
    assert pooled.parseoutcomes() == serial.parseoutcomes()
    assert pool_xml == serial_xml
    pooled.stdout.fnmatch_lines(["poolrun: 2 workers, forked after collection, for 15 items"])
    # Workers finish in their own order, so the summary lists the same lines in another order.
    pooled.stdout.fnmatch_lines_random(
        [
            "printed before failing",
            "*UserWarning: mind the gap*",
            "ERROR test_outcomes.py::test_error_in_setup - RuntimeError: setup broke",
            "ERROR test_outcomes.py::test_error_in_teardown - RuntimeError: teardown broke",
            "FAILED test_outcomes.py::test_fail - assert (1 + 1) == 3",
            "FAILED test_outcomes.py::test_strict_xpass*",
        ]
    )


def test_the_warnings_summary_reads_as_serially(pytester: pytest.Pytester, run_both) -> None:
    # A warning about an object (source=) gets pytest's hint on finding where it was allocated.
    pytester.makepyfile(
        test_warns="""
        import warnings
        class Handle: pass
        def test_about_an_object():
            warnings.warn("handle left open", ResourceWarning, source=Handle())
        def test_plain(): warnings.warn("plain")
        """
    )
    serial, pooled, _, _ = run_both("-W", "default", "-p", "no:randomly")

    def summary(result: pytest.RunResult) -> list[str]:
        text = result.stdout.str()
        section = text[text.index("warnings summary") : text.index("-- Docs")]
        return sorted(section.splitlines())

    assert any("Enable tracemalloc" in line for line in summary(serial))
    assert summary(pooled) == summary(serial)


def test_captured_output_and_logs_of_a_failing_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import logging, sys
        def test_noisy():
            print("to stdout")
            sys.stderr.write("to stderr\\n")
            logging.getLogger("app").warning("to the log")
            assert False
        """
    )
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2")
    result.stdout.fnmatch_lines(
        [
            "*- Captured stdout call -*",
            "to stdout",
            "*- Captured stderr call -*",
            "to stderr",
            "*- Captured log call -*",
            "WARNING *app*to the log*",
        ]
    )


def test_exitfirst_stops_like_serial(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_x="""
        import pytest
        @pytest.mark.parametrize("n", range(40))
        def test_n(n):
            assert n != 3
        """
    )
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2", "-x", "--pool-chunksize", "1")
    assert result.ret == 1
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 1
    assert outcomes.get("passed", 0) < 39
    result.stdout.fnmatch_lines(["*stopping after 1 failures*"])


def test_maxfail(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_x="""
        import pytest
        @pytest.mark.parametrize("n", range(30))
        def test_n(n):
            assert n % 5 != 0
        """
    )
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2", "--maxfail", "2")
    assert result.ret == 1
    outcomes = result.parseoutcomes()
    # No test starts after the second failure; tests that had already run to their end by
    # then are reported too (they ran), so there may be more failures than two, never all.
    assert outcomes["failed"] >= 2
    assert outcomes["failed"] + outcomes.get("passed", 0) < 30
    result.stdout.fnmatch_lines(["*stopping after 2 failures*"])


def test_last_failed_after_a_parallel_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_lf="""
        import pytest
        @pytest.mark.parametrize("n", range(12))
        def test_n(n):
            assert n not in (2, 9)
        """
    )
    first = pytester.runpytest_subprocess(*POOL, "--pool", "2")
    assert first.parseoutcomes() == {"failed": 2, "passed": 10}
    again = pytester.runpytest_subprocess(*POOL, "--pool", "2", "--lf", "-v")
    outcomes = again.parseoutcomes()
    assert outcomes["failed"] == 2
    assert "passed" not in outcomes
    again.stdout.fnmatch_lines_random(["*test_n?2? FAILED*", "*test_n?9? FAILED*"])


def test_durations_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import time
        def test_slow(): time.sleep(0.2)
        def test_fast(): pass
        """
    )
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2", "--durations=1")
    result.stdout.fnmatch_lines(["*slowest 1 duration*", "0.2*s call *test_slow*"])


@pytest.mark.skipif(
    int(pytest.__version__.split(".")[0]) < 9, reason="the subtests fixture came with pytest 9"
)
def test_subtests_reports_survive(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import unittest
        def test_with_subtests(subtests):
            for n in range(3):
                with subtests.test(msg="case", n=n):
                    assert n != 1
        def test_other(): pass
        class TestCase(unittest.TestCase):
            def test_sub(self):
                with self.subTest(n=2):
                    self.fail("two")
        """
    )
    serial = pytester.runpytest_subprocess(*POOL, "-rA")
    pooled = pytester.runpytest_subprocess(*POOL, "--pool", "2", "-rA")
    assert pooled.ret == serial.ret == 1
    assert pooled.parseoutcomes() == serial.parseoutcomes()
    pooled.stdout.fnmatch_lines(["SUBFAILED*[[]case[]]*test_with_subtests*"])

    # Each subtest's parameters as serially (n=1, not n='1'), in the summary and the headers.
    def subtest_lines(result: pytest.RunResult) -> list[str]:
        return sorted(line for line in result.outlines if "SUB" in line or "(n=" in line)

    assert any("(n=1)" in line for line in subtest_lines(serial))
    assert subtest_lines(pooled) == subtest_lines(serial)


def test_verbose_progress_lists_every_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.parametrize("n", range(5))
        def test_n(n): pass
        """
    )
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2", "-v")
    result.stdout.fnmatch_lines_random([f"*test_n[[]{n}[]] PASSED*" for n in range(5)])
    assert result.ret == 0


def test_suites_that_turn_warnings_into_errors_still_pass(pytester: pytest.Pytester) -> None:
    # Workers must not leave anything behind (threads, unclosed files) that would warn.
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.parametrize("n", range(6))
        def test_n(n): print(n)
        """
    )
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2", "-W", "error")
    result.assert_outcomes(passed=6)
    # Nothing warns after the summary either (the controller's pool, collected at the end).
    assert result.ret == 0, result.stderr.str()


def test_doctest_and_unittest_failures_read_as_in_serial(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        mod='''
        def add(a, b):
            """
            >>> add(2, 2)
            5
            """
            return a + b
        ''',
        test_unit="""
        import unittest
        class T(unittest.TestCase):
            def test_a(self): self.assertEqual(1, 2)
        """,
    )
    serial = pytester.runpytest_subprocess(*POOL, "--doctest-modules")
    pooled = pytester.runpytest_subprocess(*POOL, "--doctest-modules", "--pool", "2")

    def summary(result: pytest.RunResult) -> list[str]:
        return sorted(line for line in result.stdout.lines if line.startswith("FAILED"))

    assert summary(pooled) == summary(serial)
    assert len(summary(serial)) == 2


def test_collection_order_reproduces_the_serial_output(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_outcomes=EVERY_OUTCOME)
    pytester.makepyfile(
        test_more="""
        import time, pytest
        @pytest.mark.parametrize("n", range(8))
        def test_slow_first(n): time.sleep(0.05 if n < 2 else 0)
        """
    )
    args = ("-rA", "-p", "no:cacheprovider")
    serial = pytester.runpytest_subprocess(*POOL, *args)
    pooled = pytester.runpytest_subprocess(
        *POOL, *args, "--pool", "2", "--pool-chunksize", "2", "--pool-report-order", "collection"
    )

    def body(result: pytest.RunResult) -> list[str]:
        # Everything between the header and the final timing line.
        lines = result.stdout.lines
        start = next(i for i, line in enumerate(lines) if line.startswith("test_"))
        return [line for line in lines[start:-1] if "/tmp" not in line and "pytest-of" not in line]

    assert body(pooled) == body(serial)


def test_collection_order_with_exitfirst_stops_where_serial_stops(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_x="""
        import pytest
        @pytest.mark.parametrize("n", range(30))
        def test_n(n):
            assert n != 12
        """
    )
    args = ("-x", "-p", "no:cacheprovider")
    serial = pytester.runpytest_subprocess(*POOL, *args)
    pooled = pytester.runpytest_subprocess(
        *POOL, *args, "--pool", "2", "--pool-chunksize", "3", "--pool-report-order", "collection"
    )
    assert pooled.parseoutcomes() == serial.parseoutcomes() == {"failed": 1, "passed": 12}


RUN_NOTING_TESTS = """
import os, pytest

def note(name):
    with open(os.path.join(os.path.dirname(__file__), "ran.txt"), "a") as f:
        f.write(name + "\\n")

def test_a(): note("a")
def test_second(): note("second"); {second}
def test_b(): note("b")
def test_c(): note("c")
def test_d(): note("d")
"""


def _ran_serially_and_pooled(
    pytester: pytest.Pytester, start: str, *args: str
) -> tuple[pytest.RunResult, list[str], pytest.RunResult, list[str]]:
    """Serial, then one worker given two items per chunk; what each ran, in order."""
    ran = pytester.path / "ran.txt"
    args = (*args, "-p", "no:cacheprovider", "-p", "no:randomly")
    serial = pytester.runpytest_subprocess(*args, "-p", "no:pytest_poolrun")
    serial_ran = ran.read_text().split()
    ran.unlink()
    pooled = pytester.runpytest_subprocess(
        *POOL, *args, "--pool", "1", "--pool-chunksize", "2", "--pool-start", start
    )
    return serial, serial_ran, pooled, ran.read_text().split()


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_a_worker_starts_no_test_after_its_own_failure_under_exitfirst(
    pytester: pytest.Pytester, start: str
) -> None:
    """The failing test is held to the second chunk, whose first test the worker would start
    before the controller's stop reached it (a fresh worker: never); it stops as serially."""
    pytester.makepyfile(RUN_NOTING_TESTS.format(second="assert 0"))
    serial, serial_ran, pooled, pool_ran = _ran_serially_and_pooled(pytester, start, "-x")
    assert pool_ran == serial_ran == ["a", "second"]
    assert pooled.parseoutcomes() == serial.parseoutcomes() == {"failed": 1, "passed": 1}
    assert pooled.ret == serial.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.parametrize("start", ["fork", "spawn"])
@pytest.mark.parametrize("how", ["pytest.exit", "a hook raising"])
def test_an_item_whose_protocol_raised_runs_once(
    pytester: pytest.Pytester, start: str, how: str
) -> None:
    """A worker runs the item it held back when the next chunk comes; if pytest's protocol
    raised there, the worker's shutdown must not run that item a second time."""
    if how == "pytest.exit":
        pytester.makepyfile(RUN_NOTING_TESTS.format(second="pytest.exit('stop', returncode=3)"))
    else:
        pytester.makepyfile(RUN_NOTING_TESTS.format(second="pass"))
        pytester.makeconftest(broken_makereport_conftest("test_second"))
    serial, serial_ran, pooled, pool_ran = _ran_serially_and_pooled(pytester, start)
    assert pool_ran == serial_ran == ["a", "second"]
    assert pooled.ret == serial.ret != pytest.ExitCode.OK


EXIT_AFTER_SLOW_TESTS = """
import time, pytest

@pytest.mark.parametrize("i", range(6))
def test_before(i):
    time.sleep(0.05)

def test_exit():
    pytest.exit("bye", returncode=5)

@pytest.mark.parametrize("i", range(6))
def test_after(i):
    pass
"""


def _without_header_and_timing(result: pytest.RunResult) -> list[str]:
    return [
        re.sub(r" in [\d.]+s", "", line)
        for line in result.outlines
        if not line.startswith(("poolrun:", "rootdir:", "platform ", "plugins:"))
    ]


def test_pytest_exit_under_collection_order_reads_as_serially(pytester: pytest.Pytester) -> None:
    """The tests collected before the exiting one run and are reported, those after it are not,
    and the run ends with the exit's message and code: a serial run's output line for line."""
    pytester.makepyfile(EXIT_AFTER_SLOW_TESTS)
    args = ("-v", "-p", "no:cacheprovider", "-p", "no:randomly")
    serial = pytester.runpytest_subprocess(*args, "-p", "no:pytest_poolrun")
    pooled = pytester.runpytest_subprocess(
        *POOL, *args, "--pool", "2", "--pool-report-order", "collection"
    )
    assert serial.ret == pooled.ret == 5
    assert serial.parseoutcomes() == {"passed": 6}
    assert _without_header_and_timing(pooled) == _without_header_and_timing(serial)


def test_pytest_exit_under_completion_order_ends_the_run_with_its_code(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(EXIT_AFTER_SLOW_TESTS)
    pooled = pytester.runpytest_subprocess(*POOL, "-rA", "-p", "no:randomly", "--pool", "2")
    assert pooled.ret == 5
    pooled.stdout.fnmatch_lines(["*! _pytest.outcomes.Exit: bye !*"])
    pooled.stdout.no_fnmatch_line("*INTERNALERROR*")
    reported = [line.split()[1] for line in pooled.outlines if line.startswith("PASSED ")]
    assert len(reported) == len(set(reported)) > 0


@pytest.mark.parametrize("disabled", ["terminal", "capture", "junitxml"])
@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_a_run_without_one_of_pytests_own_plugins_gives_serial_verdicts(
    pytester: pytest.Pytester, disabled: str, start: str
) -> None:
    """Their options are then not defined at all: the workers must not read them."""
    pytester.makepyfile("def test_a(): pass\ndef test_b(): assert 0\ndef test_c(): assert 1 == 2\n")
    xml = pytester.path / "report.xml"
    # inline-snapshot (test extras) reads the terminal's --color at its session's end and
    # fails without it, serially as well: not this runner's to mend.
    args = ("-p", f"no:{disabled}", "-p", "no:randomly", "-p", "no:inline_snapshot")
    if disabled != "junitxml":
        args += (f"--junitxml={xml}",)
    serial = pytester.runpytest_subprocess(*POOL, *args, timeout=120)
    serial_outcomes = junit_outcomes(xml) if xml.exists() else None
    pooled = pytester.runpytest_subprocess(
        *POOL, *args, "--pool", "2", "--pool-start", start, timeout=120
    )
    assert pooled.ret == serial.ret == pytest.ExitCode.TESTS_FAILED
    assert "Traceback" not in pooled.stdout.str() + pooled.stderr.str()
    if serial_outcomes is not None:
        assert junit_outcomes(xml) == serial_outcomes
    else:
        assert pooled.parseoutcomes() == serial.parseoutcomes() == {"failed": 2, "passed": 1}


FAILING_COMPARISONS = """
def test_lists(): assert [1, 2, 3, 4] == [1, 2, 5, 4]
def test_dicts(): assert {"a": 1, "b": 2, "c": [1]} == {"a": 1, "b": 3, "d": [1]}
def test_long_strings(): assert "spam " * 40 + "eggs" == "spam " * 40 + "ham"
def test_multiline_strings(): assert "one\\ntwo\\nthree" == "one\\n2\\nthree"
def test_sets(): assert {1, 2, 3} == {2, 3, 4}
def test_message(): assert 2 + 2 == 5, "arithmetic is off"
"""


def test_failure_messages_match_serial(pytester: pytest.Pytester, run_both) -> None:
    """Assertion messages are made in the test's process: they must not depend on where it ran."""
    pytester.makepyfile(FAILING_COMPARISONS)
    serial, pooled, serial_junit, pool_junit = run_both("-rf")
    assert pooled.ret == serial.ret == 1
    assert len(serial_junit) == 6
    assert pool_junit == serial_junit
    for outcome, message in pool_junit.values():
        assert outcome == "failure"
        # The comparison itself, not a bare AssertionError from wherever the worker failed.
        assert re.search(r"\bassert .+ == ", message), message
    summary = sorted(line for line in serial.outlines if line.startswith("FAILED "))
    assert len(summary) == 6
    assert sorted(line for line in pooled.outlines if line.startswith("FAILED ")) == summary


def _error_section(result: pytest.RunResult) -> list[str]:
    lines = result.outlines
    start = next(n for n, line in enumerate(lines) if "ERROR at setup of" in line)
    end = next(n for n, line in enumerate(lines) if "short test summary" in line)
    return lines[start:end]


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_an_error_of_pytest_itself_reads_as_serially(pytester: pytest.Pytester, start: str) -> None:
    """A fixture's scope mismatch is raised in pytest's own code: pytest shows none of the
    traceback, and no note that it hid all of it (the worker's wrappers, in the traceback, made
    it hide them and add the note)."""
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def per_test():
            return 1

        @pytest.fixture(scope="session")
        def per_session(per_test):
            return per_test

        def test_one(per_session):
            pass
        """
    )
    serial = pytester.runpytest_subprocess(*POOL, "-p", "no:cacheprovider")
    pooled = pytester.runpytest_subprocess(
        *POOL, "-p", "no:cacheprovider", "--pool", "1", "--pool-start", start
    )
    assert "ScopeMismatch" in "\n".join(_error_section(serial))
    assert _error_section(pooled) == _error_section(serial)


def test_reports_carry_the_keywords_of_a_serial_run(pytester: pytest.Pytester) -> None:
    """A passing test's reports are rebuilt from the controller's item; markers added while the
    tests run (on the item, on its module) still reach the controller's plugins."""
    pytester.makeconftest(
        """
        import os
        def pytest_runtest_logreport(report):
            if "PYTEST_XDIST_WORKER" not in os.environ:
                with open("keywords.txt", "a") as out:
                    print(report.nodeid, report.when, sorted(report.keywords), file=out)
        """
    )
    pytester.makepyfile(
        """
        import pytest
        @pytest.fixture(scope="module")
        def marks_module(request):
            request.node.add_marker("module_mark")
        @pytest.fixture
        def marks_item(request):
            request.node.add_marker("item_mark")
        @pytest.mark.filterwarnings("default")
        def test_plain(): pass
        def test_marks_itself(marks_item): pass
        def test_marks_module(marks_module): pass
        def test_marks_in_its_body(request): request.node.add_marker("body_mark")
        def test_after(): pass
        """
    )
    lines = {}
    for args in ((), ("--pool", "1")):
        (pytester.path / "keywords.txt").unlink(missing_ok=True)
        result = pytester.runpytest_subprocess(*POOL, "-p", "no:randomly", *args)
        result.assert_outcomes(passed=5)
        lines[args] = sorted((pytester.path / "keywords.txt").read_text().splitlines())
    assert lines[("--pool", "1")] == lines[()]
    assert any("item_mark" in line for line in lines[()])
    assert any("module_mark" in line and "test_after" in line for line in lines[()])
    # Added during the call: the setup report has it not, the call and teardown ones have it.
    body = [line for line in lines[()] if "test_marks_in_its_body" in line]
    assert ["body_mark" in line for line in body] == [True, False, True]  # call, setup, teardown


@pytest.mark.parametrize("style", ["auto", "native"])
def test_a_fixture_error_from_a_conftest_shows_no_frame_of_the_plugin(
    pytester: pytest.Pytester, style: str
) -> None:
    # Python's own format (native) honours no __tracebackhide__: the worker's wrappers are
    # taken out of those reports, and with the leak check's, pluggy's frame that called it.
    pytester.makeconftest(BROKEN_FIXTURES)  # in a conftest, not the test module
    pytester.makepyfile(
        """
        def test_setup(broken_setup): pass
        def test_teardown(broken_teardown): pass
        def test_call(): assert 1 == 2
        """
    )
    args = ("-rA", "--pool-report-order", "collection", f"--tb={style}")
    serial = pytester.runpytest_subprocess(*POOL, *args)
    pooled = pytester.runpytest_subprocess(*POOL, "--pool", "2", *args)
    pooled.assert_outcomes(passed=1, failed=1, errors=2)
    own_frames = [line for line in pooled.stdout.lines if "pytest_poolrun" + os.sep in line]
    assert own_frames == []
    assert serial.stdout.str().count("broke") == pooled.stdout.str().count("broke")
    frames = [
        [line for line in run.stdout.lines if line.startswith("  File ")]
        for run in (serial, pooled)
    ]
    assert frames[0] == frames[1]
    assert (frames[0] != []) == (style == "native")


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="before 3.11 a bare raise restores the caught traceback"
)
def test_a_failing_tests_full_traceback_has_no_frame_of_the_plugin(
    pytester: pytest.Pytester,
) -> None:
    """--fulltrace prunes no frame, and a plugin may list an error's traceback entries whole
    (flaky's report does): the worker's wrapper around the test's call leaves none of its own."""
    pytester.makeconftest(
        """
        import pytest

        @pytest.hookimpl(wrapper=True)
        def pytest_runtest_makereport(item, call):
            report = yield
            if call.excinfo is not None:
                names = [entry.name for entry in call.excinfo.traceback]
                report.sections.append(("traceback entries", " ".join(names)))
            return report
        """
    )
    pytester.makepyfile(
        """
        def helper(x):
            assert x == 2
        def test_call():
            helper(1)
        """
    )
    addresses = re.compile(r" at 0x[0-9a-f]+")
    runs = [
        pytester.runpytest_subprocess(*POOL, "--fulltrace", "-p", "no:randomly", *args)
        for args in ((), ("--pool", "1"))
    ]
    for run in runs:
        run.assert_outcomes(failed=1)
    failures = [
        addresses.sub("", run.stdout.str().partition("= FAILURES =")[2]).rpartition(" in ")[0]
        for run in runs
    ]
    assert "test_call helper" in failures[0]
    assert failures[1] == failures[0]
