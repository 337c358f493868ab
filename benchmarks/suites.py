"""Synthetic test suites for the run benchmarks, written into a folder on demand.

Data flow: ``bench_runs.py`` asks ``build(name, root, quick=...)`` for a suite; the builder
writes a self-contained pytest project (its own ``pytest.ini``, so the folder is the rootdir)
under ``root/name`` and returns a ``Suite`` that says where it is, how many workers to give
each parallel contender, and what the suite's nominal test times are. Nothing here runs pytest.

CPU-bound work is a fixed number of iterations of a small pure-Python loop, not a busy-wait on
the clock: every contender then does the same work, and CPU time stays comparable. The
iteration count per second is measured once, in this process, by ``calibrate()``.

Module-fixture setups are counted by appending a line per setup to the file named by the
``SETUP_LOG_ENV`` environment variable, which the runner points at a fresh file for each run.
"""

from __future__ import annotations

import os
import shutil
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Each fixtures-suite module fixture appends one line to the file this variable names.
SETUP_LOG_ENV = "POOLRUN_BENCH_SETUP_LOG"

DEMO_DIR = Path(__file__).resolve().parent.parent / "examples" / "demo"

# The loop that stands for "pure-Python work"; generated modules embed this very text, and
# calibrate() times it, so the measured speed is the speed of the code the tests run.
BURN_SOURCE = """
def burn(iterations):
    acc = 0
    for i in range(iterations):
        acc = (acc * 31 + i) % 1000003
    return acc
"""

# Long enough that timer resolution and a stray scheduler hiccup do not matter, short enough
# to cost nothing next to the runs.
CALIBRATION_ITERATIONS = 500_000
CALIBRATION_TRIALS = 5

# The fixtures suite's setup costs, as the issue sets them: 300 ms per session, 100 ms per module.
SESSION_FIXTURE_SECONDS = 0.3
MODULE_FIXTURE_SECONDS = 0.1

# The heavy-import suite's ten modules cost 1.5 s to import in all, as the issue sets it.
HEAVY_IMPORT_SECONDS_PER_MODULE = 0.15

INI_TEXT = "# The rootdir of a generated benchmark suite.\n[pytest]\n"


@dataclass(frozen=True)
class Suite:
    """A generated suite, ready to run with ``pytest`` from ``path``."""

    name: str
    path: Path
    # Worker count for both parallel contenders (``-n`` and ``--pool``).
    workers: int
    # Nominal seconds of the longest test and of all tests together (0.0 when unknown).
    longest_test: float = 0.0
    total_test_time: float = 0.0
    # Whether module-fixture setups are logged to the file named by SETUP_LOG_ENV.
    counts_setups: bool = False


@dataclass(frozen=True)
class Calibration:
    """How many iterations of ``burn`` this machine runs per second on one core."""

    iterations_per_second: float

    def iterations(self, seconds: float) -> int:
        return max(1, round(self.iterations_per_second * seconds))


def calibrate() -> Calibration:
    """Time ``BURN_SOURCE`` here and keep the best of a few trials (the least disturbed)."""
    return Calibration(_loop_speed(CALIBRATION_TRIALS))


def cpu_speeds() -> dict[int, float]:
    """The loop's speed on each CPU this process may use, in iterations per second, measured
    with this process pinned to one CPU at a time (where the platform can pin; else one entry,
    -1, for wherever it ran).

    On a virtual machine one CPU can run at half the speed of another for minutes, as the host
    shares its cores: a run's CPU time then depends on where its processes ran, and a ratio of
    two runs on the CPUs' speeds as much as on the runners.  Taken before each repetition, so
    the tables can show how far apart the CPUs were.
    """
    if not hasattr(os, "sched_setaffinity"):
        return {-1: _loop_speed(1)}
    allowed = os.sched_getaffinity(0)
    speeds: dict[int, float] = {}
    try:
        for cpu in sorted(allowed):
            os.sched_setaffinity(0, {cpu})
            speeds[cpu] = _loop_speed(1)
    finally:
        os.sched_setaffinity(0, allowed)
    return speeds


def _loop_speed(trials: int) -> float:
    namespace: dict[str, Callable[[int], int]] = {}
    exec(BURN_SOURCE, namespace)  # the same text the generated tests run
    burn = namespace["burn"]
    best = float("inf")
    for _ in range(trials):
        started = time.perf_counter()
        burn(CALIBRATION_ITERATIONS)
        best = min(best, time.perf_counter() - started)
    return CALIBRATION_ITERATIONS / best


def _write(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pytest.ini").write_text(INI_TEXT)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text).lstrip())


def _tests(count: int, body: str, start: int = 0) -> str:
    """``count`` test functions, numbered from ``start``, each running ``body``."""
    return "".join(f"\ndef test_{i:04d}():\n    {body}\n" for i in range(start, start + count))


# --- the suites --------------------------------------------------------------------------------
# Each builder takes (folder, quick, calibration) and returns the Suite it wrote.


def build_tiny(folder: Path, quick: bool, cal: Calibration) -> Suite:
    """Per-test overhead: thousands of tests that do nothing."""
    modules, per_module = (10, 50) if quick else (50, 100)
    files = {f"test_tiny_{m:02d}.py": _tests(per_module, "pass") for m in range(modules)}
    _write(folder, files)
    return Suite("tiny", folder, workers=2)


def build_tiny50k(folder: Path, quick: bool, cal: Calibration) -> Suite:
    """Per-test overhead at scale: 50,000 trivial tests of one parametrized function."""
    count = 5_000 if quick else 50_000
    module = f"""
        import pytest


        @pytest.mark.parametrize("i", range({count}))
        def test_p(i):
            pass
    """
    _write(folder, {"test_tiny50k.py": module})
    return Suite("tiny50k", folder, workers=2)


def build_tiny_conftests(folder: Path, quick: bool, cal: Calibration) -> Suite:
    """Per-test overhead where each test directory has its own conftest (hook proxies)."""
    packages, modules, per_module = (5, 2, 50) if quick else (5, 10, 100)
    conftest = """
        import pytest


        @pytest.fixture
        def here():
            return __name__
    """
    files = {"conftest.py": conftest}
    for p in range(packages):
        files[f"pkg_{p}/__init__.py"] = ""
        files[f"pkg_{p}/conftest.py"] = conftest
        for m in range(modules):
            files[f"pkg_{p}/test_tiny_{m:02d}.py"] = _tests(per_module, "pass")
    _write(folder, files)
    return Suite("tiny-conftests", folder, workers=2)


def build_sleep(folder: Path, quick: bool, cal: Calibration) -> Suite:
    """Waiting, not computing: more workers than cores still pay off."""
    count, seconds, modules = (40, 0.05, 4) if quick else (160, 0.05, 8)
    per_module = count // modules
    files = {
        f"test_sleep_{m}.py": "import time\n"
        + _tests(per_module, f"time.sleep({seconds})", start=m * per_module)
        for m in range(modules)
    }
    _write(folder, files)
    return Suite("sleep", folder, workers=8, longest_test=seconds, total_test_time=count * seconds)


def build_cpu(folder: Path, quick: bool, cal: Calibration) -> Suite:
    """Pure-Python work: the speed-up is bounded by the number of cores."""
    count, seconds, modules = (10, 0.1, 2) if quick else (40, 0.1, 4)
    per_module = count // modules
    work = cal.iterations(seconds)
    files = {
        f"test_cpu_{m}.py": BURN_SOURCE + _tests(per_module, f"burn({work})", start=m * per_module)
        for m in range(modules)
    }
    _write(folder, files)
    return Suite("cpu", folder, workers=2, longest_test=seconds, total_test_time=count * seconds)


def build_skewed(folder: Path, quick: bool, cal: Calibration) -> Suite:
    """A few long tests collected last: a scheduler that knows durations starts them first."""
    fast_count, fast_seconds = (50, 0.01) if quick else (197, 0.01)
    slow = (1.0, 0.5) if quick else (2.0, 1.5, 1.0)
    modules = 4
    per_module = fast_count // modules
    files = {}
    for m in range(modules):
        count = per_module if m < modules - 1 else fast_count - per_module * (modules - 1)
        files[f"test_a_fast_{m}.py"] = "import time\n" + _tests(
            count, f"time.sleep({fast_seconds})", start=m * per_module
        )
    # "zz" sorts last, so these are collected (and run serially) after every fast test.
    files["test_zz_slow.py"] = "import time\n" + "".join(
        f"\ndef test_slow_{i}():\n    time.sleep({seconds})\n" for i, seconds in enumerate(slow)
    )
    _write(folder, files)
    total = fast_count * fast_seconds + sum(slow)
    return Suite("skewed", folder, workers=2, longest_test=max(slow), total_test_time=total)


def build_heavy_import(folder: Path, quick: bool, cal: Calibration) -> Suite:
    """Expensive imports, cheap tests: the cost of collecting once per worker."""
    modules, per_module = (4, 20) if quick else (10, 20)
    work = cal.iterations(HEAVY_IMPORT_SECONDS_PER_MODULE)
    files = {
        f"test_heavy_{m:02d}.py": BURN_SOURCE
        + f"\n# Stands for importing a large library.\nburn({work})\n"
        + _tests(per_module, "assert True", start=m * per_module)
        for m in range(modules)
    }
    _write(folder, files)
    return Suite("heavy-import", folder, workers=2)


def build_fixtures(folder: Path, quick: bool, cal: Calibration) -> Suite:
    """Module and session fixtures: how often a parallel run sets them up again."""
    modules, per_module = (6, 20) if quick else (30, 20)
    conftest = f"""
        import time

        import pytest


        @pytest.fixture(scope="session")
        def service():
            time.sleep({SESSION_FIXTURE_SECONDS})
            return "service"
    """
    module = f"""
        import os
        import time

        import pytest


        @pytest.fixture(scope="module")
        def resource(service):
            log = os.environ.get("{SETUP_LOG_ENV}")
            if log:
                with open(log, "a") as file:
                    file.write(__name__ + "\\n")
            time.sleep({MODULE_FIXTURE_SECONDS})
            return service
    """
    files = {"conftest.py": conftest}
    for m in range(modules):
        tests = "".join(
            f"\ndef test_{i:02d}(resource):\n    assert resource == 'service'\n"
            for i in range(per_module)
        )
        files[f"test_fixtures_{m:02d}.py"] = textwrap.dedent(module) + tests
    _write(folder, files)
    return Suite("fixtures", folder, workers=2, counts_setups=True)


def build_startup(folder: Path, quick: bool, cal: Calibration) -> Suite:
    """One trivial test: the fixed cost of starting a run."""
    _write(folder, {"test_startup.py": _tests(1, "pass")})
    return Suite("startup", folder, workers=2)


def build_demo(folder: Path, quick: bool, cal: Calibration) -> Suite:
    """The repository's demo suite, copied so its caches stay out of the checkout."""
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(DEMO_DIR, folder, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    return Suite("demo", folder, workers=2)


Builder = Callable[[Path, bool, Calibration], Suite]

# In the order of the benchmark's table.
BUILDERS: dict[str, Builder] = {
    "tiny": build_tiny,
    "tiny50k": build_tiny50k,
    "tiny-conftests": build_tiny_conftests,
    "sleep": build_sleep,
    "cpu": build_cpu,
    "skewed": build_skewed,
    "heavy-import": build_heavy_import,
    "fixtures": build_fixtures,
    "startup": build_startup,
    "demo": build_demo,
}


def describe(name: str) -> str:
    """The one-line summary of what the suite measures (its builder's docstring)."""
    return (BUILDERS[name].__doc__ or "").strip()


def build(name: str, root: Path, quick: bool, cal: Calibration) -> Suite:
    """Write suite ``name`` into ``root/name`` (replacing what was there) and describe it."""
    folder = root / name
    if folder.exists():
        shutil.rmtree(folder)
    return BUILDERS[name](folder, quick, cal)
