"""pytest-check's failure message in a worker: the one a serial run shows.

Data flow, in a ``--pool`` run with pytest-check installed::

    pytest_configure (the controller's, a fresh worker's) ─▶ register CheckMessages
    a worker's pytest_runtest_makereport ─▶ CheckMessages, the outermost wrapper:
        PYTEST_XDIST_WORKER set aside ─▶ every implementation, pytest-check's among them
        ─▶ the variable put back, before anything else of the test runs

**Why.**  pytest-check 3 makes a failed test's report in one of two shapes.  Where
``PYTEST_XDIST_WORKER`` is unset it builds a traceback-like report whose crash line is the first
failed check: the failure then opens with that line, and the short summary reads
``FAILED t.py::test_x - assert 1 == 2``.  Where it is set (a pytest-xdist worker, whose report
transport that shape once broke) the report is plain text, and the summary line reads
``... - FAILURE: assert 1 == 2``.  Workers set the variable, as pytest-xdist's do, for the
conftests that key a worker's resources on it; the report travels to the controller intact in
either shape, so pytest-check is left to make the serial one.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

from pytest_poolrun.loadedplugins import module_loaded

PLUGIN_MODULE = "pytest_check.plugin"
WORKER_VARIABLE = "PYTEST_XDIST_WORKER"


class CheckMessages:
    """Hides the worker's name from every makereport implementation while they run."""

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        name = os.environ.pop(WORKER_VARIABLE, None)
        try:
            return (yield)
        finally:
            if name is not None:
                os.environ[WORKER_VARIABLE] = name


def register(config: pytest.Config) -> None:
    """Put CheckMessages in place where pytest-check is loaded."""
    if module_loaded(config, PLUGIN_MODULE):
        config.pluginmanager.register(CheckMessages(), "poolrun-check-messages")
