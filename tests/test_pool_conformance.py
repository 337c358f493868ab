"""The same API cases against ``multiprocessing.Pool`` and against ``pytest_poolrun.Pool``.

Every test here runs twice, once per implementation, and expects the same observable results:
values, exception types, callback calls, and the errors raised for misuse.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import multiprocessing.pool
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_poolrun import Pool

# Long enough that a task is certainly still running when the test looks at it; such tasks are
# always ended by terminate(), never waited for.
LONG_TASK = 60.0
# A bound on waits that must not happen; hitting it shows up as multiprocessing.TimeoutError.
NO_HANG = 10.0


def square(x: int) -> int:
    return x * x


def add(a: int, b: int, c: int = 0) -> int:
    return a + b + c


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"no threes: {x}")
    return x


def nothing() -> None:
    return None


def pid_of_worker(_: object = None) -> int:
    return os.getpid()


_initialized: list[Any] = []


def remember(*args: Any) -> None:
    _initialized[:] = args


def remembered(_: object = None) -> list[Any]:
    return list(_initialized)


def big(size: int) -> bytes:
    return b"x" * size


def length(data: bytes) -> int:
    return len(data)


def input_failing_at(failing: int) -> Iterator[int]:
    """Yields 0, 1, ... and raises ``KeyError`` instead of item ``failing``."""
    yield from range(failing)
    raise KeyError(f"the input broke at item {failing}")


def input_gated_at(gate: int, opened: threading.Event, seen: list[bool]) -> Iterator[int]:
    """Yields ``gate`` items, then waits for ``opened`` (noting whether it was) before the rest."""
    yield from range(gate)
    seen.append(opened.wait(NO_HANG))
    yield from range(gate, 2 * gate)


MakePool = Callable[..., Any]


class FailingForkContext(multiprocessing.context.ForkContext):
    """A fork context whose processes fail to start after the first ``starts``."""

    def __init__(self, starts: int) -> None:
        self.starts_left = starts
        self.started: list[multiprocessing.process.BaseProcess] = []

    def Process(self, *args: Any, **kwargs: Any) -> Any:
        process = multiprocessing.context.ForkProcess(*args, **kwargs)
        if self.starts_left == 0:
            process.start = self._refuse  # type: ignore[method-assign]
        else:
            self.starts_left -= 1
            self.started.append(process)
        return process

    @staticmethod
    def _refuse() -> None:
        raise OSError("cannot start another process (induced by the test)")


@pytest.fixture(params=["multiprocessing", "poolrun"])
def make_pool(request: pytest.FixtureRequest) -> Iterator[MakePool]:
    """Make pools of one implementation; every pool made is terminated after the test."""
    made: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        if request.param == "multiprocessing":
            kwargs.setdefault("context", multiprocessing.get_context("fork"))
            pool = multiprocessing.pool.Pool(*args, **kwargs)
        else:
            pool = Pool(*args, start_method="fork", **kwargs)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.terminate()
        pool.join()


@pytest.fixture(params=["multiprocessing", "poolrun"])
def pool_class(request: pytest.FixtureRequest) -> MakePool:
    """One implementation's constructor, for a test that must drop every reference to its pool."""
    if request.param == "multiprocessing":
        return multiprocessing.get_context("fork").Pool
    return Pool


@pytest.fixture(params=["multiprocessing", "poolrun"])
def pool_import(request: pytest.FixtureRequest) -> str:
    """The line a script uses to import one implementation's ``Pool``."""
    if request.param == "multiprocessing":
        return "from multiprocessing import Pool"
    return "from pytest_poolrun import Pool"


def _kill_session(leader: int) -> None:
    """Kill every process of the session ``leader`` leads (pool workers lead groups of their
    own, so killing the script's group would leave them)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) == leader:
                os.kill(int(entry), signal.SIGKILL)
        except OSError:
            continue


def run_script(code: str, folder: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that must exit by itself within ``NO_HANG``; if it
    does not, it is killed with every process it started.  With ``folder`` the code is run as
    a script file there (spawned workers run a script file again; ``-c`` code they cannot)."""
    code = textwrap.dedent(code)
    command = [sys.executable, "-c", code]
    if folder is not None:
        script_file = folder / "script.py"
        script_file.write_text(code)
        command = [sys.executable, str(script_file)]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as script:
        try:
            stdout, stderr = script.communicate(timeout=NO_HANG)
        except subprocess.TimeoutExpired:
            _kill_session(script.pid)
            stdout, stderr = script.communicate()
            pytest.fail(f"the script did not exit within {NO_HANG} s:\n{stdout}{stderr}")
    done = subprocess.CompletedProcess(script.args, script.returncode, stdout, stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_apply_with_args_and_kwds(make_pool: MakePool) -> None:
    pool = make_pool(2)
    assert pool.apply(add, (1, 2), {"c": 3}) == 6
    assert pool.apply(nothing) is None


def test_apply_async_get_wait_ready_successful(make_pool: MakePool) -> None:
    pool = make_pool(2)
    result = pool.apply_async(square, (7,))
    result.wait(NO_HANG)
    assert result.ready()
    assert result.successful()
    assert result.get(NO_HANG) == 49


def test_failed_result_is_not_successful_and_reraises(make_pool: MakePool) -> None:
    pool = make_pool(2)
    result = pool.apply_async(fail_on_three, (3,))
    result.wait(NO_HANG)
    assert result.ready() and not result.successful()
    with pytest.raises(ValueError, match="no threes: 3") as info:
        result.get(NO_HANG)
    assert "fail_on_three" in str(info.value.__cause__)


def test_unfinished_result_times_out_and_is_not_ready(make_pool: MakePool) -> None:
    pool = make_pool(1)
    result = pool.apply_async(time.sleep, (LONG_TASK,))
    assert not result.ready()
    with pytest.raises(ValueError):
        result.successful()
    result.wait(0.01)
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(0.01)


def test_callbacks_are_called_as_results_arrive(make_pool: MakePool) -> None:
    pool = make_pool(2)
    values: list[Any] = []
    errors: list[BaseException] = []
    hooks = {"callback": values.append, "error_callback": errors.append}
    ok = pool.apply_async(square, (3,), **hooks)
    bad = pool.apply_async(fail_on_three, (3,), **hooks)
    mapped = pool.map_async(square, [1, 2], callback=values.append)
    for result in (ok, bad, mapped):
        result.wait(NO_HANG)
    assert sorted(map(str, values)) == ["9", "[1, 4]"]
    assert [type(error) for error in errors] == [ValueError]


@pytest.mark.parametrize("chunksize", [None, 1, 3, 100])
def test_map_keeps_order_for_any_chunksize(make_pool: MakePool, chunksize: int | None) -> None:
    pool = make_pool(2)
    assert pool.map(square, range(50), chunksize) == [x * x for x in range(50)]
    assert pool.map_async(square, range(50), chunksize).get(NO_HANG) == [x * x for x in range(50)]


def test_map_of_nothing_is_empty(make_pool: MakePool) -> None:
    pool = make_pool(2)
    assert pool.map(square, []) == []
    assert pool.starmap(add, []) == []
    assert list(pool.imap(square, [])) == []


def test_map_raises_the_tasks_exception(make_pool: MakePool) -> None:
    pool = make_pool(2)
    with pytest.raises(ValueError, match="no threes"):
        pool.map(fail_on_three, range(6), 1)
    errors: list[BaseException] = []
    result = pool.map_async(fail_on_three, range(6), 2, error_callback=errors.append)
    result.wait(NO_HANG)
    assert not result.successful()
    assert [type(error) for error in errors] == [ValueError]


@pytest.mark.parametrize("chunksize", [1, 4])
def test_imap_yields_in_order_and_unordered_yields_all(make_pool: MakePool, chunksize: int) -> None:
    pool = make_pool(2)
    assert list(pool.imap(square, iter(range(20)), chunksize)) == [x * x for x in range(20)]
    unordered = pool.imap_unordered(square, range(20), chunksize)
    assert sorted(unordered) == [x * x for x in range(20)]


def test_imap_yields_results_before_the_failed_one(make_pool: MakePool) -> None:
    pool = make_pool(2)
    seen: list[int] = []
    with pytest.raises(ValueError, match="no threes"):
        for value in pool.imap(fail_on_three, range(6)):
            seen.append(value)
    assert seen == [0, 1, 2]


@pytest.mark.parametrize("chunksize", [1, 2, 4])
def test_an_error_of_the_input_comes_after_the_results_before_its_chunk(
    make_pool: MakePool, chunksize: int
) -> None:
    pool = make_pool(2)
    results = pool.imap(square, input_failing_at(7), chunksize)  # the error is not raised here
    complete_chunks = 7 // chunksize
    for x in range(complete_chunks * chunksize):
        assert next(results) == x * x
    with pytest.raises(KeyError, match="broke at item 7"):
        next(results)


def test_an_error_of_the_input_comes_out_of_imap_unordered_next(make_pool: MakePool) -> None:
    pool = make_pool(2)
    results = pool.imap_unordered(square, input_failing_at(5))
    seen: list[int] = []
    with pytest.raises(KeyError, match="broke at item 5"):
        for value in results:
            seen.append(value)
    assert set(seen) <= {x * x for x in range(5)}


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_imap_reads_an_endless_input_as_it_goes(make_pool: MakePool, method: str) -> None:
    pool = make_pool(2)
    results = getattr(pool, method)(square, itertools.count(), 3)
    first = [next(results) for _ in range(30)]
    assert len(first) == 30
    if method == "imap":
        assert first == [x * x for x in range(30)]


def test_imap_unordered_yields_before_its_input_is_exhausted(make_pool: MakePool) -> None:
    pool = make_pool(2)
    opened = threading.Event()
    seen: list[bool] = []
    results = pool.imap_unordered(square, input_gated_at(10, opened, seen))
    assert next(results) in {x * x for x in range(10)}
    opened.set()
    assert len(list(results)) == 19
    assert seen == [True]  # the input was still waiting at the gate when the result came


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_imap_result_comes_while_the_input_waits_for_it(make_pool: MakePool, method: str) -> None:
    # The input's second item waits until the caller has the first result: a producer that
    # depends on what the consumer got must not deadlock (or here, wait out NO_HANG).
    pool = make_pool(2)
    got_first = threading.Event()
    seen: list[bool] = []
    results = getattr(pool, method)(square, input_gated_at(1, got_first, seen))
    assert next(results) == 0
    got_first.set()
    assert list(results) == [1]
    assert seen == [True]


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_imap_next_with_a_timeout(make_pool: MakePool, method: str) -> None:
    pool = make_pool(1)
    results = getattr(pool, method)(time.sleep, [LONG_TASK])
    with pytest.raises(multiprocessing.TimeoutError):
        results.next(timeout=0.01)
    with pytest.raises(multiprocessing.TimeoutError):
        results.__next__(0.01)  # multiprocessing's __next__ is its next
    results = getattr(pool, method)(square, [])
    with pytest.raises(StopIteration):
        results.next(timeout=NO_HANG)


def test_imap_close_and_join_run_the_whole_input(make_pool: MakePool) -> None:
    pool = make_pool(2)
    results = pool.imap(square, iter(range(2000)))
    pool.close()
    pool.join()
    assert list(results) == [x * x for x in range(2000)]


def test_starmap_and_starmap_async(make_pool: MakePool) -> None:
    pool = make_pool(2)
    pairs = [(a, a + 1) for a in range(10)]
    assert pool.starmap(add, pairs) == [2 * a + 1 for a in range(10)]
    assert pool.starmap_async(add, pairs, 3).get(NO_HANG) == [2 * a + 1 for a in range(10)]


def test_initializer_runs_in_every_worker(make_pool: MakePool) -> None:
    pool = make_pool(2, remember, ("ready", 2))
    assert pool.map(remembered, range(8), 1) == [["ready", 2]] * 8


def test_forked_workers_get_an_initializer_and_arguments_that_cannot_be_pickled(
    make_pool: MakePool,
) -> None:
    # A forked worker inherits them, as multiprocessing's do: nothing is pickled.
    lock = threading.Lock()
    pool = make_pool(2, lambda held: remember(type(held).__name__, held.locked()), (lock,))
    assert pool.map(remembered, range(4), 1) == [[type(lock).__name__, False]] * 4


def test_maxtasksperchild_replaces_workers(make_pool: MakePool) -> None:
    pool = make_pool(1, maxtasksperchild=1)
    pids = [pool.apply(pid_of_worker) for _ in range(3)]
    assert len(set(pids)) == 3


def test_large_arguments_and_results_travel(make_pool: MakePool) -> None:
    pool = make_pool(2)
    size = 8 * 1024 * 1024
    assert pool.apply(length, (big(size),)) == size
    assert len(pool.apply(big, (size,))) == size


def test_a_wait_longer_than_the_system_allows_at_once_returns_the_result(
    make_pool: MakePool,
) -> None:
    """get(9999999) is the usual way to wait for ever yet stay interruptible."""
    pool = make_pool(1)
    assert pool.apply_async(square, (2,)).get(9999999) == 4
    assert pool.map_async(square, [3]).get(9999999) == [9]


def test_a_pool_refuses_to_be_pickled(make_pool: MakePool) -> None:
    with pytest.raises(NotImplementedError, match="cannot be passed between processes"):
        pickle.dumps(make_pool(1))


def test_close_then_join_keeps_results_and_refuses_new_tasks(make_pool: MakePool) -> None:
    pool = make_pool(2)
    result = pool.map_async(square, range(10))
    pool.close()
    with pytest.raises(ValueError):
        pool.apply(square, (1,))
    pool.join()
    assert result.get(NO_HANG) == [x * x for x in range(10)]


def test_join_before_close_is_an_error(make_pool: MakePool) -> None:
    pool = make_pool(1)
    with pytest.raises(ValueError):
        pool.join()


def test_terminate_stops_workers_and_refuses_new_tasks(make_pool: MakePool) -> None:
    pool = make_pool(2)
    pool.apply_async(time.sleep, (LONG_TASK,))
    pool.terminate()
    pool.join()
    with pytest.raises(ValueError):
        pool.apply(square, (1,))


def test_context_manager_returns_the_pool_and_terminates_it(make_pool: MakePool) -> None:
    with make_pool(2) as pool:
        assert pool.apply(square, (4,)) == 16
    with pytest.raises(ValueError):
        pool.apply(square, (1,))


@pytest.mark.parametrize("processes", [0, -1])
def test_invalid_process_count_is_refused(make_pool: MakePool, processes: int) -> None:
    with pytest.raises(ValueError):
        make_pool(processes)


def test_process_count_of_another_type_is_a_type_error(make_pool: MakePool) -> None:
    with pytest.raises(TypeError):
        make_pool("2")


def test_initializer_that_is_not_callable_is_refused_at_construction(make_pool: MakePool) -> None:
    with pytest.raises(TypeError):
        make_pool(1, initializer=1)


def test_workers_start_through_the_given_context(make_pool: MakePool) -> None:
    context = FailingForkContext(starts=2)
    pool = make_pool(2, context=context)
    pids = set(pool.map(pid_of_worker, range(20), 1))
    assert pids and pids <= {process.pid for process in context.started}


def test_a_worker_that_cannot_start_leaves_no_process_behind(make_pool: MakePool) -> None:
    context = FailingForkContext(starts=2)
    with pytest.raises(OSError, match="induced by the test"):
        make_pool(4, context=context)
    assert len(context.started) == 2
    assert not any(process.is_alive() for process in context.started)


@pytest.mark.parametrize("stop", ["close", "terminate"])
def test_a_stopped_pool_cannot_be_entered_again(make_pool: MakePool, stop: str) -> None:
    pool = make_pool(1)
    getattr(pool, stop)()
    with pytest.raises(ValueError):
        with pool:
            pass


def test_the_cause_of_a_remote_error_is_a_multiprocessing_remote_traceback(
    make_pool: MakePool,
) -> None:
    pool = make_pool(1)
    with pytest.raises(ValueError) as info:
        pool.apply(fail_on_three, (3,))
    cause = info.value.__cause__
    assert isinstance(cause, multiprocessing.pool.RemoteTraceback)
    assert "fail_on_three" in cause.tb
    assert str(cause) == cause.tb


def test_a_running_pool_garbage_collected_warns() -> None:
    # Ours only: multiprocessing.Pool's helper threads may still hold it when gc runs, so the
    # reference variant of this case was timing-dependent.
    pool = Pool(1)
    assert pool.apply(square, (2,)) == 4
    with pytest.warns(ResourceWarning, match="unclosed running"):
        del pool
        gc.collect()


def test_a_dropped_running_pool_warns_once_and_leaves_no_socket_open() -> None:
    # Ours only: the pool's warning is the one a dropped pool gives; its own sockets are closed
    # with it, not left to warn "unclosed socket" whenever the garbage collector gets to them.
    pool = Pool(1)
    assert pool.apply(square, (2,)) == 4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del pool
        gc.collect()
        assert len(caught) == 1
        assert str(caught[0].message).startswith("unclosed running multiprocessing pool")
        # That warning holds the pool (as its source) until it is dropped.
        caught.clear()
        gc.collect()
        assert [str(w.message) for w in caught] == []


def test_a_closed_pool_garbage_collected_does_not_warn(pool_class: MakePool) -> None:
    pool = pool_class(1)
    pool.close()
    pool.join()
    # Recorded, not raised: a warning raised in __del__ would only be printed as ignored.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del pool
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


def test_a_pool_terminated_after_its_workers_retired_does_not_warn() -> None:
    # Ours only (shutdown_idle is an extension): the test runner's way to end its pool.
    pool = Pool(2)
    assert pool.map(square, range(4)) == [0, 1, 4, 9]
    pool.shutdown_idle()
    assert pool.join(timeout=NO_HANG)
    pool.terminate()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del pool
        gc.collect()
    assert [str(w.message) for w in caught] == []


def test_invalid_chunksize_is_refused(make_pool: MakePool) -> None:
    pool = make_pool(1)
    with pytest.raises(ValueError):
        list(pool.imap(square, range(3), 0))


def test_default_size_uses_the_cpus(make_pool: MakePool) -> None:
    pool = make_pool()
    assert sorted(set(pool.map(square, range(4)))) == [0, 1, 4, 9]


# ------------------------------------------------------------------------ interpreter exit


@pytest.mark.parametrize("task_running", [False, True], ids=["idle", "task-running"])
@pytest.mark.parametrize("first_import", ["", "import multiprocessing.util"])
def test_an_unclosed_pool_lets_the_interpreter_exit(
    pool_import: str, task_running: bool, first_import: str
) -> None:
    """A module-level pool that is never closed ends with the script, in any import order."""
    done = run_script(
        f"""
        {first_import}
        {pool_import}
        import time
        pool = Pool(2)
        print(pool.apply(abs, (-3,)))
        if {task_running}:
            pool.apply_async(time.sleep, ({LONG_TASK},))
            time.sleep(0.2)
        """
    )
    assert done.stdout.split() == ["3"]
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_the_main_script_classes_and_globals_are_the_workers_and_the_callers_own(
    pool_import: str, start_method: str, tmp_path: Path
) -> None:
    """Under every start method, as under multiprocessing: a task sees the globals its worker's
    initializer set, an argument of a class the script defines arrives as the worker's own
    class, and a result or an exception of such a class comes back as the caller's own
    (``isinstance`` and ``except`` work)."""
    if pool_import.startswith("from multiprocessing"):
        make = f"get_context({start_method!r}).Pool(2, initializer=remember, initargs=(42,))"
        pool_import = "from multiprocessing import get_context"
    else:
        make = f"Pool(2, initializer=remember, initargs=(42,), start_method={start_method!r})"
    done = run_script(
        f"""
        {pool_import}

        SEEN = []

        def remember(value):
            SEEN.append(value)

        def seen(_):
            return list(SEEN)

        class Box:
            def __init__(self, value):
                self.value = value

        class Refused(Exception):
            pass

        def box(value):
            return Box(value)

        def unbox(box):
            return type(box) is Box, box.value

        def refuse(value):
            raise Refused(value)

        if __name__ == "__main__":
            with {make} as pool:
                print(pool.map(seen, range(2)))
                print(type(pool.apply(box, (5,))) is Box, pool.apply(unbox, (Box(6),)))
                try:
                    pool.apply(refuse, (1,))
                except Refused:
                    print("caught")
        """,
        tmp_path,
    )
    assert done.stdout.splitlines() == ["[[42], [42]]", "True (True, 6)", "caught"]


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_a_fresh_worker_runs_a_main_script_function_its_copy_of_the_script_lacks(
    start_method: str, tmp_path: Path
) -> None:
    # multiprocessing's workers cannot find one defined in the guarded block (AttributeError);
    # ours get it by value.  One that uses a global that does not pickle by value (a lock)
    # travels as a reference alone.
    done = run_script(
        f"""
        import threading
        from pytest_poolrun import Pool

        LOCK = threading.Lock()

        def locked_square(x):
            with LOCK:
                return x * x

        if __name__ == "__main__":
            def guarded(x):
                return x + 1

            with Pool(2, start_method={start_method!r}) as pool:
                print(pool.map(guarded, [1, 2]), pool.map(locked_square, [3]))
        """,
        tmp_path,
    )
    assert done.stdout.strip() == "[2, 3] [9]"


def test_a_main_script_task_may_use_a_nested_multiprocessing_pool() -> None:
    # Ours only: multiprocessing's workers are daemons, which may not have children.  The
    # nested pool pickles the script's function by reference: the task must be the worker's
    # own copy of the script's function, not a copy made by value.
    done = run_script(
        """
        from pytest_poolrun import Pool
        import multiprocessing

        def square(x):
            return x * x

        def square_in_a_nested_pool(x):
            with multiprocessing.get_context("fork").Pool(1) as nested:
                return nested.apply(square, (x,))

        if __name__ == "__main__":
            with Pool(2) as pool:
                print(pool.apply(square_in_a_nested_pool, (3,)))
        """
    )
    assert done.stdout.split() == ["9"]


def test_a_main_script_function_defined_after_the_fork_still_runs() -> None:
    # multiprocessing's workers cannot find it (AttributeError); ours get it by value.
    done = run_script(
        """
        from pytest_poolrun import Pool

        with Pool(2) as pool:
            def later(x):
                return x + 1

            print(pool.map(later, [1, 2]))
        """
    )
    assert done.stdout.strip() == "[2, 3]"


def test_a_pool_dropped_without_terminate_lets_the_interpreter_exit(pool_import: str) -> None:
    """Its workers' records wait in a reference cycle for a collection that comes too late."""
    done = run_script(
        f"""
        {pool_import}

        def square(x):
            return x * x

        pool = Pool(2)
        print(pool.map(square, [3])[0])
        del pool
        """
    )
    assert done.stdout.split() == ["9"]


@pytest.mark.parametrize("closed", [False, True], ids=["running", "closed-with-a-task-running"])
def test_a_child_process_leaving_a_pool_open_exits(pool_import: str, closed: bool) -> None:
    """A pool made in a multiprocessing child, which starts with no exit handlers of its own."""
    done = run_script(
        f"""
        {pool_import}
        import multiprocessing, time

        def child():
            pool = Pool(2)
            print(pool.apply(abs, (-3,)), flush=True)
            pool.apply_async(time.sleep, ({LONG_TASK},))
            if {closed}:
                pool.close()
            time.sleep(0.2)

        if __name__ == "__main__":
            process = multiprocessing.get_context("fork").Process(target=child)
            process.start()
            process.join()
            print(process.exitcode)
        """
    )
    assert done.stdout.split() == ["3", "0"]


# ---------------------------------------------------------------------------------- threads

THREADS = 3
ROUNDS = 15


def test_threads_sharing_a_pool_all_get_their_own_results(make_pool: MakePool) -> None:
    pool = make_pool(2)
    outcomes: list[Any] = []

    def use_the_pool(k: int) -> None:
        for r in range(ROUNDS):
            n = 40 + 7 * k + r
            try:
                mapped = pool.map(square, range(n), 3)
                applied = pool.apply_async(add, (k, r)).get(NO_HANG)
                streamed = list(pool.imap(square, range(k + r), 2))
                outcomes.append(
                    mapped == [x * x for x in range(n)]
                    and applied == k + r
                    and streamed == [x * x for x in range(k + r)]
                )
            except Exception as exc:
                outcomes.append(exc)

    threads = [threading.Thread(target=use_the_pool, args=(k,)) for k in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(NO_HANG * 3)
    assert outcomes == [True] * (THREADS * ROUNDS)
    assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]


def test_a_result_submitted_in_one_thread_can_be_awaited_in_another(make_pool: MakePool) -> None:
    pool = make_pool(2)
    results = [pool.apply_async(square, (x,)) for x in range(20)]
    got: list[int] = []
    thread = threading.Thread(target=lambda: got.extend(r.get(NO_HANG) for r in results))
    thread.start()
    thread.join(NO_HANG)
    assert got == [x * x for x in range(20)]


def test_callbacks_run_once_each_with_threads_waiting(make_pool: MakePool) -> None:
    pool = make_pool(2)
    called: list[int] = []
    results = [pool.apply_async(square, (x,), callback=called.append) for x in range(30)]
    threads = [
        threading.Thread(target=lambda part=part: [r.wait(NO_HANG) for r in part])
        for part in (results[::3], results[1::3], results[2::3])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(NO_HANG)
    assert sorted(called) == [x * x for x in range(30)]
