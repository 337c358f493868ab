"""The errors a ``Pool`` task can fail with, each with structured attributes besides its text.

Data flow::

    workerset (a worker ended) ─┐
    dispatch (a deadline passed) ├─▶ one of these ─▶ AsyncResult.get() raises it in the caller
    Pool (terminate, reset)     ─┘                    (or error_callback receives it)

``.worker`` names the worker involved (``None`` where no single worker is), ``.exitcode`` is
its exit status as ``multiprocessing`` reports it (negative: the signal), ``.timeout`` the
timeout that ran out.  They are keyword arguments with defaults, so that an error rebuilds from its
message when unpickled (pickle then restores the attributes too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_poolrun import codec

if TYPE_CHECKING:
    from pytest_poolrun.workerset import WorkerExit


class WorkerLostError(RuntimeError):
    """The worker running a task died (signal, ``os._exit``, OOM killer) before it finished."""

    def __init__(
        self, message: str, *, worker: str | None = None, exitcode: int | None = None
    ) -> None:
        super().__init__(message)
        self.worker = worker
        self.exitcode = exitcode

    @classmethod
    def died(cls, ended: WorkerExit) -> WorkerLostError:
        """The error of the task that worker ``ended`` was running when it died."""
        return cls(
            f"worker {ended.name} (pid {ended.pid}) died while running this task: "
            f"{ended.describe()}; it was replaced.  Look for os._exit, a crash in native "
            "code, or memory use (the OOM killer sends SIGKILL)",
            worker=ended.name,
            exitcode=ended.exitcode,
        )


class PoolExhaustedError(WorkerLostError):
    """No worker is left: more died than ``max_restarts`` allows, so queued tasks cannot run."""


class TaskTimeoutError(TimeoutError):
    """A task ran longer than its ``timeout``; its worker was killed and replaced."""

    def __init__(self, message: str, *, worker: str | None = None, timeout: float = 0.0) -> None:
        super().__init__(message)
        self.worker, self.timeout = worker, timeout

    @classmethod
    def killed(cls, worker: str, timeout: float) -> TaskTimeoutError:
        return cls(
            f"task ran longer than its timeout of {timeout:g} s; worker {worker} was killed "
            "and replaced.  Raise the timeout if the task needs longer",
            worker=worker,
            timeout=timeout,
        )


class PoolTerminatedError(RuntimeError):
    """The pool was terminated before the task finished."""

    @classmethod
    def by_terminate(cls) -> PoolTerminatedError:
        """The error of the tasks unfinished when ``Pool.terminate`` was called."""
        return cls(
            "the pool was terminated before this task finished; call close() and join() "
            "instead of terminate() to let submitted tasks finish"
        )


class TaskCancelledError(RuntimeError):
    """The task was still queued when ``cancel_queued`` (or ``reset``) was called."""

    @classmethod
    def before_start(cls) -> TaskCancelledError:
        """The error of the tasks ``Pool.cancel_queued`` cancelled."""
        return cls("the task was cancelled before it started")

    @classmethod
    def by_reset(cls) -> TaskCancelledError:
        """The error of the tasks unfinished when ``Pool.reset`` was called."""
        return cls(
            "the task was cancelled: the pool was reset (as the pool fixture does after each "
            "test) before it finished; wait for a task's result before the test ends"
        )


RemoteTraceback = codec.RemoteTraceback
SendError = codec.SendError
ReceiveError = codec.ReceiveError
