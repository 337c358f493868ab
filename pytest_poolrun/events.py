"""What a runner worker tells the controller, and how the controller replays it into its hooks.

Data flow::

    worker: pytest hook fires ─▶ capture_*() ─▶ event ─┐  (buffered per item, sent as ItemFinished)
                                                       ▼
    controller: replay_item / replay ─▶ the same hook, called on the controller's plugins
                                        (terminal, junitxml, cacheprovider, warnings summary…),
                                        the report hooks through directhooks' callers

This module is where a test report crosses the process boundary: reports travel as the dicts made
by pytest's own ``pytest_report_to_serializable`` hook and are rebuilt with
``pytest_report_from_serializable``, so plugins that extend reports (pytest's subtests among them)
take part.  Two shortcuts keep fast suites fast and failures exact.  A plainly passing phase of
an item (``plain_pass``: a ``TestReport`` with nothing but its standard attributes, no output,
no user properties, the item's own keywords) travels as ``PassedReport``, its location and
three floats (an item whose three phases all pass plainly as one ``PassedItem``, see
``passed_item``), and the controller builds the report again from its own copy of the item with
``TestReport(...)``, as pytest's ``from_item_and_call`` does serially: the report shares the
item's node id, location and keyword names, and costs the controller what it costs a serial
run.  Any other plain ``TestReport`` (or pytest's subtest report), in a run where only pytest
itself implements those hooks, travels as its pickled attributes, so the controller gets the very
objects a serial run would have (the hooks turn some failure representations, doctests' for one,
into plain text, and quote a subtest's parameters again), at a fraction of the cost.
Warnings travel as text with their category named by module and qualified name.

**Records.**  A worker encodes each event once, when it is made, into a *record*: a header (the
body's length, the item's index, the body's format) and the event, pickled (a finished item's
hook events as plain tuples, see ``FINISHED``; a plainly passing item's one ``PassedItem``
packed without pickle, see ``PASSED``).  The same bytes go into the worker's
results journal and, in batches (a tuple of records), over the socket; the header lets the
controller split a journal and skip items it already has without unpickling them, and spot a
record torn by a kill.  ``encode`` never fails on a report: a value in ``user_properties`` that
does not pickle travels as ``str(value)`` (what junitxml writes of it serially), any other
attribute that does not pickle turns the report into that test's failure, which names it.
"""

from __future__ import annotations

import importlib
import pickle
import struct
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple, Union

import pytest

from pytest_poolrun import directhooks
from pytest_poolrun.interruption import Interrupt

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
    """pytest's protocol raised while the item ran: the item gets no verdict.

    ``interrupt``: it was a KeyboardInterrupt, which ends a serial run (exit code 2), so it
    ends this one too; anything else (None: a plugin's hook raising) ends it as an
    INTERNALERROR.  ``recorded``: the hook calls the item made before that (its start, a setup
    report, the warnings recorded while it ran), which a serial run made too.
    """

    item: int
    description: str
    interrupt: Interrupt | None = None
    recorded: tuple[HookEvent, ...] = ()


class LogStart(NamedTuple):
    nodeid: str
    location: Location


class LogReport(NamedTuple):
    data: dict[str, Any]


class PlainReport(NamedTuple):
    """A plain ``TestReport``'s attributes, pickled (see the module docstring); ``kind`` names
    its class when that is one of pytest's own subclasses (``PLAIN_REPORT_CLASSES``)."""

    state: bytes
    kind: str = ""


class PassedReport(NamedTuple):
    """A plainly passing phase of the item being recorded (see ``plain_pass``); the controller
    rebuilds the report from its own item (``rebuild_passed``)."""

    location: Location
    when: str
    duration: float
    start: float
    stop: float


class LogFinish(NamedTuple):
    nodeid: str
    location: Location


class PassedItem(NamedTuple):
    """A plainly passing item's five hook calls in one (``passed_item``): its location and
    each phase's duration, start and stop (setup, call, teardown: nine floats)."""

    location: Location
    times: tuple[float, ...]


class WarningRecorded(NamedTuple):
    message: str
    category: str
    filename: str
    lineno: int
    when: str
    nodeid: str
    location: Location | None
    # Whether the warning named the object it is about (``warnings.warn(source=…)``, a
    # ResourceWarning's): pytest's summary then adds how to find where it was allocated.
    had_source: bool = False


HookEvent = Union[
    LogStart, LogReport, PlainReport, LogFinish, WarningRecorded, PassedReport, PassedItem
]


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


class TerminalOutput(NamedTuple):
    """Text a worker wrote for the terminal (live logs, a plugin's lines, ``-s`` output),
    sent as soon as it is flushed; ``nodeid`` is the test it was written during, if any."""

    nodeid: str | None
    text: str


class JunitRecords(NamedTuple):
    """What tests recorded into the worker's junitxml writer since the last such event (see
    ``junitrecords``): ``record_xml_attribute``'s attributes, by node id, and
    ``record_testsuite_property``'s properties."""

    attributes: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]
    properties: tuple[tuple[str, str], ...]


class WorkerOutput(NamedTuple):
    """The worker is done: its ``config.workeroutput``, as pytest-xdist's workers send it."""

    output: dict[str, Any]


WorkerEvent = Union[
    ItemStarted,
    ItemAborted,
    ItemFinished,
    LooseEvents,
    SessionExit,
    CaptureFiles,
    TerminalOutput,
    JunitRecords,
    WorkerOutput,
]


# The header of a record: the body's length, its item's index (NO_ITEM if none), its format.
RECORD = struct.Struct("<IqB")
NO_ITEM = -1
# Body formats: any event, pickled; or an ItemFinished's hook events as plain tuples (a kind's
# index in HOOK_KINDS, then its fields).  One item per record means one pickle per item, which
# would repeat (and look up) every event class each time; plain tuples of builtins make the
# common record cheaper to write and to read than a batch of NamedTuples was.
# And the commonest record, a finished item that passed plainly (one PassedItem), packed: its
# nine times, its line number and the lengths of its location's two strings, then the strings.
PICKLED, FINISHED, PASSED = 0, 1, 2
_PASSED_HEAD = struct.Struct("<9dqII")
NO_LINE = -(2**63)  # a location's line number of None, in a PASSED record
HOOK_KINDS: tuple[type[HookEvent], ...] = (
    LogStart,
    LogReport,
    PlainReport,
    LogFinish,
    WarningRecorded,
    PassedReport,
    PassedItem,
)
_HOOK_TAGS = {kind: tag for tag, kind in enumerate(HOOK_KINDS)}


def encode(event: WorkerEvent) -> bytes:
    """``event`` as one record; an event that does not pickle is made sendable (see above)."""
    if type(event) is ItemFinished:
        packed = _packed_pass(event.events)
        if packed is not None:
            return RECORD.pack(len(packed), event.item, PASSED) + packed
        form = FINISHED
        try:
            body = _dumps(_plain(event.events))
        except Exception:
            body = _dumps(_plain(_sendable(event).events))  # type: ignore[union-attr]
    else:
        form = PICKLED
        try:
            body = _dumps(event)
        except Exception:
            body = _dumps(_sendable(event))
    item = getattr(event, "item", NO_ITEM)
    return RECORD.pack(len(body), item, form) + body


def decode(record: bytes) -> WorkerEvent:
    _, item, form = RECORD.unpack_from(record)
    if form == PASSED:
        return ItemFinished(item, (_unpacked_pass(record),))
    body = memoryview(record)[RECORD.size :]
    if form == FINISHED:
        plain = pickle.loads(body)
        return ItemFinished(item, tuple(HOOK_KINDS[fields[0]](*fields[1:]) for fields in plain))
    event: WorkerEvent = pickle.loads(body)
    return event


def _packed_pass(hook_events: tuple[HookEvent, ...]) -> bytes | None:
    """The body of a PASSED record, if ``hook_events`` is one ``PassedItem`` whose location
    holds what a location is made of (two strings and a line number); else None."""
    if len(hook_events) != 1 or type(hook_events[0]) is not PassedItem:
        return None
    location, times = hook_events[0]
    path, lineno, domain = location
    if type(path) is not str or type(domain) is not str:
        return None
    if lineno is None:
        lineno = NO_LINE
    elif type(lineno) is not int:
        return None
    # surrogatepass: a file name that is not UTF-8 comes back as the same str.
    path_bytes = path.encode("utf-8", "surrogatepass")
    domain_bytes = domain.encode("utf-8", "surrogatepass")
    try:
        head = _PASSED_HEAD.pack(*times, lineno, len(path_bytes), len(domain_bytes))
    except struct.error:  # a time that is no number: pickle keeps it as it is
        return None
    return head + path_bytes + domain_bytes


def _unpacked_pass(record: bytes) -> PassedItem:
    fields = _PASSED_HEAD.unpack_from(record, RECORD.size)
    lineno, path_length, domain_length = fields[9:]
    start = RECORD.size + _PASSED_HEAD.size
    middle = start + path_length
    path = str(record[start:middle], "utf-8", "surrogatepass")
    domain = str(record[middle : middle + domain_length], "utf-8", "surrogatepass")
    return PassedItem((path, None if lineno == NO_LINE else lineno, domain), fields[:9])


def _dumps(value: object) -> bytes:
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def _plain(hook_events: tuple[HookEvent, ...]) -> tuple[tuple[Any, ...], ...]:
    return tuple((_HOOK_TAGS[type(event)], *event) for event in hook_events)


def split_records(data: bytes) -> tuple[list[tuple[int, bytes]], int | None]:
    """A journal's complete records as (item, record), and the item of a torn last record.

    A record is torn when its writer was killed in the middle of ``write``.
    """
    records: list[tuple[int, bytes]] = []
    offset = 0
    while offset + RECORD.size <= len(data):
        length, item, _ = RECORD.unpack_from(data, offset)
        end = offset + RECORD.size + length
        if end > len(data):
            return records, item
        records.append((item, data[offset:end]))
        offset = end
    return records, None


def _sendable(event: WorkerEvent) -> WorkerEvent:
    if isinstance(event, (ItemFinished, LooseEvents)):
        return event._replace(events=tuple(_sendable_hook_event(e) for e in event.events))
    if isinstance(event, (SessionExit, ItemAborted)):
        return event._replace(recorded=tuple(_sendable_hook_event(e) for e in event.recorded))
    return event  # the others hold plain data only


def _pickles(value: object) -> Exception | None:
    try:
        pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        return exc
    return None


def _sendable_hook_event(event: HookEvent) -> HookEvent:
    if not isinstance(event, LogReport) or _pickles(event) is None:
        return event  # only a report's dict can hold what a plugin or a test attached
    data = dict(event.data)
    data["user_properties"] = [
        (name, value if _pickles(value) is None else str(value))
        for name, value in data.get("user_properties", ())
    ]
    for key, value in data.items():
        error = _pickles(value)
        if error is not None:
            return _unsendable_report(data, key, value, error)
    return LogReport(data)


def _unsendable_report(
    data: dict[str, Any], key: str, value: object, error: Exception
) -> HookEvent:
    """The test's failure in place of a report that cannot reach the controller."""
    location = data.get("location")
    report = pytest.TestReport(
        nodeid=str(data.get("nodeid", "")),
        location=tuple(location) if location else ("", None, ""),
        keywords={},
        outcome="failed",
        longrepr=(
            f"the test's report could not be sent to the controller: report.{key} is a "
            f"{type(value).__module__}.{type(value).__qualname__}, which does not pickle "
            f"({type(error).__name__}: {error}); keep such objects out of the report (attach "
            "their str() instead)"
        ),
        when=data.get("when", "call"),
        sections=[
            tuple(section) for section in data.get("sections", ()) if _pickles(section) is None
        ],
        duration=float(data.get("duration", 0.0)),
    )
    return PlainReport(pickle.dumps(report.__dict__, pickle.HIGHEST_PROTOCOL))


# ------------------------------------------------------------------------------ worker side


# Plugins whose pytest_report_to_serializable leaves a plain TestReport to pytest's own code.
BUILTIN_SERIALIZERS = frozenset({"reports", "subtests"})

# The report classes whose attributes travel pickled (PlainReport.kind ─▶ class).  pytest 9's
# subtest reports among them: their serialized form comes back with every parameter quoted
# (``i='1'`` for ``i=1``), as pytest makes the parameters' text again from text.
PLAIN_REPORT_CLASSES: dict[str, type[pytest.TestReport]] = {"": pytest.TestReport}
try:
    PLAIN_REPORT_CLASSES["subtest"] = importlib.import_module("_pytest.subtests").SubtestReport
except (ImportError, AttributeError):  # pytest < 9: no subtests of its own
    pass
_PLAIN_KINDS = {cls: kind for kind, cls in PLAIN_REPORT_CLASSES.items()}


def only_builtin_serializers(config: pytest.Config) -> bool:
    impls = config.hook.pytest_report_to_serializable.get_hookimpls()
    return all(impl.plugin_name in BUILTIN_SERIALIZERS for impl in impls)


def capture_report(
    config: pytest.Config, report: pytest.TestReport, shortcut: bool
) -> LogReport | PlainReport:
    kind = _PLAIN_KINDS.get(type(report)) if shortcut else None
    if kind is not None:
        try:
            state = pickle.dumps(report.__dict__, pickle.HIGHEST_PROTOCOL)
            if report.longrepr is not None:
                pickle.loads(state)  # a failure's representation must also rebuild
            return PlainReport(state, kind)
        except Exception:
            pass  # something a plugin attached does not pickle: take the hooks' way
    data = config.hook.pytest_report_to_serializable(config=config, report=report)
    return LogReport(data)


# The attributes pytest's own constructor gives a TestReport (``_id`` or ``nodeid``, by version).
_PLAIN_ATTRIBUTES = frozenset(
    vars(pytest.TestReport("plain.py::test", ("plain.py", 0, "test"), {}, "passed", None, "call"))
)


def is_plain_pass(report: pytest.TestReport) -> bool:
    """Whether ``report`` is plainly passing: everything in it but the location and times is
    what the controller's item and ``rebuild_passed`` give, provided the caller checked that it
    is the report of the item being run and that the item's keywords are still those it was
    collected with."""
    return (
        type(report) is pytest.TestReport
        and report.outcome == "passed"
        and report.longrepr is None
        and not report.sections
        and not report.user_properties
        and report.__dict__.keys() == _PLAIN_ATTRIBUTES
    )


def plain_pass(report: pytest.TestReport) -> PassedReport | None:
    """``report`` as a ``PassedReport`` if it is plainly passing (``is_plain_pass``)."""
    if is_plain_pass(report):
        return PassedReport(
            report.location, report.when, report.duration, report.start, report.stop
        )
    return None


_PHASE_ORDER = ("setup", "call", "teardown")


def passed_item(
    nodeid: str, recorded: Sequence[HookEvent | pytest.TestReport]
) -> PassedItem | None:
    """The hook calls recorded while the item ``nodeid`` ran as one ``PassedItem``, when they
    are exactly a plainly passing item's: its logstart, three reports (setup, call, teardown),
    and logfinish, all for that item and its location.  The reports are the ``TestReport``
    objects themselves, each found plainly passing (``is_plain_pass``) when it was recorded;
    their outcomes are looked at again, as a worker's plugin may fail a test's call report
    once its teardown is done (``leaks``: ``--pool-leaks fail``)."""
    if len(recorded) != 5:
        return None
    start, setup, call, teardown, finish = recorded
    if (
        type(start) is LogStart
        and type(finish) is LogFinish
        and type(setup) is pytest.TestReport
        and type(call) is pytest.TestReport
        and type(teardown) is pytest.TestReport
        and start.nodeid == nodeid == finish.nodeid
        and start.location == setup.location == call.location == teardown.location
        and finish.location == start.location
        and (setup.when, call.when, teardown.when) == _PHASE_ORDER
        and setup.outcome == call.outcome == teardown.outcome == "passed"
    ):
        times = (setup.duration, setup.start, setup.stop, call.duration, call.start, call.stop)
        return PassedItem(
            start.location, (*times, teardown.duration, teardown.start, teardown.stop)
        )
    return None


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
        had_source=message.source is not None,
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
    # The object itself stays in the worker.  A stand-in that the allocation tracer never saw
    # (a built-in type) gives the summary's hint as the worker's would without tracemalloc.
    source = object if event.had_source else None
    return warnings.WarningMessage(message, category, event.filename, event.lineno, source=source)


# Phase names as constants, as in the reports pytest makes, rather than a string per report.
_PHASES = {when: when for when in _PHASE_ORDER}


def rebuild_passed(
    item: pytest.Item,
    location: Location,
    when: str,
    times: Sequence[float],
    keywords: dict[str, Literal[1]],
) -> pytest.TestReport:
    """A plainly passing report sent as ``PassedReport`` or within a ``PassedItem``, made as
    ``TestReport.from_item_and_call`` makes it: with the item's node id object (pytest 9) and
    ``keywords``, its keyword names; ``times`` are its duration, start and stop."""
    duration, start, stop = times
    return _passed_report(_report_node_id(item), location, keywords, when, duration, start, stop)


def _report_node_id(item: pytest.Item) -> Any:
    node_id = getattr(item, "id", None)  # pytest 9's node id object; not given, None
    return item.nodeid if node_id is None else node_id


def _passed_report(
    node_id: Any,
    location: Location,
    keywords: dict[str, Literal[1]],
    when: str,
    duration: float,
    start: float,
    stop: float,
) -> pytest.TestReport:
    return pytest.TestReport(
        node_id,
        location,
        keywords,
        "passed",
        None,
        _PHASES.get(when, when),  # type: ignore[arg-type]
        [],
        duration,
        start,
        stop,
        [],
    )


def replay_item(
    config: pytest.Config,
    item: pytest.Item | None,
    hook_events: Sequence[HookEvent],
    hooks: directhooks.ReportHooks | None = None,
    keyword_names: Callable[[pytest.Item], dict[str, Literal[1]]] | None = None,
) -> None:
    """Call the controller's hooks that ``hook_events``, recorded while ``item`` ran (or
    outside any item: None), stand for, in order; the report hooks through ``hooks`` (by
    default ``config.hook``'s); a rebuilt report's keywords from ``keyword_names`` (by default
    ``dict.fromkeys(item.keywords, 1)``, see ``keywordnames``)."""
    if hooks is None:
        hooks = _config_report_hooks(config)
    if keyword_names is None:
        keyword_names = _all_keyword_names
    keywords: dict[str, Literal[1]] | None = None
    for event in hook_events:
        if not isinstance(event, (PassedReport, PassedItem)):
            replay(config, event, hooks)
            continue
        if item is None:
            raise TypeError(f"a passed report outside any item: {event!r}")
        if isinstance(event, PassedItem):
            _replay_passed_item(item, event, hooks, keyword_names(item))
            continue
        if keywords is None:
            # Listing the keywords is a report's largest cost: once per item, not per report.
            keywords = keyword_names(item)
        # Each report its own keywords dict, as serially: a plugin may change one.
        times = (event.duration, event.start, event.stop)
        report = rebuild_passed(item, event.location, event.when, times, dict(keywords))
        hooks.logreport(report=report)


def _all_keyword_names(item: pytest.Item) -> dict[str, Literal[1]]:
    return dict.fromkeys(item.keywords, 1)


def _replay_passed_item(
    item: pytest.Item,
    event: PassedItem,
    hooks: directhooks.ReportHooks,
    keywords: dict[str, Literal[1]],
) -> None:
    """A plainly passing item's five hook calls, its three reports made as ``rebuild_passed``
    makes one, with the item's node id and keyword names (``keywords``, the first report's
    own dict) read once for all three."""
    location, times = event
    nodeid = item.nodeid
    node_id = _report_node_id(item)
    # Each report gets its own keywords dict, as serially: a plugin may change one.
    logreport = hooks.logreport
    hooks.logstart(nodeid=nodeid, location=location)
    logreport(report=_passed_report(node_id, location, keywords, "setup", *times[0:3]))
    logreport(report=_passed_report(node_id, location, dict(keywords), "call", *times[3:6]))
    logreport(report=_passed_report(node_id, location, dict(keywords), "teardown", *times[6:9]))
    hooks.logfinish(nodeid=nodeid, location=location)


def _config_report_hooks(config: pytest.Config) -> directhooks.ReportHooks:
    hook = config.hook
    return directhooks.ReportHooks(
        hook.pytest_runtest_logstart, hook.pytest_runtest_logreport, hook.pytest_runtest_logfinish
    )


def replay(config: pytest.Config, event: HookEvent, hooks: directhooks.ReportHooks) -> None:
    """Call the controller's hook that ``event`` stands for (``replay_item`` for a
    ``PassedReport``, which needs its item); the report hooks through ``hooks``."""
    hook = config.hook
    if isinstance(event, PlainReport):
        cls = PLAIN_REPORT_CLASSES[event.kind]
        report = cls.__new__(cls)
        report.__dict__.update(pickle.loads(event.state))
        hooks.logreport(report=report)
    elif isinstance(event, LogReport):
        report = hook.pytest_report_from_serializable(config=config, data=event.data)
        hooks.logreport(report=report)
    elif isinstance(event, LogStart):
        hooks.logstart(nodeid=event.nodeid, location=event.location)
    elif isinstance(event, LogFinish):
        hooks.logfinish(nodeid=event.nodeid, location=event.location)
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
