"""A forked test worker is the main process to its tests, as a serial run's process is.

The runner forks its workers through ``plainfork``, not ``multiprocessing.Process``: a test sees
no multiprocessing child (``current_process()``, ``parent_process()``, frames of
``multiprocessing`` on its stack), which libraries such as freezegun act on.  The pytester cases
run real sessions, serially and under ``--pool 2``; the unit cases run ``PlainForkProcess``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from helpers import POOL

from pytest_poolrun.plainfork import PlainForkProcess

RUN_TIMEOUT = 60.0
MODES = {"serial": (), "pool": ("--pool", "2")}


def run(pytester: pytest.Pytester, mode: str, *args: str) -> pytest.RunResult:
    try:
        return pytester.runpytest_subprocess(
            *POOL, "-p", "no:randomly", *MODES[mode], *args, timeout=RUN_TIMEOUT
        )
    except pytester.TimeoutExpired:
        pytest.fail(f"the {mode} run was still going after {RUN_TIMEOUT:.0f}s")


@pytest.mark.parametrize("mode", MODES)
def test_tests_see_the_main_process(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makepyfile(
        """
        import inspect, multiprocessing, pytest

        def _square(x):
            return x * x

        @pytest.mark.parametrize("n", range(4))
        def test_process(n):
            assert multiprocessing.current_process().name == "MainProcess"
            assert multiprocessing.parent_process() is None
            assert multiprocessing.active_children() == []

        @pytest.mark.parametrize("n", range(4))
        def test_no_multiprocessing_frame(n):
            frame, modules = inspect.currentframe(), []
            while frame is not None:
                modules.append(frame.f_globals.get("__name__") or "")
                frame = frame.f_back
            assert [m for m in modules if m.startswith("multiprocessing")] == []

        def test_children_of_a_test_are_its_own():
            with multiprocessing.get_context("fork").Pool(2) as pool:
                assert pool.map(_square, range(4)) == [0, 1, 4, 9]
            assert multiprocessing.active_children() == []
        """
    )
    result = run(pytester, mode)
    result.assert_outcomes(passed=9)


@pytest.mark.parametrize("mode", MODES)
def test_freezegun_freezes_time_in_every_test(pytester: pytest.Pytester, mode: str) -> None:
    """freezegun skips its frozen clock for callers with a multiprocessing frame within its
    stack inspection limit; a test that raises the limit made later tests see the real time."""
    pytest.importorskip("freezegun")
    pytester.makepyfile(
        """
        import time, pytest
        import freezegun.api
        from freezegun import freeze_time

        def test_a_raises_the_limit():
            freezegun.api.call_stack_inspection_limit = 100

        @pytest.mark.parametrize("n", range(6))
        def test_frozen(n):
            with freeze_time("2001-02-03 04:05:06"):
                assert time.strftime("%Y-%m-%d", time.gmtime(time.time())) == "2001-02-03"
        """
    )
    # One worker takes every test: the limit raised by the first holds for the others.
    args = ("--pool-chunksize", "10") if mode == "pool" else ()
    run(pytester, mode, *args).assert_outcomes(passed=7)


@pytest.mark.parametrize("mode", MODES)
def test_a_test_that_patches_os_getpid_runs_as_serially(
    pytester: pytest.Pytester, mode: str
) -> None:
    """Pid-file and lock tests patch ``os.getpid``; the worker must not take the patched value
    for a sign that the test forked (its guard ends a test's forked child)."""
    pytester.makepyfile(
        """
        import os, pytest

        @pytest.fixture(scope="module")
        def fake_pid():
            real = os.getpid
            os.getpid = lambda: 42
            yield
            os.getpid = real

        def test_patched(monkeypatch):
            monkeypatch.setattr(os, "getpid", lambda: 42)
            assert os.getpid() == 42

        def test_patched_for_the_module(fake_pid):
            print("printed while the pid is patched")
            assert os.getpid() == 42
        """
    )
    pytester.makepyfile(
        test_later="def test_after():\n    import os\n    assert os.getpid() != 42\n"
    )
    result = run(pytester, mode, "-s")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*printed while the pid is patched*"])


@pytest.mark.parametrize("mode", MODES)
def test_a_clock_frozen_for_a_whole_module_does_not_delay_slow_test_notices(
    pytester: pytest.Pytester, mode: str
) -> None:
    """freezegun also freezes the clocks of modules outside its ignore list; the worker's start
    times stay on the real clock, so the first notice comes after the threshold."""
    pytest.importorskip("freezegun")
    pytester.makepyfile(
        """
        import time, pytest
        from freezegun import freeze_time

        @pytest.fixture(scope="module", autouse=True)
        def frozen():
            with freeze_time("2001-02-03 04:05:06"):
                yield

        def test_first():
            pass

        def test_slow():
            time.sleep(2.5)
        """
    )
    # One worker takes both tests: the second starts while the clock is frozen.
    args = ("--pool-chunksize", "10") if mode == "pool" else ()
    result = run(pytester, mode, "--pool-slow", "1", *args)
    result.assert_outcomes(passed=2)
    if mode == "pool":
        result.stdout.fnmatch_lines(["SLOW: *test_slow still running on gw* after 1s"])


def test_a_test_running_a_pooled_session_in_its_worker_leaves_the_worker_intact(
    pytester: pytest.Pytester,
) -> None:
    """pytester's in-process runs make the worker's process a controller for a while; the
    worker's own run state comes back after it, and its later tests run and report as ever."""
    pytester.makeconftest('pytest_plugins = ["pytester"]')
    pytester.makepyfile(
        """
        def test_inner(pytester):
            pytester.makepyfile(
                "import pytest\\n"
                "@pytest.mark.parametrize('i', range(20))\\n"
                "def test_x(i): pass\\n"
            )
            inner = pytester.runpytest_inprocess("-p", "pytest_poolrun", "--pool", "2")
            inner.assert_outcomes(passed=20)

        def test_b(): pass
        def test_c(): assert 0
        def test_d(): pass
        """
    )
    result = run(pytester, "pool", "--pool-chunksize", "10")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.no_fnmatch_line("*INTERNALERROR*")
    result.stdout.fnmatch_lines(["FAILED *::test_c*"])  # the message only where the line has room


def _exit_with(code: object) -> None:
    raise SystemExit(code)


def _raise() -> None:
    raise ValueError("the target failed")


def _return() -> None:
    print("from the child")


def _sleep() -> None:
    time.sleep(60)


def _started(target: object, *args: object) -> PlainForkProcess:
    process = PlainForkProcess(target, args, name="child")  # type: ignore[arg-type]
    process.start()
    return process


@pytest.mark.parametrize(
    ("target", "args", "exitcode"),
    [
        (_return, (), 0),
        (_exit_with, (3,), 3),
        (_exit_with, (None,), 0),
        (_exit_with, ("a message",), 1),
        (_raise, (), 1),
    ],
)
def test_exit_code_as_multiprocessing_gives_it(
    target: object, args: tuple[object, ...], exitcode: int
) -> None:
    process = _started(target, *args)
    process.join(RUN_TIMEOUT)
    assert process.exitcode == exitcode


def test_a_failing_target_writes_its_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    process = _started(_raise)
    process.join(RUN_TIMEOUT)
    err = capfd.readouterr().err
    assert "Process child:" in err
    assert "ValueError: the target failed" in err


def test_join_waits_at_most_its_timeout_and_terminate_ends_the_child() -> None:
    process = _started(_sleep)
    process.join(0.2)
    assert process.exitcode is None
    process.terminate()
    process.join(RUN_TIMEOUT)
    assert process.exitcode == -signal.SIGTERM


def test_the_sentinel_turns_readable_when_the_child_ends() -> None:
    import select

    process = _started(_sleep)
    assert select.select([process.sentinel], [], [], 0.1)[0] == []
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    assert select.select([process.sentinel], [], [], RUN_TIMEOUT)[0] == [process.sentinel]
    process.join()
    assert process.exitcode == -signal.SIGKILL


def test_stdin_of_the_child_reads_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A stdin that is a file (the terminal, a pipe): the child's reads /dev/null instead.
    typed = tmp_path / "typed.txt"
    typed.write_text("what the user typed\n")
    with typed.open() as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        process = _started(_exit_unless_stdin_is_empty)
        process.join(RUN_TIMEOUT)
    assert process.exitcode == 0


@pytest.mark.parametrize("mode", MODES)
def test_reading_stdin_while_output_is_captured_is_an_error_as_serially(
    pytester: pytest.Pytester, mode: str
) -> None:
    pytester.makepyfile(
        """
        import sys, pytest
        def test_reads():
            with pytest.raises(OSError, match="reading from stdin while output is captured"):
                sys.stdin.read()
        """
    )
    run(pytester, mode).assert_outcomes(passed=1)


def _exit_unless_stdin_is_empty() -> None:
    raise SystemExit(0 if sys.stdin.read() == "" else 5)


@pytest.mark.parametrize("mode", MODES)
def test_a_test_can_recurse_about_as_deep_as_serially(pytester: pytest.Pytester, mode: str) -> None:
    """A forked worker runs its tests below the controller's frames; few enough of them that
    a test expecting a RecursionError's traceback to hold all but 50 of the recursion limit's
    frames passes (structlog's suite has one)."""
    pytester.makepyfile(
        """
        import sys

        def test_recursion_headroom():
            def down(n):
                return down(n + 1)

            try:
                down(0)
            except RecursionError as error:
                tb, frames = error.__traceback__, 0
                while tb is not None:
                    frames, tb = frames + 1, tb.tb_next
            assert frames > sys.getrecursionlimit() - 50
        """
    )
    run(pytester, mode).assert_outcomes(passed=1)
