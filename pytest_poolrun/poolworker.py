"""Inside a pool worker process: receive tasks, run them, send back their results.

Data flow, all in the worker's single thread::

    WorkerEnd.recv() ─▶ Task ─▶ decode function and arguments ─▶ call ─▶ Result ─▶ WorkerEnd.send()
                                                         │
                                        emit(payload) ───┴─▶ Event ─▶ WorkerEnd.send()

The worker stops on ``Shutdown`` (after running the pool's finalizer), when the controller hangs
up, after ``maxtasksperchild`` tasks, or after a task raised a ``BaseException`` that is not an
``Exception`` (``SystemExit``, ``KeyboardInterrupt``): such a task reports its error first, then
the worker exits, because the code it ran meant to stop the process.  The finalizer ends it the
same quiet way when it raises one of those.

A worker puts itself in its own process group, so the terminal's Ctrl-C reaches only the
controller (which then stops the workers) and the controller can stop a worker together with any
process the worker's tasks started.  It does not ignore SIGINT: the processes its tests start
would inherit that, and a test that interrupts its own child process would hang.  On Linux it
also asks the kernel to kill it when the controller dies.
"""

from __future__ import annotations

import ctypes  # imported here, not in the worker: a forked worker then starts sooner
import os
import pickle
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from pytest_poolrun import clock, codec
from pytest_poolrun.wire import (
    Event,
    Ready,
    Result,
    Retiring,
    SetupFailed,
    Shutdown,
    Task,
    ToController,
    ToWorker,
    WorkerEnd,
)

SetupObjects = tuple[
    "Callable[..., object] | None", "tuple[Any, ...]", "Callable[[], object] | None"
]
APPLY, MAP, STARMAP = 0, 1, 2
# Functions are sent as blobs; a map sends the same blob with every chunk, so keep a few decoded.
FUNCTION_CACHE_SIZE = 8
PR_SET_PDEATHSIG = 1


class WorkerSetup:
    """What a worker runs first and last: the pool's initializer with its arguments, and its
    finalizer.  A forked worker inherits the objects themselves; a worker started any other way
    gets them pickled, once for all such workers (``pickled``).  Not pickling for a fork keeps
    it off the path to a forked worker's first task: the test runner's arguments hold every
    test's node id, which the controller would pickle and each worker unpickle."""

    def __init__(
        self,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
        finalizer: Callable[[], object] | None,
    ) -> None:
        self.objects = (initializer, initargs, finalizer)
        # By whether the receiver runs this process's main script (see codec.dumps).
        self._pickled: dict[bool, bytes] = {}

    def pickled(self, same_script: bool = False) -> bytes:
        blob = self._pickled.get(same_script)
        if blob is None:
            main = codec.MainAtReceiver(same_script=same_script)
            blob = self._pickled[same_script] = codec.dumps(self.objects, main)
        return blob


class WorkerInfo(NamedTuple):
    """Who this worker is: its name (``gw0``…) and its slot in the pool (0…N-1)."""

    name: str
    slot: int


class End(Protocol):
    """What ``serve`` needs of its connection: ``wire.WorkerEnd`` or ``gateway.ChannelEnd``."""

    def send(self, message: ToController) -> None: ...

    def recv(self) -> ToWorker | None: ...


class _ThisWorker:
    """This process's identity and connection while it serves a pool (one per process)."""

    info: WorkerInfo | None = None
    end: End | None = None
    task_id: int = -1
    retire: bool = False
    # Who receives the results and errors: the process that made the pool, which runs the main
    # script this worker runs (forked from it, or started to run it again), or, for a worker
    # behind an execnet gateway, a process whose main module is not this one's.
    caller_main: codec.MainAtReceiver = codec.OTHER_MAIN


def retire_after_task() -> None:
    """Exit once the running task's result is sent, as after ``maxtasksperchild`` tasks: an
    expected exit, after which the pool starts a new worker.  The finalizer does not run (the
    task is expected to have finished what it had to)."""
    _ThisWorker.retire = True


def current_worker() -> WorkerInfo | None:
    """This process's identity in its pool, or None outside a pool worker."""
    return _ThisWorker.info


def emit(payload: object) -> None:
    """Send ``payload`` to the controller now, ahead of the running task's result.

    The pool hands it to its ``on_event`` callback with the worker's name.  Only valid inside a
    pool worker; the payload must pickle with the standard library.
    """
    if _ThisWorker.end is None:
        raise RuntimeError("emit() is only available inside a pool worker")
    restore_package_modules()
    _ThisWorker.end.send(Event(_ThisWorker.task_id, pickle.dumps(payload, pickle.HIGHEST_PROTOCOL)))


class _PackageModules:
    """This package's modules by name, listed once in a process tree (see package_modules)."""

    listed: dict[str, object] | None = None


def package_modules(refresh: bool = False) -> dict[str, object]:
    """This package's modules by name, as first listed (``refresh``: listed again now).

    Listed in the process that makes a pool, before it forks: a forked worker inherits the
    list, where walking sys.modules would touch (and copy) a page of every module object for a
    reference count.  A fresh worker lists them as it starts serving.
    """
    if refresh or _PackageModules.listed is None:
        package = __name__.partition(".")[0]
        _PackageModules.listed = {
            name: module
            for name, module in list(sys.modules.items())
            if name.partition(".")[0] == package
        }
    return _PackageModules.listed


def restore_package_modules() -> None:
    """Put this package's modules back in sys.modules before a message is pickled: a task may
    have dropped them (a test that unloads modules), pickle finds the messages' classes there,
    and a module imported again has other classes."""
    sys.modules.update(package_modules())  # type: ignore[arg-type]


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the controller died before we asked
        os._exit(1)


def prepare_process() -> None:
    os.setpgid(0, 0)
    _die_with_parent()


def serve(
    end: End | socket.socket,
    info: WorkerInfo,
    setup: bytes | SetupObjects,
    maxtasks: int | None,
) -> None:
    """Run the initializer, then tasks until told to stop; the same loop for every transport.

    A local worker's process runs it as its target (``worker_main``), with its end of the
    socket pair: it prepares the process first.  ``setup`` is ``WorkerSetup.objects`` in a
    forked worker, else pickled.  Tasks run in this frame, not in a function of their own, so
    that a test the runner runs is as few frames below the controller's as can be (a recursion
    test counts how deep it may go).
    """
    if isinstance(end, socket.socket):
        prepare_process()
        end = WorkerEnd(end)
        _ThisWorker.caller_main = codec.CALLER
    _ThisWorker.info, _ThisWorker.end = info, end
    initializer, initargs, finalizer = pickle.loads(setup) if isinstance(setup, bytes) else setup
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as exc:
            # Replacing this worker would fail the same way: tell the pool not to.
            end.send(SetupFailed(codec.dump_error(exc, _ThisWorker.caller_main)))
            raise
    end.send(Ready())
    package_modules()  # a fresh worker lists them now, before a task can drop any
    functions: dict[bytes, Callable[..., Any]] = {}
    done = 0
    while True:
        message = end.recv()
        if message is None:
            return
        if isinstance(message, Shutdown):
            break
        if not isinstance(message, Task):
            raise TypeError(f"unknown message from the pool: {message!r}")
        _ThisWorker.task_id = message.task_id
        started = clock.monotonic()
        fatal = False
        try:
            function = _decode_function(message.function, functions)
            mode, args, kwargs, first = pickle.loads(message.args)
            value: Any
            if mode == APPLY:
                value = function(*args, **kwargs)
            elif mode == MAP:
                value = [function(arg) for arg in args]
            elif mode == STARMAP:
                value = [function(*arg) for arg in args]
            else:
                raise ValueError(f"unknown task mode {mode!r}")
        except BaseException as exc:
            # The traceback starts with this frame; the user's frames follow it.
            if exc.__traceback__ is not None and exc.__traceback__.tb_next is not None:
                exc = exc.with_traceback(exc.__traceback__.tb_next)
            # A SystemExit or KeyboardInterrupt meant to stop the process: after reporting.
            ok, payload = False, codec.dump_error(exc, _ThisWorker.caller_main)
            fatal = not isinstance(exc, Exception)
        else:
            ok, payload = _encode_value(value, first if mode != APPLY else None)
        seconds = clock.monotonic() - started
        _ThisWorker.task_id = -1
        restore_package_modules()
        end.send(Result(message.task_id, ok, payload, seconds))
        if fatal:
            _exit_quietly()
        done += 1
        if (maxtasks is not None and done >= maxtasks) or _ThisWorker.retire:
            end.send(Retiring())
            return
    if finalizer is not None:
        # Meant to stop the process, as from a task; an Exception is a bug: its traceback shows.
        try:
            finalizer()
        except KeyboardInterrupt:
            _exit_quietly()
        except SystemExit as stop:
            # The exit code Python gives it: sys.exit() is a clean end.
            _exit_quietly(stop.code if isinstance(stop.code, int) else int(stop.code is not None))


def _exit_quietly(code: int = 1) -> None:
    """End the worker now, without a traceback on the terminal: what it printed is flushed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# The entry point of a local worker process (the target of its process object).
worker_main = serve


def _decode_function(blob: bytes, cache: dict[bytes, Callable[..., Any]]) -> Callable[..., Any]:
    function = cache.get(blob)
    if function is None:
        function = pickle.loads(blob)
        if len(cache) >= FUNCTION_CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[blob] = function
    return function


def _encode_value(value: Any, first: int | None) -> tuple[bool, bytes]:
    """(ok, pickled value), or (False, the error) when the value does not pickle.

    ``first``: the value is a map chunk's list of results, of the inputs from ``first`` on; the
    error then names the input whose result does not pickle (``iterable[3]``).
    """
    main = _ThisWorker.caller_main
    try:
        return True, codec.dumps(value, main)
    except Exception:
        pass
    parts = (
        [(value, "the result")]
        if first is None
        else [(result, f"the result for iterable[{first + n}]") for n, result in enumerate(value)]
    )
    advice = "return something picklable instead"
    try:
        for part, what in parts:
            codec.dump_value(part, what, advice, main, codec.ResultSendError)
        # Each part pickles alone (only together they do not): the whole value, named.
        return True, codec.dump_value(value, "the result", advice, main, codec.ResultSendError)
    except codec.SendError as exc:
        return False, codec.dump_error(exc)


def format_exception(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
