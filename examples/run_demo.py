"""The main job: time the demo suite serially and in a pool, and print the speed-up.

Data flow: this script starts ``python -m pytest examples/demo`` as a child process once per
contender (serial, then ``--pool auto``, then optionally ``-n N`` of pytest-xdist), one after
the other, lets each print its usual quiet report, measures each child's wall time around
``subprocess.run`` and prints one summary line. It exits non-zero when any run fails.

Usage::

    python examples/run_demo.py [--pool auto|N] [--xdist]

Only the standard library is used, so it runs in any environment that has pytest installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent / "demo"

# Options every contender shares: quiet output.  pytest's cache stays on, as in everyday use:
# the serial run, which goes first, stores each test's duration, and --pool sizes its chunks
# by them (pytest-xdist does not use them).
COMMON_ARGS = ("-q",)

# pytest's exit code when the command line is not understood, e.g. ``--pool`` without the plugin.
USAGE_ERROR = 4


@dataclass(frozen=True)
class Contender:
    label: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class Timing:
    contender: Contender
    seconds: float
    returncode: int


def available_cpus() -> int:
    """CPUs this process may run on, which is what ``--pool auto`` is expected to use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run(contender: Contender) -> Timing:
    command = [sys.executable, "-m", "pytest", str(DEMO_DIR), *COMMON_ARGS, *contender.args]
    print(f"--- {contender.label}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    completed = subprocess.run(command, check=False)
    return Timing(contender, time.perf_counter() - started, completed.returncode)


def describe_failure(timing: Timing) -> str:
    what = f"the {timing.contender.label} run failed with exit code {timing.returncode}"
    if timing.returncode == USAGE_ERROR:
        return (
            f"{what}: pytest did not accept its options; "
            "install pytest-poolrun (pip install -e .) and run this script again"
        )
    return f"{what}; read its output above to see which tests failed"


def summarize(timings: list[Timing]) -> str:
    """One line: every wall time, and each parallel run's speed-up over the serial one."""
    serial = timings[0]
    parts = [f"serial {serial.seconds:.1f} s"]
    for timing in timings[1:]:
        label = timing.contender.label
        if timing.returncode != 0 or serial.returncode != 0:
            parts.append(f"{label} {timing.seconds:.1f} s (no speed-up: a run failed)")
        else:
            speedup = serial.seconds / timing.seconds
            parts.append(f"{label} {timing.seconds:.1f} s: {speedup:.2f}x faster")
    return ", ".join(parts)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pool", default="auto", help="value for --pool: a worker count or 'auto' (default)"
    )
    parser.add_argument(
        "--xdist",
        action="store_true",
        help="also time pytest-xdist's -n with the same number of workers, if it is installed",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    options = parse_args(argv)
    workers = available_cpus() if options.pool == "auto" else int(options.pool)
    pool_label = f"--pool {options.pool} ({workers} workers)"
    contenders = [
        Contender("serial", ()),
        Contender(pool_label, ("-p", "pytest_poolrun", "--pool", options.pool)),
    ]
    if options.xdist:
        if importlib.util.find_spec("xdist") is None:
            print(
                "pytest-xdist is not installed, so the -n run is skipped; "
                "pip install pytest-xdist to time it too.",
                file=sys.stderr,
            )
        else:
            contenders.append(Contender(f"-n {workers} (xdist)", ("-n", str(workers))))

    timings = [run(contender) for contender in contenders]

    print("\n" + summarize(timings), flush=True)
    failures = [describe_failure(t) for t in timings if t.returncode != 0]
    for failure in failures:
        print(f"error: {failure}.", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
