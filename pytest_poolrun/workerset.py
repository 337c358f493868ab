"""The pool's worker processes: one per slot, started, killed with their groups, reaped, replaced.

Data flow, in the pool's thread::

    WorkerSet.start(slot) ─▶ the context's Process (multiprocessing's, or the test runner's
                             plainfork) running worker_main, or gateway.bridge_main for an
                             execnet slot, with one end of a socket pair ─▶ WorkerProcess
    the event loop sees the exit descriptor (pidfd, or the sentinel) turn readable
    WorkerSet.reap(worker) ─▶ joins it, kills what is left of its process group,
                              counts a restart ─▶ WorkerExit (the record every pool user gets)
    WorkerSet.may_replace(exit) ─▶ the restart policy: the slot is not disabled, the limit holds

A worker leads its own process group, so killing the group also ends the processes its tasks
started.  A slot whose initializer failed is disabled: a replacement would fail the same way.

**A pool dropped without ``terminate``.**  Each live worker has a ``weakref.finalize`` on its
``WorkerSet`` that kills its process group and closes its exit descriptor when the set is
collected, through C functions only (libc's ``killpg`` and ``close``, the socket's ``close``),
detached once the worker is reaped (its pid may then be reused).  A set that a reference cycle
keeps alive past its pool is not collected before the interpreter exits: its finalizers run
then (``kill_dropped_workers``, from the pool's exit handler).  No Python code of the pool
runs while the pool is collected, so a Ctrl-C that arrives then is not swallowed as an exception
raised in a finalizer would be (``Exception ignored in ...``).  The killed workers are reaped by
``multiprocessing`` at its next start of a process, or at exit.

**Start methods.**  ``"fork"``, ``"forkserver"`` or ``"spawn"``.  The default is ``"fork"`` where
the platform forks safely (not macOS, whose system libraries may crash in a forked child) and
``"spawn"`` elsewhere, whatever the interpreter's own default.  A fork is only done while no
other thread runs but those ``forksafety`` knows to be idle; otherwise that worker is started
with ``"forkserver"`` instead and the pool's ``start_method`` says so; when that happens as the
pool is created, a ``RuntimeWarning`` names the threads.  (Not later: a replacement started
while the caller waits must not raise a warning turned into an error out of an unrelated call.)
The test runner makes the same decision once per run (``plugin._start_method``).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import socket
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

from pytest_poolrun.codec import OTHER_MAIN, MainAtReceiver, main_functions_and_classes
from pytest_poolrun.forksafety import fork_blockers, platform_forks_safely, quiet_fork
from pytest_poolrun.gateway import REMOTE_LOST, bridge_main
from pytest_poolrun.poolworker import WorkerInfo, WorkerSetup, worker_main
from pytest_poolrun.wire import ControllerEnd

if TYPE_CHECKING:
    from pytest_poolrun.dispatch import Job

START_METHODS = ("fork", "forkserver", "spawn")
# How a "fork" worker starts while another thread runs: forked by a server process that has no
# threads.  It costs the server's start (once) and its import of the main script, which must
# therefore keep its start-up code under ``if __name__ == "__main__":`` (as for "spawn").
FORK_FALLBACK = "forkserver"
# How long a worker that was asked to stop, or whose socket closed, may take to exit before it
# is killed.
STOP_GRACE = 2.0
# A reaped worker's exit descriptor, once closed (no descriptor has this number).
CLOSED_FD = -1


def default_start_method() -> str:
    return "fork" if platform_forks_safely() else "spawn"


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity), not merely the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def describe_exit(exitcode: int | None) -> str:
    """'signal 11 (SIGSEGV)' or 'exit code 3', for messages about a worker that ended."""
    if exitcode is None:
        return "an unknown cause"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        return f"signal {-exitcode} ({name})"
    return f"exit code {exitcode}"


@dataclass(frozen=True)
class WorkerExit:
    """A worker that ended, as every user of a ``Pool`` hears of it.

    ``exitcode`` is ``multiprocessing``'s: negative for a signal (see ``signal``).  ``expected``
    is true for an exit the pool asked for or caused (shutdown, ``maxtasksperchild``, a timeout,
    ``reset``), false for a crash.  ``setup_error`` is what the initializer raised (or why an
    execnet gateway could not be opened); the slot is then not refilled.
    """

    name: str
    slot: int
    pid: int
    exitcode: int | None
    expected: bool
    remote: bool = False
    setup_error: BaseException | None = None

    @property
    def signal(self) -> int | None:
        return -self.exitcode if self.exitcode is not None and self.exitcode < 0 else None

    def describe(self) -> str:
        """Why the worker ended, in words: a lost gateway reads as such, not as an exit code."""
        if self.remote and self.exitcode == REMOTE_LOST:
            return "its execnet gateway disconnected (the remote process ended or the link broke)"
        return describe_exit(self.exitcode)


class LiveWorker(NamedTuple):
    """A live worker as a pool's user sees it (``Pool.live_workers``)."""

    name: str
    slot: int
    pid: int  # of the local process: the worker itself, or its bridge to an execnet gateway
    remote: bool


class ChildProcess(Protocol):
    """What a worker's process object offers: ``multiprocessing.Process``'s, or
    ``plainfork.PlainForkProcess``'s."""

    @property
    def pid(self) -> int | None: ...
    @property
    def sentinel(self) -> int: ...
    @property
    def exitcode(self) -> int | None: ...
    def join(self, timeout: float | None = None) -> None: ...
    def terminate(self) -> None: ...


class _Launched(NamedTuple):
    """A worker process started, not yet watched (``WorkerSet.start_all``'s first phase)."""

    info: WorkerInfo
    process: ChildProcess
    sock: socket.socket
    remote: bool


def _fallback_warning(blockers: list[str]) -> str:
    return (
        f"pool workers are started with {FORK_FALLBACK!r} instead of 'fork' while another "
        f"thread runs in this process ({', '.join(blockers)}): forking a process with threads "
        "can deadlock the child.  The main script is then imported again, so its start-up code "
        "must be under if __name__ == '__main__'.  Create the pool before starting threads to "
        f"keep forking, or pass start_method={FORK_FALLBACK!r} (or 'spawn') to choose that"
    )


@dataclass(eq=False)
class WorkerProcess:
    """One live worker: its process, its socket end, and the jobs it holds (oldest runs)."""

    info: WorkerInfo
    process: ChildProcess
    end: ControllerEnd
    exit_fd: int
    remote: bool
    jobs: deque[Job] = field(default_factory=deque)
    # Whether the worker has started (sent ``Ready``).  Tasks go to started workers first, and
    # a task's timeout only counts from then: a worker's start-up is not the task's time.
    ready: bool = False
    # An exit asked for (maxtasksperchild, a timeout, reset): not a crash, and it is replaced.
    retiring: bool = False
    # Told to shut down: not replaced.
    stopping: bool = False
    # Started in a slot whose previous worker's exit ``on_worker_exit`` has not heard of yet:
    # no task until it has (see ``PoolHooks``).
    awaiting_predecessor: bool = False
    setup_error: BaseException | None = None
    # Kills and closes what is left if the WorkerSet is collected unreaped (see the docstring).
    finalizers: tuple[weakref.finalize[Any, Any], ...] = ()

    @property
    def takes_tasks(self) -> bool:
        return not (self.retiring or self.stopping or self.awaiting_predecessor)

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    @property
    def name(self) -> str:
        return self.info.name

    def view(self) -> LiveWorker:
        return LiveWorker(self.name, self.info.slot, self.pid, self.remote)


# C functions for the finalizers of dropped pools: they never raise, and run no Python code.
_LIBC = ctypes.CDLL(None)

# Controller ends of every pool's sockets in this process: a forked child closes them, so that
# only the controller holds them and a worker's exit is seen as end-of-file.
_controller_sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
# Every WorkerSet of this process (their finalizers are detached in a forked child).
_worker_sets: weakref.WeakSet[WorkerSet] = weakref.WeakSet()
# Called in a forked child after the sockets are closed (the pool forgets its live pools there).
after_fork_in_child: list[Callable[[], None]] = []


def _close_inherited_sockets() -> None:
    for sock in list(_controller_sockets):
        try:
            sock.close()
        except OSError:
            pass
    _controller_sockets.clear()
    # The copies of the parent's worker sets must not kill the parent's workers when collected.
    for finalizer in _live_sets_finalizers():
        finalizer.detach()
    _worker_sets.clear()
    for forget in after_fork_in_child:
        forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_sockets)


def kill_dropped_workers() -> None:
    """Kill the workers of every worker set of this process still alive: at exit, after the
    live pools were terminated, those are the sets of pools dropped without ``terminate`` that
    a reference cycle still holds (their finalizers have not run).  Their workers would
    otherwise wait for tasks forever, and ``multiprocessing``'s exit waits for them."""
    for finalizer in _live_sets_finalizers():
        # Not finalizer(): weakref's own exit handler may have run already, and a finalizer
        # called after it does nothing.
        detached = finalizer.detach()
        if detached is not None:
            _, function, args, kwargs = detached
            function(*args, **kwargs)


def _live_sets_finalizers() -> Iterator[weakref.finalize[Any, Any]]:
    """The finalizers of every worker of every worker set of this process still alive."""
    for workers in list(_worker_sets):
        for worker in workers:
            yield from worker.finalizers


class WorkerSet:
    """The workers by slot, and the policy for replacing them.

    ``slot_specs`` has one entry per slot: ``None`` for a local worker, an execnet spec for a
    worker behind a gateway.  ``setup`` holds the initializer, its arguments and the finalizer.
    ``context`` (optional) is the ``multiprocessing`` context whose ``Process`` starts workers.
    """

    def __init__(
        self,
        slot_specs: Sequence[str | None],
        method: str,
        setup: WorkerSetup,
        maxtasks: int | None,
        name_prefix: str,
        max_restarts: int | None,
        context: Any = None,
    ) -> None:
        self.slot_specs = list(slot_specs)
        self.requested_method = method
        # The method the latest worker was started with: the requested one, or FORK_FALLBACK.
        self.method = method
        # Whether every worker so far was forked from this process here (not started by
        # another method, not behind a gateway): each then has this process's main module as
        # it was at its fork.
        self.all_forked = method == "fork" and all(spec is None for spec in slot_specs)
        # What those workers find of the main script: its functions and classes as of now.
        self._main_at_fork = main_functions_and_classes() if self.all_forked else {}
        # A multiprocessing context whose Process starts the workers (None: the method's own).
        self._context = context
        self._fallback_warned = False
        self._fallback_notice: str | None = None
        self._setup = setup
        self._maxtasks = maxtasks
        self._name_prefix = name_prefix
        self.max_restarts = max_restarts
        self.restarts = 0
        self.disabled: set[int] = set()
        self._by_slot: dict[int, WorkerProcess] = {}
        _worker_sets.add(self)

    def __iter__(self) -> Iterator[WorkerProcess]:
        return iter(list(self._by_slot.values()))

    def __len__(self) -> int:
        return len(self._by_slot)

    def main_at_workers(self) -> MainAtReceiver:
        """What the workers have of the main script (``codec.dumps``'s ``main``): the module's
        functions and classes at the fork while every worker was forked here; the script,
        once a local worker was spawned or started by a forkserver; not even that with an
        execnet worker."""
        if self.all_forked:
            return MainAtReceiver(at_fork=self._main_at_fork)
        if any(spec is not None for spec in self.slot_specs):
            return OTHER_MAIN
        return MainAtReceiver(same_script=True)

    @property
    def slots(self) -> int:
        return len(self.slot_specs)

    def named(self, name: str) -> WorkerProcess | None:
        return next((worker for worker in self if worker.name == name), None)

    def is_current(self, worker: WorkerProcess) -> bool:
        return self._by_slot.get(worker.info.slot) is worker

    def start(self, slot: int) -> WorkerProcess:
        """Start a worker in ``slot`` (a replacement, or a slot refilled)."""
        return self._adopt(self._launch(slot))

    def start_all(self) -> list[WorkerProcess]:
        """Start a worker in every slot; if one cannot start, stop those started and raise.

        Every process is started before any is watched, so that a start that fails leaves
        nothing behind; they are stopped through their ``Process`` objects only.
        """
        launched: list[_Launched] = []
        try:
            for slot in range(self.slots):
                launched.append(self._launch(slot))
        except BaseException:
            for started in launched:
                started.process.terminate()
            for started in launched:
                started.process.join()
                started.sock.close()
            raise
        return [self._adopt(started) for started in launched]

    def take_fallback_warning(self) -> str | None:
        """The warning to give once: a local worker was not forked because a thread ran."""
        notice, self._fallback_notice = self._fallback_notice, None
        return notice

    def _launch(self, slot: int) -> _Launched:
        method, context = self.requested_method, self._context
        spec = self.slot_specs[slot]
        blockers = fork_blockers() if method == "fork" else []
        if blockers:
            method, context = FORK_FALLBACK, None
            if spec is None and not self._fallback_warned:
                # Said of workers that run tasks (an execnet bridge only relays them).
                self._fallback_warned = True
                self._fallback_notice = _fallback_warning(blockers)
        if context is None:
            context = multiprocessing.get_context(method)
        self.method = method
        self.all_forked = self.all_forked and method == "fork" and spec is None
        ours, theirs = socket.socketpair()
        info = WorkerInfo(f"{self._name_prefix}{slot}", slot)
        target: Callable[..., None] = worker_main if spec is None else bridge_main
        forked = method == "fork" and spec is None
        setup = self._setup.objects if forked else self._setup.pickled(same_script=spec is None)
        args: tuple[Any, ...] = (theirs, info, setup, self._maxtasks)
        _controller_sockets.add(ours)
        try:
            process = context.Process(
                target=target,
                args=args if spec is None else (*args, spec),
                name=info.name,
                daemon=False,
            )
            with quiet_fork() if method == "fork" else contextlib.nullcontext():
                process.start()
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return _Launched(info, process, ours, spec is not None)

    def _adopt(self, launched: _Launched) -> WorkerProcess:
        info, process, sock, remote = launched
        worker = WorkerProcess(info, process, ControllerEnd(sock), _exit_fd(process), remote)
        worker.finalizers = (
            weakref.finalize(self, _LIBC.killpg, worker.pid, signal.SIGKILL),
            weakref.finalize(self, sock.close),
            *(
                [weakref.finalize(self, _LIBC.close, worker.exit_fd)]
                if worker.exit_fd != process.sentinel
                else []
            ),
        )
        for finalizer in worker.finalizers:
            # At interpreter exit the pool's own handler terminates live pools (pool.py);
            # running these first would close descriptors that terminate then closes again.
            # (typeshed's finalize omits the attribute on older Pythons.)
            cast(Any, finalizer).atexit = False
        self._by_slot[info.slot] = worker
        return worker

    def empty_slots(self) -> list[int]:
        """Slots to refill while work waits (a worker that retired idle left its slot empty)."""
        if self.max_restarts is not None and self.restarts > self.max_restarts:
            return []
        return [
            slot
            for slot in range(self.slots)
            if slot not in self._by_slot and slot not in self.disabled
        ]

    def disable(self, worker: WorkerProcess, error: BaseException) -> None:
        """The worker's initializer failed: a replacement would fail the same way."""
        self.disabled.add(worker.info.slot)
        worker.setup_error = error

    def exhausted_reason(self) -> str:
        if len(self.disabled) == self.slots:
            return "every worker failed to start (each said why, above)"
        return f"{self.restarts} died, more than the limit of {self.max_restarts} restarts"

    @staticmethod
    def kill(worker: WorkerProcess) -> None:
        """Kill a worker and every process in its group (it leads its own group)."""
        for kill in (os.killpg, os.kill):
            try:
                kill(worker.pid, signal.SIGKILL)
                return
            except (ProcessLookupError, PermissionError):
                continue

    def reap(self, worker: WorkerProcess) -> WorkerExit:
        """Wait for an ended worker, end what is left of its group, and free its slot.

        The caller has stopped watching the worker's descriptors; they are closed here.
        """
        for finalizer in worker.finalizers:
            finalizer.detach()
        worker.process.join(STOP_GRACE)
        if worker.process.exitcode is None:
            self.kill(worker)
            worker.process.join()
        # Whatever else lived in the worker's process group goes with it.
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        worker.end.close()
        # Closed once: Ctrl-C lands anywhere in the controller, in a reap too, and the pool's
        # terminate then reaps the worker again.  A second close of the number would close
        # whatever descriptor was opened with it since.
        exit_fd, worker.exit_fd = worker.exit_fd, CLOSED_FD
        if exit_fd not in (CLOSED_FD, worker.process.sentinel):
            os.close(exit_fd)
        if self.is_current(worker):
            del self._by_slot[worker.info.slot]
        # A local worker told to stop exits with 0 once its finalizer is done; one that dies in
        # the finalizer (running its held item) crashed, and counts against max_restarts.  A
        # bridge exits with REMOTE_LOST whenever its gateway closes, after Shutdown too.
        expected = worker.retiring or (
            worker.stopping and (worker.remote or worker.process.exitcode == 0)
        )
        if not expected and worker.info.slot not in self.disabled:
            self.restarts += 1
        return WorkerExit(
            worker.name,
            worker.info.slot,
            worker.pid,
            worker.process.exitcode,
            expected,
            worker.remote,
            worker.setup_error,
        )

    def may_replace(self, worker: WorkerProcess, ended: WorkerExit) -> bool:
        """The restart policy: not a disabled slot, not told to stop, within ``max_restarts``."""
        if worker.info.slot in self.disabled or worker.stopping:
            return False
        within_limit = self.max_restarts is None or self.restarts <= self.max_restarts
        return ended.expected or within_limit


def _exit_fd(process: ChildProcess) -> int:
    """A descriptor that becomes readable when the process exits.

    A pidfd sees the exit even when the worker's own children still hold its sentinel pipe open;
    the sentinel serves where pidfds are missing.
    """
    assert process.pid is not None
    if hasattr(os, "pidfd_open"):
        try:
            return os.pidfd_open(process.pid)
        except OSError:
            pass
    return process.sentinel
