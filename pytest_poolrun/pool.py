"""A process pool with ``multiprocessing.Pool``'s API that never hangs on a dead worker.

Data flow (N worker processes; no helper thread: the I/O runs in the caller threads that wait)::

    caller ── apply_async / map_async / imap ──▶ Pool (this facade; poolargs.py: checks,
      (any thread)                                 │ pickles the function)
                                                   │ Manager.submit ─▶ queue of Jobs, under the
                                                   │ pool's lock; imap: a Feeder read lazily
                                                   │ (feeding.py)
                                                   ▼ Manager.dispatch: a few ms of work per worker
    ControllerEnd.send(Task) ── socket pair ──▶ worker_main (poolworker.py) runs it
                                                   │
    Manager.pump ◀── Ready / Result / Event / Retiring / SetupFailed ──┘  (eventloop.py)
      │  (run by one waiting caller thread at a time, for all of them: waiting.py)
      │  Result ─▶ the Job's on_result ─▶ AsyncResult / MapResult / IMapIterator (results.py)
      │  Event  ─▶ hooks.on_event(worker name, payload)
      │  worker exited ─▶ WorkerSet.reap ─▶ WorkerExit ─▶ hooks.on_worker_exit; its running job
      │                   fails with WorkerLostError, its unstarted jobs go back to the queue,
      │                   a replacement starts (workerset.py: the restart policy)
      └  a running job past its timeout ─▶ its worker is killed, the job fails with TaskTimeoutError

The parts: ``poolargs`` (the arguments checked, the function pickled, map chunk sizes),
``workerset`` (processes, start methods, exit records), ``dispatch`` (jobs, prefetch, deadlines,
how much of an imap input to read ahead), ``feeding`` (reading the imap inputs into jobs),
``eventloop`` (selector, writes, wake-ups, callback rules), ``manager`` (the steps that keep them
consistent, why there are no helper threads), ``waiting`` (the lock, and how several caller
threads share the pool's I/O), ``results`` (what the caller holds), ``poolerrors``.

**Threads.**  The pool is usable from any thread, concurrently; one caller thread at a time
drives the I/O, and callbacks run in that thread (``waiting`` describes the design).  A copy of
the pool reaching a child through a fork refuses work; so the test runner spawns its workers
while a pool this process made is running (``running_pool_sites``: a test module's, from its
import at collection).

**Exit.**  Pools still running at interpreter exit are terminated by a ``multiprocessing``
finalizer, which runs before ``multiprocessing`` joins its child processes (the workers are not
daemons, so that join would otherwise wait for them forever); so are the workers of pools
dropped without ``terminate`` that a reference cycle still held.  Each process that creates a
pool gets that finalizer, a forked or spawned child included.
"""

from __future__ import annotations

import atexit
import multiprocessing.util
import sys
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from multiprocessing.pool import RUN
from os import getpid  # bound once: a test may patch os.getpid
from typing import Any, TypeVar

from pytest_poolrun import txspecs, workerset
from pytest_poolrun.dispatch import Dispatcher, Feeder
from pytest_poolrun.manager import Manager
from pytest_poolrun.manager import PoolHooks as PoolHooks
from pytest_poolrun.poolargs import (
    check_imap_chunksize,
    dump_function,
    map_chunks,
    resolve_start_method,
    worker_slots,
)

# Re-exported: ``pytest_poolrun.pool`` is where users and the runner find the pool's names.
from pytest_poolrun.poolerrors import PoolExhaustedError as PoolExhaustedError
from pytest_poolrun.poolerrors import PoolTerminatedError as PoolTerminatedError
from pytest_poolrun.poolerrors import ReceiveError as ReceiveError
from pytest_poolrun.poolerrors import RemoteTraceback as RemoteTraceback
from pytest_poolrun.poolerrors import SendError as SendError
from pytest_poolrun.poolerrors import TaskCancelledError as TaskCancelledError
from pytest_poolrun.poolerrors import TaskTimeoutError as TaskTimeoutError
from pytest_poolrun.poolerrors import WorkerLostError as WorkerLostError
from pytest_poolrun.poolworker import APPLY, MAP, STARMAP, WorkerSetup, package_modules
from pytest_poolrun.results import AsyncResult as AsyncResult
from pytest_poolrun.results import IMapIterator as IMapIterator
from pytest_poolrun.results import MapResult as MapResult
from pytest_poolrun.workerset import LiveWorker, WorkerSet
from pytest_poolrun.workerset import WorkerExit as WorkerExit
from pytest_poolrun.workerset import available_cpus as available_cpus
from pytest_poolrun.workerset import default_start_method as default_start_method

T = TypeVar("T")

_live_pools: weakref.WeakSet[Pool] = weakref.WeakSet()
workerset.after_fork_in_child.append(_live_pools.clear)


class Pool:
    """A pool of worker processes with the API of ``multiprocessing.Pool``.

    Beyond it: a dead worker fails only the task it was running (``WorkerLostError``) and is
    replaced; ``timeout=`` on every call kills the worker of an overdue task (one ``apply``, or
    one chunk of a map) and fails it with ``TaskTimeoutError``; lambdas and closures can be sent;
    remote exceptions keep their type with the worker's traceback as their cause; workers may
    start processes of their own; ``start_method`` is an argument (see ``workerset``).

    ``context`` is a ``multiprocessing`` context, as for ``multiprocessing.Pool``: its ``Process``
    starts the local workers and its start method is the pool's.

    Further parameters: ``hooks`` (``PoolHooks``: events, worker exits, a finalizer);
    ``name_prefix`` names the workers (prefix + slot); ``max_restarts`` bounds the replacements
    of dead workers; ``in_flight`` fixes how many tasks a worker holds at once (for tasks of very
    uneven length, where a duration estimate would mislead); ``tx`` adds workers behind execnet
    gateways.  The README's "Pool parameters" section is their reference.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        start_method: str | None = None,
        hooks: PoolHooks | None = None,
        name_prefix: str = "pool",
        max_restarts: int | None = None,
        tx: Sequence[str] = (),
        in_flight: int | None = None,
    ) -> None:
        for spec in tx:
            problem = txspecs.problem(spec)
            if problem is not None:
                raise ValueError(f"tx: {problem}")
        specs = txspecs.expand(list(tx))
        slot_specs = worker_slots(processes, specs, initializer, maxtasksperchild)
        method = resolve_start_method(start_method, context)
        hooks = hooks or PoolHooks()
        setup = WorkerSetup(initializer, tuple(initargs), hooks.finalizer)
        # What cannot be pickled fails here, not as a worker starts.
        if specs:
            setup.pickled(same_script=False)
        if method != "fork" and None in slot_specs:
            setup.pickled(same_script=True)
        workers = WorkerSet(
            slot_specs, method, setup, maxtasksperchild, name_prefix, max_restarts, context
        )
        # Functions travel by value when some worker may not import this process's modules.
        self._remote = bool(specs)
        dispatcher = Dispatcher(in_flight, workers.main_at_workers)
        self._manager = Manager(workers, dispatcher, hooks)
        package_modules()  # listed here, before the workers fork (see there)
        try:
            started = workers.start_all()
        except BaseException:
            self._manager.loop.close()
            raise
        self._manager.adopt(started)
        # Where the caller made it, for the test runner's header (see running_pool_sites).
        caller = sys._getframe(1)
        self._made_at = (caller.f_code.co_filename, caller.f_lineno)
        _live_pools.add(self)
        _ensure_exit_hook()

    # ---------------------------------------------------------------------------- the workers

    @property
    def processes(self) -> int:
        return self._manager.workers.slots

    @property
    def start_method(self) -> str:
        """How the latest worker was started: ``"fork"`` unless a thread forced the fallback."""
        return self._manager.workers.method

    @property
    def restarts(self) -> int:
        """How many workers died unasked and counted against ``max_restarts``."""
        return self._manager.workers.restarts

    @property
    def accepting(self) -> bool:
        """Whether tasks may be submitted: neither ``close`` nor ``terminate`` was called."""
        return self._manager.state == RUN

    @property
    def _state(self) -> str:
        """``multiprocessing.pool``'s ``RUN``, ``CLOSE`` or ``TERMINATE``, where its users look."""
        return self._manager.state

    @_state.setter
    def _state(self, state: str) -> None:
        self._manager.state = state

    def kill(self, name: str) -> None:
        """Kill worker ``name`` with its process group; the pool then handles it as crashed."""
        worker = self._manager.workers.named(name)
        if worker is not None:
            WorkerSet.kill(worker)

    def live_workers(self) -> list[LiveWorker]:
        """The live workers: name, slot, local pid, and whether an execnet gateway is between."""
        return [worker.view() for worker in self._manager.workers]

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for tests and diagnostics)."""
        return [worker.pid for worker in self._manager.workers]

    # ------------------------------------------------------------------------ submitting work

    def apply_async(
        self,
        func: Callable[..., T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
        callback: Callable[[T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        timeout: float | None = None,
        ahead: bool = False,
    ) -> AsyncResult[T]:
        """``multiprocessing.Pool.apply_async``; ``ahead``: queued before the tasks already
        waiting (work handed back that should run before what was queued after it)."""
        self._manager.check_submission(timeout)
        result: AsyncResult[T] = AsyncResult(self._manager.token, callback, error_callback)
        function = dump_function(func, self._remote, self._manager.workers.main_at_workers())
        args = tuple(args)
        kwargs = kwds or {}
        self._manager.submit(
            timeout,
            lambda dispatcher: dispatcher.enqueue(
                function, APPLY, args, kwargs, result.on_result, timeout, ahead=ahead
            ),
        )
        return result

    def apply(
        self,
        func: Callable[..., T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> T:
        return self.apply_async(func, args, kwds, timeout=timeout).get()

    def _map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        mode: int,
        chunksize: int | None,
        callback: Callable[[list[Any]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        timeout: float | None,
    ) -> MapResult[Any]:
        self._manager.check_submission(timeout)
        items = list(iterable)
        size, chunks = map_chunks(len(items), chunksize, self.processes)
        result: MapResult[Any] = MapResult(self._manager.token, chunks, callback, error_callback)
        function = dump_function(func, self._remote, self._manager.workers.main_at_workers())
        self._manager.submit(
            timeout,
            lambda dispatcher: dispatcher.enqueue_chunks(
                function, mode, items, size, result.chunk_done, timeout
            ),
        )
        return result

    def map_async(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[list[T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        timeout: float | None = None,
    ) -> MapResult[T]:
        return self._map_async(func, iterable, MAP, chunksize, callback, error_callback, timeout)

    def map(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        timeout: float | None = None,
    ) -> list[T]:
        return self.map_async(func, iterable, chunksize, timeout=timeout).get()

    def starmap_async(
        self,
        func: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        timeout: float | None = None,
    ) -> MapResult[T]:
        args = [tuple(arg) for arg in iterable]
        return self._map_async(func, args, STARMAP, chunksize, callback, error_callback, timeout)

    def starmap(
        self,
        func: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        timeout: float | None = None,
    ) -> list[T]:
        return self.starmap_async(func, iterable, chunksize, timeout=timeout).get()

    def imap(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int = 1,
        *,
        timeout: float | None = None,
    ) -> IMapIterator[T]:
        return self._imap(func, iterable, chunksize, timeout, ordered=True)

    def imap_unordered(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int = 1,
        *,
        timeout: float | None = None,
    ) -> IMapIterator[T]:
        return self._imap(func, iterable, chunksize, timeout, ordered=False)

    def _imap(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int,
        timeout: float | None,
        ordered: bool,
    ) -> IMapIterator[T]:
        check_imap_chunksize(chunksize)
        self._manager.check_submission(timeout)
        iterator: IMapIterator[T] = IMapIterator(self._manager.token, ordered)
        function = dump_function(func, self._remote, self._manager.workers.main_at_workers())
        feeder = Feeder(iter(iterable), chunksize, function, MAP, timeout, iterator)
        self._manager.add_feeder(feeder)
        return iterator

    def take_events(self) -> None:
        """Hand the events the workers have sent to ``on_event`` now, without waiting and
        without handling anything else (an extension for the test runner, which reads what its
        workers said while Ctrl-C stopped them, and then terminates the pool)."""
        self._manager.take_events()

    # ----------------------------------------------------------------------------- lifecycle

    def cancel_queued(self) -> None:
        """Fail every task not yet sent to a worker with ``TaskCancelledError``."""
        self._manager.cancel_queued(TaskCancelledError.before_start())

    def shutdown_idle(self) -> None:
        """Let each worker that is idle while no task waits run the finalizer and exit.

        Unlike ``close``, tasks are still accepted afterwards; they start new workers as needed.
        ``join`` then waits until every task is done and every worker has exited.
        """
        self._manager.retire_when_idle()

    def close(self) -> None:
        """Accept no more tasks; workers exit once the submitted ones are done."""
        self._manager.close()

    def reset(self) -> None:
        """Make the pool idle and ready again, with all its workers, without a new start-up.

        Queued tasks are cancelled; workers busy with a task are killed (with the processes
        their tasks started) and replaced.  Every unfinished task fails with
        ``TaskCancelledError``.  The ``pool`` fixture calls this between tests.
        """
        self._manager.reset(TaskCancelledError.by_reset())

    def terminate(self) -> None:
        """Stop every worker now; unfinished tasks fail with ``PoolTerminatedError``."""
        _live_pools.discard(self)
        self._manager.terminate(PoolTerminatedError.by_terminate())

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the workers to exit; call ``close`` or ``terminate`` first.

        With a ``timeout``, return False if they are still running when it has passed (an
        extension: the caller can do periodic work between waits).
        """
        if not (self._manager.closing or self._manager.retire_idle):
            raise ValueError("Pool is still running")
        if not self._manager.join(timeout):
            return False
        _live_pools.discard(self)
        return True

    def __reduce__(self) -> tuple[Any, ...]:
        # As multiprocessing's: a pool lives in the process that made it.
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __enter__(self) -> Pool:
        if self._manager.state != RUN:
            raise ValueError("Pool not running: it was closed or terminated; create a new Pool")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()

    def __del__(self) -> None:
        # Only a warning, as multiprocessing.Pool gives: the workers of a dropped pool are
        # killed by workerset's finalizers, which run no Python code of the pool.
        manager = getattr(self, "_manager", None)
        if manager is not None and manager.state == RUN and getpid() == manager.token.owner_pid:
            warnings.warn(
                f"unclosed running multiprocessing pool {self!r}: its workers are killed; "
                "use the pool in a with block, or call close() and join() (or terminate())",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )

    def __repr__(self) -> str:
        manager = self._manager
        state = "terminated" if manager.terminated else "closing" if manager.closing else "running"
        return f"<Pool state={state} processes={self.processes} start_method={self.start_method}>"


def running_pool_sites() -> list[tuple[str, int]]:
    """Where (file, line) each of this process's pools was made that neither ``terminate`` nor a
    finished ``join`` has ended: a forked child would hold copies of them that refuse work."""
    return [pool._made_at for pool in list(_live_pools)]


def _terminate_live_pools() -> None:
    for pool in list(_live_pools):
        pool.terminate()
    workerset.kill_dropped_workers()


# At interpreter exit, multiprocessing's own handler joins every non-daemon child process, and
# the workers are not daemons (their tasks may start processes), so the pools must be stopped
# before that join.  A finalizer with a priority runs at the start of that very handler, whatever
# the order of imports; the plain atexit handler covers an exit that skips multiprocessing's
# (it is registered after it, so it runs before it as well).
EXIT_PRIORITY = 100
# The process whose multiprocessing exit handler has that finalizer.  A child process needs its
# own: a finalizer runs only in the process that made it, and multiprocessing's children (and
# the test runner's forked workers, plainfork) start with none at all.  Without it a pool
# created there and left running made the child's exit wait for the pool's workers forever.
_exit_hook_pid: int | None = None


def _ensure_exit_hook() -> None:
    global _exit_hook_pid
    if _exit_hook_pid != getpid():
        multiprocessing.util.Finalize(None, _terminate_live_pools, exitpriority=EXIT_PRIORITY)
        _exit_hook_pid = getpid()


_ensure_exit_hook()
atexit.register(_terminate_live_pools)
