"""What a runner worker tells the controller, and how the controller replays it into its hooks.

Data flow::

    worker: pytest hook fires ─▶ capture_*() ─▶ event ─┐  (buffered per item, sent as ItemFinished)
                                                       ▼
    controller: replay(config, event) ─▶ the same hook, called on the controller's plugins
                                          (terminal, junitxml, cacheprovider, warnings summary…)

This module is where a test report crosses the process boundary: reports travel as the dicts made
by pytest's own ``pytest_report_to_serializable`` hook and are rebuilt with
``pytest_report_from_serializable``, so plugins that extend reports (pytest's subtests among them)
take part.  One shortcut keeps fast suites fast and failures exact: a plain ``TestReport``, in a
run where only pytest itself implements those hooks, travels as its pickled attributes, so the
controller gets the very objects a serial run would have (the hooks turn some failure
representations, doctests' for one, into plain text), at a fraction of the cost.
Warnings travel as text with their category named by module and qualified name.
"""

from __future__ import annotations

import importlib
import pickle
import warnings
from typing import Any, NamedTuple, Union

import pytest

Location = tuple[str, Union[int, None], str]


class ItemStarted(NamedTuple):
    """Sent at once when a worker starts an item, so a crash can be pinned on it."""

    item: int
    pid: int


class CaptureFiles(NamedTuple):
    """A forked worker's capture files (descriptors in process ``pid``), so that the controller
    can still read what a test printed after the worker died mid-test."""

    pid: int
    stdout_fd: int | None
    stderr_fd: int | None


class ItemAborted(NamedTuple):
    """The item raised something that ends the worker (KeyboardInterrupt, SystemExit…)."""

    item: int
    description: str
    sections: tuple[tuple[str, str], ...] = ()


class LogStart(NamedTuple):
    nodeid: str
    location: Location


class LogReport(NamedTuple):
    data: dict[str, Any]


class PlainReport(NamedTuple):
    """A plain ``TestReport``'s attributes, pickled (see the module docstring)."""

    state: bytes


class LogFinish(NamedTuple):
    nodeid: str
    location: Location


class WarningRecorded(NamedTuple):
    message: str
    category: str
    filename: str
    lineno: int
    when: str
    nodeid: str
    location: Location | None


HookEvent = Union[LogStart, LogReport, PlainReport, LogFinish, WarningRecorded]


class SessionExit(NamedTuple):
    """The item called ``pytest.exit()``: the whole run ends, as it would serially."""

    item: int
    message: str
    returncode: int | None
    recorded: tuple[HookEvent, ...]


class ItemFinished(NamedTuple):
    """An item is done; ``events`` are its hook calls in the order the worker made them."""

    item: int
    events: tuple[HookEvent, ...]


class LooseEvents(NamedTuple):
    """Hook calls made outside any item (a plugin reporting at an odd moment)."""

    events: tuple[HookEvent, ...]


class WorkerOutput(NamedTuple):
    """The worker is done: its ``config.workeroutput``, as pytest-xdist's workers send it."""

    output: dict[str, Any]


WorkerEvent = Union[
    ItemStarted, ItemAborted, ItemFinished, LooseEvents, SessionExit, CaptureFiles, WorkerOutput
]


# ------------------------------------------------------------------------------ worker side


# Plugins whose pytest_report_to_serializable leaves a plain TestReport to pytest's own code.
BUILTIN_SERIALIZERS = frozenset({"reports", "subtests"})


def only_builtin_serializers(config: pytest.Config) -> bool:
    impls = config.hook.pytest_report_to_serializable.get_hookimpls()
    return all(impl.plugin_name in BUILTIN_SERIALIZERS for impl in impls)


def capture_report(
    config: pytest.Config, report: pytest.TestReport, shortcut: bool
) -> LogReport | PlainReport:
    if shortcut and type(report) is pytest.TestReport:
        try:
            state = pickle.dumps(report.__dict__, pickle.HIGHEST_PROTOCOL)
            if report.longrepr is not None:
                pickle.loads(state)  # a failure's representation must also rebuild
            return PlainReport(state)
        except Exception:
            pass  # something a plugin attached does not pickle: take the hooks' way
    data = config.hook.pytest_report_to_serializable(config=config, report=report)
    return LogReport(data)


def capture_warning(
    message: warnings.WarningMessage, when: str, nodeid: str, location: Location | None
) -> WarningRecorded:
    category = message.category
    return WarningRecorded(
        message=str(message.message),
        category=f"{category.__module__}:{category.__qualname__}",
        filename=str(message.filename),
        lineno=int(message.lineno),
        when=when,
        nodeid=nodeid,
        location=location,
    )


# -------------------------------------------------------------------------- controller side


def _warning_category(name: str) -> type[Warning]:
    module_name, _, qualname = name.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError):
        return UserWarning
    if isinstance(target, type) and issubclass(target, Warning):
        return target
    return UserWarning


def rebuild_warning(event: WarningRecorded) -> warnings.WarningMessage:
    category = _warning_category(event.category)
    try:
        message: Warning = category(event.message)
    except Exception:
        message = UserWarning(event.message)
    return warnings.WarningMessage(message, category, event.filename, event.lineno)


def replay(config: pytest.Config, event: HookEvent) -> None:
    """Call the controller's hook that ``event`` stands for."""
    hook = config.hook
    if isinstance(event, PlainReport):
        report = pytest.TestReport.__new__(pytest.TestReport)
        report.__dict__.update(pickle.loads(event.state))
        hook.pytest_runtest_logreport(report=report)
    elif isinstance(event, LogReport):
        report = hook.pytest_report_from_serializable(config=config, data=event.data)
        hook.pytest_runtest_logreport(report=report)
    elif isinstance(event, LogStart):
        hook.pytest_runtest_logstart(nodeid=event.nodeid, location=event.location)
    elif isinstance(event, LogFinish):
        hook.pytest_runtest_logfinish(nodeid=event.nodeid, location=event.location)
    elif isinstance(event, WarningRecorded):
        hook.pytest_warning_recorded.call_historic(
            kwargs=dict(
                warning_message=rebuild_warning(event),
                when=event.when,
                nodeid=event.nodeid,
                location=event.location,
            )
        )
    else:
        raise TypeError(f"unknown hook event: {event!r}")
