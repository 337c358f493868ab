"""A worker keeps each test file's hook proxy: every conftest's hooks still fire for the tests
of its own directory only, as serially, and a kept proxy is built again after a plugin
registers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import POOL

from pytest_poolrun.hookproxies import PerFile


def _noting_conftest(name: str, notes: Path) -> str:
    """A conftest whose setup, report and teardown hooks note the test and this conftest."""
    return f"""
import pytest

def _note(nodeid, what):
    with open({str(notes)!r}, "a") as notes:
        notes.write(f"{name} {{what}} {{nodeid}}\\n")

def pytest_runtest_setup(item):
    _note(item.nodeid, "setup")

def pytest_runtest_teardown(item):
    _note(item.nodeid, "teardown")

def pytest_runtest_logreport(report):
    _note(report.nodeid, "report-" + report.when)
"""


def test_each_directorys_conftest_hooks_fire_for_its_own_tests_as_serially(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """Conftests at the root and in two test directories: under --pool each test's hooks reach
    the conftests above its file and no other, in its worker and in the controller's replay,
    as ``item.ihook`` does in a serial run."""
    notes = tmp_path / "notes"
    pytester.makeconftest(_noting_conftest("root", notes))
    for folder in ("alpha", "beta"):
        package = pytester.mkpydir(folder)
        (package / "conftest.py").write_text(_noting_conftest(folder, notes))
        for module in ("one", "two"):
            (package / f"test_{module}.py").write_text(
                "def test_a(): pass\ndef test_b(): pass\ndef test_c(): assert False\n"
            )
    runs = []
    for args in ((), (*POOL, "--pool", "2", "--pool-chunksize", "1")):
        notes.unlink(missing_ok=True)
        result = pytester.runpytest_subprocess(*args, "-p", "no:randomly")
        result.assert_outcomes(passed=8, failed=4)
        runs.append(Counter(notes.read_text().splitlines()))
    serial, pooled = runs
    for line in serial:
        conftest, _, nodeid = line.split()
        assert conftest == "root" or nodeid.startswith(f"{conftest}/")
    # Each of the 12 tests reached the root conftest and its own directory's, once each.
    assert len(serial) == 12 * 2 * 5 and set(serial.values()) == {1}
    assert pooled.keys() == serial.keys()
    # The phases ran in the worker only; the reports reached the worker's hooks and then the
    # controller's, as for every plugin under --pool.
    for line, count in pooled.items():
        assert count == (2 if " report-" in line else 1), line


class _CountingBuilder:
    """Stands for pytest's gethookproxy: notes each proxy it builds."""

    def __init__(self) -> None:
        self.built: list[Any] = []

    def __call__(self, fspath: Any) -> object:
        proxy = object()
        self.built.append((fspath, proxy))
        return proxy


def test_a_files_proxy_is_built_once_until_a_plugin_registers() -> None:
    build = _CountingBuilder()
    proxies = PerFile(build)
    one, same, other = Path("alpha/test_one.py"), Path("alpha/test_one.py"), Path("beta/t.py")
    first = proxies(one)
    assert proxies(one) is first
    # An equal path made anew (as some callers do at each call): the same proxy, none built.
    assert proxies(same) is first
    assert proxies(other) is not first
    assert len(build.built) == 2
    proxies.pytest_plugin_registered()
    again = proxies(same)
    assert again is not first
    assert build.built[-1] == (same, again)
    assert len(build.built) == 3
