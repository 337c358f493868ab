"""Shared helpers for the plugin's own tests: run a pytest session and read its verdicts."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

POOL = ("-p", "pytest_poolrun")


def junit_outcomes(path: Path) -> dict[str, tuple[str, str]]:
    """nodeid-like key → (outcome, message) from a junitxml file, ignoring times."""
    outcomes: dict[str, tuple[str, str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        key = f"{case.get('classname')}::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome, message = child.tag, child.get("message", "")
        if key in outcomes:
            key += "#again"  # a test case listed twice (e.g. error in teardown after a failure)
        outcomes[key] = (outcome, message)
    return outcomes


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
