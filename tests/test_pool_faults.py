"""What ``pytest_poolrun.Pool`` promises beyond ``multiprocessing.Pool``'s API.

Each test checks one promise of this project's ``Pool`` (dead workers, timeouts, what can be
sent, processes and threads in workers); what ``multiprocessing.Pool`` does instead is the
standard library's business, not this suite's.
"""

from __future__ import annotations

import ctypes
import faulthandler
import itertools
import json
import multiprocessing
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_poolrun import Pool, SendError, TaskTimeoutError, WorkerLostError, poolworker
from pytest_poolrun.dispatch import READ_AHEAD_PER_WORKER
from pytest_poolrun.pool import PoolHooks, PoolTerminatedError, ReceiveError
from pytest_poolrun.workerset import WorkerSet

# A bound on waits that must not happen: reaching it fails the test instead of hanging it.
NO_HANG = 10.0
# A task that would run far longer than any test; only ever ended by a kill.
LONG_TASK = 60.0
# A timeout short enough to keep the tests quick.
SHORT_TIMEOUT = 0.2
# A spawned worker needs well over this to start (a new interpreter importing this package),
# while the task given this timeout takes microseconds.
SHORTER_THAN_A_SPAWN = 0.05
# Long enough for a task to start a child process and report it, even on a busy machine.
CHILD_TIMEOUT = 1.0


# --------------------------------------------------------------------------- task functions


def square(x: int) -> int:
    return x * x


def die_on_three(x: int, how: str) -> int:
    if x == 3:
        if how == "exit":
            os._exit(3)
        elif how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        else:
            faulthandler.disable()  # no fault report on the terminal: the crash is the point
            ctypes.string_at(0)  # reads address 0: SIGSEGV
    return x


def report_pid_then_wait(fifo: str) -> None:
    with open(fifo, "w") as pipe:
        pipe.write(str(os.getpid()))
    time.sleep(LONG_TASK)


def start_child_then_wait() -> None:
    child = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({LONG_TASK})"])
    poolworker.emit(child.pid)
    child.wait()


def sleep_on_three(x: int) -> int:
    if x == 3:
        time.sleep(LONG_TASK)
    return x


class Odd(Exception):
    """An exception whose ``__init__`` takes other arguments than the ``args`` it stores."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


def raise_odd() -> None:
    raise Odd(7, "odd")


def return_lock() -> object:
    return threading.Lock()


def return_worker_only_object() -> object:
    """An object of a module that exists only in the worker: it pickles, but not back here."""
    module = types.ModuleType("only_in_the_worker")
    exec("class Thing:\n    pass", module.__dict__)
    sys.modules[module.__name__] = module
    return module.Thing()


def identity(x: Any) -> Any:
    return x


def start_processes() -> list[Any]:
    """Use multiprocessing, subprocess and a nested Pool from inside a worker."""
    child = multiprocessing.get_context("fork").Process(target=os.getpid)
    child.start()
    child.join()
    echoed = subprocess.run(
        [sys.executable, "-c", "print('hi')"], capture_output=True, text=True, check=True
    ).stdout.strip()
    with Pool(2) as nested:
        squares = nested.map(square, range(4))
    return [child.exitcode, echoed, squares]


def parent_pid(_: object = None) -> int:
    return os.getppid()


# --------------------------------------------------------------------------------- helpers


@pytest.fixture
def pool() -> Iterator[Pool]:
    with Pool(2) as made:
        yield made


def wait_for_exit(pid: int) -> None:
    """Wait until process ``pid`` (not necessarily our child) has ended."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        readable, _, _ = select.select([fd], [], [], NO_HANG)
        assert readable, f"process {pid} is still running"
    finally:
        os.close(fd)


def read_fifo(path: Path) -> int:
    with open(path) as pipe:  # blocks until the task opens it for writing
        return int(pipe.read())


def run_script(code: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=NO_HANG * 3,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ------------------------------------------------------------------- a worker that dies


@pytest.mark.parametrize(
    ("how", "described"),
    [("exit", "exit code 3"), ("sigkill", r"signal 9 \(SIGKILL\)"), ("segv", r"signal 11")],
)
def test_dead_worker_fails_only_its_task_and_is_replaced(
    pool: Pool, how: str, described: str
) -> None:
    results = [pool.apply_async(die_on_three, (x, how)) for x in range(8)]
    for x, result in enumerate(results):
        if x == 3:
            with pytest.raises(WorkerLostError, match=described):
                result.get(NO_HANG)
        else:
            assert result.get(NO_HANG) == x
    assert pool.map(square, range(4)) == [0, 1, 4, 9]
    assert len(pool.worker_pids()) == 2


def test_worker_killed_mid_map_fails_the_map_instead_of_hanging(pool: Pool) -> None:
    with pytest.raises(WorkerLostError, match="SIGKILL"):
        pool.starmap_async(die_on_three, [(x, "sigkill") for x in range(8)], 1).get(NO_HANG)


def test_worker_killed_from_outside_fails_its_task(pool: Pool, tmp_path: Path) -> None:
    """As the kernel's OOM killer does it: SIGKILL from another process."""
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    result = pool.apply_async(report_pid_then_wait, (str(fifo),))
    os.kill(read_fifo(fifo), signal.SIGKILL)
    with pytest.raises(WorkerLostError, match=r"signal 9 \(SIGKILL\)"):
        result.get(NO_HANG)
    assert pool.apply(square, (5,)) == 25


def test_results_of_a_terminated_pool_fail_instead_of_hanging(pool: Pool) -> None:
    result = pool.apply_async(time.sleep, (LONG_TASK,))
    pool.terminate()
    with pytest.raises(PoolTerminatedError):
        result.get()


def test_callback_error_is_raised_by_the_waiting_call(pool: Pool) -> None:
    def callback(value: int) -> None:
        raise RuntimeError(f"callback failed on {value}")

    result = pool.apply_async(square, (3,), callback=callback)
    with pytest.raises(RuntimeError, match="callback failed on 9"):
        result.get(NO_HANG)
    assert result.get(NO_HANG) == 9
    assert pool.map(square, range(3)) == [0, 1, 4]


# ---------------------------------------------------------------------------- timeouts


def test_overdue_task_fails_with_timeout_and_its_worker_is_replaced(pool: Pool) -> None:
    before = set(pool.worker_pids())
    other = pool.apply_async(square, (5,))
    with pytest.raises(TaskTimeoutError, match="longer than its timeout"):
        pool.apply(time.sleep, (LONG_TASK,), timeout=SHORT_TIMEOUT)
    after = set(pool.worker_pids())
    assert len(after) == 2 and len(before & after) == 1
    assert other.get(NO_HANG) == 25
    with pytest.raises(TaskTimeoutError):
        pool.map(sleep_on_three, range(6), 1, timeout=SHORT_TIMEOUT)
    assert pool.map(square, range(3), timeout=NO_HANG) == [0, 1, 4]


def test_timeout_does_not_count_the_workers_start_up() -> None:
    # A builtin, so that the task itself imports nothing (this module imports pytest).
    with Pool(1, start_method="spawn") as pool:
        assert pool.apply(pow, (3, 2), timeout=SHORTER_THAN_A_SPAWN) == 9


def test_timeout_kills_the_processes_the_task_started() -> None:
    children: list[int] = []
    with Pool(1, hooks=PoolHooks(on_event=lambda worker, pid: children.append(pid))) as pool:
        result = pool.apply_async(start_child_then_wait, timeout=CHILD_TIMEOUT)
        with pytest.raises(TaskTimeoutError):
            result.get(NO_HANG)
    assert len(children) == 1, "the task did not get to start its child before its timeout"
    wait_for_exit(children[0])


def test_timeouts_run_out_while_a_test_freezes_time(pool: Pool) -> None:
    """freezegun replaces the clocks a caller reads; the pool's deadlines still pass."""
    freezegun = pytest.importorskip("freezegun")
    with freezegun.freeze_time("2001-02-03 04:05:06"):
        waiting = pool.apply_async(time.sleep, (LONG_TASK,))
        with pytest.raises(multiprocessing.TimeoutError):
            waiting.get(SHORT_TIMEOUT)
        with pytest.raises(TaskTimeoutError):
            pool.apply(time.sleep, (LONG_TASK,), timeout=SHORT_TIMEOUT)


def test_a_tx_spec_that_names_no_gateway_is_refused_at_once() -> None:
    # Not a worker that "disconnects" at its first task, far from the typo.
    with pytest.raises(ValueError, match="'bogus' is not a gateway"):
        Pool(1, tx=["bogus"])


# --------------------------------------------------------------- what can be sent


def test_lambdas_closures_and_local_classes_can_be_sent(pool: Pool) -> None:
    offset = 10

    class Point:
        def __init__(self, x: int, y: int) -> None:
            self.x, self.y = x, y

    def shifted(x: int) -> int:
        return x + offset

    assert pool.map(lambda x: x * 2, range(3)) == [0, 2, 4]
    assert pool.map(shifted, range(3)) == [10, 11, 12]
    point = pool.apply(Point, (3, 4))
    assert isinstance(point, Point) and (point.x, point.y) == (3, 4)
    assert pool.apply(lambda p: p.x * p.y, (Point(2, 5),)) == 10


@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn"])
def test_main_script_objects_can_be_sent_with_every_start_method(start_method: str) -> None:
    """Defined in ``__main__`` after the pool started, and the interpreter's default differs."""
    other = "spawn" if start_method == "fork" else "fork"
    result = run_script(
        f"""
        import colorsys, json, multiprocessing, sys
        from pytest_poolrun import Pool
        multiprocessing.set_start_method({other!r})
        with Pool(2, start_method={start_method!r}) as pool:
            class Point:
                def __init__(self, x, y):
                    self.x, self.y = x, y
            def norm(point):
                return point.x ** 2 + point.y ** 2
            point = pool.apply(Point, (1, 2))
            print(json.dumps({{
                "start_method": pool.start_method,
                "norms": pool.map(norm, [Point(3, 4), Point(1, 1)]),
                "same_class": isinstance(point, Point),
                "memory_inherited": pool.apply(lambda: "colorsys" in sys.modules),
            }}))
        """
    )
    assert result == {
        "start_method": start_method,
        "norms": [25, 2],
        "same_class": True,
        "memory_inherited": start_method == "fork",
    }


def test_default_start_method_does_not_follow_the_interpreter() -> None:
    result = run_script(
        """
        import json, multiprocessing, os
        from pytest_poolrun import Pool
        multiprocessing.set_start_method("spawn")
        with Pool(1) as pool:
            print(json.dumps({
                "start_method": pool.start_method,
                "forked_by_us": pool.apply(os.getppid) == os.getpid(),
            }))
        """
    )
    assert result == {"start_method": "fork", "forked_by_us": True}
    with pytest.raises(TypeError):
        multiprocessing.Pool(1, start_method="fork")  # type: ignore[call-arg]


# ------------------------------------------------------------------------- exceptions


def test_exception_keeps_its_type_with_the_workers_traceback_as_cause(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        from pytest_poolrun import Pool

        def explode(x):
            raise KeyError(f"missing {x}")

        def test_remote():
            with Pool(1) as pool:
                pool.apply(explode, ("key",))
        """
    )
    result = pytester.runpytest_subprocess("-p", "pytest_poolrun")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*in explode*",
            '*raise KeyError(f"missing {x}")*',
            "*The above exception was the direct cause of the following exception*",
            "*KeyError: 'missing key'*",
        ]
    )


def test_exception_whose_init_differs_keeps_its_type(pool: Pool) -> None:
    with pytest.raises(Odd, match="7: odd") as info:
        pool.apply(raise_odd)
    assert info.value.code == 7
    assert "raise_odd" in str(info.value.__cause__)


def test_unpicklable_argument_is_named_with_its_type(pool: Pool) -> None:
    lock = threading.Lock()
    with pytest.raises(SendError, match=r"args\[1\]: .* of type lock"):
        pool.apply(identity, (1, lock))
    with pytest.raises(SendError, match=r"iterable\[4\]: .* of type lock"):
        pool.map(identity, [0, 1, 2, 3, lock], 2)
    assert pool.apply(square, (2,)) == 4


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_initargs_that_cannot_be_pickled_are_refused_at_construction(start_method: str) -> None:
    # Such a worker gets them pickled: the pickler's error comes before any worker starts.
    with pytest.raises(TypeError):
        Pool(1, identity, (threading.Lock(),), start_method=start_method)


class RefusesPickling:
    def __reduce__(self) -> Any:
        raise RuntimeError("this object refuses to be pickled")


def test_unpicklable_argument_keeps_the_picklers_error_as_cause(pool: Pool) -> None:
    with pytest.raises(SendError, match=r"iterable\[0\]: .* of type RefusesPickling") as info:
        pool.map(identity, [RefusesPickling()])
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "refuses to be pickled" in str(info.value.__cause__)


def test_unpicklable_result_is_named_with_its_type(pool: Pool) -> None:
    with pytest.raises(SendError, match=r"the result: .* of type lock"):
        pool.apply(return_lock)
    assert pool.apply(square, (2,)) == 4


def test_unpicklable_result_is_caught_as_multiprocessing_catches_it(pool: Pool) -> None:
    # Code written for multiprocessing.Pool catches its MaybeEncodingError; a map's result is
    # named by its input.
    with pytest.raises(multiprocessing.pool.MaybeEncodingError) as info:
        pool.map(lambda x: return_lock() if x == 3 else x, range(8), 2)
    assert str(info.value).startswith("cannot pickle the result for iterable[3]: <unlocked")
    assert "of type lock cannot be pickled" in str(info.value)
    assert "lock" in info.value.value
    assert "lock" in info.value.exc
    with pytest.raises(multiprocessing.pool.MaybeEncodingError, match=r"iterable\[6\]"):
        list(pool.imap(lambda x: return_lock() if x == 6 else x, range(8), 4))
    with pytest.raises(multiprocessing.pool.MaybeEncodingError, match=r"the result: "):
        pool.apply_async(return_lock).get(timeout=30)
    assert pool.apply(square, (2,)) == 4


def test_result_that_cannot_be_unpickled_here_fails_instead_of_hanging(pool: Pool) -> None:
    with pytest.raises(ReceiveError, match="No module named 'only_in_the_worker'"):
        pool.apply(return_worker_only_object)
    assert pool.apply(square, (2,)) == 4


def test_a_pool_inherited_through_a_fork_refuses_work(pool: Pool) -> None:
    assert pool.apply(square, (2,)) == 4
    child = os.fork()
    if child == 0:  # pragma: no cover (the forked copy of this test process)
        try:
            pool.apply(square, (3,))
        except RuntimeError as error:
            os._exit(0 if "through a fork" in str(error) else 1)
        os._exit(2)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert pool.apply(square, (4,)) == 16


# -------------------------------------------------------------- processes in workers


def test_tasks_may_start_processes_of_their_own(pool: Pool) -> None:
    assert pool.apply(start_processes) == [0, "hi", [0, 1, 4, 9]]


# ------------------------------------------------------------------------------ threads


def test_never_forks_while_threads_run_and_says_so() -> None:
    """With a thread running, a fork pool's workers come from a forkserver, not this process.

    (Without threads they are forked by this process: see the start method test above.)  The
    pool reports the method it really used and warns once, naming the thread.
    """
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="the-other-thread")
    thread.start()
    try:
        with pytest.warns(RuntimeWarning, match="forkserver.*the-other-thread") as warned:
            with Pool(1, maxtasksperchild=1) as pool:
                parents = {pool.apply(parent_pid) for _ in range(2)}
                assert pool.start_method == "forkserver"
    finally:
        stop.set()
        thread.join()
    assert os.getpid() not in parents
    assert len([w for w in warned if issubclass(w.category, RuntimeWarning)]) == 1


def test_a_test_module_holding_an_unclosed_pool_lets_pytest_exit(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        from pytest_poolrun import Pool

        pool = Pool(2)

        def test_abs():
            assert pool.apply(abs, (-3,)) == 3
        """
    )
    result = pytester.runpytest_subprocess(timeout=NO_HANG * 3)
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("leaks", ["warn", "ignore"])
def test_pools_that_tests_leave_open_let_a_pooled_run_end(
    pytester: pytest.Pytester, leaks: str
) -> None:
    # With the leak check off, nothing kills what the tests left: each worker's own exit must
    # end those pools before multiprocessing waits for their workers.
    pytester.makepyfile(
        """
        import time
        from pytest_poolrun import Pool

        def square(x):
            return x * x

        def test_drops_a_pool():
            assert Pool(2).map(square, range(4)) == [0, 1, 4, 9]

        def test_closes_the_fixture_pool_with_a_task_running(pool):
            pool.apply_async(time.sleep, (60,))
            pool.close()

        def test_uses_the_fixture_pool(pool):
            assert pool.map(abs, [-1]) == [1]
        """
    )
    result = pytester.runpytest_subprocess(
        "--pool", "2", "--pool-leaks", leaks, timeout=NO_HANG * 3
    )
    assert result.parseoutcomes()["passed"] == 3


def test_threads_share_a_pool_without_a_helper_thread_and_callbacks_run_in_theirs() -> None:
    """Callbacks run in a caller's thread (the one waiting), never in one the pool started."""
    callback_threads: set[str] = set()
    with Pool(2) as pool:

        def use_the_pool(k: int) -> None:
            results = [
                pool.apply_async(
                    square,
                    (x,),
                    callback=lambda _: callback_threads.add(threading.current_thread().name),
                )
                for x in range(20)
            ]
            for result in results:
                result.get(NO_HANG)

        threads = [
            threading.Thread(target=use_the_pool, args=(k,), name=f"caller-{k}") for k in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(NO_HANG)
        assert threading.active_count() == 1
    assert callback_threads and callback_threads <= {f"caller-{k}" for k in range(3)}


def test_terminate_from_another_thread_ends_a_wait_in_progress(pool: Pool) -> None:
    outcome: list[BaseException] = []
    started = pool.apply_async(time.sleep, (LONG_TASK,))

    def wait() -> None:
        try:
            started.get(NO_HANG * 3)
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()  # waiting already or not: its get() ends with the same error
    pool.terminate()
    waiter.join(NO_HANG)
    assert [type(error) for error in outcome] == [PoolTerminatedError]


def test_a_callback_that_waits_on_the_pool_is_refused(pool: Pool) -> None:
    """It would wait for itself: it runs in the thread that drives the pool's I/O."""
    never = pool.apply_async(time.sleep, (LONG_TASK,))

    def waits(_: object) -> None:
        never.get(NO_HANG)

    result = pool.apply_async(square, (3,), callback=waits)
    with pytest.raises(RuntimeError, match="callback waited for a pool result"):
        result.wait(NO_HANG)
    assert result.get(NO_HANG) == 9


def test_imap_reads_ahead_of_its_caller_by_a_bounded_amount() -> None:
    produced = itertools.count()

    def endless() -> Iterator[int]:
        for x in itertools.count():
            next(produced)
            yield x

    with Pool(2) as pool:
        results = pool.imap(square, endless(), 5)
        taken = [next(results) for _ in range(5000)]
        assert taken == [x * x for x in range(5000)]
        read = next(produced)
        assert read - len(taken) <= 5 * (2 * READ_AHEAD_PER_WORKER + 1)
        pool.terminate()


def test_terminate_after_an_interrupted_reap_closes_no_descriptor_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C lands anywhere in the caller's thread, in the bookkeeping of a worker that has
    just exited too; ``terminate`` then finishes that worker's reap.  The descriptor that
    watched the worker's exit is closed once: a second close of its number would close whatever
    was opened with that number since (here a file the caller opened; in the test runner, an
    INTERNALERROR instead of the interrupted run's summary)."""
    pool = Pool(1)
    opened: list[int] = []
    try:
        assert pool.apply(os.getpid) > 0
        manager: Any = pool._manager  # the interrupt is placed at one exact point of its reap
        worker = next(iter(manager.workers))
        exit_fd = worker.exit_fd
        WorkerSet.kill(worker)

        def interrupted(self: WorkerSet, worker: Any) -> bool:
            raise KeyboardInterrupt

        with monkeypatch.context() as patched:
            # The reap's last step, after the worker's descriptors were closed.
            patched.setattr(WorkerSet, "is_current", interrupted)
            with pytest.raises(KeyboardInterrupt):
                manager.workers.reap(worker)
        while exit_fd not in opened and len(opened) < 8:
            opened.append(os.open(os.devnull, os.O_RDONLY))
    finally:
        pool.terminate()
    for fd in opened:
        os.fstat(fd)  # still open: raises if terminate closed it
        os.close(fd)
