"""``--pool-leaks ignore|warn|fail``: processes a test started and left running.

Data flow, in a runner worker (registered by ``itemrunner.start_worker``)::

    pytest_fixture_setup of a fixture wider than a function ─▶ the processes it started are
        the fixture's (a server for the module or the session), not a leak, for as long as
        they live, and so is everything they start; the same for a collector's own setup()
        (a test file kind that starts a server for its items), wrapped at registration
    pytest_runtest_logreport of the teardown phase, first of all plugins (every fixture the
        test needed is finalized)
        ─▶ find_leaks: the worker's descendants (/proc/<pid>/task/<tid>/children) that are
           neither the fixtures' nor multiprocessing's own helpers, nor workers of a live Pool,
           nor suspects already
        ─▶ warn: each is a suspect of that test, left running (report_survivors, below)
           fail: the test's call report fails naming them (the teardown's, for a test whose
           call never ran; the worker still holds it, unsent); they and their descendants are
           killed before the next test
    itemrunner.finish_worker, every fixture torn down ─▶ report_survivors: the suspects still
        running ─▶ a LeakedProcessWarning on the test that started them, through pytest's
        warning capture for that test (its filters: -W, filterwarnings; the controller's
        warnings summary shows it) ─▶ killed

Why after the teardown phase: a function fixture may stop what the test started (a list of
processes it kills at teardown is common); only once it has run is a survivor a leak.  With
``fail`` the test itself then fails: the worker sends a test's reports once its teardown is
done, so its call report can still take the verdict (a failed call keeps its own, with the
leak as a section), and the user reads one failed test, not a passed test with an error.

Why suspects under ``warn``: a session object may start a helper process lazily, during
whichever test needs it first, keep it for later tests and stop it at the session's end (execnet's
own suite keeps its gateways so).  Killed after that test, it would fail every later test that
uses it, where serial runs and pytest-xdist pass them.  The default mode must not change a
verdict, so it waits: what still runs once the worker has torn every fixture down is a leak.  A
warning then cannot fail the test (its reports went out long before), so ``-W error`` shows it
in the summary like any other; ``fail`` is the mode that fails tests, at once.

Why descendants: every process a test starts (``subprocess``, ``multiprocessing``, a shell
pipeline) is a child of the worker or of such a child, and the worker does nothing else while a
test runs.  A process that detached itself (a double fork) is no descendant any more; it still
lives in the worker's process group, which is killed with the worker at the end of the run.
Without ``/proc`` (macOS, Windows) nothing is checked.

Why a gate first: walking the descendants reads a file per thread and per process, hundreds of
microseconds, more than a trivial test costs.  The kernel's newest pid in this pid namespace
(the last field of ``/proc/loadavg``) moves whenever any process or thread is created, so
while it stands still nothing can have started since the last walk (short of a test starting
exactly as many processes as the namespace has pids) and the walk is skipped.
It moves for other processes too; then the walk runs, as without the gate.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Generator, Iterable, Sequence
from os import getpid  # bound once: a test may patch os.getpid
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from _pytest.warnings import catch_warnings_for_item

from pytest_poolrun.internalframes import internal

PROC = Path("/proc")
LOADAVG = PROC / "loadavg"
# A process caught inside exec() has an empty command line for some microseconds (its new
# arguments are not in place yet): a test that starts one just before it returns is common.
CMDLINE_TRIES = 20
CMDLINE_PAUSE = 0.001
# The LeakWatch plugin's name in a worker.
LEAK_WATCH = "poolrun-leaks"


class LeakedProcessWarning(pytest.PytestWarning):
    """A test left processes running (``--pool-leaks warn``)."""


def available() -> bool:
    return (PROC / str(getpid()) / "task").is_dir()


class PidMark:
    """Reads the pid the kernel handed out last in this pid namespace; ``read()`` is ``None``
    where that is not known.  The file stays open: a read is then a microsecond, not ten."""

    def __init__(self) -> None:
        try:
            self.fd: int | None = os.open(LOADAVG, os.O_RDONLY)
        except OSError:
            self.fd = None

    def read(self) -> int | None:
        if self.fd is None:
            return None
        try:
            return int(os.pread(self.fd, 256, 0).split()[-1])
        except (OSError, ValueError, IndexError):
            return None


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (every thread's), from /proc."""
    found: list[int] = []
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def descendants(pid: int, skip: Iterable[int] = ()) -> list[int]:
    """Every living descendant of ``pid``, parents first; the subtrees of ``skip`` left out."""
    skipped = set(skip)
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child in children(current):
            if child not in skipped and child not in found:
                found.append(child)
                frontier.append(child)
    return found


def running(pid: int) -> bool:
    """Not ended: a zombie (ended, not yet waited for by its parent) leaks nothing."""
    try:
        state = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def command_line(pid: int) -> str:
    """The process's command line (or, failing that, its name in brackets)."""
    for _ in range(CMDLINE_TRIES):
        try:
            raw = (PROC / str(pid) / "cmdline").read_bytes()
        except OSError:
            return "?"
        words = [word.decode(errors="replace") for word in raw.split(b"\0") if word]
        if words:
            return " ".join(words)
        time.sleep(CMDLINE_PAUSE)
    try:
        return f"[{(PROC / str(pid) / 'comm').read_text().strip()}]"
    except OSError:
        return "?"


# multiprocessing's helpers that a worker may start once and keep: (module, object, its pid).
_HELPER_PIDS = (
    ("multiprocessing.resource_tracker", "_resource_tracker", "_pid"),
    ("multiprocessing.forkserver", "_forkserver", "_forkserver_pid"),
)


def _helpers() -> set[int]:
    """Processes that belong to the worker for its lifetime, not to a test: multiprocessing's
    resource tracker and forkserver (started once, on first use) and the workers of every live
    ``Pool`` of this package (the ``pool`` fixture keeps its workers between tests)."""
    pids: set[int] = set()
    # Read where imported: a helper not imported was never started, and importing the
    # forkserver's module cost each worker 2 ms at its first check.
    for module, helper, attribute in _HELPER_PIDS:
        pid = getattr(getattr(sys.modules.get(module), helper, None), attribute, None)
        if isinstance(pid, int):
            pids.add(pid)
    from pytest_poolrun import pool

    for live in list(pool._live_pools):
        pids.update(live.worker_pids())
    return pids


class Suspect(NamedTuple):
    """A process a test left running (``warn``): a leak if it still runs at the worker's end."""

    nodeid: str
    command: str  # read when it was found: by the end it may have changed or be gone


class LeakWatch:
    """The worker's plugin; ``mode`` is ``warn`` or ``fail``."""

    def __init__(self, mode: str, items: Sequence[pytest.Item] = ()) -> None:
        self.mode = mode
        self.items = items
        self.pid = getpid()
        self.owned: set[int] = set()
        # warn: processes tests left running, by pid, until the worker's end (report_survivors).
        self.suspects: dict[int, Suspect] = {}
        self.pid_mark = PidMark()
        # The pid mark when find_leaks last walked and every process it found was known (owned,
        # a helper, or killed as a leak); None: walk at the next check.
        self.clean_at: int | None = None
        # The descendants as last walked, and the pid mark then (a fixture's before and after).
        self.walked: set[int] = set()
        self.walked_at: int | None = None
        # The running test's call report (--pool-leaks fail fails it); the worker holds a
        # test's reports until its teardown is done, so it can still change.
        self.call_report: pytest.TestReport | None = None

    def current(self) -> set[int]:
        """The worker's descendants; walked again only if a process may have started since."""
        mark = self.pid_mark.read()
        if mark is None or mark != self.walked_at:
            self.walked = set(descendants(self.pid))
            self.walked_at = mark
        return self.walked

    def own_collector_processes(self, items: Sequence[pytest.Item]) -> None:
        """What a collector's own ``setup()`` starts is the collector's, as a wider fixture's
        processes are: a kind of test file that starts a server for its items (nbval's
        notebook kernel) stops it in its ``teardown()``, after its last item.  Only collectors
        whose class has a ``setup`` of its own are wrapped (pytest's packages, plugins' files)."""
        seen: set[int] = set()
        last_parent = None
        for item in items:
            node = item.parent
            if node is last_parent:
                continue  # the common case: an item of the same file or class as the last
            last_parent = node
            while node is not None and id(node) not in seen:
                seen.add(id(node))
                if type(node).setup is not pytest.Collector.setup:
                    node.setup = self._owning(node.setup)  # type: ignore[method-assign]
                node = node.parent

    def _owning(self, setup: Callable[[], None]) -> Callable[[], None]:
        @internal
        def setup_owning_what_it_starts() -> None:
            __tracebackhide__ = True
            before = self.current()
            try:
                setup()
            finally:
                self.owned.update(self.current() - before)

        return setup_owning_what_it_starts

    @pytest.hookimpl(wrapper=True)
    @internal
    def pytest_fixture_setup(self, fixturedef: Any) -> Generator[None, Any, Any]:
        # A fixture's error passes through here: its report shows no frame of ours, as serially.
        __tracebackhide__ = True
        # pytest-django's class-scoped autouse fixture is set up again for every test outside a
        # class: this runs per test there, so it walks only when the mark moved.
        if fixturedef.scope == "function":
            return (yield)
        before = self.current()
        try:
            return (yield)
        finally:
            self.owned.update(self.current() - before)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # Before any other plugin sees the teardown report, so that all of them see it failed
        # (--pool-leaks fail).  A plain hook, not a makereport wrapper: it costs a function call
        # per report, and every test pays it.
        if report.when != "teardown":
            if report.when == "call":
                self.call_report = report
            return
        call, self.call_report = self.call_report, None
        leaked = self.find_leaks()
        if not leaked:
            return
        if self.mode == "warn":
            for pid in leaked:
                self.suspects[pid] = Suspect(report.nodeid, command_line(pid))
            return
        if call is not None and call.nodeid != report.nodeid:
            call = None
        _fail(report if call is None else call, _leak_text(report.nodeid, leaked, "killed now"))
        _kill(leaked)

    def find_leaks(self) -> list[int]:
        mark = self.pid_mark.read()
        if mark is not None and mark == self.clean_at:
            return []  # no process started since the last walk found nothing unknown
        found = descendants(self.pid, skip=self.owned | self.suspects.keys() | _helpers())
        living = [pid for pid in found if running(pid)]
        current = self.current()
        self.owned &= current  # forget fixture processes that ended
        if self.suspects:  # and suspects that ended, before another process takes their pid
            self.suspects = {pid: s for pid, s in self.suspects.items() if pid in current}
        # Read before the walk: a process started during it moves the mark, so the next check
        # walks again.  Leaks found now are killed or become suspects before the next test.
        self.clean_at = mark
        return living

    def report_survivors(self) -> None:
        """At the worker's end, every fixture torn down (``warn``): the suspects still running
        are leaks, each warned about on its test, then killed."""
        survivors = {pid: s for pid, s in self.suspects.items() if running(pid)}
        self.suspects = {}
        if not survivors:
            return
        by_nodeid = {item.nodeid: item for item in self.items}
        for nodeid in dict.fromkeys(suspect.nodeid for suspect in survivors.values()):
            pids = {pid: s.command for pid, s in survivors.items() if s.nodeid == nodeid}
            text = _leak_text(nodeid, pids, "still running as its worker finished, killed then")
            item = by_nodeid.get(nodeid)
            if item is not None:
                _warn_on(item, text)
        _kill(list(survivors))


def _leak_text(nodeid: str, pids: Iterable[int] | dict[int, str], fate: str) -> str:
    """What a user reads about a test's leaked processes (``pids``, or their command lines)."""
    commands = pids if isinstance(pids, dict) else {pid: command_line(pid) for pid in pids}
    listed = "\n".join(f"  pid {pid}: {command}" for pid, command in commands.items())
    count = f"{len(commands)} process{'es' if len(commands) != 1 else ''}"
    return (
        f"{nodeid} left {count} running after it ended ({fate}):\n{listed}\n"
        "Stop what a test starts before it returns (or in a fixture's teardown); "
        "--pool-leaks ignore turns this check off."
    )


def _warn_on(item: pytest.Item, text: str) -> None:
    """A ``LeakedProcessWarning`` on ``item``, as if raised during it: pytest's capture applies
    the run's filters and the item's marks, and records it for the controller's summary."""
    path, lineno, _ = item.location
    try:
        with catch_warnings_for_item(item.config, item.ihook, "runtest", item):
            warnings.warn_explicit(LeakedProcessWarning(text), None, path, (lineno or 0) + 1)
    except Warning as error:
        # An "error" filter raised it: too late to fail the test, so it is shown as a warning.
        message = warnings.WarningMessage(error, type(error), path, (lineno or 0) + 1)
        item.ihook.pytest_warning_recorded.call_historic(
            kwargs=dict(warning_message=message, when="runtest", nodeid=item.nodeid, location=None)
        )


def _fail(report: pytest.TestReport, text: str) -> None:
    if report.passed or report.skipped:
        report.outcome = "failed"
        report.longrepr = text
    else:
        report.sections.append(("processes left running", text))


def _kill(pids: list[int]) -> None:
    """Kill the leaked processes (each at once: a killed parent restarts none of them)."""
    killed = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
        killed.append(pid)
    for pid in killed:
        _reap(pid)


def _reap(pid: int) -> None:
    """Collect a killed child of the worker, so that it does not linger as a zombie."""
    try:
        os.waitpid(pid, 0)
    except (ChildProcessError, OSError):
        pass  # not our child (a grandchild is reaped by its parent, or by init)


def report_survivors(config: pytest.Config) -> None:
    """At the worker's end, once every fixture is torn down: see ``LeakWatch.report_survivors``."""
    watch = config.pluginmanager.get_plugin(LEAK_WATCH)
    if isinstance(watch, LeakWatch):
        watch.report_survivors()


def register(config: pytest.Config, mode: str, items: Sequence[pytest.Item]) -> None:
    """Watch this worker's tests for leaks, unless ``mode`` is ``ignore`` or /proc is missing."""
    if mode != "ignore" and available():
        watch = LeakWatch(mode, items)
        config.pluginmanager.register(watch, LEAK_WATCH)
        watch.own_collector_processes(items)
