"""--pool-slow: a line for a test still running past the threshold; the unfinished ones listed
when the run is interrupted; bad values are usage errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import POOL


def test_a_slow_test_is_named_while_it_runs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_slow="""
        import time
        def test_takes_three_seconds(): time.sleep(3)
        def test_quick(): pass
        """
    )
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2", "--pool-slow", "1", timeout=60)
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "SLOW: test_slow.py::test_takes_three_seconds still running on gw? after 1s",
            "SLOW: test_slow.py::test_takes_three_seconds still running on gw? after 2s",
        ]
    )
    assert "test_quick still running" not in result.stdout.str()


def test_the_ini_key_sets_the_threshold(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\npool_slow = 1\n")
    pytester.makepyfile(test_slow="import time\ndef test_sleeps(): time.sleep(1.5)\n")
    result = pytester.runpytest_subprocess(*POOL, "--pool", "1", timeout=60)
    result.stdout.fnmatch_lines(["SLOW: test_slow.py::test_sleeps still running on gw0 after 1s"])


def test_interrupted_summary_lists_the_unfinished_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_hang="import time\ndef test_hangs(): time.sleep(60)\n")
    pytester.makepyfile(test_other="def test_quick(): pass\n")
    args = [sys.executable, "-m", "pytest", *POOL, "--pool", "2", "--pool-slow", "0.5"]
    process = pytester.popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    seen = []
    for line in process.stdout:  # the notice says the test is under way: interrupt it then
        seen.append(line.decode())
        if seen[-1].startswith("SLOW: test_hang.py::test_hangs"):
            break
    process.terminate()
    process.wait(timeout=30)  # the rest of its output is small: it fits in the pipe
    text = "".join(seen) + process.stdout.read().decode()
    assert process.returncode == pytest.ExitCode.INTERRUPTED, text
    assert "unfinished tests when the run was interrupted" in text, text
    assert "test_hang.py::test_hangs (on gw" in text, text


@pytest.mark.parametrize(
    "args",
    [("--pool-slow", "0"), ("--pool-slow", "soon"), ("-o", "pool_slow=-1")],
    ids=["zero", "word", "ini"],
)
def test_bad_threshold_is_a_usage_error(pytester: pytest.Pytester, args: tuple[str, str]) -> None:
    pytester.makepyfile(test_one="def test_one(): pass\n")
    result = pytester.runpytest_subprocess(*POOL, "--pool", "1", *args, timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "is not a duration" in result.stderr.str()
