"""Helpers shared by the plugin's tests: run options, junit verdicts, the processes of a run."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

POOL = ("-p", "pytest_poolrun")
# Upper bound for the kernel to deliver a death signal and for us to see it; generous for CI.
SETTLE_SECONDS = 5.0


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


def pid_noting_conftest(path: Path) -> str:
    """A conftest noting each test's process id in ``path`` (named literally: execnet socket
    servers, like real remote hosts, do not share this process's environment)."""
    return f"""
import os, pytest

@pytest.fixture(autouse=True)
def _note_pid():
    with open({str(path)!r}, "a") as pids:
        pids.write(f"{{os.getpid()}}\\n")
    yield
"""


def file_a_conftest_writes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, name: str, env: str, conftest: str
) -> Path:
    """``pytester.path / name``, named in the environment variable ``env`` for ``conftest``."""
    path = pytester.path / name
    monkeypatch.setenv(env, str(path))
    pytester.makeconftest(conftest)
    return path


def broken_makereport_conftest(test_name: str) -> str:
    """A conftest whose makereport wrapper raises after ``test_name``'s call: a plugin's bug,
    which makes pytest's protocol raise (an INTERNALERROR, serially)."""
    return f"""
import pytest

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    yield
    if item.name == {test_name!r} and call.when == "call":
        raise TypeError("a plugin's bug in its makereport wrapper")
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def assert_no_process_left(pid_file: Path, ignore: frozenset[int] = frozenset()) -> None:
    """No process whose id the run noted in ``pid_file`` is alive (``ignore``: not the run's)."""
    pids = {int(line) for line in pid_file.read_text().split()} if pid_file.exists() else set()
    pids -= ignore
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    assert [pid for pid in pids if _alive(pid)] == []
