"""Report hooks called directly give what pluggy's own call gives, and step aside where they
cannot (wrappers, hook-call monitoring, plugins that come later)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pluggy
import pytest
from helpers import POOL

from pytest_poolrun import directhooks

hookspec = pluggy.HookspecMarker("demo")
hookimpl = pluggy.HookimplMarker("demo")


class Spec:
    @hookspec
    def on_report(self, report: str) -> Any: ...


class StatusSpec:
    @hookspec(firstresult=True)
    def on_status(self, report: str) -> Any: ...


class Answers:
    """Answers the status question with ``answer`` (None: leaves it to the others)."""

    def __init__(self, name: str, answer: str | None, calls: list[str]) -> None:
        self.name, self.answer, self.calls = name, answer, calls

    @hookimpl
    def on_status(self, report: str) -> str | None:
        self.calls.append(self.name)
        return self.answer


class Named:
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    @hookimpl
    def on_report(self, report: str) -> str:
        self.calls.append(self.name)
        return f"{self.name}:{report}"


class First(Named):
    @hookimpl(tryfirst=True)
    def on_report(self, report: str) -> str:
        return super().on_report(report)


class Last(Named):
    @hookimpl(trylast=True)
    def on_report(self, report: str) -> str:
        return super().on_report(report)


class Silent:
    @hookimpl
    def on_report(self, report: str) -> None:
        return None


class Wrapping:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    @hookimpl(wrapper=True)
    def on_report(self, report: str) -> Generator[None, list[str], list[str]]:
        self.calls.append("wrapper before")
        results = yield
        self.calls.append("wrapper after")
        return [*results, "wrapped"]


def manager_with(*plugins: object) -> pluggy.PluginManager:
    manager = pluggy.PluginManager("demo")
    manager.add_hookspecs(Spec)
    for plugin in plugins:
        manager.register(plugin)
    return manager


def both_ways(
    manager: pluggy.PluginManager, direct: directhooks.DirectHook, calls: list[str]
) -> tuple[tuple[Any, list[str]], tuple[Any, list[str]]]:
    """(result, call order) of pluggy's own call, then of the direct call."""
    calls.clear()
    by_pluggy = manager.hook.on_report(report="r")
    pluggy_order = list(calls)
    calls.clear()
    by_direct = direct(report="r")
    return (by_pluggy, pluggy_order), (by_direct, list(calls))


def test_direct_calls_give_pluggys_results_in_pluggys_order() -> None:
    calls: list[str] = []
    manager = manager_with(
        Last("last", calls), Named("a", calls), First("first", calls), Silent(), Named("b", calls)
    )
    direct = directhooks.DirectHook(manager, manager.hook.on_report)
    by_pluggy, by_direct = both_ways(manager, direct, calls)
    assert by_direct == by_pluggy
    assert by_direct[1] == ["first", "b", "a", "last"]


def test_a_first_result_hook_answers_with_the_first_answer_and_asks_no_further() -> None:
    calls: list[str] = []
    manager = pluggy.PluginManager("demo")
    manager.add_hookspecs(StatusSpec)
    for plugin in (
        Answers("asked last", "late answer", calls),
        Answers("answers", "answer", calls),
        Answers("has no answer", None, calls),
    ):
        manager.register(plugin)
    direct = directhooks.DirectHook(manager, manager.hook.on_status)
    assert direct(report="r") == "answer"
    assert calls == ["has no answer", "answers"]
    calls.clear()
    assert manager.hook.on_status(report="r") == "answer"
    assert calls == ["has no answer", "answers"]


def test_a_plugin_registered_later_is_called_and_one_unregistered_is_not() -> None:
    calls: list[str] = []
    leaving = Named("leaving", calls)
    manager = manager_with(Named("a", calls), leaving)
    direct = directhooks.DirectHook(manager, manager.hook.on_report)
    manager.register(First("newcomer", calls))
    manager.unregister(leaving)
    by_pluggy, by_direct = both_ways(manager, direct, calls)
    assert by_direct == by_pluggy
    assert by_direct[1] == ["newcomer", "a"]


def test_a_wrapper_among_the_implementations_still_wraps() -> None:
    calls: list[str] = []
    manager = manager_with(Named("a", calls))
    direct = directhooks.DirectHook(manager, manager.hook.on_report)
    manager.register(Wrapping(calls))
    by_pluggy, by_direct = both_ways(manager, direct, calls)
    assert by_direct == by_pluggy
    assert by_direct == (["a:r", "wrapped"], ["wrapper before", "a", "wrapper after"])


def test_a_direct_caller_of_a_subset_caller_sees_plugins_that_come_later() -> None:
    """pluggy's subset callers (pytest's per-directory hook proxies) make their list anew at
    each read: the direct caller must not hold on to one."""
    calls: list[str] = []
    excluded = Named("excluded", calls)
    manager = manager_with(Named("a", calls), excluded)
    subset = manager.subset_hook_caller("on_report", remove_plugins=[excluded])
    direct = directhooks.DirectHook(manager, subset)
    manager.register(First("newcomer", calls))
    assert direct(report="r") == ["newcomer:r", "a:r"]
    assert calls == ["newcomer", "a"]


def test_hook_call_monitoring_sees_direct_calls() -> None:
    calls: list[str] = []
    manager = manager_with(Named("a", calls))
    direct = directhooks.DirectHook(manager, manager.hook.on_report)
    seen: list[str] = []
    undo = manager.add_hookcall_monitoring(
        lambda name, impls, kwargs: seen.append(name), lambda *args: None
    )
    try:
        assert direct(report="r") == ["a:r"]
    finally:
        undo()
    assert seen == ["on_report"]


def test_skipped_implementations_are_not_called() -> None:
    calls: list[str] = []
    manager = manager_with(Named("kept", calls), Named("dropped", calls))
    direct = directhooks.DirectHook(
        manager, manager.hook.on_report, lambda name, impl: impl.plugin.name == "dropped"
    )
    assert direct(report="r") == ["kept:r"]
    assert calls == ["kept"]


def test_the_direct_caller_stands_in_for_the_hook_caller() -> None:
    manager = manager_with(Named("a", []))
    caller = manager.hook.on_report
    direct = directhooks.DirectHook(manager, caller)
    assert direct.name == "on_report"
    assert direct.get_hookimpls() == caller.get_hookimpls()


PHASES = ("setup", "call", "teardown")
THREE_TESTS = """
def test_1(late_plugin): pass
def test_2(): pass
def test_3(): assert False
"""


def test_a_plugin_a_test_registers_in_its_worker_sees_the_reports_after(
    pytester: pytest.Pytester,
) -> None:
    """The workers' report hooks go through the direct callers (no wrapper here), which
    notice a plugin that comes while the run is on."""
    pytester.makeconftest(
        """
        import pytest

        class Late:
            def pytest_runtest_logreport(self, report):
                with open("reports.txt", "a") as out:
                    out.write(f"{report.nodeid} {report.when}\\n")

        @pytest.fixture
        def late_plugin(request):
            request.config.pluginmanager.register(Late(), "late")
        """
    )
    pytester.makepyfile(test_a=THREE_TESTS)
    result = pytester.runpytest_subprocess(*POOL, "--pool", "1", "-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)
    # Registered during test_1's setup, before its setup report: every report from then on.
    assert (pytester.path / "reports.txt").read_text().splitlines() == [
        f"test_a.py::test_{n} {when}" for n in (1, 2, 3) for when in PHASES
    ]


def test_a_report_wrapper_sees_each_report_in_the_worker_and_in_the_controller(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
        import os, pytest

        @pytest.fixture
        def late_plugin():
            pass

        @pytest.hookimpl(wrapper=True)
        def pytest_runtest_logreport(report):
            role = "worker" if os.environ.get("PYTEST_XDIST_WORKER") else "controller"
            with open("reports.txt", "a") as out:
                out.write(f"{role} {report.nodeid} {report.when}\\n")
            return (yield)
        """
    )
    pytester.makepyfile(test_a=THREE_TESTS)
    result = pytester.runpytest_subprocess(*POOL, "--pool", "1", "-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)
    lines = (pytester.path / "reports.txt").read_text().splitlines()
    for role in ("worker", "controller"):
        assert [line for line in lines if line.startswith(role)] == [
            f"{role} test_a.py::test_{n} {when}" for n in (1, 2, 3) for when in PHASES
        ]


def test_a_worker_skips_only_saved_bookkeeping_and_idle_live_logging(
    pytester: pytest.Pytester,
) -> None:
    def skipped(*args: str) -> set[tuple[str, str | None]]:
        config = pytester.parseconfigure(*args)
        return {
            (name, impl.plugin_name)
            for name in directhooks.REPORT_HOOKS
            for impl in getattr(config.hook, name).get_hookimpls()
            if directhooks.worker_noops(name, impl)
        }

    saved = {
        ("pytest_runtest_logreport", "lfplugin"),
        ("pytest_runtest_logreport", "poolrun-durations"),
    }
    assert skipped() == {
        *saved,
        *((name, "logging-plugin") for name in directhooks.REPORT_HOOKS),
    }
    assert skipped("-o", "log_cli=true") == saved


def test_live_logging_from_a_worker_shows_as_serially(pytester: pytest.Pytester) -> None:
    """With live logging on, the logging plugin's report hooks run in the workers as serially."""
    pytester.makepyfile(
        """
        import logging

        def test_logs():
            logging.getLogger("demo").warning("from the test")
        """
    )
    serial = pytester.runpytest_subprocess("-p", "no:randomly", "-o", "log_cli=true")
    pooled = pytester.runpytest_subprocess(
        *POOL, "--pool", "1", "-p", "no:randomly", "-o", "log_cli=true"
    )
    for result in (serial, pooled):
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(["*live log call*", "*WARNING*from the test*"])


def test_test_statuses_a_conftest_gives_show_as_serially(pytester: pytest.Pytester) -> None:
    """The controller asks pytest_report_teststatus through a direct caller while the pool
    runs: a conftest's answer and a conftest's wrapper count as they do serially."""
    pytester.makeconftest(
        """
        import pytest

        @pytest.hookimpl(tryfirst=True)
        def pytest_report_teststatus(report):
            if report.when == "call" and report.passed and "fast" in report.nodeid:
                return "passed", "F", "FAST"

        @pytest.hookimpl(wrapper=True, specname="pytest_report_teststatus")
        def pytest_report_teststatus_wrapper(report):
            answer = yield
            if report.when == "call" and "plain" in report.nodeid:
                return "passed", "W", "WRAPPED"
            return answer
        """
    )
    pytester.makepyfile(
        test_a="""
        def test_fast(): pass
        def test_plain(): pass
        def test_broken(): assert False
        """
    )
    outputs = []
    for args in ((), (*POOL, "--pool", "2")):
        result = pytester.runpytest_subprocess(*args, "-p", "no:randomly", "-v")
        result.assert_outcomes(passed=2, failed=1)
        outputs.append(
            sorted(line.split()[1] for line in result.outlines if line.startswith("test_a.py::"))
        )
    assert outputs[0] == outputs[1] == ["FAILED", "FAST", "WRAPPED"]
