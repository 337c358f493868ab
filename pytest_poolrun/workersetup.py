"""How a process becomes a runner worker, before it runs any item.

Data flow, in the worker (``itemrunner.start_worker`` calls these)::

    forked after collection: the controller's session, as it was at the fork
      restore_dispositions ─▶ the signal handlers a serial run's test would see
      own_fault_file       ─▶ fatal tracebacks and stack dumps to the slot's fault file (then,
                              under --pool-timeout, overrun.OverrunMark's handler)
      own_tmp_path         ─▶ a tmp_path base of its own (<basetemp>/popen-gw0)
      silence_terminal     ─▶ no reporting here (the controller replays), a muted reporter
      become_xdist_worker  ─▶ config.workerinput / workeroutput, as pytest-xdist gives
    started fresh (spawn, execnet): collect_here ─▶ configure (workerinput set before
      pytest_configure), collect, check the ids against the controller's, attach the live-log
      and log-file handlers (pytest attaches them around its test loop) ─▶ the session
    both: what the worker's terminal writer gets (live logs, a plugin's lines) goes to the
      ``terminal`` stream given to silence_terminal, which forwards it to the controller

A fresh worker whose ids differ from the controller's raises ``CollectionMismatch`` and gets no
work; one that found the same ids in another order takes the controller's order.
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import itertools
import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from pytest_poolrun import adapters, coverageadapter
from pytest_poolrun.slotfiles import SlotFiles

# The signal on which a worker writes the Python stacks of all its threads to its fault file
# (the controller sends it to a test that overran --pool-timeout, before killing the worker).
# A real-time one, which tests do not take for themselves (SIGRTMIN..+2 belong to the C library,
# and Python's SIGRTMIN is already past them); SIGUSR1 where there are none.
DUMP_SIGNAL: int = signal.SIGRTMIN + 4 if hasattr(signal, "SIGRTMIN") else signal.SIGUSR1


class Invocation(NamedTuple):
    """What a worker started fresh (spawn, execnet) needs to collect as the controller did,
    and what every worker is told of itself (``workerinputs``, by worker name: see xdistnode)."""

    args: tuple[str, ...]
    directory: str
    expected_ids: tuple[str, ...]
    workerinputs: dict[str, dict[str, Any]]


class CollectionMismatch(Exception):
    """A fresh worker collected other tests than the controller: it must not get work."""


def become_xdist_worker(config: pytest.Config, workerinput: dict[str, Any]) -> None:
    """What pytest-xdist gives its workers' config, which plugins check to act as workers
    (pytest's cache plugins, pytest-django's database names, syrupy's report)."""
    config.workerinput = workerinput  # type: ignore[attr-defined]
    config.workeroutput = {}  # type: ignore[attr-defined]


def collect_here(
    invocation: Invocation, name: str, workerinput: dict[str, Any], terminal: io.TextIOBase
) -> pytest.Session:
    """Configure and collect as the controller did, in a worker started fresh (spawn, execnet)."""
    from _pytest.config import _prepareconfig

    if os.path.isdir(invocation.directory):
        os.chdir(invocation.directory)
    args = list(invocation.args)
    coverage_config = workerinput.get(coverageadapter.COVERAGE_CONFIG_KEY)
    if coverage_config is not None:
        # Measured from before the first import, as the controller was; pytest-cov must not
        # start a second measurement here.
        coverageadapter.start_fresh_coverage(coverage_config)
        args += workerinput.get(coverageadapter.COVERAGE_ARGS_KEY, [])
    config = _prepareconfig(args)
    # Before pytest_configure, as pytest-xdist does: plugins decide there whether they run in
    # a worker (pytest-randomly takes the controller's seed, pytest-rerunfailures connects).
    adapters.prepare_fresh_worker(workerinput)
    become_xdist_worker(config, workerinput)
    config._do_configure()
    silence_terminal(config, terminal)
    if config.option.basetemp:
        # Every worker would otherwise empty the same --basetemp directory for itself.
        own_tmp_path(config, Path(config.option.basetemp), name)
    session = pytest.Session.from_config(config)
    config.hook.pytest_sessionstart(session=session)
    config.hook.pytest_collection(session=session)
    ids = tuple(item.nodeid for item in session.items)
    if ids != invocation.expected_ids:
        if sorted(ids) != sorted(invocation.expected_ids):
            raise CollectionMismatch(mismatch_message(name, invocation.expected_ids, ids))
        # The same tests in another order (a plugin shuffled them with a seed of its own):
        # items run by the controller's index, so take the controller's order.
        by_id = {item.nodeid: item for item in session.items}
        session.items[:] = [by_id[nodeid] for nodeid in invocation.expected_ids]
    _attach_run_logging(config)
    return session


# Kept open for the worker's life: what pytest's logging plugin attaches around the test loop.
_run_logging = contextlib.ExitStack()


def _attach_run_logging(config: pytest.Config) -> None:
    """Attach the live-log (``--log-cli-level``) and ``--log-file`` handlers to the root logger.

    pytest's logging plugin does it in its ``pytest_runtestloop`` wrapper, which a forked
    worker is inside of (it forked from the controller's loop) and a fresh one never enters.
    """
    plugin: Any = config.pluginmanager.get_plugin("logging-plugin")
    if plugin is None:
        return
    from _pytest.logging import catching_logs

    if plugin._log_cli_enabled() and config.get_verbosity() < 1:
        config.option.verbose = 1  # as the plugin does: live logs need one line per test
    _run_logging.enter_context(catching_logs(plugin.log_cli_handler, level=plugin.log_cli_level))
    _run_logging.enter_context(catching_logs(plugin.log_file_handler, level=plugin.log_file_level))


# Lines of the id diff shown for a worker that collected differently.
MISMATCH_LINES = 12


def mismatch_message(name: str, expected: tuple[str, ...], found: tuple[str, ...]) -> str:
    import difflib  # only for this rare error: not at every run's startup

    diff = difflib.unified_diff(list(expected), list(found), "controller", name, lineterm="", n=0)
    shown = list(itertools.islice(diff, MISMATCH_LINES))
    return (
        f"worker {name} collected {len(found)} tests, the controller {len(expected)}; "
        "it gets no work. First differences:\n"
        + "\n".join(shown)
        + "\nMake the worker's checkout, Python and plugins match this one."
    )


def private_capture_file(capture: Any) -> None:
    """Make an inherited capture write where only this process reads.

    An fd-level capture keeps its file object and descriptor number (the streams that hold
    it, and the controller reading a crashed worker's output through ``/proc``, know that
    number), and the descriptor is pointed at a new empty file.  A capture in memory is this
    process's copy already: it is emptied of what the controller had captured.
    """
    tmpfile = getattr(capture, "tmpfile", None)
    number = file_number(capture)
    if number is not None and tmpfile is not None:
        with tempfile.TemporaryFile(buffering=0) as private:
            # Not inherited by the programs tests start, as pytest's own file is not.
            os.dup2(private.fileno(), number, inheritable=False)
        tmpfile.seek(0)
    elif tmpfile is not None:
        tmpfile.seek(0)
        tmpfile.truncate()


def file_number(capture: Any) -> int | None:
    """The descriptor of an fd-level capture's temporary file (None for other captures)."""
    try:
        return int(capture.tmpfile.fileno())
    except (AttributeError, OSError, ValueError):
        return None


def restore_dispositions(dispositions: dict[int, Any]) -> None:
    """Put back the signal handlers the controller had before the run (see the docstring).

    Only handlers that differ are set: a C-level handler (faulthandler's) reads as the default
    here and must stay.
    """
    for signum, handler in dispositions.items():
        try:
            if handler is not None and signal.getsignal(signum) != handler:
                signal.signal(signum, handler)
        except (OSError, ValueError, TypeError):
            continue


def own_fault_file(
    faults: SlotFiles | None, slot: int, after_dump: Callable[[int, Any], None] | None = None
) -> None:
    """Send fatal-error tracebacks and on-demand stack dumps to the slot's fault file; with
    ``after_dump``, that handler of DUMP_SIGNAL runs (in Python) after each dump."""
    fd = None if faults is None else faults.fd(slot)
    if fd is None:
        return
    faulthandler.enable(file=fd, all_threads=True)
    if after_dump is not None:
        signal.signal(DUMP_SIGNAL, after_dump)  # faulthandler chains to the handler it finds
    faulthandler.register(DUMP_SIGNAL, file=fd, all_threads=True, chain=after_dump is not None)


def own_tmp_path(config: pytest.Config, basetemp: Path | None, name: str) -> None:
    """Give this worker a ``tmp_path`` base of its own, under the controller's."""
    if basetemp is None:
        return
    factory: Any = getattr(config, "_tmp_path_factory", None)
    if factory is None:
        return
    factory._given_basetemp = basetemp / f"popen-{name}"
    factory._basetemp = None


def silence_terminal(config: pytest.Config, terminal: io.TextIOBase | None = None) -> None:
    """Leave reporting to the controller: the worker's reporters neither print nor listen.

    The terminal reporter, the junitxml writer and the third-party reporters that
    pytest-xdist's workers never load (``_CONTROLLER_REPORTERS``) are unregistered, since the
    controller runs its own copies on every replayed report and running them here too would
    cost as much again per test, or write the controller's report twice.  pytest's own code
    and plugins still expect a terminal reporter in a test's process
    (``config.get_terminal_writer()`` asserts one is registered; pytest 8 asks it for every
    assertion diff, pytest-timeout writes its stacks to it), so a ``_MutedReporter``
    takes its name: it answers every attribute as the real reporter would.  Its writer is the
    real one, with the controller's width and colour settings; what is written to it (live
    logs, pytest-timeout's stacks) goes to ``terminal``, which forwards it to the controller's
    terminal (see itemrunner).
    """
    from _pytest.junitxml import xml_key

    reporter: Any = config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None and not isinstance(reporter, _MutedReporter):
        if terminal is not None:
            reporter._tw._file = terminal
        config.pluginmanager.unregister(reporter)
        config.pluginmanager.register(_MutedReporter(reporter), "terminalreporter")
    xml = config.stash.get(xml_key, None)
    if xml is not None and config.pluginmanager.is_registered(xml):
        config.pluginmanager.unregister(xml)
    for plugin in config.pluginmanager.get_plugins():
        if _controller_reporter(plugin):
            config.pluginmanager.unregister(plugin)
    # Test durations are recorded, and saved, by the controller.
    recorder = config.pluginmanager.get_plugin("poolrun-durations")
    if recorder is not None:
        config.pluginmanager.unregister(recorder)


# Third-party reporters that write the run's report from its report hooks, and which a
# pytest-xdist worker never has (their pytest_configure skips a process with ``workerinput``):
# a forked worker inherited the controller's, and would write every report into the controller's
# file a second time (pytest-reportlog's JSON lines; pytest-html's page, with its
# ``generate_report_on_test``).  Named by (module, class), a base class included.
_CONTROLLER_REPORTERS = frozenset(
    {
        ("pytest_reportlog.plugin", "ReportLogPlugin"),
        ("pytest_html.basereport", "BaseReport"),
        # pytest-bdd's cucumber JSON file, written at the session's end.
        ("pytest_bdd.cucumber_json", "LogBDDCucumberJSON"),
        # Ours: files pytest-bdd's scenarios of the replayed reports, in the controller only.
        ("pytest_poolrun.bddscenarios", "ScenarioFiler"),
        # GitHub's workflow commands, printed for each failure and each warning.
        ("pytest_github_actions_annotate_failures.plugin", "_AnnotateErrors"),
        ("pytest_github_actions_annotate_failures.plugin", "_AnnotateWarnings"),
    }
)


def _controller_reporter(plugin: object) -> bool:
    return any(
        (cls.__module__, cls.__qualname__) in _CONTROLLER_REPORTERS for cls in type(plugin).__mro__
    )


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
