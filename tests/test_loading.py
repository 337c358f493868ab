"""Loading the plugin: by entry point, by -p, both, or not at all."""

from __future__ import annotations

import pytest

TWO_TESTS = "def test_a(): pass\ndef test_b(): pass\n"


def test_entry_point_loads_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TWO_TESTS)
    result = pytester.runpytest_subprocess("--pool", "2")
    result.stdout.fnmatch_lines(["poolrun: 2 workers*"])
    assert result.ret == 0


def test_dash_p_works_without_autoload(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(TWO_TESTS)
    result = pytester.runpytest_subprocess("-p", "pytest_poolrun", "--pool", "2")
    result.stdout.fnmatch_lines(["poolrun: 2 workers*"])
    assert result.ret == 0


def test_loaded_twice_is_harmless(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TWO_TESTS)
    result = pytester.runpytest_subprocess("-p", "pytest_poolrun", "--pool", "2")
    assert result.ret == 0
    assert result.stdout.str().count("poolrun: 2 workers") == 1


def test_dash_p_no_disables_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TWO_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:pytest_poolrun", "--pool", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unrecognized arguments: --pool*"])


def test_without_pool_option_the_run_is_serial(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # When this suite itself runs under --pool (or -n), the variable is inherited.
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makepyfile(
        """
        import os
        def test_here(): assert "PYTEST_XDIST_WORKER" not in os.environ
        """
    )
    for args in ((), ("--pool", "0")):
        result = pytester.runpytest_subprocess("-p", "pytest_poolrun", *args)
        assert result.ret == 0
        assert "poolrun:" not in result.stdout.str()


def test_a_serial_run_does_not_import_the_runner(pytester: pytest.Pytester) -> None:
    # What a run without --pool pays for the installed plugin: its options, fixtures and
    # duration bookkeeping, not the runner's or the pool's modules.
    pytester.makepyfile(
        """
        import sys

        def test_modules_loaded():
            loaded = sorted(name for name in sys.modules if name.startswith("pytest_poolrun."))
            print("LOADED", loaded)
            assert "pytest_poolrun.runner" not in loaded
            assert "pytest_poolrun.pool" not in loaded
        """
    )
    result = pytester.runpytest_subprocess("-s")
    result.stdout.fnmatch_lines(["*LOADED *pytest_poolrun.plugin*"])
    assert result.ret == 0


def test_the_pool_fixture_and_worker_id_work_in_a_serial_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_pool(pool, worker_id):
            assert worker_id == "master"
            assert pool.map(abs, [-1, -2]) == [1, 2]
        """
    )
    result = pytester.runpytest_subprocess()
    assert result.ret == 0


def test_every_hook_of_the_plugin_module_is_registered() -> None:
    # pytest finds a plugin's hooks in the package's dir(); a hook written in plugin.py but not
    # listed there would silently never run.
    import pytest_poolrun
    from pytest_poolrun import plugin

    hooks = {name for name in vars(plugin) if name.startswith("pytest_")}
    assert "pytest_runtestloop" in hooks
    assert hooks <= set(dir(pytest_poolrun))


def test_pytest_does_not_rewrite_the_plugins_own_modules(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pytest rewrites the assertions of every module of a plugin named by -p, as it does of an
    # installed plugin's distribution: where no bytecode is written, each start would read, parse
    # and compile them all again.  They load from their bytecode instead (ownmodules).
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeconftest(
        """
        import sys

        def pytest_terminal_summary(terminalreporter):
            loaded = {
                name: type(getattr(sys.modules.get(name), "__loader__", None)).__name__
                for name in ("pytest_poolrun.plugin", "pytest_poolrun.runner")
            }
            terminalreporter.write_line(f"loaders: {loaded}")
        """
    )
    pytester.makepyfile(TWO_TESTS)
    result = pytester.runpytest_subprocess("-p", "pytest_poolrun", "--pool", "2")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "loaders: {'pytest_poolrun.plugin': 'SourceFileLoader', "
            "'pytest_poolrun.runner': 'SourceFileLoader'}"
        ]
    )
