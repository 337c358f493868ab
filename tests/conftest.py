"""Fixtures shared by the plugin's own tests (plain helpers live in ``helpers.py``)."""

from __future__ import annotations

import pytest
from helpers import POOL, junit_outcomes

# Third-party plugins in the test extras (for tests/test_plugins.py) that would otherwise be
# autoloaded by every pytester subprocess and change what those sessions do: pytest-randomly
# shuffles and reseeds, pytest-rerunfailures starts a thread in pytest_configure, others add
# header lines or session-end checks.
THIRD_PARTY_PLUGINS = (
    "randomly",
    "rerunfailures",
    "pytest_cov",
    "timeout",
    "django",
    "syrupy",
    "hypothesispytest",
    "benchmark",
    "pytest_jsonreport",
    "metadata",
)

# What a pytest-xdist or pytest-poolrun worker sets in its environment.  When this suite runs
# under ``--pool``, a pytester subprocess would inherit them and act as a worker of that outer
# run (plugins skip their controller-side work, the runner's own checks read the outer names).
OUTER_WORKER_VARIABLES = (
    "PYTEST_XDIST_WORKER",
    "PYTEST_XDIST_WORKER_COUNT",
    "PYTEST_XDIST_TESTRUNUID",
)


@pytest.fixture(autouse=True)
def _plain_pytester_sessions(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Keep the pytester sessions of this suite free of the extras' third-party plugins.

    A module that sets ``REAL_PLUGINS = True`` (test_plugins.py) gets every installed plugin,
    as a user's session does.  Either way a session of its own, not a worker of an outer run.
    """
    if "pytester" in request.fixturenames:
        for name in OUTER_WORKER_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        if not getattr(request.module, "REAL_PLUGINS", False):
            request.getfixturevalue("pytester")  # it clears PYTEST_ADDOPTS when it is set up
            blocked = " ".join(f"-p no:{name}" for name in THIRD_PARTY_PLUGINS)
            monkeypatch.setenv("PYTEST_ADDOPTS", blocked)
    yield


@pytest.fixture
def run_both(pytester: pytest.Pytester):
    """Run the same suite serially and with --pool; return both results and junit outcomes."""

    def run(*args: str, workers: str = "2"):
        serial_xml = pytester.path / "serial.xml"
        pool_xml = pytester.path / "pool.xml"
        serial = pytester.runpytest_subprocess(*POOL, f"--junitxml={serial_xml}", *args)
        pooled = pytester.runpytest_subprocess(
            *POOL, "--pool", workers, f"--junitxml={pool_xml}", *args
        )
        return serial, pooled, junit_outcomes(serial_xml), junit_outcomes(pool_xml)

    return run
