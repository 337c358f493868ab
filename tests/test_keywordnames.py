"""A replayed report's keyword names: those a serial run's report has, in the same order."""

from __future__ import annotations

import pytest

from pytest_poolrun.keywordnames import KeywordNames

POOL = ("-p", "pytest_poolrun", "-p", "no:randomly", "-p", "no:cacheprovider")
MARKERS = """
[pytest]
markers =
    module_mark
    class_mark
    item_mark
    added_later
    added_by_the_controller
"""

NESTED = """
import pytest
pytestmark = pytest.mark.module_mark

@pytest.mark.class_mark
class TestNested:
    @pytest.mark.parametrize("n", [1, 2])
    @pytest.mark.item_mark
    def test_param(self, n): pass

    def test_module_mark(self): pass  # a name its module has too

def test_module_mark(): pass
"""


def test_names_are_those_of_the_keywords_walk_in_its_order(pytester: pytest.Pytester) -> None:
    pytester.makeini(MARKERS)
    pytester.makepyfile(__init__="")
    items = pytester.getitems(NESTED)
    names = KeywordNames()
    for _ in range(2):  # the second time from the names kept for each parent
        for item in items:
            assert list(names.of(item).items()) == list(dict.fromkeys(item.keywords, 1).items())
    first = names.of(items[0])
    assert first is not names.of(items[0])  # a dict of its own for each report


def test_a_marker_added_above_an_item_during_the_run_is_listed(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(MARKERS)
    pytester.makepyfile(__init__="")
    items = pytester.getitems(NESTED)
    names = KeywordNames()
    names.of(items[0])
    module = items[0].getparent(pytest.Module)
    assert module is not None
    module.add_marker("added_later")
    for item in items:
        assert list(names.of(item)) == list(dict.fromkeys(item.keywords, 1))
        assert "added_later" in names.of(item)


def test_replayed_reports_list_the_keywords_of_a_serial_run_in_order(
    pytester: pytest.Pytester,
) -> None:
    """Among them a marker that a plugin of the controller's adds to a module while the
    tests run: the later tests' reports have it, as serially."""
    pytester.makeconftest(
        """
        import os
        import pytest
        def pytest_runtest_logreport(report):
            if "PYTEST_XDIST_WORKER" in os.environ:
                return
            with open("keywords.txt", "a") as out:
                print(report.nodeid, report.when, *report.keywords, file=out)
        def pytest_collection_finish(session):
            global module
            module = session.items[0].getparent(pytest.Module)
        def pytest_runtest_logfinish(nodeid):
            if "PYTEST_XDIST_WORKER" not in os.environ and nodeid.endswith("[1]"):
                module.add_marker("added_by_the_controller")
        """
    )
    pytester.makeini(MARKERS)
    pytester.makepyfile(__init__="")
    pytester.makepyfile(test_nested=NESTED)
    lines = {}
    for args in ((), ("--pool", "1", "--pool-report-order", "collection")):
        (pytester.path / "keywords.txt").unlink(missing_ok=True)
        result = pytester.runpytest_subprocess(*POOL, *args)
        result.assert_outcomes(passed=4)
        lines[args] = (pytester.path / "keywords.txt").read_text().splitlines()
    assert lines[("--pool", "1", "--pool-report-order", "collection")] == lines[()]
    assert "added_by_the_controller" in lines[()][-1]
    assert "added_by_the_controller" not in lines[()][0]
