"""What tests record for ``--junitxml`` through pytest's junitxml writer, carried from a worker
to the controller's writer.

Data flow::

    worker: record_xml_attribute / record_testsuite_property fixtures
        ─▶ the worker's copy of the writer (inherited by a forked worker, made here for a
           fresh one; never registered, so it writes no file)
        ─▶ WorkerRecords.take() after each item and at the worker's end
        ─▶ events.JunitRecords (only when something was recorded)
    controller: apply(config, records)
        ─▶ its writer: each test's attributes on that test's case, the run's properties on
           the suite (a property every worker recorded alike, from a session fixture each
           worker set up, once)

Why: ``record_property`` travels on the report (``user_properties``), but these two fixtures
write into the writer object itself, which only the controller's copy turns into the file.
pytest-xdist loses them; serially they are in the file (pytest-metadata's
``include_metadata_in_junit_xml`` puts the run's metadata there this way).
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_poolrun import events

try:
    from _pytest.junitxml import LogXML, xml_key
except ImportError:  # pragma: no cover - a pytest without them: nothing is carried
    LogXML = xml_key = None  # type: ignore[assignment,misc]


class WorkerRecords:
    """The records a worker's writer holds that the controller has not been sent yet."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer
        # A forked worker's writer is the controller's as it was at the fork: what it held
        # then is the controller's already.
        self._reporters_seen = len(writer.node_reporters_ordered)
        self._properties_sent = len(writer.global_properties)

    @classmethod
    def of(cls, config: pytest.Config, forked: bool) -> WorkerRecords | None:
        """The worker's writer's records; None without ``--junitxml``."""
        if xml_key is None or not config.getoption("xmlpath", None):  # -p no:junitxml
            return None
        writer = config.stash.get(xml_key, None)
        if writer is None and not forked:
            # A fresh worker is an xdist worker to pytest's junitxml, which makes no writer
            # there: one that only holds records, as the fixtures expect.
            writer = _holder(config)
            config.stash[xml_key] = writer
        return None if writer is None else cls(writer)

    def take(self) -> events.JunitRecords | None:
        """What was recorded since the last call; None if nothing (the common case: two
        length checks)."""
        writer = self._writer
        reporters, properties = writer.node_reporters_ordered, writer.global_properties
        if len(reporters) == self._reporters_seen and len(properties) == self._properties_sent:
            return None
        attributes = tuple(
            (str(reporter.id), tuple(reporter.attrs.items()))
            for reporter in reporters[self._reporters_seen :]
            if reporter.attrs
        )
        new_properties = tuple(properties[self._properties_sent :])
        self._reporters_seen, self._properties_sent = len(reporters), len(properties)
        if not attributes and not new_properties:
            return None
        return events.JunitRecords(attributes, new_properties)


def _holder(config: pytest.Config) -> Any:
    return LogXML(
        config.option.xmlpath,
        config.option.junitprefix,
        config.getini("junit_suite_name"),
        config.getini("junit_logging"),
        config.getini("junit_duration_report"),
        config.getini("junit_family"),
        config.getini("junit_log_passing_tests"),
    )


def apply(config: pytest.Config, records: events.JunitRecords) -> None:
    """Add a worker's records to the controller's writer (if it has one)."""
    writer = None if xml_key is None else config.stash.get(xml_key, None)
    if writer is None:
        return
    for nodeid, attributes in records.attributes:
        writer.node_reporter(nodeid).attrs.update(attributes)
    for prop in records.properties:
        if prop not in writer.global_properties:
            writer.global_properties.append(prop)
