"""pytest-bdd's scenario of each report, carried from the worker that made it to the controller.

Data flow, in a ``--pool`` run with pytest-bdd 8 or later loaded::

    worker: pytest_runtest_makereport, the outermost wrapper ─▶ once pytest-bdd has filed the
        report's scenario (its registry, keyed by the report object) ─▶ a copy of it as the
        report's attribute CARRIED, which travels with the report
    controller: pytest_runtest_logreport, before any other implementation ─▶ the attribute
        taken off the rebuilt report ─▶ pytest-bdd's registry, keyed by that report
        ─▶ its cucumber JSON (``--cucumberjson``) and gherkin reporter
        (``--gherkin-terminal-reporter``) find the scenario, as in a serial run

**Why.**  The registry lives in the memory of the process that ran the test, and the
controller's report is another object: both reporters found no scenario, so the JSON file
held no feature and the terminal showed plain test lines (pytest-xdist's workers lose them
the same way).  pytest-bdd 7 and older attach the scenario to the report itself, which
travels as it is.

A forked worker also inherited the controller's cucumber JSON writer; ``workersetup`` drops it,
as pytest-bdd does in pytest-xdist's workers, so that only the controller writes the file.
"""

from __future__ import annotations

import importlib
from collections.abc import Generator
from typing import Any

import pytest

from pytest_poolrun.loadedplugins import module_loaded

PLUGIN_MODULE = "pytest_bdd.plugin"
REPORTING_MODULE = "pytest_bdd.reporting"
REGISTRY = "test_report_context_registry"
CARRIED = "_poolrun_bdd_scenario"


class ScenarioCopier:
    """In a worker: copies each report's scenario onto the report, to travel with it."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        # A new-style wrapper: a plugin's error inside passes through it unchanged, with no
        # warning of pluggy's naming this wrapper.
        report = yield
        context = self._registry.get(report)
        if context is not None:
            setattr(report, CARRIED, context)
        return report


class ScenarioFiler:
    """In the controller: files each replayed report's carried scenario in the registry.

    A worker unregisters it (``workersetup``'s controller-only reporters), where the report
    still has its way to the controller to go."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        context = report.__dict__.pop(CARRIED, None)
        if context is not None:
            self._registry[report] = context


def register(config: pytest.Config) -> None:
    """Register both halves where a pytest-bdd with a report registry is loaded."""
    if not module_loaded(config, PLUGIN_MODULE):
        return
    registry = getattr(importlib.import_module(REPORTING_MODULE), REGISTRY, None)
    if registry is not None:
        config.pluginmanager.register(ScenarioCopier(registry), "poolrun-bdd-copier")
        config.pluginmanager.register(ScenarioFiler(registry), "poolrun-bdd-filer")
