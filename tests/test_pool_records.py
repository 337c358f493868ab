"""What the pool tells its users besides results: exit records and errors with attributes."""

from __future__ import annotations

import os
import pickle
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_poolrun import Pool, PoolHooks, TaskTimeoutError, WorkerExit, WorkerLostError
from pytest_poolrun.gateway import REMOTE_LOST

# Long enough that only the pool's timeout ends the task.
LONG_TASK = 60.0


@pytest.mark.parametrize(
    ("exitcode", "remote", "description"),
    [
        (-signal.SIGSEGV, False, "signal 11 (SIGSEGV)"),
        (3, False, "exit code 3"),
        (None, False, "an unknown cause"),
        (REMOTE_LOST, True, "its execnet gateway disconnected"),
        (REMOTE_LOST, False, f"exit code {REMOTE_LOST}"),
    ],
)
def test_an_exit_record_describes_itself(
    exitcode: int | None, remote: bool, description: str
) -> None:
    ended = WorkerExit("gw0", 0, 1234, exitcode, expected=False, remote=remote)
    assert ended.describe().startswith(description)
    assert ended.signal == (-exitcode if exitcode is not None and exitcode < 0 else None)


def test_a_crash_reaches_the_hook_as_a_record_and_the_task_as_an_error() -> None:
    exits: list[WorkerExit] = []
    with Pool(1, hooks=PoolHooks(on_worker_exit=exits.append), name_prefix="w") as pool:
        [worker] = pool.live_workers()
        with pytest.raises(WorkerLostError) as lost:
            pool.apply(os._exit, (3,))
    assert (lost.value.worker, lost.value.exitcode) == ("w0", 3)
    crash = next(ended for ended in exits if not ended.expected)
    assert (crash.name, crash.slot, crash.pid, crash.exitcode) == ("w0", 0, worker.pid, 3)
    assert crash.setup_error is None


def test_a_timeout_names_its_worker_and_its_limit() -> None:
    with Pool(1, name_prefix="w") as pool:
        with pytest.raises(TaskTimeoutError) as late:
            pool.apply(__import__("time").sleep, (LONG_TASK,), timeout=0.2)
    assert (late.value.worker, late.value.timeout) == ("w0", 0.2)


def test_errors_pickle_with_their_attributes() -> None:
    error = pickle.loads(pickle.dumps(WorkerLostError("gone", worker="w0", exitcode=-9)))
    assert (str(error), error.worker, error.exitcode) == ("gone", "w0", -9)


def test_a_failed_initializer_reaches_the_hook_as_the_records_setup_error() -> None:
    exits: list[WorkerExit] = []

    def broken() -> None:
        raise ValueError("no database")

    with Pool(1, broken, hooks=PoolHooks(on_worker_exit=exits.append)) as pool:
        with pytest.raises(WorkerLostError):
            pool.apply(abs, (-1,))
    [ended] = exits
    assert isinstance(ended.setup_error, ValueError) and "no database" in str(ended.setup_error)


def _when_started(_: object) -> float:
    return time.monotonic()  # CLOCK_MONOTONIC: the same clock in every process


def _wait_until_ended(pid: int) -> None:
    """Until ``pid`` (a child the pool has not reaped yet) has exited: a zombie."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return
        time.sleep(0.01)
    raise AssertionError(f"worker {pid} did not exit")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_replacement_takes_no_task_before_the_hook_heard_its_predecessor_ended() -> None:
    """What a program keeps per slot (the runner's results journal) is the ended worker's alone
    while on_worker_exit reads it: the slot's next worker waits for the hook to return."""
    heard: list[float] = []

    def on_worker_exit(ended: WorkerExit) -> None:
        time.sleep(0.3)  # a hook that takes its time, as the runner's replay of a journal may
        heard.append(time.monotonic())

    later: list[Any] = []
    with Pool(1, maxtasksperchild=1, hooks=PoolHooks(on_worker_exit=on_worker_exit)) as pool:
        [first_worker] = pool.worker_pids()
        # The result's callback hands out the next task while the pool is still busy with the
        # exit: the pool reads both at once, since nothing waits on it until the worker ended.
        first = pool.apply_async(
            _when_started,
            (None,),
            callback=lambda _: later.append(pool.apply_async(_when_started, (None,))),
        )
        _wait_until_ended(first_worker)
        first.get(timeout=10)
        started = later[0].get(timeout=10)

    assert heard and started >= heard[0]
