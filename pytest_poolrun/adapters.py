"""Adapters for plugins that keep a test's results in the memory of the process that ran it.

A forked worker inherits every plugin configured as in a serial run, so what a plugin gathers
while tests run (coverage data, snapshot assertions, benchmark timings) lands in the worker's
copy of it, which ends with the worker.  Each adapter carries that part back, so the
controller's copy of the plugin ends the session as a serial run's would.

Data flow::

    fresh worker, before its plugins configure ─▶ prepare_fresh_worker(workerinput)
    worker, before its first test ─▶ worker_started(config, forked)
    worker, after its last test    ─▶ worker_finishing(config, workeroutput): fill the dict
    (the WorkerOutput event carries workeroutput to the controller)
    controller, the worker ended   ─▶ worker_ended(config, workeroutput): merge into its plugin
    controller, a worker ended without sending it ─▶ output_lost(config)

Each adapter is active only where its plugin is loaded; an adapter's failure in a worker is
reported, never fatal to the run (``finishing_errors``).
"""

from __future__ import annotations

import io
import os
import pickle
import socket
import sys
import warnings
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any, Protocol

import pytest

from pytest_poolrun.coverageadapter import CoverageAdapter

# workeroutput keys of this runner's own adapters
BENCHMARK_KEY = "poolrun_benchmarks"
RETRY_KEY = "poolrun_retry_report"


class Adapter(Protocol):
    def worker_started(self, config: pytest.Config, forked: bool) -> None: ...

    def worker_finishing(self, config: pytest.Config, output: dict[str, Any]) -> None: ...

    def worker_ended(self, config: pytest.Config, output: dict[str, Any]) -> None: ...

    def output_lost(self, config: pytest.Config) -> None: ...


class SyrupyAdapter:
    """syrupy: the worker writes its snapshots and hands its report over, as an xdist worker.

    syrupy decides which snapshots are unused, and deletes them under ``--snapshot-update``,
    from the assertions it saw; those happen in workers.  A worker (``PYTEST_XDIST_WORKER``
    set) ends its snapshot session, which flushes the writes and publishes the report in
    ``workeroutput``; the controller merges it (syrupy does on ``pytest_testnodedown`` when
    pytest-xdist is installed).  A worker that died took its assertions with it: syrupy is
    then told the unused count is incomplete, so that it deletes nothing.
    """

    def worker_started(self, config: pytest.Config, forked: bool) -> None:
        pass

    def worker_finishing(self, config: pytest.Config, output: dict[str, Any]) -> None:
        session = getattr(config, "_syrupy", None)
        if session is not None:
            session.finish()

    def worker_ended(self, config: pytest.Config, output: dict[str, Any]) -> None:
        session = getattr(config, "_syrupy", None)
        if session is None:
            return
        if not hasattr(session, "add_worker_report"):
            if _uses_snapshots(session):
                self._unused_unknown(
                    config,
                    "this syrupy release cannot merge its workers' assertions (syrupy 5 can)",
                )
            return
        if config.pluginmanager.hasplugin("xdist"):
            return  # syrupy's own pytest_testnodedown merges it
        report = output.get("syrupy_report")
        if report is not None:
            session.add_worker_report(report)
        sidecars = output.get("syrupy_write_sidecars")
        if sidecars:
            session.add_written_snapshot_locations(sidecars)

    def output_lost(self, config: pytest.Config) -> None:
        session = getattr(config, "_syrupy", None)
        if session is not None and _uses_snapshots(session):
            self._unused_unknown(
                config, "a worker ended before handing syrupy its snapshot assertions"
            )

    def _unused_unknown(self, config: pytest.Config, why: str) -> None:
        """No unused-snapshot accounting in this run: syrupy's own answer to an incomplete
        picture (its option since syrupy 5; before, the xdist controller's mark)."""
        if getattr(config.option, "disable_unused_snapshots", False):
            return  # said once already, or the user asked for it
        config.option.disable_unused_snapshots = True
        os.environ["PYTEST_XDIST_WORKER_COUNT"] = "1"
        warnings.warn(
            pytest.PytestWarning(
                f"poolrun: {why}, so this run neither reports nor deletes unused snapshots; "
                "run without --pool to check them"
            ),
            stacklevel=1,
        )


def _uses_snapshots(session: Any) -> bool:
    """Whether a test of the run asks for syrupy's ``snapshot`` fixture."""
    items = getattr(getattr(session, "pytest_session", None), "items", ())
    return any("snapshot" in getattr(item, "fixturenames", ()) for item in items)


class MetadataAdapter:
    """pytest-metadata: a worker's metadata in workeroutput, where its node hook reads it.

    pytest-metadata puts it there in a worker's ``pytest_configure``, which a forked worker
    never runs (it was configured once, as the controller).
    """

    def worker_started(self, config: pytest.Config, forked: bool) -> None:
        pass

    def worker_finishing(self, config: pytest.Config, output: dict[str, Any]) -> None:
        module = sys.modules.get("pytest_metadata.plugin")
        key = getattr(module, "metadata_key", None)
        if key is not None and "metadata" not in output and key in config.stash:
            output["metadata"] = config.stash[key]

    def worker_ended(self, config: pytest.Config, output: dict[str, Any]) -> None:
        pass

    def output_lost(self, config: pytest.Config) -> None:
        pass


class BenchmarkAdapter:
    """pytest-benchmark: the timings of a worker's benchmarks join the controller's session."""

    def worker_started(self, config: pytest.Config, forked: bool) -> None:
        pass

    def worker_finishing(self, config: pytest.Config, output: dict[str, Any]) -> None:
        session = getattr(config, "_benchmarksession", None)
        if session is None:
            return
        output[BENCHMARK_KEY] = pickle.dumps([_portable(entry) for entry in session.benchmarks])

    def worker_ended(self, config: pytest.Config, output: dict[str, Any]) -> None:
        session = getattr(config, "_benchmarksession", None)
        blob = output.get(BENCHMARK_KEY)
        if session is None or blob is None:
            return
        entries = pickle.loads(blob)
        if not entries:
            return  # pytest-benchmark is installed, but this worker ran no benchmark
        session.benchmarks.extend(entries)
        # Each worker's benchmarks come in its own run order, one worker after another; the
        # saved JSON lists them in collection order, as a serial run's does.
        session.benchmarks.sort(key=_collection_order(config))

    def output_lost(self, config: pytest.Config) -> None:
        pass


class StartOnlyAdapter:
    """An adapter whose plugin needs a worker's start prepared, and nothing carried back."""

    def worker_finishing(self, config: pytest.Config, output: dict[str, Any]) -> None:
        pass

    def worker_ended(self, config: pytest.Config, output: dict[str, Any]) -> None:
        pass

    def output_lost(self, config: pytest.Config) -> None:
        pass


class RerunFailuresAdapter(StartOnlyAdapter):
    """pytest-rerunfailures: a forked worker counts failures in the controller's status server.

    With pytest-xdist installed, the controller's ``failures_db`` is a server its workers
    connect to (the keys come through ``pytest_configure_node``); a forked worker inherited
    the server object itself, which it must not use, so it connects as a client, as an xdist
    worker does.  A crashed test can then be rerun (``pytest_handlecrashitem``) with the
    right count.
    """

    def worker_started(self, config: pytest.Config, forked: bool) -> None:
        workerinput: dict[str, Any] = getattr(config, "workerinput", {})
        if not forked or "sock_port" not in workerinput:
            return
        module = sys.modules.get("pytest_rerunfailures")
        client = getattr(module, "ClientStatusDB", None)
        if client is None:
            return
        # Releases before 16 connect with the port alone; later ones also send a token.
        credentials = [workerinput["sock_port"]]
        if "statusdb_token" in workerinput:
            credentials.append(workerinput["statusdb_token"])
        setattr(config, "failures_db", client(*credentials))  # noqa: B010 - the plugin's own


class FlakyAdapter(StartOnlyAdapter):
    """flaky: a forked worker's report starts empty, as in a pytest-xdist worker.

    flaky sets up a worker's ``workeroutput["flaky_report"]`` in ``pytest_configure``, which a
    forked worker never runs, and adds its report there in ``pytest_sessionfinish``
    (``xdistnode.finish_session``); its ``pytest_testnodedown`` adds each worker's report to the
    controller's.  A worker forked after another ended would otherwise inherit, and send again,
    what the controller's report holds by then.
    """

    def worker_started(self, config: pytest.Config, forked: bool) -> None:
        plugin = sys.modules.get("flaky.flaky_pytest_plugin")
        output = getattr(config, "workeroutput", None)
        if not forked or plugin is None or output is None:
            return
        output.setdefault("flaky_report", "")
        flaky = getattr(plugin, "PLUGIN", None)
        if isinstance(getattr(flaky, "_stream", None), io.StringIO):
            flaky._stream = io.StringIO()  # type: ignore[union-attr]


class AllureAdapter(StartOnlyAdapter):
    """allure-pytest: a forked worker's results name its own process in their thread label.

    allure's listener reads the process id and the thread's name for every result's ``thread``
    label once, when ``pytest_configure`` makes it; a forked worker inherits the controller's,
    so Allure's timeline would put tests that ran at once in two workers on one lane.  A
    pytest-xdist worker configures a listener of its own, and so names itself.
    """

    def worker_started(self, config: pytest.Config, forked: bool) -> None:
        listener = config.pluginmanager.get_plugin("allure_listener")
        thread_tag = getattr(sys.modules.get("allure_commons.utils"), "thread_tag", None)
        if forked and listener is not None and thread_tag is not None:
            if hasattr(listener, "_thread"):
                listener._thread = thread_tag()


class RetryAdapter:
    """pytest-retry: the attempts a worker's tests made reach the controller's retry report.

    pytest-retry writes each attempt of a retried test into a reporter in the memory of the
    process that ran it, and its terminal summary prints that reporter's text.  Under
    pytest-xdist (``-n`` only) the controller runs a socket server and each worker a client,
    told the port in its ``workerinput``.  Here a worker keeps an in-memory reporter of its
    own and sends its text with its output, which the controller adds to its reporter.

    A worker started fresh is an xdist worker to pytest-retry, whose ``pytest_configure``
    connects to the port named in ``workerinput``: a listener of the worker's own stands in
    for the server there (``prepare_fresh_worker``) until the worker swaps the client for the
    in-memory reporter.
    """

    def __init__(self) -> None:
        self.stand_in: socket.socket | None = None

    def prepare_fresh(self, workerinput: dict[str, Any]) -> None:
        if _retry_manager() is None or "server_port" in workerinput:
            return
        self.stand_in = socket.create_server(("localhost", 0))
        workerinput["server_port"] = self.stand_in.getsockname()[1]

    def worker_started(self, config: pytest.Config, forked: bool) -> None:
        manager, offline = _retry_manager(), _retry_offline_reporter()
        if manager is None or offline is None:
            return
        client = getattr(manager.reporter, "sock", None)
        # What a forked worker inherited is the controller's (a later worker's: its report so
        # far); a fresh worker's client was connected to the stand-in only.
        manager.reporter = offline()
        for sock in (client, self.stand_in):
            if isinstance(sock, socket.socket):
                sock.close()
        self.stand_in = None

    def worker_finishing(self, config: pytest.Config, output: dict[str, Any]) -> None:
        stream = _retry_stream()
        if stream is not None:
            output[RETRY_KEY] = stream.getvalue()

    def worker_ended(self, config: pytest.Config, output: dict[str, Any]) -> None:
        text, stream = output.get(RETRY_KEY), _retry_stream()
        if isinstance(text, str) and text and stream is not None:
            stream.write(text)

    def output_lost(self, config: pytest.Config) -> None:
        pass


def _retry_manager() -> Any:
    return getattr(sys.modules.get("pytest_retry.retry_plugin"), "retry_manager", None)


def _retry_stream() -> io.StringIO | None:
    """The text of pytest-retry's reporter in this process (an in-memory one's only)."""
    stream = getattr(getattr(_retry_manager(), "reporter", None), "stream", None)
    return stream if isinstance(stream, io.StringIO) else None


def _retry_offline_reporter() -> Any:
    return getattr(sys.modules.get("pytest_retry.server"), "OfflineReporter", None)


RETRY = RetryAdapter()
ADAPTERS: Sequence[Adapter] = (
    CoverageAdapter(),
    SyrupyAdapter(),
    BenchmarkAdapter(),
    RerunFailuresAdapter(),
    MetadataAdapter(),
    FlakyAdapter(),
    AllureAdapter(),
    RETRY,
)


def prepare_fresh_worker(workerinput: dict[str, Any]) -> None:
    """In a worker started fresh, its plugins loaded, before their ``pytest_configure``: what
    a plugin expects pytest-xdist to have put in ``workerinput`` (pytest-retry's port)."""
    RETRY.prepare_fresh(workerinput)


def worker_started(config: pytest.Config, forked: bool) -> list[str]:
    """Prepare each plugin's worker state; returns a line for each adapter that failed."""
    return _each(lambda adapter: adapter.worker_started(config, forked))


def worker_finishing(config: pytest.Config, output: dict[str, Any]) -> list[str]:
    """Fill ``output``; returns a line for each adapter that failed (the rest still ran)."""
    return _each(lambda adapter: adapter.worker_finishing(config, output))


def _each(step: Callable[[Adapter], None]) -> list[str]:
    """Run ``step`` for every adapter: one plugin's surprise must not cost the run."""
    errors = []
    for adapter in ADAPTERS:
        try:
            step(adapter)
        except Exception as exc:
            errors.append(f"{type(adapter).__name__}: {type(exc).__name__}: {exc}")
    return errors


def worker_ended(config: pytest.Config, output: dict[str, Any] | None) -> None:
    for adapter in ADAPTERS:
        if output is None:
            adapter.output_lost(config)
        else:
            adapter.worker_ended(config, output)


# Each collected item's place, by node id: mapped once per run, for the first worker that ends.
_places_key = pytest.StashKey[dict[str, int]]()


def _collection_order(config: pytest.Config) -> Callable[[Any], int]:
    """A sort key: a benchmark's place in the session's collected items (by its node id,
    ``fullname``); one of no collected item after all of them."""
    places = config.stash.get(_places_key, None)
    if places is None:
        items = getattr(config.pluginmanager.get_plugin("session"), "items", None) or []
        places = config.stash[_places_key] = {
            item.nodeid: place for place, item in enumerate(items)
        }
    return lambda entry: places.get(getattr(entry, "fullname", ""), len(places))


def _portable(entry: Any) -> Any:
    """A benchmark's record without its fixture (which holds the test's request)."""
    fixture = entry.fixture
    entry.fixture = SimpleNamespace(
        name=fixture.name,
        fullname=fixture.fullname,
        group=fixture.group,
        param=fixture.param,
        params=fixture.params,
        extra_info=fixture.extra_info,
        has_error=fixture.has_error,
        cprofile_stats=None,
    )
    entry.cprofile_stats = None
    return entry
