"""coverage.py under ``--pool`` (pytest-cov or ``coverage run``): one data set, the controller's.

Data flow::

    controller, before a fresh worker starts ─▶ add_coverage_input(workerinput): its
        configuration, serialized (and pytest-cov's --no-cov for the worker's own plugin)
    fresh worker, before it imports the suite ─▶ start_fresh_coverage(configuration)
    forked worker, before its first test ─▶ CoverageAdapter.worker_started: the inherited
        coverage stopped (its data is the controller's to save), a fresh in-memory one started
    worker, after its last test ─▶ worker_finishing: its data, serialized, and the packages
        measured by name that it saw imported, into workeroutput
    controller, the worker ended ─▶ worker_ended: added to its own coverage's data

Totals and missed lines are a serial run's, and pytest-cov or ``coverage run`` save and report
them as usual.  A worker's coverage measures part of the run, so it leaves to the controller's
the warnings that judge a measurement as a whole (``WHOLE_RUN_WARNINGS``).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from typing import Any

import pytest

# workeroutput keys: a worker's data, serialized, and the packages measured by name that it
# saw imported
COVERAGE_KEY = "poolrun_coverage"
COVERAGE_PACKAGES_KEY = "poolrun_coverage_packages"
# workerinput keys: the controller's coverage configuration, for workers that start fresh, and
# the arguments that keep pytest-cov there from measuring a second time
COVERAGE_CONFIG_KEY = "poolrun_coverage_config"
COVERAGE_ARGS_KEY = "poolrun_coverage_args"
# coverage.py's names (its disable_warnings setting) for the warnings that judge a measurement
# as a whole: a package it never saw imported, or whose own module it never saw run, and no
# data at all.  A worker's coverage measures part of the run (a forked worker's starts after
# the controller imported the suite's packages): only the controller's, which gets every
# worker's data, can judge the whole, as a serial run's does.  Raised in a worker, under a
# suite's ``filterwarnings = error``, one of them lost that worker's data.
WHOLE_RUN_WARNINGS = ("module-not-imported", "module-not-measured", "no-data-collected")


class CoverageAdapter:
    """coverage.py, under pytest-cov or ``coverage run``: one data set, the controller's.

    A forked worker stops the coverage it inherited (whose data the controller already has and
    saves) and measures with a fresh, in-memory one of the same configuration; a fresh worker
    starts that one before it imports anything (``start_fresh_coverage``).  The worker's data
    travels back, serialized, and is added to the controller's: totals and missed lines are a
    serial run's, and pytest-cov or ``coverage run`` save and report them as usual.
    """

    def worker_started(self, config: pytest.Config, forked: bool) -> None:
        if not forked:
            return
        parent = _current_coverage()
        if parent is None:
            return
        # The parent's data is the controller's to save; this copy must never write it.
        parent._auto_save = False
        parent.stop()
        child = _measuring_part_of_the_run(_coverage_like(parent))
        child.start()
        cov_plugin: Any = config.pluginmanager.get_plugin("_cov")
        cov_controller = getattr(cov_plugin, "cov_controller", None)
        if cov_controller is not None and getattr(cov_controller, "cov", None) is parent:
            cov_controller.cov = child  # --cov-context=test switches contexts on this one

    def worker_finishing(self, config: pytest.Config, output: dict[str, Any]) -> None:
        current = _current_coverage()
        if current is None:
            return
        current.stop()
        output[COVERAGE_KEY] = current.get_data().dumps()
        output[COVERAGE_PACKAGES_KEY] = _packages_seen(current)

    def worker_ended(self, config: pytest.Config, output: dict[str, Any]) -> None:
        blob = output.get(COVERAGE_KEY)
        current = _current_coverage()
        if blob is None or current is None:
            return
        from coverage import CoverageData
        from coverage.exceptions import CoverageWarning

        data = CoverageData(no_disk=True)
        try:
            data.loads(blob)
            _saw_packages(current, output.get(COVERAGE_PACKAGES_KEY, ()))
            with warnings.catch_warnings():
                # Reading the controller's data mid-run makes coverage.py judge it as a whole
                # (a package never imported here, no data yet), which a serial run does only
                # at the end: those verdicts would be early and wrong, and errors under a
                # suite's ``filterwarnings = error``.
                warnings.simplefilter("ignore", CoverageWarning)
                current.get_data().update(data)
        finally:
            _close_in_memory(data)

    def output_lost(self, config: pytest.Config) -> None:
        pass  # lines a crashed worker ran are missing, as under pytest-xdist


def add_coverage_input(config: pytest.Config, workerinput: dict[str, Any]) -> None:
    """In the controller: how a fresh worker measures coverage as this process does."""
    current = _current_coverage()
    serialize = getattr(getattr(current, "config", None), "serialize", None)
    if serialize is None:
        return  # no coverage here, or a coverage.py too old to hand its configuration over
    workerinput[COVERAGE_CONFIG_KEY] = str(serialize())
    if config.pluginmanager.get_plugin("_cov") is not None:
        workerinput[COVERAGE_ARGS_KEY] = ["--no-cov"]


def start_fresh_coverage(serialized: str) -> None:
    """In a fresh worker, before it imports the suite: measure as the controller does."""
    from coverage import Coverage

    _measuring_part_of_the_run(Coverage(data_file=None, config_file=":data:" + serialized)).start()


def _current_coverage() -> Any:
    module = sys.modules.get("coverage")
    if module is None:
        return None
    return module.Coverage.current()


def _coverage_like(parent: Any) -> Any:
    """A fresh, in-memory Coverage configured as ``parent``."""
    from coverage import Coverage

    serialize = getattr(parent.config, "serialize", None)
    if serialize is not None:
        return Coverage(data_file=None, config_file=":data:" + serialize())
    config = parent.config  # coverage releases before 7.10 cannot serialize their config
    return Coverage(
        data_file=None,
        config_file=config.config_file or False,
        source=config.source,
        branch=config.branch,
        include=config.run_include,
        omit=config.run_omit,
    )


def _unseen_packages(coverage: Any) -> tuple[list[str], list[str]] | None:
    """The packages ``coverage`` measures by name, and those whose own module it has not seen
    run yet (what it warns about at the end); None where coverage.py keeps them otherwise."""
    selection = getattr(coverage, "_inorout", None)  # pytest-cov reads coverage's privates too
    named = getattr(selection, "source_pkgs", None)
    unseen = getattr(selection, "source_pkgs_unmatched", None)
    if isinstance(named, list) and isinstance(unseen, list):
        return named, unseen
    return None


def _packages_seen(coverage: Any) -> list[str]:
    """In a worker: the packages measured by name whose own module ran here (imported here)."""
    packages = _unseen_packages(coverage)
    if packages is None:
        return []
    named, unseen = packages
    return [name for name in named if name not in unseen]


def _saw_packages(coverage: Any, seen: Sequence[str]) -> None:
    """In the controller: a package a worker imported was imported in the run, as serially,
    where the one process saw it; coverage.py would otherwise warn that it never was."""
    packages = _unseen_packages(coverage)
    if packages is not None:
        unseen = packages[1]
        unseen[:] = [name for name in unseen if name not in seen]


def _close_in_memory(data: Any) -> None:
    """Close the in-memory database of ``data`` (a worker's, once merged): Python 3.13 warns of
    a connection left to the collector, an error under ``filterwarnings = error``."""
    close = getattr(data, "close", None)
    if callable(close):
        close(force=True)
        return
    for database in getattr(data, "_dbs", {}).values():  # coverage.py before 7.11: no close()
        connection = getattr(database, "con", None)
        if connection is not None:
            connection.close()


def _measuring_part_of_the_run(coverage: Any) -> Any:
    """``coverage``, a worker's, without the warnings that judge a whole measurement."""
    disabled = getattr(coverage.config, "disable_warnings", None)
    if isinstance(disabled, list):
        disabled.extend(name for name in WHOLE_RUN_WARNINGS if name not in disabled)
    return coverage
