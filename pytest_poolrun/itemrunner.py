"""Inside a runner worker: run collected items by index with pytest's own runtest protocol.

Data flow, in a worker forked from the controller after collection::

    Pool task run_chunk([i, j, k]) ─▶ for each index: ItemStarted ─▶ pytest_runtest_protocol
                                        │ every pytest_runtest_* hook of every plugin fires here;
                                        │ _Forwarder records logstart/logreport/logfinish/warnings
                                        └─▶ ItemFinished(index, recorded events) ─▶ emit
    finalizer finish_worker() ─▶ the held item runs with nextitem=None (fixtures torn down)

**nextitem at a chunk's end.**  pytest decides which fixtures to tear down after an item by
looking at the next item.  A worker that reaches the end of a chunk does not know its next item
yet, so it holds the chunk's last item back and runs it when the next chunk arrives (with that
chunk's first item as ``nextitem``) or when the worker is shut down (with ``None``).  Scope
fixtures are thus torn down exactly when, and on the item where, a serial run would tear them
down for the same sequence of items.  ``run_chunk`` returns the held index so that the controller
knows which item a worker holds if it dies.

**Messages.**  A forked worker shares a ``Board`` (shared memory) with the controller and writes
there which item it runs, so it needs no message per item: results of finished items go out
in batches (every ``BATCH_SECONDS`` and at each chunk's end).  A worker started fresh announces
each item with ``ItemStarted`` instead.

**Stopping early.**  The controller sets the board's stop flag (``-x``, ``--maxfail``); a worker
checks it between items, runs nothing more, and on shutdown tears its fixtures down without
running the held item.

The collected session reaches a forked worker as a module global set by ``prepare`` in the
controller before the pool forks: nothing is pickled, imported or collected again.
"""

from __future__ import annotations

import difflib
import faulthandler
import itertools
import os
import pickle
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple

import pytest

from pytest_poolrun import adapters, events, extraoptions, leaks, runid, sharedfixtures
from pytest_poolrun.board import Board
from pytest_poolrun.poolworker import current_worker, emit, format_exception, retire_after_task
from pytest_poolrun.recycling import Recycler, Retired

# A forked worker sends the results of finished items at least this often (and at the end of
# each chunk): often enough for live progress, rarely enough that fast tests share messages.
BATCH_SECONDS = 0.05
# The signal on which a worker writes the Python stacks of all its threads to its fault file
# (the controller sends it to a test that overran --pool-timeout, before killing the worker).
DUMP_SIGNAL = signal.SIGUSR1


class _Shared:
    session: pytest.Session | None = None
    fault_dir: Path | None = None
    fault_file: IO[str] | None = None
    board: Board | None = None
    basetemp: Path | None = None
    held: int | None = None
    current: int | None = None
    recorded: list[events.HookEvent] = []
    outbox: list[events.WorkerEvent] = []
    batch_started: float = 0.0
    forked: bool = False
    outside: dict[str, pytest.Item | None] = {}
    inherited_capture: object = None
    tests_run: int = 0
    recycler: Recycler = Recycler(None, None)


def prepare(session: pytest.Session, board: Board, basetemp: Path | None, fault_dir: Path) -> None:
    """Called in the controller just before the pool forks its workers."""
    _Shared.session, _Shared.board, _Shared.basetemp = session, board, basetemp
    _Shared.fault_dir = fault_dir


def fault_path(fault_dir: Path, worker: str, pid: int) -> Path:
    """Where worker ``worker`` (process ``pid``) writes crash tracebacks and stack dumps."""
    return fault_dir / f"{worker}-{pid}.txt"


def stop_requested() -> bool:
    return _Shared.board is not None and _Shared.board.stop_requested()


def worker_name(session: pytest.Session) -> str | None:
    """This worker's name (``gw0``…) when ``session`` is the one it runs, else None."""
    info = current_worker()
    if info is None or _Shared.session is not session:
        return None
    return info.name


def _session() -> pytest.Session:
    assert _Shared.session is not None, "itemrunner.prepare() was not called before forking"
    return _Shared.session


class _Forwarder:
    """Records the hook calls that the controller must replay (registered in each worker)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.shortcut = events.only_builtin_serializers(config)

    def _record(self, event: events.HookEvent) -> None:
        if _Shared.current is None:
            emit((events.LooseEvents((event,)),))
        else:
            _Shared.recorded.append(event)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logstart(self, nodeid: str, location: events.Location) -> None:
        self._record(events.LogStart(nodeid, location))

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # The terminal reporter, unregistered here, would have asked for the test status; some
        # plugins settle a report's outcome in that hook (pytest's subtests fails a test whose
        # subtests failed, from counts only this process has), so ask as it would have.
        self.config.hook.pytest_report_teststatus(report=report, config=self.config)
        self._record(events.capture_report(self.config, report, self.shortcut))

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logfinish(self, nodeid: str, location: events.Location) -> None:
        self._record(events.LogFinish(nodeid, location))

    @pytest.hookimpl(trylast=True)
    def pytest_warning_recorded(
        self,
        warning_message: Any,
        when: str,
        nodeid: str,
        location: events.Location | None,
    ) -> None:
        # The hook is historic: registering this plugin replays the configuration and
        # collection warnings, which the controller has reported already.
        if when != "runtest":
            return
        self._record(events.capture_warning(warning_message, when, nodeid, location))


class Invocation(NamedTuple):
    """What a worker started fresh (spawn, execnet) needs to collect as the controller did,
    and what every worker is told of itself (``workerinputs``, by worker name: see xdistnode)."""

    args: tuple[str, ...]
    directory: str
    expected_ids: tuple[str, ...]
    workerinputs: dict[str, dict[str, Any]]


class CollectionMismatch(Exception):
    """A fresh worker collected other tests than the controller: it must not get work."""


def start_worker(worker_count: int, testrun_uid: str, invocation: Invocation) -> None:
    """Pool initializer: make this process a worker of the run.

    A forked worker already holds the controller's session; a fresh one (spawn, execnet)
    collects for itself and checks that it found the very same tests, in the same order.
    """
    info = current_worker()
    assert info is not None
    os.environ["PYTEST_XDIST_WORKER"] = info.name
    os.environ["PYTEST_XDIST_WORKER_COUNT"] = str(worker_count)
    os.environ["PYTEST_XDIST_TESTRUNUID"] = testrun_uid
    workerinput = invocation.workerinputs.get(info.name, {})
    if _Shared.session is None:
        config = _collect_here(invocation, info.name, workerinput)
        sharedfixtures.install(_session(), workerinput)
    else:
        config = _session().config
        _Shared.forked = True
        _own_capture(config)
        _own_fault_file(info.name)
        _own_tmp_path(config, info.name)
        _silence_terminal(config)
        _become_xdist_worker(config, workerinput)
    runid.adopt(config, testrun_uid)
    extras = extraoptions.read(config)
    _Shared.recycler = Recycler(extras.max_tests_per_worker, extras.max_worker_rss_mb)
    leaks.register(config, extras.leaks)
    for error in adapters.worker_started(config, _Shared.forked):
        print(f"poolrun: worker {info.name} could not prepare a plugin: {error}")
    config.pluginmanager.register(_Forwarder(config), "poolrun-forwarder")


def _become_xdist_worker(config: pytest.Config, workerinput: dict[str, Any]) -> None:
    """What pytest-xdist gives its workers' config, which plugins check to act as workers
    (pytest's cache plugins, pytest-django's database names, syrupy's report)."""
    config.workerinput = workerinput  # type: ignore[attr-defined]
    config.workeroutput = {}  # type: ignore[attr-defined]


def _collect_here(invocation: Invocation, name: str, workerinput: dict[str, Any]) -> pytest.Config:
    from _pytest.config import _prepareconfig

    if os.path.isdir(invocation.directory):
        os.chdir(invocation.directory)
    args = list(invocation.args)
    coverage_config = workerinput.get(adapters.COVERAGE_CONFIG_KEY)
    if coverage_config is not None:
        # Measured from before the first import, as the controller was; pytest-cov must not
        # start a second measurement here.
        adapters.start_fresh_coverage(coverage_config)
        args += workerinput.get(adapters.COVERAGE_ARGS_KEY, [])
    config = _prepareconfig(args)
    # Before pytest_configure, as pytest-xdist does: plugins decide there whether they run in
    # a worker (pytest-randomly takes the controller's seed, pytest-rerunfailures connects).
    _become_xdist_worker(config, workerinput)
    config._do_configure()
    _silence_terminal(config)
    if config.option.basetemp:
        # Every worker would otherwise empty the same --basetemp directory for itself.
        _Shared.basetemp = Path(config.option.basetemp)
        _own_tmp_path(config, name)
    session = pytest.Session.from_config(config)
    config.hook.pytest_sessionstart(session=session)
    config.hook.pytest_collection(session=session)
    ids = tuple(item.nodeid for item in session.items)
    if ids != invocation.expected_ids:
        if sorted(ids) != sorted(invocation.expected_ids):
            raise CollectionMismatch(_mismatch_message(name, invocation.expected_ids, ids))
        # The same tests in another order (a plugin shuffled them with a seed of its own):
        # items run by the controller's index, so take the controller's order.
        by_id = {item.nodeid: item for item in session.items}
        session.items[:] = [by_id[nodeid] for nodeid in invocation.expected_ids]
    _Shared.session = session
    return config


# Lines of the id diff shown for a worker that collected differently.
MISMATCH_LINES = 12


def _mismatch_message(name: str, expected: tuple[str, ...], found: tuple[str, ...]) -> str:
    diff = difflib.unified_diff(list(expected), list(found), "controller", name, lineterm="", n=0)
    shown = list(itertools.islice(diff, MISMATCH_LINES))
    return (
        f"worker {name} collected {len(found)} tests, the controller {len(expected)}; "
        "it gets no work. First differences:\n"
        + "\n".join(shown)
        + "\nMake the worker's checkout, Python and plugins match this one."
    )


def _own_capture(config: pytest.Config) -> None:
    """Capture into files of its own: the inherited ones are shared with the controller."""
    capman: Any = config.pluginmanager.getplugin("capturemanager")
    if capman is None or getattr(capman, "_global_capturing", None) is None:
        return
    # Set the inherited capture aside without reading or truncating its files, which the
    # controller and the other workers share.  It stays referenced for the worker's lifetime:
    # collected, its files would raise ResourceWarning, an error under -W error.
    _Shared.inherited_capture = capman._global_capturing
    capman._global_capturing = None
    capman.start_global_capturing()
    capman.suspend_global_capture()
    capturing = capman._global_capturing
    emit(
        (
            events.CaptureFiles(
                os.getpid(), _file_number(capturing.out), _file_number(capturing.err)
            ),
        )
    )


def _file_number(capture: Any) -> int | None:
    """The descriptor of an fd-level capture's temporary file (None for other captures)."""
    try:
        return int(capture.tmpfile.fileno())
    except (AttributeError, OSError, ValueError):
        return None


def _own_fault_file(name: str) -> None:
    """Send fatal-error tracebacks and on-demand stack dumps to a file the controller reads."""
    if _Shared.fault_dir is None or not _Shared.fault_dir.is_dir():
        return
    _Shared.fault_file = open(fault_path(_Shared.fault_dir, name, os.getpid()), "w")
    faulthandler.enable(file=_Shared.fault_file, all_threads=True)
    faulthandler.register(DUMP_SIGNAL, file=_Shared.fault_file, all_threads=True)


def _own_tmp_path(config: pytest.Config, name: str) -> None:
    """Give this worker a ``tmp_path`` base of its own, under the controller's."""
    if _Shared.basetemp is None:
        return
    factory: Any = getattr(config, "_tmp_path_factory", None)
    if factory is None:
        return
    factory._given_basetemp = _Shared.basetemp / f"popen-{name}"
    factory._basetemp = None


def _silence_terminal(config: pytest.Config) -> None:
    """Leave reporting to the controller: the worker's reporters neither print nor listen.

    The terminal reporter and the junitxml writer are unregistered, since the controller runs
    its own copies on every replayed report and running them here too would cost as much again
    per test.  pytest's own code and plugins still expect a terminal reporter in a test's
    process (``config.get_terminal_writer()`` asserts one is registered; pytest 8 asks it for
    every assertion diff, pytest-timeout writes its stacks to it), so a ``_MutedReporter``
    takes its name: it answers every attribute as the real reporter would.  Its writer is the
    real one, with the controller's width and colour settings, writing to the worker's
    standard output as it would serially: into the test's captured output while capture is
    on, to the terminal where a plugin suspended capture to print (pytest-timeout does).
    """
    from _pytest.junitxml import xml_key

    reporter: Any = config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None and not isinstance(reporter, _MutedReporter):
        config.pluginmanager.unregister(reporter)
        config.pluginmanager.register(_MutedReporter(reporter), "terminalreporter")
    xml = config.stash.get(xml_key, None)
    if xml is not None and config.pluginmanager.is_registered(xml):
        config.pluginmanager.unregister(xml)
    # Test durations are recorded, and saved, by the controller.
    recorder = config.pluginmanager.get_plugin("poolrun-durations")
    if recorder is not None:
        config.pluginmanager.unregister(recorder)


class _MutedReporter:
    """Stands in a worker for pytest's terminal reporter, without implementing any hook.

    pluggy registers only the hook methods it finds on the object itself, so none of the real
    reporter's hooks fire here; every other attribute (``_tw``, ``write_line``, ``section``…)
    is the real reporter's.
    """

    def __init__(self, reporter: object) -> None:
        self._reporter = reporter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reporter, name)


def _send(event: events.WorkerEvent) -> None:
    """Queue ``event`` for the controller; ``_flush`` sends what is queued as one message."""
    if not _Shared.outbox:
        _Shared.batch_started = time.monotonic()
    _Shared.outbox.append(event)


def _flush() -> None:
    if _Shared.outbox:
        batch, _Shared.outbox = tuple(_Shared.outbox), []
        emit(batch)


def _flush_if_due() -> None:
    if time.monotonic() - _Shared.batch_started >= BATCH_SECONDS:
        _flush()


def _run(index: int, nextitem: pytest.Item | None) -> None:
    session = _session()
    item = session.items[index]
    info = current_worker()
    assert info is not None
    board = _Shared.board if _Shared.forked else None
    if board is not None:
        board.set_running(info.slot, index, time.monotonic())
    else:
        # No shared board: announce the item, so that a crash can be pinned on it.  The
        # previous item's results travel in the same message.
        _send(events.ItemStarted(index, os.getpid()))
        _flush()
    _Shared.current, _Shared.recorded = index, []
    try:
        item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
    except pytest.exit.Exception as exc:
        _send(events.SessionExit(index, exc.msg, exc.returncode, tuple(_Shared.recorded)))
        _flush()
        raise
    except BaseException as exc:
        # What the item printed was read into its report sections when the phase ended.
        sections = tuple(
            (f"Captured {key} {when}", content)
            for when, key, content in getattr(item, "_report_sections", ())
            if content
        )
        _send(events.ItemAborted(index, format_exception(exc), sections))
        _flush()
        raise
    finally:
        recorded, _Shared.current, _Shared.recorded = tuple(_Shared.recorded), None, []
    _send(events.ItemFinished(index, recorded))
    _Shared.tests_run += 1
    if board is not None:
        board.clear(info.slot)
        _flush_if_due()


def run_chunk(indices: list[int], hold_last: bool = True) -> tuple[str, int | None] | Retired:
    """Pool task: run a chunk of items; returns (worker name, index of the item held back).

    With ``hold_last`` false the chunk's last item runs now, with an item of another module as
    ``nextitem``: its module and class fixtures are torn down, session and package ones stay.
    The controller asks for that for a chunk of one long test, so that the worker is seen busy
    while it runs it (a held item would run during the next chunk, which the controller would
    otherwise hand to this worker as if it were free).
    """
    items = _session().items
    recycler = _Shared.recycler
    for position, index in enumerate(indices):
        if stop_requested():
            break
        if _Shared.held is not None:
            if recycler.next_is_last(_Shared.tests_run):
                return _retire(indices[position:])
            _run(_Shared.held, nextitem=items[index])
            if recycler.memory_exceeded():
                _Shared.held = None
                return _retire(indices[position:])
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
    _flush()
    info = current_worker()
    assert info is not None
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
    _finish_items()
    config = _session().config
    output: dict[str, Any] = getattr(config, "workeroutput", {})
    for error in adapters.worker_finishing(config, output):
        print(f"poolrun: worker {_name()} could not hand its plugins' results over: {error}")
    emit((events.WorkerOutput(_picklable(output)),))


def _name() -> str:
    info = current_worker()
    return "?" if info is None else info.name


def _picklable(output: dict[str, Any]) -> dict[str, Any]:
    """``output`` without the values that cannot travel (each named on the worker's stdout)."""
    kept = {}
    for key, value in output.items():
        try:
            pickle.dumps(value)
        except Exception as exc:
            print(f"poolrun: workeroutput[{key!r}] cannot be sent to the controller: {exc!r}")
            continue
        kept[key] = value
    return kept


def _finish_items() -> None:
    held, _Shared.held = _Shared.held, None
    if held is not None and not stop_requested():
        _run(held, nextitem=None)
        _flush()
        return
    session = _session()
    try:
        session._setupstate.teardown_exact(None)
    except Exception as exc:
        # A serial run stopped by -x reports such errors nowhere either; show them at least.
        print(f"poolrun: error while tearing fixtures down after the run stopped: {exc!r}")
