"""Run a real test suite serially and in parallel, and compare the verdicts test by test.

Data flow: for each contender (serial, ``-p pytest_poolrun --pool N``, and ``-n N`` when
pytest-xdist is importable by the given interpreter) this script starts
``PYTHON -m pytest --junitxml=FILE ...`` in the suite's folder as a child process, times it,
then reads FILE into a map ``classname::name -> outcome`` (passed, failed, error, skipped).
It prints each run's counts and wall time and every test whose outcome differs from the
serial run's, and it exits non-zero on any difference, on a run that timed out, and on a
process that a run left behind.

Leftover processes: this process makes itself a "child subreaper" (Linux), so every process
that a run started and that outlives its parent is re-parented to this process instead of
init. Once the pytest child has exited, any child still left is a leftover: it is listed with
its command line, then killed by its pid.

Usage::

    python compare_suites.py SUITE_DIR --python PYTHON [--pool 2] [--no-xdist]
                             [--pytest-args "tests -k 'not slow'"] [--timeout 1800]

Only the standard library is used.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
# Every run starts as a first run would, and none depends on what an earlier one cached.
COMMON_ARGS = ("-q", "-p", "no:cacheprovider")
# How long a leftover gets to exit by itself once the run is over, in seconds.
GRACE = 2.0


@dataclass
class Run:
    label: str
    args: list[str]
    seconds: float = 0.0
    returncode: int | None = None
    timed_out: bool = False
    outcomes: dict[str, str] = field(default_factory=dict)
    leftovers: list[str] = field(default_factory=list)


def become_subreaper() -> bool:
    """Orphaned descendants of our children become our children (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def own_children() -> dict[int, str]:
    """pid -> command line of each live process whose parent is this process."""
    found = {}
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        # The fields after the command name, which is in parentheses and may hold spaces.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == me and state != "Z":
            found[int(entry.name)] = cmdline.strip()
    return found


def reap_zombies() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def collect_leftovers() -> list[str]:
    """Describe, then kill, the processes a finished run left behind."""
    deadline = time.monotonic() + GRACE
    while True:
        reap_zombies()
        children = own_children()
        if not children or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.2)
    reap_zombies()
    return [f"pid {pid}: {cmdline}" for pid, cmdline in children.items()]


def read_junit(path: Path) -> dict[str, str]:
    """``classname::name`` -> outcome; a test reported twice gets a ``#2`` suffix."""
    outcomes: dict[str, str] = {}
    seen: collections.Counter[str] = collections.Counter()
    for case in ET.parse(path).getroot().iter("testcase"):
        key = f"{case.get('classname', '')}::{case.get('name', '')}"
        seen[key] += 1
        if seen[key] > 1:
            key = f"{key}#{seen[key]}"
        tags = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        # "failure" then "error" is a test that failed and then errored in teardown.
        outcomes[key] = "+".join(tags).replace("failure", "failed") or "passed"
    return outcomes


def execute(run: Run, python: str, suite: Path, extra: list[str], timeout: float) -> None:
    with tempfile.TemporaryDirectory(prefix="compare-suites-") as scratch:
        xml = Path(scratch) / "report.xml"
        command = [python, "-m", "pytest", *COMMON_ARGS, f"--junitxml={xml}", *run.args, *extra]
        print(f"--- {run.label}: (cd {suite} && {shlex.join(command)})", flush=True)
        started = time.perf_counter()
        child = subprocess.Popen(
            command,
            cwd=suite,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            output, _ = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            run.timed_out = True
            os.killpg(child.pid, signal.SIGKILL)
            output, _ = child.communicate()
        run.seconds = time.perf_counter() - started
        run.returncode = child.returncode
        run.leftovers = collect_leftovers()
        tail = output.decode(errors="replace").rstrip().splitlines()[-3:]
        print("\n".join(f"    {line}" for line in tail))
        if xml.exists():
            run.outcomes = read_junit(xml)


def summarize(run: Run) -> str:
    counts = collections.Counter(run.outcomes.values())
    shown = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    extra = " TIMED OUT" if run.timed_out else ""
    return (
        f"{run.label:>8}: {run.seconds:7.1f}s  exit {run.returncode}{extra}  "
        f"{len(run.outcomes)} tests ({shown or 'no report'})"
    )


def differences(serial: Run, other: Run) -> list[str]:
    lines = []
    for key in sorted(serial.outcomes.keys() | other.outcomes.keys()):
        before = serial.outcomes.get(key, "missing")
        after = other.outcomes.get(key, "missing")
        if before != after:
            lines.append(f"    {key}: {serial.label} {before}, {other.label} {after}")
    return lines


def xdist_installed(python: str) -> bool:
    probe = [python, "-c", "import xdist"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", type=Path, help="folder to run pytest in")
    parser.add_argument("--python", default=sys.executable, help="interpreter that has pytest")
    parser.add_argument("--pool", default="2", help="workers for --pool and -n (default 2)")
    parser.add_argument("--no-xdist", action="store_true", help="skip the -n run")
    parser.add_argument("--pytest-args", default="", help="extra pytest arguments, one string")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument("--max-diff", type=int, default=40, help="differences shown per run")
    options = parser.parse_args()

    suite = options.suite.resolve()
    # Relative to where the script was started, not to the suite (no symlink resolution: a
    # virtualenv's interpreter is a symlink whose location selects the environment).
    python = os.path.abspath(options.python) if os.sep in options.python else options.python
    extra = shlex.split(options.pytest_args)
    runs = [
        Run("serial", []),
        Run("poolrun", ["-p", "pytest_poolrun", "--pool", options.pool]),
    ]
    if not options.no_xdist and xdist_installed(python):
        runs.append(Run("xdist", ["-n", options.pool]))
    if not become_subreaper():
        print("warning: cannot become a child subreaper; leftovers are not checked")

    for run in runs:
        execute(run, python, suite, extra, options.timeout)

    print(f"=== {suite.name}")
    failed = False
    for run in runs:
        print(summarize(run))
        failed |= run.timed_out or not run.outcomes
        if run.leftovers:
            failed = True
            print(f"    {len(run.leftovers)} process(es) left behind, now killed:")
            print("\n".join(f"      {line}" for line in run.leftovers))
    for other in runs[1:]:
        diff = differences(runs[0], other)
        if diff or runs[0].returncode != other.returncode:
            failed = True
            print(
                f"{other.label} differs from serial (exit {runs[0].returncode} vs "
                f"{other.returncode}), {len(diff)} test(s):"
            )
            print("\n".join(diff[: options.max_diff]))
            if len(diff) > options.max_diff:
                print(f"    ... and {len(diff) - options.max_diff} more")
        else:
            print(f"{other.label}: same outcomes and exit code as serial")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
