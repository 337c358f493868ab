"""Benchmark: pytest_poolrun.Pool against multiprocessing.Pool, ProcessPoolExecutor and loky.

Run on demand (not part of the test suite)::

    python benchmarks/bench_pool.py [--repeat 5] [--processes N]

All contenders are measured in one run, interleaved within each repeat (in an order that
rotates) so that a busy moment of the machine hits them alike; each figure is the median of the
repeats.  Measures:

- start-up: from constructing a pool to the first result of a trivial task, with each start
  method the contender offers (loky always uses its own);
- per-task overhead: 10,000 tiny tasks through ``map``, with chunksize 1 and with the automatic
  chunksize (``multiprocessing.Pool``'s rule, applied to the executors that have none), in
  microseconds per task, on an already started pool;
- throughput: 200 tasks of 10 ms each, as wall time against the ideal (tasks x 10 ms /
  processes); the goal is checked on tasks that sleep, which measures the pool's scheduling, and
  tasks that burn CPU are reported beside (they also measure what else the machine runs).

The table gives each figure and its ratio to ``multiprocessing.Pool``; the goals of the issue are
checked at the end.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pytest_poolrun import Pool
from pytest_poolrun.pool import available_cpus

TINY_TASKS = 10_000
# multiprocessing.Pool's automatic chunksize aims at this many chunks per worker.
CHUNKS_PER_WORKER = 4
SLOW_TASKS = 200
SLOW_TASK_SECONDS = 0.010
# The goals.
STARTUP_GOAL = 1.0  # no slower than multiprocessing.Pool with the same start method
OVERHEAD_GOAL = 1.3  # per-task overhead within 1.3x of multiprocessing.Pool
THROUGHPUT_GOAL = 0.05  # 10 ms tasks within 5% of the ideal wall time
BASELINE = "multiprocessing.Pool"
# The goal is checked on sleeping tasks: they measure the pool's own scheduling, while tasks
# burning CPU also measure whatever else the machine runs (reported beside, for information).
THROUGHPUT = "200 x 10 ms sleep (s)"
THROUGHPUT_CPU = "200 x 10 ms CPU (s)"


def noop(x: int = 0) -> int:
    return x


def spin(seconds: float) -> None:
    """Keep a CPU busy for ``seconds`` (a CPU-bound task, unlike sleep)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def auto_chunksize(items: int, processes: int) -> int:
    chunksize, extra = divmod(items, processes * CHUNKS_PER_WORKER)
    return chunksize + 1 if extra else max(chunksize, 1)


@dataclass
class Contender:
    """How to drive one pool implementation: start it, map over it, stop it."""

    name: str
    start_methods: tuple[str, ...]
    start: Callable[[int, str], Any]
    map: Callable[[Any, Callable[[Any], Any], list[Any], int | None], list[Any]]
    stop: Callable[[Any], None]


def _start_poolrun(processes: int, method: str) -> Any:
    return Pool(processes, start_method=method)


def _start_mp(processes: int, method: str) -> Any:
    return multiprocessing.get_context(method).Pool(processes)


def _map_pool(pool: Any, func: Callable[[Any], Any], items: list[Any], size: int | None) -> Any:
    return pool.map(func, items, size)


def _stop_pool(pool: Any) -> None:
    pool.terminate()
    pool.join()


def _start_ppe(processes: int, method: str) -> Any:
    context = multiprocessing.get_context(method)
    return concurrent.futures.ProcessPoolExecutor(processes, mp_context=context)


def _start_loky(processes: int, method: str) -> Any:
    import loky

    return loky.ProcessPoolExecutor(processes)


def _map_executor(
    executor: Any, func: Callable[[Any], Any], items: list[Any], size: int | None
) -> Any:
    processes = executor._max_workers
    chunksize = size or auto_chunksize(len(items), processes)
    return list(executor.map(func, items, chunksize=chunksize))


def _stop_executor(executor: Any) -> None:
    executor.shutdown(wait=True)


def contenders() -> list[Contender]:
    found = [
        Contender("poolrun.Pool", ("fork", "spawn"), _start_poolrun, _map_pool, _stop_pool),
        Contender(BASELINE, ("fork", "spawn"), _start_mp, _map_pool, _stop_pool),
        Contender(
            "ProcessPoolExecutor", ("fork", "spawn"), _start_ppe, _map_executor, _stop_executor
        ),
    ]
    try:
        import loky  # noqa: F401
    except ImportError:
        print("loky is not installed: skipped (pip install loky)", file=sys.stderr)
    else:
        found.append(Contender("loky", ("loky",), _start_loky, _map_executor, _stop_executor))
    return found


def first_result(contender: Contender, processes: int, method: str) -> float:
    started = time.perf_counter()
    pool = contender.start(processes, method)
    contender.map(pool, noop, [0], 1)
    elapsed = time.perf_counter() - started
    contender.stop(pool)
    return elapsed


def timed(run: Callable[..., object], *args: Any) -> float:
    started = time.perf_counter()
    run(*args)
    return time.perf_counter() - started


def steady_state(contender: Contender, processes: int) -> dict[str, float]:
    """The per-task and throughput figures of one contender, on a pool started beforehand."""
    tiny = list(range(TINY_TASKS))
    slow = [SLOW_TASK_SECONDS] * SLOW_TASKS
    pool = contender.start(processes, contender.start_methods[0])
    try:
        contender.map(pool, noop, tiny[:100], 1)  # every worker up and warm
        return {
            "per task, chunksize 1 (us)": timed(contender.map, pool, noop, tiny, 1) / TINY_TASKS,
            "per task, chunksize auto (us)": timed(contender.map, pool, noop, tiny, None)
            / TINY_TASKS,
            THROUGHPUT: timed(contender.map, pool, time.sleep, slow, 1),
            THROUGHPUT_CPU: timed(contender.map, pool, spin, slow, 1),
        }
    finally:
        contender.stop(pool)


def rotated(items: list[Contender], turn: int) -> list[Contender]:
    shift = turn % len(items)
    return items[shift:] + items[:shift]


def measure(repeat: int, processes: int) -> dict[str, dict[str, float]]:
    """{measure name: {contender name: median seconds}}."""
    everyone = contenders()
    samples: dict[str, dict[str, list[float]]] = {}

    def note(measure_name: str, contender: str, seconds: float) -> None:
        samples.setdefault(measure_name, {}).setdefault(contender, []).append(seconds)

    # Start-ups first, apart from the busy steady-state runs whose exiting workers would slow the
    # next start-up down; the order rotates each repeat so that no contender always goes first.
    for turn in range(repeat):
        for contender in rotated(everyone, turn):
            for method in contender.start_methods:
                key = f"start-up, {'fork' if method == 'fork' else 'spawn/own'} (ms)"
                note(key, contender.name, first_result(contender, processes, method))
    for turn in range(repeat):
        for contender in rotated(everyone, turn):
            for measure_name, seconds in steady_state(contender, processes).items():
                note(measure_name, contender.name, seconds)
    return {
        name: {contender: statistics.median(values) for contender, values in by.items()}
        for name, by in samples.items()
    }


SCALE = {"(ms)": 1e3, "(us)": 1e6, "(s)": 1.0}


def _scaled(measure_name: str, seconds: float) -> float:
    for unit, factor in SCALE.items():
        if measure_name.endswith(unit):
            return seconds * factor
    return seconds


def table(results: dict[str, dict[str, float]], names: Iterable[str]) -> str:
    columns = list(names)
    width = max(len(name) for name in results) + 2
    cell = max(18, *(len(name) + 2 for name in columns))
    lines = ["measure".ljust(width) + "".join(name.rjust(cell) for name in columns)]
    for measure_name, by in results.items():
        baseline = by.get(BASELINE)
        cells = []
        for name in columns:
            if name not in by:
                cells.append("-".rjust(cell))
                continue
            ratio = f" ({by[name] / baseline:.2f}x)" if baseline else ""
            cells.append(f"{_scaled(measure_name, by[name]):.3g}{ratio}".rjust(cell))
        lines.append(measure_name.ljust(width) + "".join(cells))
    return "\n".join(lines)


def goals(results: dict[str, dict[str, float]], processes: int) -> list[str]:
    ours, base = "poolrun.Pool", BASELINE
    ideal = SLOW_TASKS * SLOW_TASK_SECONDS / processes
    lines = []
    for measure_name, by in results.items():
        ratio = by[ours] / by[base]
        if measure_name.startswith("start-up"):
            verdict = "met" if ratio <= STARTUP_GOAL else "MISSED"
            lines.append(f"{measure_name}: {ratio:.2f}x of {base} (goal <= 1.0x): {verdict}")
        elif measure_name.startswith("per task"):
            verdict = "met" if ratio <= OVERHEAD_GOAL else "MISSED"
            lines.append(f"{measure_name}: {ratio:.2f}x of {base} (goal <= 1.3x): {verdict}")
        elif measure_name == THROUGHPUT:
            over = by[ours] / ideal - 1
            verdict = "met" if over <= THROUGHPUT_GOAL else "MISSED"
            lines.append(
                f"{measure_name}: {by[ours]:.3f} s against an ideal {ideal:.3f} s, "
                f"{over:+.1%} (goal <= +5%): {verdict}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (median taken)")
    parser.add_argument(
        "--processes", type=int, default=available_cpus(), help="workers per pool (default: CPUs)"
    )
    options = parser.parse_args(argv)
    results = measure(options.repeat, options.processes)
    print(
        f"Python {sys.version.split()[0]}, {options.processes} processes, "
        f"median of {options.repeat}; ratio to {BASELINE} in parentheses\n"
    )
    print(table(results, [contender.name for contender in contenders()]))
    print()
    print("\n".join(goals(results, options.processes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
