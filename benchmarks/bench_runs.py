"""Time serial pytest, pytest-xdist and pytest-poolrun on synthetic suites; print markdown tables.

Data flow, all in this one process and its children::

    main ── calibrate() ──> suites.build(name) writes a suite into the work folder
         └─ per suite: warm-up ── serial --collect-only (writes bytecode for everyone)
                                └─ poolrun once (stores test durations in pytest's cache)
            repetition k: every contender and a serial --collect-only once, in an order
                          rotated by k
                run_once: child `python -m pytest` in its own session ──> Sample
                          (wall clock around it, CPU and the largest process's peak RSS
                           from os.wait4, fixture setups from the suite's log file)
         └─ medians per contender ──> TARGETS judge each suite ──> tables on stdout
         └─ ratios within each repetition (runs made back to back) ──> their range, in the
            limit table: how much a ratio moves with the machine's load from one to the next
         └─ before each repetition, the loop's speed on each CPU (suites.cpu_speeds) ──> the
            range of fastest / slowest, in the limit table: how unevenly the CPUs ran

Contenders differ only in the parallel plugin they load: serial loads neither pytest-xdist nor
pytest-poolrun, each parallel contender loads its own plugin and blocks the other, so that no
contender pays for importing the other's plugin. pytest's cache is left on for all of them,
as in a user's everyday run.

Usage::

    python benchmarks/bench_runs.py [--repeat K] [--suites tiny,cpu] [--quick] [--no-xdist]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import suites
from suites import Suite

SERIAL, XDIST, POOLRUN = "serial", "xdist", "poolrun"
# Not a contender but a reference run: the serial command with --collect-only, timed like the
# contenders, for the core limit (see core_limit).
COLLECT = "collect-only"
CONTENDERS = (SERIAL, XDIST, POOLRUN)

# Options of every contender: quiet output (printing is not what we time) and no random order.
COMMON_ARGS = ("-q", "-p", "no:randomly")
NO_XDIST = ("-p", "no:xdist", "-p", "no:xdist.looponfail")
NO_POOLRUN = ("-p", "no:pytest_poolrun")

# Environment variables the children do not inherit: extra pytest options or plugins would make
# the contenders differ from what the table says (every contender's plugin loads through its
# entry point, as in a user's run), and without bytecode caching every run would compile (and
# assertion-rewrite) the suite's modules again, which a user's run does not.
DROPPED_ENV = frozenset(
    {
        "PYTEST_ADDOPTS",
        "PYTEST_PLUGINS",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
        "PYTHONDONTWRITEBYTECODE",
    }
)

DEFAULT_REPEAT = 3
# A single-test run takes a fraction of a second and its target is a 0.15 s difference, so its
# median needs more samples than the long suites' to be steady; they cost a few seconds.
STARTUP_MIN_REPEAT = 7
# A run that takes longer than this is stuck; it is killed and counted as failed.
RUN_TIMEOUT_SECONDS = 300.0
# pytest's exit code for a command line it does not understand (e.g. no --pool without plugin).
USAGE_ERROR = 4
# Returned for a run that was killed at RUN_TIMEOUT_SECONDS; pytest never exits with it.
TIMED_OUT = -1
# How much of a failed run's output to show.
FAILURE_TAIL_LINES = 15


# --- running one contender once ----------------------------------------------------------------


def contender_args(contender: str, workers: int) -> tuple[str, ...]:
    if contender == SERIAL:
        return (*NO_XDIST, *NO_POOLRUN)
    if contender == COLLECT:
        return (*NO_XDIST, *NO_POOLRUN, "--collect-only")
    if contender == XDIST:
        return (*NO_POOLRUN, "-n", str(workers))
    # Not "-p pytest_poolrun": the plugin loads through its entry point, as in a user's run.
    return (*NO_XDIST, "--pool", str(workers))


@dataclass(frozen=True)
class Sample:
    """One run of one contender on one suite."""

    wall: float
    # User + system seconds of the pytest process and every descendant it waited for.
    cpu: float
    returncode: int
    output: str
    # Module-fixture setups logged by the run, for suites that count them.
    setups: int | None = None
    # Peak resident set (MiB) of the largest single process of the run: the kernel's maxrss of
    # the pytest process and of every descendant it waited for (see wait_for).
    peak_rss: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True)
class Exit:
    """How a child run ended, with the resources it and its reaped descendants used."""

    returncode: int
    cpu: float
    peak_rss: float
    timed_out: bool


def wait_for(child: subprocess.Popen[str], timeout: float) -> Exit:
    """Reap ``child`` with ``os.wait4``, killing its session if it runs past ``timeout``.

    ``wait4`` gives the rusage of this one child, folded with that of every descendant the
    child reaped itself (pytest joins its workers): CPU is their sum, ``ru_maxrss`` the peak
    of the largest single process among them (a forked worker's count includes the pages it
    shares with the controller).  ``getrusage(RUSAGE_CHILDREN)`` would instead keep the
    largest child of this whole benchmark, across runs.
    """
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        kill_session(child.pid)

    timer = threading.Timer(timeout, expire)
    timer.start()
    try:
        _, status, usage = os.wait4(child.pid, 0)
    finally:
        timer.cancel()
    child.returncode = os.waitstatus_to_exitcode(status)
    timed_out = expired.is_set()
    # Linux reports ru_maxrss in KiB.
    return Exit(
        TIMED_OUT if timed_out else child.returncode,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        timed_out,
    )


def kill_session(leader: int) -> bool:
    """SIGKILL whatever is left in the process group ``leader`` started; True if any was."""
    try:
        os.killpg(leader, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def run_once(suite: Suite, contender: str, extra: tuple[str, ...] = ()) -> Sample:
    """Run ``contender`` on ``suite`` in a child process and measure it.

    The child starts a new session, so that a run that hangs or leaves worker processes behind
    can be cleaned up as a group without touching anything else on the machine.
    """
    command = [
        sys.executable,
        "-m",
        "pytest",
        *COMMON_ARGS,
        *contender_args(contender, suite.workers),
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    log = suite.path.parent / f"{suite.name}-{contender}-setups.log"
    log.unlink(missing_ok=True)
    env[suites.SETUP_LOG_ENV] = str(log)

    # The output goes to a file, not a pipe, so that this process can block in wait4 (which
    # alone tells this run's peak memory) without the child blocking on a full pipe.
    with tempfile.TemporaryFile("w+") as sink:
        started = time.perf_counter()
        child = subprocess.Popen(
            command,
            cwd=suite.path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            end = wait_for(child, RUN_TIMEOUT_SECONDS)
        except BaseException:
            kill_session(child.pid)
            child.wait()
            raise
        wall = time.perf_counter() - started
        sink.seek(0)
        output = sink.read()
    if end.timed_out:
        output += f"\n[bench] killed after {RUN_TIMEOUT_SECONDS:.0f} s"
    if kill_session(child.pid):
        output += "\n[bench] processes of this run were still alive after it exited; killed them"

    setups = None
    if suite.counts_setups and not extra and contender != COLLECT:
        setups = len(log.read_text().splitlines()) if log.exists() else 0
    log.unlink(missing_ok=True)
    return Sample(wall, end.cpu, end.returncode, output, setups, end.peak_rss)


def failure_text(sample: Sample) -> str:
    if sample.returncode == TIMED_OUT:
        return "timed out"
    if sample.returncode == USAGE_ERROR:
        return f"failed (exit {USAGE_ERROR}: options not accepted)"
    return f"failed (exit {sample.returncode})"


# --- one suite, all contenders -----------------------------------------------------------------


@dataclass
class SuiteResult:
    suite: Suite
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    # Why a contender has no numbers, when it has none (not installed, failed, ...).
    missing: dict[str, str] = field(default_factory=dict)
    # Each repetition's loop speed per CPU, taken before it (suites.cpu_speeds).
    cpu_speeds: list[dict[int, float]] = field(default_factory=list)

    def ok(self, contender: str) -> bool:
        runs = self.samples.get(contender, [])
        return contender not in self.missing and bool(runs) and all(s.ok for s in runs)

    def wall(self, contender: str) -> float | None:
        return self._median(contender, lambda s: s.wall)

    def cpu(self, contender: str) -> float | None:
        return self._median(contender, lambda s: s.cpu)

    def peak_rss(self, contender: str) -> float | None:
        return self._median(contender, lambda s: s.peak_rss)

    def core_limit(self) -> float | None:
        """The wall time of a run at the cores' limit: collect once, then split the rest.

        ``collect + (serial - collect) / cores``, with ``cores`` the workers the machine can
        run at once: what a parallel run would take if collecting were its only serial part
        and parallelism cost nothing.
        """
        collect, serial = self.wall(COLLECT), self.wall(SERIAL)
        if collect is None or serial is None:
            return None
        return self.limit_of(collect, serial)

    def limit_of(self, collect: float, serial: float) -> float:
        return collect + (serial - collect) / min(self.suite.workers, cpu_count())

    def repetitions(self, *contenders: str) -> list[dict[str, Sample]]:
        """Each repetition's sample of every one of ``contenders``, by contender: runs made back
        to back, so under much the same load of the machine.  Empty if one has no median."""
        if not all(self.ok(c) for c in contenders):
            return []
        runs = zip(*(self.samples[c] for c in contenders))
        return [dict(zip(contenders, samples)) for samples in runs]

    def limit_ratios(self) -> list[float]:
        """poolrun / limit within each repetition (see ``repetitions``)."""
        return [
            run[POOLRUN].wall / self.limit_of(run[COLLECT].wall, run[SERIAL].wall)
            for run in self.repetitions(COLLECT, SERIAL, POOLRUN)
        ]

    def cpu_ratios(self) -> list[float]:
        """CPU poolrun / serial within each repetition (see ``repetitions``)."""
        return [run[POOLRUN].cpu / run[SERIAL].cpu for run in self.repetitions(SERIAL, POOLRUN)]

    def cpu_gaps(self) -> list[float]:
        """The fastest CPU's loop speed over the slowest's, per repetition: 1.00x where the CPUs
        ran alike; a larger gap moves the ratios of that repetition by up to as much."""
        return [max(s.values()) / min(s.values()) for s in self.cpu_speeds if s]

    def setups(self, contender: str) -> float | None:
        if not self.suite.counts_setups:
            return None
        return self._median(contender, lambda s: float(s.setups or 0))

    def _median(self, contender: str, value: Callable[[Sample], float]) -> float | None:
        if not self.ok(contender):
            return None
        return statistics.median(value(s) for s in self.samples[contender])

    def status(self, contender: str) -> str:
        """Why ``contender`` has no median, or "" when it has one."""
        if contender in self.missing:
            return self.missing[contender]
        failed = [s for s in self.samples.get(contender, []) if not s.ok]
        return failure_text(failed[0]) if failed else ""


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def report_failure(suite: Suite, contender: str, sample: Sample) -> None:
    tail = "\n".join(sample.output.rstrip().splitlines()[-FAILURE_TAIL_LINES:])
    progress(f"{suite.name}: {contender} {failure_text(sample)}; its last lines:\n{tail}")


def bench_suite(suite: Suite, contenders: list[str], repeat: int) -> SuiteResult:
    """Warm the suite up, then time each contender and the collect-only run ``repeat`` times."""
    contenders = [*contenders, COLLECT]
    result = SuiteResult(suite, {c: [] for c in contenders})
    progress(f"{suite.name}: warm-up")
    warm = run_once(suite, COLLECT)
    if not warm.ok:
        report_failure(suite, COLLECT, warm)
    if POOLRUN in contenders:
        warm = run_once(suite, POOLRUN)
        if not warm.ok:
            # Usually the runner is missing or broken: timing it again would only cost time.
            report_failure(suite, POOLRUN, warm)
            result.missing[POOLRUN] = failure_text(warm)
    active = [c for c in contenders if c not in result.missing]
    for k in range(repeat):
        result.cpu_speeds.append(suites.cpu_speeds())
        shift = k % len(active)
        for contender in active[shift:] + active[:shift]:
            sample = run_once(suite, contender)
            result.samples[contender].append(sample)
            if not sample.ok:
                report_failure(suite, contender, sample)
            progress(f"{suite.name} {k + 1}/{repeat}: {contender} {sample.wall:.2f} s")
    return result


# --- targets -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One target: what it asks, and what was measured (None when it cannot be judged)."""

    goal: str
    holds: bool | None
    measured: str
    # How far off a missed target is, in words.
    shortfall: str = ""
    why_not_judged: str = ""

    def render(self) -> str:
        if self.holds is None:
            return f"{self.goal}: n/a ({self.why_not_judged})"
        if self.holds:
            return f"{self.goal}: holds ({self.measured})"
        return f"{self.goal}: misses by {self.shortfall} ({self.measured})"


def at_most(goal: str, value: float | None, limit: float, unit: str = "x") -> Check:
    if value is None:
        return Check(goal, None, "", why_not_judged="no measurement")
    measured = f"{value:.2f}{unit}"
    return Check(goal, value <= limit, measured, f"{value / limit - 1:.0%}")


def at_least(goal: str, value: float | None, limit: float) -> Check:
    if value is None:
        return Check(goal, None, "", why_not_judged="no measurement")
    return Check(goal, value >= limit, f"{value:.2f}x", f"{1 - value / limit:.0%}")


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def not_judged(goal: str, why: str) -> Check:
    return Check(goal, None, "", why_not_judged=why)


def needs_xdist(result: SuiteResult, goal: str) -> Check | None:
    if XDIST in result.missing:
        return not_judged(goal, result.missing[XDIST])
    return None


def limit_targets(r: SuiteResult) -> list[Check]:
    """Issue 15's goals for suites of many small tests: near the cores' limit, little extra CPU."""
    return [
        at_most("wall ≤ 1.1x core limit", ratio(r.wall(POOLRUN), r.core_limit()), 1.1),
        at_most("CPU ≤ 1.1x serial", ratio(r.cpu(POOLRUN), r.cpu(SERIAL)), 1.1),
    ]


def tiny_targets(r: SuiteResult, results: dict[str, SuiteResult]) -> list[Check]:
    vs_xdist = "poolrun ≤ 0.6x xdist"
    return [
        at_most("poolrun ≤ 0.75x serial", ratio(r.wall(POOLRUN), r.wall(SERIAL)), 0.75),
        needs_xdist(r, vs_xdist) or at_most(vs_xdist, ratio(r.wall(POOLRUN), r.wall(XDIST)), 0.6),
        *limit_targets(r),
    ]


def tiny50k_targets(r: SuiteResult, results: dict[str, SuiteResult]) -> list[Check]:
    rss = ratio(r.peak_rss(POOLRUN), r.peak_rss(SERIAL))
    return [*limit_targets(r), at_most("peak RSS ≤ 1.25x serial", rss, 1.25)]


def tiny_conftests_targets(r: SuiteResult, results: dict[str, SuiteResult]) -> list[Check]:
    return limit_targets(r)


def sleep_targets(r: SuiteResult, results: dict[str, SuiteResult]) -> list[Check]:
    return [at_least("≥ 6x faster than serial", ratio(r.wall(SERIAL), r.wall(POOLRUN)), 6.0)]


def cpu_targets(r: SuiteResult, results: dict[str, SuiteResult]) -> list[Check]:
    return [at_least("≥ 1.8x faster than serial", ratio(r.wall(SERIAL), r.wall(POOLRUN)), 1.8)]


def skewed_targets(r: SuiteResult, results: dict[str, SuiteResult]) -> list[Check]:
    suite = r.suite
    startup = results["startup"].wall(POOLRUN) if "startup" in results else None
    goal = "≤ 1.15x ideal"
    if startup is None:
        return [not_judged(goal, "no poolrun startup time")]
    # The best any 2-worker schedule can do: the longest test, or half of all test time.
    ideal = max(suite.longest_test, suite.total_test_time / suite.workers) + startup
    value = r.wall(POOLRUN)
    check = at_most(f"{goal} ({ideal:.2f} s)", ratio(value, ideal), 1.15)
    return [check]


def heavy_import_targets(r: SuiteResult, results: dict[str, SuiteResult]) -> list[Check]:
    wall_goal, cpu_goal = "wall ≤ 0.8x xdist", "CPU ≤ 0.6x xdist"
    return [
        needs_xdist(r, wall_goal) or at_most(wall_goal, ratio(r.wall(POOLRUN), r.wall(XDIST)), 0.8),
        needs_xdist(r, cpu_goal) or at_most(cpu_goal, ratio(r.cpu(POOLRUN), r.cpu(XDIST)), 0.6),
    ]


def fixtures_targets(r: SuiteResult, results: dict[str, SuiteResult]) -> list[Check]:
    goal = "module setups ≤ 1.2x serial"
    return [at_most(goal, ratio(r.setups(POOLRUN), r.setups(SERIAL)), 1.2)]


def startup_targets(r: SuiteResult, results: dict[str, SuiteResult]) -> list[Check]:
    extra = None
    pool, serial = r.wall(POOLRUN), r.wall(SERIAL)
    if pool is not None and serial is not None:
        extra = pool - serial
    return [at_most("≤ serial + 0.15 s", extra, 0.15, unit=" s more")]


Targets = Callable[[SuiteResult, dict[str, SuiteResult]], list[Check]]

# The targets, per suite; a suite without an entry has none (the demo).
TARGETS: dict[str, Targets] = {
    "tiny": tiny_targets,
    "tiny50k": tiny50k_targets,
    "tiny-conftests": tiny_conftests_targets,
    "sleep": sleep_targets,
    "cpu": cpu_targets,
    "skewed": skewed_targets,
    "heavy-import": heavy_import_targets,
    "fixtures": fixtures_targets,
    "startup": startup_targets,
}


# --- output ------------------------------------------------------------------------------------


def seconds(result: SuiteResult, contender: str, value: float | None) -> str:
    if contender not in result.samples and contender not in result.missing:
        return "-"
    return f"{value:.2f}" if value is not None else result.status(contender)


def factor(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def spread(values: list[float]) -> str:
    """The range of per-repetition ratios: how far one repetition can stray from another."""
    return "-" if not values else f"{min(values):.2f}-{max(values):.2f}x"


def megabytes(result: SuiteResult, contender: str) -> str:
    value = result.peak_rss(contender)
    return f"{value:.0f}" if value is not None else result.status(contender) or "-"


def render_tables(results: dict[str, SuiteResult], checks: dict[str, list[Check]]) -> str:
    lines = [
        "| suite | N | serial s | xdist -n N s | poolrun --pool N s "
        "| poolrun/serial | poolrun/xdist | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        pool = r.wall(POOLRUN)
        verdict = "; ".join(c.render() for c in checks.get(name, [])) or "(no target)"
        lines.append(
            f"| {name} | {r.suite.workers} | {seconds(r, SERIAL, r.wall(SERIAL))} "
            f"| {seconds(r, XDIST, r.wall(XDIST))} | {seconds(r, POOLRUN, pool)} "
            f"| {factor(ratio(pool, r.wall(SERIAL)))} | {factor(ratio(pool, r.wall(XDIST)))} "
            f"| {verdict} |"
        )
    lines += [
        "",
        "CPU seconds (user + system, all processes), and module-fixture setups where counted:",
        "",
        "| suite | serial CPU s | xdist CPU s | poolrun CPU s | setups serial / xdist / poolrun |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        counts = "-"
        if r.suite.counts_setups:
            counts = " / ".join(
                "-" if (v := r.setups(c)) is None else f"{v:g}" for c in (SERIAL, XDIST, POOLRUN)
            )
        lines.append(
            f"| {name} | {seconds(r, SERIAL, r.cpu(SERIAL))} | {seconds(r, XDIST, r.cpu(XDIST))} "
            f"| {seconds(r, POOLRUN, r.cpu(POOLRUN))} | {counts} |"
        )
    lines += [
        "",
        "Against the cores' limit: limit = collect-only + (serial - collect-only) / min(N, CPUs), "
        "wall times; CPU of all processes; peak RSS of the largest single process (MiB):",
        "",
        "| suite | collect-only s | serial s | poolrun s | limit s | poolrun/limit "
        "| CPU poolrun/serial | peak RSS serial | peak RSS poolrun | RSS poolrun/serial "
        "| poolrun/limit per repetition | CPU ratio per repetition "
        "| fastest CPU / slowest per repetition |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        limit = r.core_limit()
        lines.append(
            f"| {name} | {seconds(r, COLLECT, r.wall(COLLECT))} "
            f"| {seconds(r, SERIAL, r.wall(SERIAL))} | {seconds(r, POOLRUN, r.wall(POOLRUN))} "
            f"| {'-' if limit is None else f'{limit:.2f}'} "
            f"| {factor(ratio(r.wall(POOLRUN), limit))} "
            f"| {factor(ratio(r.cpu(POOLRUN), r.cpu(SERIAL)))} "
            f"| {megabytes(r, SERIAL)} | {megabytes(r, POOLRUN)} "
            f"| {factor(ratio(r.peak_rss(POOLRUN), r.peak_rss(SERIAL)))} "
            f"| {spread(r.limit_ratios())} | {spread(r.cpu_ratios())} | {spread(r.cpu_gaps())} |"
        )
    return "\n".join(lines)


def version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:  # not available on this platform
        return "unknown"


def cpu_count() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def header(options: argparse.Namespace, cal: suites.Calibration, load_before: str) -> str:
    cpus = cpu_count()
    # Other work on the machine skews every number: the load average shows whether there was any.
    return (
        f"Python {platform.python_version()}, pytest {version('pytest')}, "
        f"pytest-xdist {version('pytest-xdist')}, pytest-poolrun {version('pytest-poolrun')}; "
        f"{cpus} CPUs; medians of {options.repeat} repetitions "
        f"(startup: at least {STARTUP_MIN_REPEAT})"
        f"{', quick suites' if options.quick else ''}; "
        f"pure-Python loop: {cal.iterations_per_second / 1e6:.1f} M iterations/s; "
        f"1-minute load average {load_before} before, {load_average()} after."
    )


# --- command line ------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help=f"timed runs per contender and suite (default {DEFAULT_REPEAT}, 1 with --quick)",
    )
    parser.add_argument(
        "--suites",
        default=",".join(suites.BUILDERS),
        help="comma-separated suites to run (default: all): " + ", ".join(suites.BUILDERS),
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller suites and one repetition: a smoke run"
    )
    parser.add_argument(
        "--no-xdist", action="store_true", help="leave pytest-xdist out even when it is installed"
    )
    parser.add_argument(
        "--workdir", type=Path, help="write the suites here and keep them (default: a temp dir)"
    )
    parser.add_argument("--output", type=Path, help="also write the markdown tables to this file")
    options = parser.parse_args(argv)
    if options.repeat is None:
        options.repeat = 1 if options.quick else DEFAULT_REPEAT
    if options.repeat < 1:
        parser.error("--repeat must be at least 1")
    options.suite_names = [s.strip() for s in options.suites.split(",") if s.strip()]
    unknown = [s for s in options.suite_names if s not in suites.BUILDERS]
    if unknown:
        parser.error(
            f"unknown suite(s) {', '.join(unknown)}; choose among {', '.join(suites.BUILDERS)}"
        )
    return options


@contextmanager
def work_folder(chosen: Path | None) -> Iterator[Path]:
    if chosen is not None:
        chosen.mkdir(parents=True, exist_ok=True)
        yield chosen.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="poolrun-bench-") as folder:
        yield Path(folder)


def run_order(names: list[str]) -> list[str]:
    """Startup first: the skewed suite's target needs its poolrun time (added if missing)."""
    if "skewed" in names and "startup" not in names:
        names = [*names, "startup"]
    return sorted(names, key=lambda n: n != "startup")


def main(argv: list[str]) -> int:
    options = parse_args(argv)
    began = time.perf_counter()
    contenders = list(CONTENDERS)
    missing: dict[str, str] = {}
    if options.no_xdist:
        missing[XDIST] = "left out by --no-xdist"
    elif importlib.util.find_spec("xdist") is None:
        missing[XDIST] = "pytest-xdist not installed"
    if importlib.util.find_spec("pytest_poolrun") is None:
        missing[POOLRUN] = "pytest-poolrun not installed"
    for name, why in missing.items():
        advice = "" if options.no_xdist and name == XDIST else "; pip install it to fill it in"
        progress(f"{why}: the {name} column is skipped{advice}")
    active = [c for c in contenders if c not in missing]

    load_before = load_average()
    cal = suites.calibrate()
    results: dict[str, SuiteResult] = {}
    with work_folder(options.workdir) as root:
        for name in run_order(options.suite_names):
            suite = suites.build(name, root, options.quick, cal)
            repeat = (
                max(options.repeat, STARTUP_MIN_REPEAT) if name == "startup" else options.repeat
            )
            result = bench_suite(suite, active, repeat)
            result.missing.update(missing)
            results[name] = result

    ordered = {n: results[n] for n in suites.BUILDERS if n in results}
    checks = {n: TARGETS[n](r, ordered) for n, r in ordered.items() if n in TARGETS}
    text = header(options, cal, load_before) + "\n\n" + render_tables(ordered, checks) + "\n"
    print(text)
    if options.output:
        options.output.write_text(text)
    progress(f"done in {time.perf_counter() - began:.0f} s")
    failed = any(r.status(c) for r in ordered.values() for c in [*active, COLLECT])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
