"""Inside a runner worker: run collected items by index with pytest's own runtest protocol.

Data flow, in a worker forked from the controller after collection::

    Pool task run_chunk([i, j, k]) ─▶ empty the slot's journal; for each index:
        Board.set_running (forked) or ItemStarted (fresh) ─▶ pytest_runtest_protocol
                                        │ every pytest_runtest_* hook of every plugin fires here
                                        │ (the report hooks through directhooks' callers,
                                        │ item.ihook through hookproxies: one per file);
                                        │ recording.Forwarder records logstart, logreport,
                                        │ logfinish, warnings
        ItemFinished(index, recorded events) ─▶ events.encode, once ─▶ the record:
                                        ├─▶ the slot's journal (one os.write, before the next item)
                                        └─▶ the outbox ─▶ emit(tuple of records), every 50 ms,
                                            near the chunk's end, and at once after a test
                                            with a failed report
    finalizer finish_worker() ─▶ the held item runs with nextitem=None (fixtures torn down)
                              ─▶ processes tests left that still run: warned about, killed

**nextitem at a chunk's end.**  pytest decides which fixtures to tear down after an item by
looking at the next item.  A worker that reaches the end of a chunk does not know its next item
yet, so it holds the chunk's last item back and runs it when the next chunk arrives (with that
chunk's first item as ``nextitem``) or when the worker is shut down (with ``None``).  Scope
fixtures are thus torn down exactly when, and on the item where, a serial run would tear them
down for the same sequence of items.  ``run_chunk`` returns the held index so that the controller
knows which item a worker holds if it dies.

**Messages.**  A forked worker shares a ``Board`` (shared memory) with the controller and writes
there which item it runs, so it needs no message per item: results of finished items go out
in batches (every ``BATCH_SECONDS``, at each chunk's end, and at once after a test whose report
failed, so that a failure is shown, and ``-x`` acts, while the next test runs).  Near a chunk's
end a batch also goes out once it holds more results than the chunk has items left to run: the
controller replays every result that came before a chunk's outcome first, and only then hands
the worker its next chunk, so a full batch sent with the outcome kept the worker waiting for
its replay (5 to 18 ms a chunk at 5,000 small tests); sent early, it is replayed while the
worker runs the rest, and the batch that travels with the outcome holds a result or two.  A
worker started fresh announces each item with ``ItemStarted`` instead, and the previous item's
result travels with it.

**Durable results.**  A batch dies with its worker, so a forked worker also appends each
finished item's record (``events.encode``: encoded once, the same bytes as in the batch) to its
slot's results journal, with one ``os.write``, before the board shows the next item running.
Once that write returns the record survives a crash or a kill; the controller reads the journal
when the worker dies, and replays the records the socket had not brought.  The journal is
emptied at each chunk's start: by then everything in it went out over the socket, whose
buffered data the controller can still read after the worker died.  Where no journal can be
written, the batch is flushed after every item instead.  So the controller knows the result of
every item that finished, and knows that every item before the one the board shows started.

**Signals.**  Every worker, at its start, puts back the signal dispositions the controller had
when the run began (the controller turns SIGTERM into KeyboardInterrupt while the run lasts,
and replacement workers are forked from it then), so that a test and the processes it starts
see what they would see serially.  Stack dumps come on ``DUMP_SIGNAL``, a real-time signal where
there is one, which tests leave alone (a test's own SIGUSR1 handler once swallowed them); under
``--pool-timeout``, a handler of it then marks a test that ran past the timeout (``overrun``).

**A test's forked child** that returns instead of calling ``os._exit`` leaves at once,
silently, as soon as the phase implementation it forked in (the test's call, a fixture's setup
or teardown) returns or raises into pluggy (``_ForkedChildGuard``; the protocol's end is a
second check): it would otherwise report the test again, tear fixtures down, run the rest of the
chunk and answer on the worker's socket.  A child forked before the phases (a plugin running a
test's whole protocol in a child, as pytest-forked does) runs them as serially.  The guard's
wrapper, like the leak check's, hides its frame from pytest's tracebacks, and pytest prunes it as
its own (``internalframes``); under ``--tb=native``, Python's own format, which shows every
frame, both are taken out of the reports (``_NativeTracebackTrim``).

**Stopping early.**  The controller sets the board's stop flag (``-x``, ``--maxfail``), and a
worker's own session sets ``shouldfail`` on its own failing test; a worker checks both between
items, runs nothing more, and on shutdown tears its fixtures down without running the held item.

**Retiring** (``--pool-max-tests-per-worker``, ``--pool-max-worker-rss``; see ``recycling``).
Between items a worker may finish as at its end and return a ``Retired`` record with the
chunk's items it did not start; the pool then replaces it.

The collected session reaches a forked worker as a module global set by ``prepare`` in the
controller before the pool forks: nothing is pickled, imported or collected again.
"""

from __future__ import annotations

import functools
import io
import os
import signal
import sys
from collections.abc import Callable, Generator, Sequence
from os import getpid  # bound once: a test may patch os.getpid
from pathlib import Path
from typing import IO, Any

import pluggy
import pytest

from pytest_poolrun import (
    adapters,
    clock,
    directhooks,
    events,
    forwarding,
    gcpause,
    hookproxies,
    junitrecords,
    leaks,
    overrun,
    recording,
    runid,
    workerfeatures,
    workersetup,
    workerstop,
    xdistnode,
)
from pytest_poolrun.board import Board
from pytest_poolrun.internalframes import drop_own_entry, internal
from pytest_poolrun.interruption import Interrupt
from pytest_poolrun.poolworker import (
    current_worker,
    emit,
    format_exception,
    package_modules,
    restore_package_modules,
    retire_after_task,
)
from pytest_poolrun.recycling import Recycler, Retired
from pytest_poolrun.slotfiles import SlotFiles
from pytest_poolrun.workersetup import DUMP_SIGNAL as DUMP_SIGNAL
from pytest_poolrun.workersetup import Invocation as Invocation
from pytest_poolrun.workerstop import WorkerStop

# A forked worker sends the results of finished items at least this often (and at the end of
# each chunk): often enough for live progress, rarely enough that fast tests share messages.
BATCH_SECONDS = 0.05
# Signals whose disposition cannot be changed.
_FIXED_SIGNALS = frozenset(
    getattr(signal, name) for name in ("SIGKILL", "SIGSTOP") if hasattr(signal, name)
)


class _ForkCount:
    """How many forks this process came through, counted in each child (``os.register_at_fork``).

    A count that differs from the one read earlier tells a forked child from the process that
    read it, as ``getpid()`` would, without a system call: the guards ask about seven times per
    test.  A fork made by C code that bypasses CPython's fork handlers is not counted, but such
    a child cannot go on running Python code anyway.
    """

    value = 0


def _count_fork() -> None:
    _ForkCount.value += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_count_fork)


class _Shared:
    session: pytest.Session | None = None
    faults: SlotFiles | None = None
    journal: SlotFiles | None = None
    board: Board | None = None
    basetemp: Path | None = None
    held: int | None = None
    forwarder: recording.Forwarder | None = None
    outbox: list[bytes] = []  # records (events.encode)
    batch_started: float = 0.0
    forked: bool = False
    outside: dict[str, pytest.Item | None] = {}
    dispositions: dict[int, Any] = {}
    pid: int = 0
    forks: int = 0  # _ForkCount.value in this worker
    keyword_counts: recording.KeywordCounts | None = None  # counted before forking (prepare)
    tests_run: int = 0
    recycler: Recycler = Recycler(None, None)
    junit: junitrecords.WorkerRecords | None = None
    # Under -s: the forwarded sys.stdout and sys.stderr, flushed as each test ends.
    streams: tuple[IO[str], ...] = ()


def prepare(
    session: pytest.Session,
    board: Board,
    basetemp: Path | None,
    journal: SlotFiles,
    faults: SlotFiles,
) -> Callable[[], None]:
    """Called in the controller just before the pool forks its workers, before the run changes
    any signal disposition; returns what puts back the state it replaced, for the run's end.

    That state is this process's own only while it is a worker: a test that runs a pytest
    session with ``--pool`` in its worker's process (pytester's in-process runs) makes that
    process a controller for a while, and the worker's state must come back after it.
    """
    replaced = {name: getattr(_Shared, name) for name in _PREPARED}
    _Shared.session, _Shared.board, _Shared.basetemp = session, board, basetemp
    _Shared.journal, _Shared.faults = journal, faults
    package_modules(refresh=True)  # before the fork, with every module the run imported
    _Shared.keyword_counts = recording.KeywordCounts(session.items)
    _Shared.dispositions = {}
    for signum in signal.valid_signals():
        if signum in _FIXED_SIGNALS:
            continue
        try:
            _Shared.dispositions[signum] = signal.getsignal(signum)
        except (OSError, ValueError):
            continue

    def put_back() -> None:
        for name, value in replaced.items():
            setattr(_Shared, name, value)

    return put_back


# What prepare() sets.
_PREPARED = (
    "session",
    "board",
    "basetemp",
    "journal",
    "faults",
    "keyword_counts",
    "dispositions",
)


def stop_requested() -> bool:
    """The run stops: the controller said so (the board), or this worker's own session did.

    pytest's session sets ``shouldfail`` on the ``--maxfail`` failure (``-x``: the first)
    among the reports it sees; a worker's session sees the worker's own.  The controller sees
    all of them and stops the run when it replays that report, but it tells forked workers only
    through the board, a moment later, and workers started fresh not at all: so a worker stops
    at once after its own failing test, as a serial run does (and pytest-xdist's workers do),
    instead of starting the next test.
    """
    if _Shared.board is not None and _Shared.board.stop_requested():
        return True
    return _Shared.session is not None and bool(_Shared.session.shouldfail)


class _TeardownAllOnStop:
    """Once the run stops (``stop_requested``), the test running here is torn down as a serial
    run tears down its last test: every fixture with it.

    pytest (8.2 and later) tears a test down with every fixture (its ``nextitem`` None) when the
    session should stop by the time its teardown starts.  A worker's session only knows of its
    own failures; told of the stop here, before the teardown, it does the same: an error or
    output of a module's or the session's teardown is that test's, as under pytest-xdist, and
    not a loose line printed after the run.
    """

    def __init__(self, session: pytest.Session) -> None:
        self._session = session

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # The teardown follows the call, or a setup that did not pass (no call then).
        last_before_teardown = report.when == "call" or (
            report.when == "setup" and not report.passed
        )
        if last_before_teardown and stop_requested():
            session = self._session
            if not (session.shouldstop or session.shouldfail):
                session.shouldstop = "the run stopped"


def worker_name(session: pytest.Session) -> str | None:
    """This worker's name (``gw0``…) when ``session`` is the one it runs, else None."""
    info = current_worker()
    if info is None or _Shared.session is not session:
        return None
    return info.name


def _session() -> pytest.Session:
    assert _Shared.session is not None, "itemrunner.prepare() was not called before forking"
    return _Shared.session


def _leave_if_forked_child() -> None:
    if _ForkCount.value != _Shared.forks:
        _leave_forked_child()


def _leave_forked_child() -> None:
    # A process the test forked, returning instead of calling os._exit: the parent's verdict
    # is the test's, as serially; buffers and the socket are the parent's.
    os._exit(0)


# The test phases whose implementations run a test's fixtures and the test itself.
_PHASE_HOOKS = ("pytest_runtest_setup", "pytest_runtest_call", "pytest_runtest_teardown")
# pytest's own plugins whose phase implementations run no code of the test's: they only read
# marks or collect what the phase left behind, so nothing can fork in them.
_RUN_NO_TEST_CODE = frozenset({"skipping", "threadexception", "unraisableexception"})


class _ForkedChildGuard:
    """Ends a test's forked child as soon as the implementation it forked in returns to pluggy.

    Only a process forked within the wrapped call is ended: one forked before it, by a plugin
    that runs a test's whole protocol in a child of its own (pytest-forked), runs the phases
    to their end there, as serially.

    Each plain implementation of the three test phases that may run the test's code (pytest's
    runner: it sets the fixtures up, calls the test and tears the fixtures down; conftests and
    other plugins) is wrapped, so that it ends a process other than this worker when it
    returns or raises there.  None of the phase's wrappers goes on in the child (the capture
    wrapper would read and empty the capture files it shares with the worker), nor the rest of
    the protocol (reports, other plugins' hooks, fixture teardowns), nor this worker's code.
    A wrapper of each phase would do the same at a higher cost per test (pluggy's generator
    machinery, three times); a plugin registered later has its implementations wrapped as it
    registers.
    """

    def __init__(self, config: pytest.Config) -> None:
        self._hook = config.hook
        self._guarded: dict[int, pluggy.HookImpl] = {}  # by id; held, so the ids stay theirs
        self._guard_new_implementations()

    def _guard_new_implementations(self) -> None:
        for name in _PHASE_HOOKS:
            for impl in getattr(self._hook, name).get_hookimpls():
                if impl.hookwrapper or impl.wrapper or id(impl) in self._guarded:
                    continue
                if impl.plugin_name in _RUN_NO_TEST_CODE:
                    continue
                impl.function = _leaving_if_forked(impl.function)
                self._guarded[id(impl)] = impl

    def pytest_plugin_registered(self) -> None:
        self._guard_new_implementations()


def _leaving_if_forked(function: Callable[..., object]) -> Callable[..., object]:
    @functools.wraps(function)
    @internal
    def leaving_if_forked(*args: object) -> object:
        # A test's or a fixture's error passes through here: its report shows no frame of ours,
        # as serially.  From Python 3.11 it leaves without this frame's entry (drop_own_entry);
        # before, pytest's native style shows it (_NativeTracebackTrim takes it out).
        __tracebackhide__ = True
        # A process forked before this call (a plugin running the whole protocol in a child,
        # as pytest-forked does) goes on: only one forked within it has returned here.
        entered = _ForkCount.value
        # pluggy passes an implementation its arguments positionally.
        try:
            return function(*args)
        except BaseException as error:
            drop_own_entry(error)
            raise
        finally:
            if _ForkCount.value != entered:
                _leave_forked_child()

    return leaving_if_forked


class _NativeTracebackTrim:
    """Under ``--tb=native`` drops the worker's own wrappers from a report's traceback.

    That style is Python's own traceback format, which honours no ``__tracebackhide__``: a
    fixture's error would show the guard's wrapper and the leak check's fixture-setup wrapper,
    where a serial run shows neither.  The leak check's is a hook wrapper, so pluggy's frame
    that threw the error into it goes too.  Registered only under that style, so that other
    runs pay no wrapper per phase.
    """

    def __init__(self) -> None:
        guard = _leaving_if_forked(_leave_if_forked_child).__code__
        leak_check = leaks.LeakWatch.pytest_fixture_setup.__code__
        # How Python's traceback format begins an entry of each, its name, whether a wrapper.
        self._ours = tuple(
            (f'  File "{code.co_filename}", line ', f", in {code.co_name}\n", wrapper)
            for code, wrapper in ((guard, False), (leak_check, True))
        )
        self._pluggy = f'  File "{os.path.dirname(pluggy.__file__)}{os.sep}'

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        longrepr = report.longrepr
        chain = getattr(longrepr, "chain", None)
        if chain:
            tracebacks = [element[0] for element in chain]
        else:
            tracebacks = [getattr(longrepr, "reprtraceback", None)]
        for traceback in tracebacks:
            for entry in getattr(traceback, "reprentries", ()):
                lines = getattr(entry, "lines", None)
                if getattr(entry, "style", None) == "native" and isinstance(lines, list):
                    entry.lines = self._trimmed(lines)
        return report

    def _trimmed(self, lines: list[str]) -> list[str]:
        kept: list[str] = []
        for line in lines:
            wrapper = self._wrapper_of(line)
            if wrapper is None:
                kept.append(line)
            elif wrapper and kept and kept[-1].startswith(self._pluggy):
                kept.pop()  # pluggy's frame that threw the error into the wrapper
        return kept

    def _wrapper_of(self, text: str) -> bool | None:
        """Whether the entry ``text`` is a hook wrapper of ours; None: not ours."""
        for start, end, wrapper in self._ours:
            if text.startswith(start) and end in text:
                return wrapper
        return None


def start_worker(worker_count: int, testrun_uid: str, invocation: Invocation) -> None:
    """Pool initializer: make this process a worker of the run.

    A forked worker already holds the controller's session; a fresh one (spawn, execnet)
    collects for itself and checks that it found the very same tests, in the same order.
    """
    info = current_worker()
    assert info is not None
    _Shared.pid, _Shared.forks = getpid(), _ForkCount.value
    package_modules()  # a fresh worker lists them now; a forked one inherited the list
    os.environ["PYTEST_XDIST_WORKER"] = info.name
    os.environ["PYTEST_XDIST_WORKER_COUNT"] = str(worker_count)
    os.environ["PYTEST_XDIST_TESTRUNUID"] = testrun_uid
    workerinput = invocation.workerinputs.get(info.name, {})
    if _Shared.session is None:
        _Shared.session = workersetup.collect_here(
            invocation, info.name, workerinput, _forwarded(sys.__stdout__)
        )
        config = _Shared.session.config
    else:
        config = _session().config
        _Shared.forked = True
        workersetup.restore_dispositions(_Shared.dispositions)
        _own_capture(config)
        overrun_mark = _overrun_mark(config, info.slot)
        workersetup.own_fault_file(
            _Shared.faults, info.slot, None if overrun_mark is None else overrun_mark.on_dump
        )
        if overrun_mark is not None:
            config.pluginmanager.register(overrun_mark, "poolrun-overrun-mark")
        workersetup.own_tmp_path(config, _Shared.basetemp, info.name)
        workersetup.silence_terminal(config, _forwarded(sys.__stdout__))
        workersetup.become_xdist_worker(config, workerinput)
    # Tests see the garbage collector as the run found it: the controller's pause of full
    # collections (gcpause) was inherited with the fork, or held by this worker's collection.
    gcpause.for_config(config).release()
    runid.adopt(config, testrun_uid)
    _Shared.recycler = workerfeatures.start(_session(), workerinput, _Shared.forked)
    _Shared.junit = junitrecords.WorkerRecords.of(config, _Shared.forked)
    # Options of pytest's own plugins, which a run may disable (-p no:capture, -p no:terminal).
    if config.getoption("capture", None) == "no":
        # -s: what tests print reaches the controller's terminal, from every kind of worker
        # (a fresh one's standard output is not the terminal; a forked one's would be lost in
        # its buffer when the worker exits).
        sys.stdout = _forwarded(sys.__stdout__)
        sys.stderr = _forwarded(sys.__stderr__)
        _Shared.streams = (sys.stdout, sys.stderr)
    for error in adapters.worker_started(config, _Shared.forked):
        print(f"poolrun: worker {info.name} could not prepare a plugin: {error}")
    forwarder = recording.Forwarder(config, _session().items, _send_loose, _Shared.keyword_counts)
    config.pluginmanager.register(forwarder, "poolrun-forwarder")
    _Shared.forwarder = forwarder
    config.pluginmanager.register(_ForkedChildGuard(config), "poolrun-forked-child-guard")
    config.pluginmanager.register(_TeardownAllOnStop(_session()), "poolrun-teardown-on-stop")
    if config.getoption("tbstyle", None) == "native":
        config.pluginmanager.register(_NativeTracebackTrim(), "poolrun-native-traceback")
    hookproxies.install(_session())
    workerstop.install(_tear_everything_down)
    # Last: the runner's report hook calls in this worker skip pluggy's general path.
    directhooks.install_in_worker(config)


def _overrun_mark(config: pytest.Config, slot: int) -> overrun.OverrunMark | None:
    """Under ``--pool-timeout``, what fails a test that ended as its stacks were taken."""
    timeout = config.getoption("pool_timeout", None)
    board = _Shared.board
    if timeout is None or board is None:
        return None
    return overrun.OverrunMark(
        timeout, _session().items, functools.partial(board.running, slot, _Shared.pid)
    )


def _send_loose(event: events.HookEvent) -> None:
    _send(events.LooseEvents((event,)))
    _flush()


def _own_capture(config: pytest.Config) -> None:
    """Capture into files of its own, through the capture objects inherited.

    A module that kept ``sys.stdout`` at its import (a logging handler, a default argument)
    holds the controller's capture stream, as serially it holds the one the session captures
    into: tests' output through it must be captured with theirs.  So the capture stays, and
    each of its files, shared with the controller and the other workers, is replaced by a
    private one (``workersetup.private_capture_file``).
    """
    capman: Any = config.pluginmanager.getplugin("capturemanager")
    if capman is None or getattr(capman, "_global_capturing", None) is None:
        return
    capman.suspend_global_capture()
    capturing = capman._global_capturing
    for capture in (capturing.out, capturing.err):
        workersetup.private_capture_file(capture)
    _send(
        events.CaptureFiles(
            getpid(),
            workersetup.file_number(capturing.out),
            workersetup.file_number(capturing.err),
        )
    )
    _flush()


def _forwarded(original: IO[str] | None) -> io.TextIOWrapper:
    """A stream whose text goes to the controller's terminal, tagged with the running test."""
    return forwarding.forwarded_text(original, _send_output)


def _flush_streams() -> None:
    """Under -s: what a test wrote without an ending newline (or as bytes) goes out as its
    own, before the next test's output."""
    for stream in _Shared.streams:
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # closed by the test, as a serial run's stream could be


def _send_output(text: str) -> None:
    if current_worker() is None or _ForkCount.value != _Shared.forks:
        return  # not in a worker (a test's forked child), where nothing may be sent
    index = None if _Shared.forwarder is None else _Shared.forwarder.running
    nodeid = None if index is None else _session().items[index].nodeid
    _send(events.TerminalOutput(nodeid, text))
    _flush()


def _send(event: events.WorkerEvent) -> None:
    """Queue ``event`` for the controller; ``_flush`` sends what is queued as one message."""
    # A test may have dropped this plugin's modules from sys.modules; pickle finds the events'
    # classes through it, and a re-imported module's classes are other objects.  (A finished
    # item's record holds no class of ours, see events.encode: _send_finished skips this.)
    restore_package_modules()
    _queue(events.encode(event))


def _send_junit_records() -> None:
    """Ahead of the item's outcome, so that its test case gets them before it is written."""
    records = None if _Shared.junit is None else _Shared.junit.take()
    if records is not None:
        _send(records)


def _send_finished(finished: events.ItemFinished, slot: int | None) -> None:
    """Queue an item's outcome, and have it in the controller's reach when this returns: in
    the journal of ``slot`` (a forked worker's), or else flushed."""
    record = events.encode(finished)
    _queue(record)
    if slot is None or not _journaled(slot, record):
        _flush()


def _queue(record: bytes) -> None:
    if not _Shared.outbox:
        _Shared.batch_started = clock.monotonic()
    _Shared.outbox.append(record)


def _journaled(slot: int, record: bytes) -> bool:
    if _Shared.journal is None:
        return False
    try:
        _Shared.journal.append(slot, record)
    except (OSError, IndexError):
        _Shared.journal = None  # a full disk: flush every item from now on
        return False
    return True


def _flush() -> None:
    if _Shared.outbox:
        batch, _Shared.outbox = tuple(_Shared.outbox), []
        emit(batch)


def _run(index: int, nextitem: pytest.Item | None) -> None:
    session = _session()
    item = session.items[index]
    info = current_worker()
    assert info is not None
    board = _Shared.board if _Shared.forked else None
    if board is not None:
        board.set_running(info.slot, index, clock.monotonic(), _Shared.pid)
    else:
        # No shared board: announce the item, so that a crash can be pinned on it.  The
        # previous item's results travel in the same message.
        _send(events.ItemStarted(index, getpid()))
        _flush()
    forwarder = _Shared.forwarder
    assert forwarder is not None, "start_worker() registers the forwarder first"
    forwarder.begin(index)
    try:
        # Called here, not in a function of its own: a test runs as few frames below the
        # controller's loop as can be (a recursion test counts how deep it may go).
        WorkerStop.in_test = True  # the controller's stop signal lands in the test (workerstop)
        try:
            item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
        finally:
            WorkerStop.in_test = False
            _leave_if_forked_child()  # a child forked in another hook of the protocol
    except pytest.exit.Exception as exc:
        _send(events.SessionExit(index, exc.msg, exc.returncode, forwarder.end()))
        _flush()
        raise
    except BaseException as exc:
        interrupt = Interrupt.of(exc) if isinstance(exc, KeyboardInterrupt) else None
        _send(events.ItemAborted(index, format_exception(exc), interrupt, forwarder.end()))
        _flush()
        if interrupt is not None:
            # As a serial session's end after an interrupt: every fixture torn down.
            WorkerStop.finishing = True
            _tear_everything_down()
        raise
    finally:
        if _Shared.streams:
            _flush_streams()
        recorded = forwarder.end()
    _send_junit_records()
    _send_finished(events.ItemFinished(index, recorded), None if board is None else info.slot)
    _Shared.tests_run += 1
    if board is not None:
        board.clear(info.slot)
        # A failure goes out at once, so that it is shown while the next test runs (and -x
        # stops the other workers); passing results wait for the batch to be due.
        if forwarder.failed or clock.monotonic() - _Shared.batch_started >= BATCH_SECONDS:
            _flush()


def run_chunk(indices: list[int], hold_last: bool = True) -> tuple[str, int | None] | Retired:
    """Pool task: run a chunk of items; returns (worker name, index of the item held back).

    With ``hold_last`` false the chunk's last item runs now, with an item of another module as
    ``nextitem``: its module and class fixtures are torn down, session and package ones stay.
    The controller asks for that for a chunk of one long test, so that the worker is seen busy
    while it runs it (a held item would run during the next chunk, which the controller would
    otherwise hand to this worker as if it were free).
    """
    items = _session().items
    info = current_worker()
    assert info is not None
    if _Shared.journal is not None and _Shared.forked:
        # Every record in it went out over the socket by the end of the last chunk.
        _Shared.journal.truncate(info.slot)
    recycler = _Shared.recycler
    try:
        for position, index in enumerate(indices):
            if stop_requested():
                break
            if _Shared.held is not None:
                if recycler.next_is_last(_Shared.tests_run):
                    return _retire(indices[position:])
                # No longer held once it starts: if its protocol raises (pytest.exit, a plugin's
                # hook), the worker's shutdown must not run it a second time.
                held, _Shared.held = _Shared.held, None
                _run(held, nextitem=items[index])
                if recycler.memory_exceeded():
                    return _retire(indices[position:])
                if len(_Shared.outbox) > len(indices) - 1 - position:
                    _flush()  # near the chunk's end, see "Messages" above
            _Shared.held = index
        if _Shared.held is not None and recycler.next_is_last(_Shared.tests_run):
            return _retire(())
        if not hold_last and _Shared.held is not None and not stop_requested():
            boundary = _outside_module(_Shared.held)
            if boundary is not None:  # in a one-file suite, holding is the only right teardown
                last, _Shared.held = _Shared.held, None
                _run(last, nextitem=boundary)
                if recycler.memory_exceeded():
                    return _retire(())
    except pytest.exit.Exception:
        # A test called pytest.exit (its SessionExit went out first): this worker's session
        # ends there, as a serial one does, with its fixtures torn down.  The chunk's items it
        # never started go back: under collection order, tests collected before the exiting
        # one still run and are reported before the run ends.
        return _retire(indices)
    _flush()
    return info.name, _Shared.held


def _retire(returned: Sequence[int]) -> Retired:
    """Leave after this chunk (see ``recycling``): the held item runs as the last, every
    fixture is torn down, and ``returned`` (items never started) goes back to the controller."""
    _flush()
    finish_worker()
    retire_after_task()
    return Retired(_name(), tuple(returned))


def _outside_module(index: int) -> pytest.Item | None:
    """An item from another file than item ``index`` (None if the suite has one file only)."""
    items = _session().items
    path = items[index].nodeid.partition("::")[0]
    if path not in _Shared.outside:
        _Shared.outside[path] = next(
            (item for item in items if item.nodeid.partition("::")[0] != path), None
        )
    return _Shared.outside[path]


def finish_worker() -> None:
    """Pool finalizer: run the held item as the worker's last, tearing every fixture down;
    then send the controller this worker's ``workeroutput`` (see adapters, xdistnode)."""
    held, _Shared.held = _Shared.held, None
    WorkerStop.finishing = True  # a stop signal from here on interrupts the held test only
    if held is not None and not stop_requested():
        # Run here, as run_chunk runs its items: a test is as many frames deep wherever it runs.
        # A KeyboardInterrupt leaves it reported and every fixture torn down (_run); the
        # worker loop ends the worker on it, as after a task that raised it.
        try:
            _run(held, nextitem=None)
        except pytest.exit.Exception:
            _tear_everything_down()  # the exit left that test's fixtures set up
        _flush()
    else:
        _tear_everything_down()
    session = _session()
    config = session.config
    leaks.report_survivors(config)  # every fixture is torn down: what still runs is a leak
    _send_junit_records()  # a session fixture's, recorded at its teardown
    output: dict[str, Any] = getattr(config, "workeroutput", {})
    try:
        xdistnode.finish_session(session, output)
    except Exception as exc:
        print(f"poolrun: worker {_name()}: a plugin's pytest_sessionfinish failed: {exc!r}")
    for error in adapters.worker_finishing(config, output):
        print(f"poolrun: worker {_name()} could not hand its plugins' results over: {error}")
    _flush_streams()
    _send(events.WorkerOutput(xdistnode.sendable(output)))
    _flush()


def _name() -> str:
    info = current_worker()
    return "?" if info is None else info.name


def _tear_everything_down() -> None:
    session = _session()
    try:
        session._setupstate.teardown_exact(None)
    except Exception as exc:
        # Fixtures left set up when the stop came between two tests (_TeardownAllOnStop
        # tears them down with a running test): no test is left to report this on.
        print(f"poolrun: error while tearing fixtures down after the run stopped: {exc!r}")
