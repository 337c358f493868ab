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

PLUGIN_MODULE = "pytest_bdd.plugin"
REPORTING_MODULE = "pytest_bdd.reporting"
REGISTRY = "test_report_context_registry"
CARRIED = "_poolrun_bdd_scenario"


class ScenarioCarrier:
    """Copies a report's scenario onto it in a worker; files it again in the controller."""

    def __init__(self, config: pytest.Config, registry: Any) -> None:
        self._config = config
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

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if hasattr(self._config, "workerinput"):
            return  # a worker: the report still has its way to the controller to go
        context = report.__dict__.pop(CARRIED, None)
        if context is not None:
            self._registry[report] = context


def register(config: pytest.Config) -> None:
    """Put ScenarioCarrier in place where a pytest-bdd with a report registry is loaded."""
    plugins = config.pluginmanager.get_plugins()
    if not any(getattr(plugin, "__name__", None) == PLUGIN_MODULE for plugin in plugins):
        return
    registry = getattr(importlib.import_module(REPORTING_MODULE), REGISTRY, None)
    if registry is not None:
        config.pluginmanager.register(ScenarioCarrier(config, registry), "poolrun-bdd-scenarios")
