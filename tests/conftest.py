"""Fixtures shared by the plugin's own tests (plain helpers live in ``helpers.py``)."""

from __future__ import annotations

import pytest
from helpers import POOL, junit_outcomes


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
