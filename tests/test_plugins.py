"""Real third-party plugins under --pool: what the user sees must be what a serial run shows.

Each test runs a small suite in pytest subprocesses (real sessions, the real plugins from the
``test`` extras, autoloaded as a user has them) once serially and once with ``--pool 2``, and
compares what a user reads: coverage totals and missed lines, snapshot files, exit codes, the
timeout message, hypothesis statistics, the benchmark table and JSON.  The README's "Works
with" table is what these check.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import POOL

# Inner sessions autoload every installed plugin (see conftest._plain_pytester_sessions).
REAL_PLUGINS = True

# ---------------------------------------------------------------------------------- helpers


# Per-plugin tests turn pytest-randomly off in their inner runs, so that each fails only for
# its own plugin's reasons (randomly has tests of its own, at the end); the inner runs
# otherwise autoload every installed plugin, as a user's do.
NO_RANDOM = ("-p", "no:randomly")


def run(pytester: pytest.Pytester, *args: str, randomly: bool = False) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*POOL, *(() if randomly else NO_RANDOM), *args)


def verdicts(result: pytest.RunResult) -> dict[str, int]:
    """The summary line's counts of test outcomes, without its warnings count."""
    return {
        key: n for key, n in result.parseoutcomes().items() if key not in ("warnings", "warning")
    }


def header(result: pytest.RunResult) -> str:
    lines = [line for line in result.outlines if line.startswith("poolrun:")]
    return lines[0] if lines else ""


COV_ROW = re.compile(r"^(\S+\.py|TOTAL)\s+\d+\s+\d+\s+(\d+%)\s*(.*)$")


def coverage_rows(text: str) -> dict[str, tuple[str, str]]:
    """file (or TOTAL) → (percent, missing lines) from a term-missing table."""
    rows = {}
    for line in text.splitlines():
        match = COV_ROW.match(line.strip())
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3).strip())
    return rows


# The covered package's tests; {calc} says where the package is imported: at collection, in
# the controller (AT_COLLECTION), or by the tests themselves, in the workers (BY_THE_TESTS).
COVERED_TESTS = """
import pytest
{calc}

@pytest.mark.parametrize("n", range(4))
def test_add(n):
    assert calc().add(n, 1) == n + 1

@pytest.mark.parametrize("n, kind", [(-1, "negative"), (0, "zero"), (5, "positive")])
def test_classify(n, kind):
    assert calc().classify(n) == kind
"""
AT_COLLECTION = "import pkg.calc\n\ndef calc():\n    return pkg.calc\n"
BY_THE_TESTS = "def calc():\n    import pkg.calc\n    return pkg.calc\n"


def make_covered_package(pytester: pytest.Pytester, calc: str = AT_COLLECTION) -> None:
    """A package whose lines run mostly inside tests (not at import), with a few never run."""
    pytester.mkpydir("pkg")
    pytester.path.joinpath("pkg", "calc.py").write_text(
        "def add(a, b):\n"
        "    return a + b\n"
        "\n"
        "\n"
        "def classify(n):\n"
        "    if n < 0:\n"
        "        return 'negative'\n"
        "    if n == 0:\n"
        "        return 'zero'\n"
        "    if n > 1000:\n"
        "        return 'huge'\n"  # never run
        "    return 'positive'\n"
        "\n"
        "\n"
        "def unused():\n"
        "    x = 1\n"  # never run
        "    return x\n"  # never run
    )
    pytester.makepyfile(test_calc=COVERED_TESTS.format(calc=calc))


# ---------------------------------------------------------------------------------- coverage

START_MODES = {
    # Without pytest-rerunfailures' thread, so that this case forks whatever the thread policy
    # decides; test_forks_with_all_these_plugins_installed covers the thread.
    "fork": ("--pool", "2", "-p", "no:rerunfailures"),
    "spawn": ("--pool", "2", "--pool-start", "spawn"),
    "execnet-popen": ("--pool", "0", "--pool-tx", "2*popen"),
}


@pytest.mark.parametrize("mode", START_MODES)
def test_pytest_cov_total_and_missed_lines_match_serial(
    pytester: pytest.Pytester, mode: str
) -> None:
    make_covered_package(pytester)
    cov = ("--cov=pkg", "--cov-report=term-missing", "--cov-fail-under=70")
    serial = run(pytester, *cov)
    pooled = run(pytester, *cov, *START_MODES[mode])
    if mode == "fork":
        assert "forked after collection" in header(pooled)
    assert serial.ret == 0, serial.stdout.str()
    serial_rows = coverage_rows(serial.stdout.str())
    assert serial_rows["TOTAL"][0] != "0%"
    assert coverage_rows(pooled.stdout.str()) == serial_rows, pooled.stdout.str()
    assert pooled.ret == serial.ret  # --cov-fail-under agrees


# A package measured by name (coverage.py's source_pkgs) in a suite whose warnings are errors.
# Imported at collection, a worker's coverage never sees the package's own module run (the
# controller imported it before the fork); imported by the tests only, the controller's never
# does.  coverage.py warns about either when it judges its data as a whole.
BY_NAME_AND_STRICT = {
    ".coveragerc": "[run]\nsource_pkgs = pkg\n",
    "pytest.ini": "[pytest]\nfilterwarnings = error\n",
}


@pytest.mark.parametrize(
    "suite", ["unconfigured", "by-name-strict", "by-name-strict-imported-by-tests"]
)
def test_coverage_run_matches_serial(pytester: pytest.Pytester, suite: str) -> None:
    """``coverage run -m pytest --pool 2``, with no configuration from the user, and with a
    package named in ``source_pkgs`` under ``filterwarnings = error``: the same report, and
    no warning that the serial run does not give."""
    imported_by_tests = suite == "by-name-strict-imported-by-tests"
    make_covered_package(pytester, BY_THE_TESTS if imported_by_tests else AT_COLLECTION)
    if suite != "unconfigured":
        for name, text in BY_NAME_AND_STRICT.items():
            pytester.path.joinpath(name).write_text(text)
    source = ("--source=pkg",) if suite == "unconfigured" else ()

    def covered(*args: str) -> tuple[dict[str, tuple[str, str]], list[str]]:
        data = pytester.path / ".coverage"
        if data.exists():
            data.unlink()
        ran = pytester.run(
            sys.executable,
            "-m",
            "coverage",
            "run",
            *source,
            "-m",
            "pytest",
            *POOL,
            *NO_RANDOM,
            "-q",
            *args,
        )
        assert ran.ret == 0, ran.stdout.str()
        warned = [line for line in ran.outlines + ran.errlines if "CoverageWarning" in line]
        report = pytester.run(sys.executable, "-m", "coverage", "report", "-m")
        return coverage_rows(report.stdout.str()), warned

    serial_rows, serial_warned = covered()
    assert serial_rows["TOTAL"][0] != "0%"
    assert covered("--pool", "2") == (serial_rows, serial_warned)


# ---------------------------------------------------------------------------------- syrupy

SNAPSHOT_TESTS = """
import pytest

@pytest.mark.parametrize("n", range(7))
def test_snap(snapshot, n):
    assert {"n": n, "square": n * n} == snapshot
"""


def _snapshot_files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("__snapshots__/**/*"))
        if path.is_file()
    }


def test_syrupy_plain_run_passes_like_serial(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_snaps=SNAPSHOT_TESTS)
    created = run(pytester, "--snapshot-update")
    assert created.ret == 0, created.stdout.str()
    serial = run(pytester)
    pooled = run(pytester, "--pool", "2")
    assert serial.ret == 0
    assert "unused" not in serial.stdout.str()
    assert "unused" not in pooled.stdout.str(), pooled.stdout.str()
    assert pooled.ret == 0, pooled.stdout.str()
    pooled.assert_outcomes(passed=7)


def test_syrupy_snapshot_update_keeps_files_byte_identical(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_snaps=SNAPSHOT_TESTS)
    assert run(pytester, "--snapshot-update").ret == 0
    before = _snapshot_files(pytester.path)
    assert before, "syrupy wrote no snapshot file"
    pooled = run(pytester, "--pool", "2", "--snapshot-update")
    assert _snapshot_files(pytester.path) == before, pooled.stdout.str()
    assert pooled.ret == 0, pooled.stdout.str()


# ---------------------------------------------------------------------------------- django


def test_django_file_sqlite_test_database(pytester: pytest.Pytester) -> None:
    """A file-based sqlite test database: each worker needs its own (pytest-django's _gwN)."""
    pytester.makepyfile(
        settings="""
        SECRET_KEY = "x"
        INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]
        DATABASES = {
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": "db.sqlite3",
                "TEST": {"NAME": "test_db.sqlite3"},
            }
        }
        USE_TZ = True
        """
    )
    pytester.makeini(
        """
        [pytest]
        DJANGO_SETTINGS_MODULE = settings
        pythonpath = .
        """
    )
    pytester.makepyfile(
        test_users="""
        import time
        import pytest
        from django.contrib.auth.models import User

        @pytest.mark.django_db(transaction=True)
        @pytest.mark.parametrize("n", range(6))
        def test_one_user(n):
            User.objects.create(username=f"user{n}")
            time.sleep(0.1)
            assert User.objects.count() == 1
        """
    )
    serial = run(pytester)
    assert serial.ret == 0, serial.stdout.str()
    pooled = run(pytester, "--pool", "2")
    assert pooled.ret == 0, pooled.stdout.str()
    pooled.assert_outcomes(passed=6)


# ---------------------------------------------------------------------------------- timeout

SLOW_TEST = """
import time

def test_fast():
    pass

def test_overdue():
    time.sleep(4)
"""


def test_pytest_timeout_signal_method_shows_its_message(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_slow=SLOW_TEST)
    args = ("--timeout=1", "--timeout-method=signal")
    serial = run(pytester, *args)
    pooled = run(pytester, "--pool", "2", *args)
    message = "Failed: Timeout (>1.0s) from pytest-timeout."
    assert message in serial.stdout.str()
    serial.assert_outcomes(passed=1, failed=1)
    assert message in pooled.stdout.str(), pooled.stdout.str()
    assert "AssertionError" not in pooled.stdout.str()
    pooled.assert_outcomes(passed=1, failed=1)


def test_pytest_timeout_thread_method_fails_the_overdue_test(pytester: pytest.Pytester) -> None:
    """Serially the thread method dumps the stacks and ends the process (os._exit(1)); a
    worker must do the same, so that the overdue test fails (as under pytest-xdist) instead of
    running past its timeout."""
    pytester.makepyfile(test_slow=SLOW_TEST)
    args = ("--timeout=1", "--timeout-method=thread")
    serial = run(pytester, *args)
    assert serial.ret == 1
    assert "+ Timeout +" in serial.stdout.str() or "+ Timeout +" in serial.stderr.str()
    pooled = run(pytester, "--pool", "2", *args)
    assert pooled.ret == 1, pooled.stdout.str()
    out = pooled.stdout.str() + pooled.stderr.str()
    assert re.search(r"FAILED \S*test_overdue", out), out
    assert "Timeout" in out, out  # pytest-timeout's stack dump, as the test's output


# ---------------------------------------------------------------------------------- hypothesis


def _hypothesis_statistics(text: str) -> list[str]:
    """The statistics section's test ids, example counts and stop reasons (not run times)."""
    _, _, section = text.partition("Hypothesis Statistics")
    kept = []
    for line in section.splitlines()[1:]:
        if line.startswith("=") or line.startswith("_"):
            break  # the next section
        line = line.strip()
        if (line.endswith(":") and "::" in line) or "passing" in line or "Stopped" in line:
            kept.append(line)
    return kept


def test_hypothesis_show_statistics_matches_serial(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_props="""
        from hypothesis import given, settings, strategies as st

        @settings(max_examples=20, database=None)
        @given(st.integers())
        def test_ints(x):
            assert x == x

        @settings(max_examples=20, database=None)
        @given(st.text())
        def test_text(s):
            assert s == s
        """
    )
    args = ("--hypothesis-show-statistics", "--hypothesis-seed=0")
    serial = run(pytester, *args)
    pooled = run(pytester, "--pool", "2", *args)
    serial_stats = _hypothesis_statistics(serial.stdout.str())
    assert "test_props.py::test_ints:" in serial_stats, serial.stdout.str()
    # hypothesis words its counts differently across releases; the section must not be empty.
    assert any("20 passing" in line for line in serial_stats), serial_stats
    # Tests finish in another order under --pool: compare each test's block as a set.
    assert sorted(_hypothesis_statistics(pooled.stdout.str())) == sorted(serial_stats), (
        pooled.stdout.str()
    )


# ---------------------------------------------------------------------------------- benchmark


def test_pytest_benchmark_table_and_json(pytester: pytest.Pytester) -> None:
    # Six tests in chunks of one: the workers take turns, and the JSON still lists the
    # benchmarks in collection order, as the serial run's does.
    pytester.makepyfile(
        test_bench="""
        import pytest

        def test_sum(benchmark):
            assert benchmark(sum, range(100)) == 4950

        @pytest.mark.parametrize("n", range(5))
        def test_sorted(benchmark, n):
            benchmark(sorted, [3, 1, 2, n])
        """
    )
    fast = ("--benchmark-max-time=0.01", "--benchmark-min-rounds=2", "--benchmark-warmup=off")
    serial = run(pytester, *fast, "--benchmark-json=serial.json")
    pooled = run(
        pytester, "--pool", "2", "--pool-chunksize", "1", *fast, "--benchmark-json=pool.json"
    )
    assert serial.ret == 0
    serial_names = [
        b["name"] for b in json.loads((pytester.path / "serial.json").read_text())["benchmarks"]
    ]
    assert serial_names == ["test_sum", *(f"test_sorted[{n}]" for n in range(5))]
    assert "benchmark: 6 tests" in serial.stdout.str()
    out = pooled.stdout.str()
    assert "no benchmarks have been run" not in out and "benchmark: 6 tests" in out, out
    pool_json = pytester.path / "pool.json"
    assert pool_json.exists(), out
    assert [b["name"] for b in json.loads(pool_json.read_text())["benchmarks"]] == serial_names
    assert pooled.ret == 0


# ---------------------------------------------------------------------------------- reruns

FLAKY = """
import os
from pathlib import Path

def test_stable():
    pass

def test_flaky():
    marker = Path("flaky-ran-once")
    if not marker.exists():
        marker.write_text("x")
        assert False, "first try fails"
"""


def test_rerunfailures_reruns_like_serial(pytester: pytest.Pytester) -> None:
    """Already matches serial: keep it so."""
    pytester.makepyfile(test_flaky=FLAKY)
    serial = run(pytester, "--reruns", "2")
    pytester.path.joinpath("flaky-ran-once").unlink()
    pooled = run(pytester, "--pool", "2", "--reruns", "2")
    assert serial.parseoutcomes() == {"passed": 2, "rerun": 1}
    assert pooled.parseoutcomes() == serial.parseoutcomes(), pooled.stdout.str()
    assert pooled.ret == serial.ret == 0


def test_rerunfailures_lets_a_shared_fixture_teardown_error_be_reported(
    pytester: pytest.Pytester,
) -> None:
    """The report is made by the last test's makereport hooks, in the controller, where that
    test never ran: a plugin's implementation that needs what its own protocol hooks left on
    the item (pytest-rerunfailures') must not turn the error into an INTERNALERROR."""
    pytester.makeconftest(
        """
        import pytest
        @pytest.fixture(scope="session")
        def res():
            yield 1
            raise RuntimeError("teardown boom")
        """
    )
    pytester.makepyfile("def test_one(res): pass\ndef test_two(res): pass\n")
    args = (*POOL, "-p", "no:randomly", "-rE", "--pool-shared-fixture", "res")
    serial = pytester.runpytest_subprocess(*args, timeout=120)
    pooled = pytester.runpytest_subprocess(*args, "--pool", "2", timeout=120)
    assert pooled.ret == serial.ret == pytest.ExitCode.TESTS_FAILED
    assert pooled.parseoutcomes() == serial.parseoutcomes() == {"passed": 2, "errors": 1}

    def errors(result: pytest.RunResult) -> list[str]:
        return [line for line in result.outlines if line.startswith(("ERROR ", "E   "))]

    assert errors(pooled) == errors(serial)
    pooled.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_two*", "E *RuntimeError: teardown boom"]
    )


def test_rerunfailures_reruns_a_crashed_test(pytester: pytest.Pytester) -> None:
    """A test that kills its worker the first time is rerun (pytest_handlecrashitem), as
    with pytest-xdist; a serial run cannot survive the crash, so xdist is the reference."""
    pytester.makepyfile(
        test_crash="""
        import os, time
        from pathlib import Path

        def test_stable():
            pass

        def test_crashes_once():
            marker = Path("crashed-once")
            if not marker.exists():
                marker.write_text("x")
                # pytest-rerunfailures' worker tells the controller's status server the test's
                # rerun budget without waiting for an answer; a crash at once can beat the
                # server thread to it (under pytest-xdist too), and then nothing is rerun.
                time.sleep(0.5)
                os._exit(3)
        """
    )
    # What `-n 2 --reruns 1` reports for this suite; not run here, since pytest-xdist's own
    # crash handling made that reference run fail now and then on a loaded machine.
    xdist_verdicts = {"passed": 2, "rerun": 1}
    pooled = run(pytester, "--pool", "2", "--reruns", "1")
    assert verdicts(pooled) == xdist_verdicts, pooled.stdout.str()
    assert pooled.ret == 0


def test_json_report_matches_serial(pytester: pytest.Pytester) -> None:
    """Already matches serial (pytest-json-report): keep it so."""
    pytester.makepyfile(
        test_mixed="""
        import pytest

        def test_ok():
            pass

        def test_bad():
            assert 1 == 2

        @pytest.mark.skip(reason="no")
        def test_skipped():
            pass
        """
    )

    def outcomes(name: str, *args: str) -> dict[str, str]:
        run(pytester, "--json-report", f"--json-report-file={name}", *args)
        data = json.loads((pytester.path / name).read_text())
        return {test["nodeid"]: test["outcome"] for test in data["tests"]}

    serial = outcomes("serial.json")
    assert serial["test_mixed.py::test_bad"] == "failed"
    assert outcomes("pool.json", "--pool", "2") == serial


DEPENDENCY_FILLER = "\n".join(f"def test_filler_{n}():\n    pass\n" for n in range(30))


def test_pytest_dependency_runs_each_test_after_its_dependencies_as_serially(
    pytester: pytest.Pytester,
) -> None:
    """A dependency that ran on the other worker left its dependent skipped (as under xdist)."""
    pytester.makepyfile(
        test_a="""
        import pytest

        @pytest.mark.dependency()
        def test_base():
            pass

        @pytest.mark.dependency()
        def test_broken():
            assert False
        """
    )
    module_b = """
        import pytest

        FILLER
        @pytest.mark.dependency(depends=["test_a.py::test_base"], scope="session")
        def test_uses_base():
            pass

        @pytest.mark.dependency(depends=["test_a.py::test_broken"], scope="session")
        def test_uses_broken():
            pass

        class TestFlow:
            @pytest.mark.dependency(name="made")
            def test_make(self):
                pass

        MORE
        @pytest.mark.dependency(depends=["made"])
        def test_after_make():
            pass
        """
    module_b = textwrap.dedent(module_b).replace("FILLER", DEPENDENCY_FILLER)
    pytester.makepyfile(test_b=module_b.replace("MORE", DEPENDENCY_FILLER.replace("fill", "more")))
    serial = run(pytester, "-rs")
    assert verdicts(serial) == {"passed": 64, "failed": 1, "skipped": 1}
    skip_lines = [line for line in serial.outlines if line.startswith("SKIPPED")]
    for args in (("--pool-chunksize", "4"), ("--pool-dist", "longest"), ("--pool-dist", "class")):
        pooled = run(pytester, "--pool", "2", "-rs", *args)
        assert verdicts(pooled) == verdicts(serial), (args, pooled.stdout.str())
        assert [line for line in pooled.outlines if line.startswith("SKIPPED")] == skip_lines


def test_pytest_check_failure_reads_as_serially(pytester: pytest.Pytester) -> None:
    """pytest-check made its message in a worker's other shape (pytest-xdist's too): the summary
    line read '- FAILURE: assert 1 == 2' and the failure lost its first line."""
    pytester.makepyfile(
        test_checks="""
        from pytest_check import check

        def test_two_checks():
            with check:
                assert 1 == 2
            check.equal(3, 4, "three is not four")
        """
    )

    def failure_text(result: pytest.RunResult) -> list[str]:
        lines = result.outlines
        start = next(n for n, line in enumerate(lines) if "FAILURES" in line)
        return [line for line in lines[start:] if not line.startswith("=")]

    serial = run(pytester)
    assert "FAILED test_checks.py::test_two_checks - assert 1 == 2" in serial.outlines
    for start in ("fork", "spawn"):
        pooled = run(pytester, "--pool", "2", "--pool-start", start)
        assert failure_text(pooled) == failure_text(serial), start
        assert pooled.ret == serial.ret == 1


BDD_FEATURE = """\
Feature: Cart
    Scenario: Add one
        Given an empty cart
        When I add an apple
        Then the cart holds 1 items

    Scenario: Add two
        Given an empty cart
        When I add an apple
        And I add an apple
        Then the cart holds 3 items
"""

BDD_STEPS = """
from pytest_bdd import given, parsers, scenarios, then, when

scenarios("cart.feature")

@given("an empty cart", target_fixture="cart")
def cart():
    return []

@when("I add an apple")
def add(cart):
    cart.append("apple")

@then(parsers.parse("the cart holds {count:d} items"))
def holds(cart, count):
    assert len(cart) == count
"""


def test_pytest_bdd_cucumber_json_and_gherkin_lines_match_serial(
    pytester: pytest.Pytester,
) -> None:
    """pytest-bdd keeps a report's scenario in the memory of the process that made the report:
    the controller's cucumber JSON held no feature, its gherkin reporter showed plain lines.
    pytest-bdd is installed in tox's py311-bddsnap cell only (see pyproject.toml)."""
    pytest.importorskip("pytest_bdd")
    pytester.path.joinpath("cart.feature").write_text(BDD_FEATURE)
    pytester.makepyfile(test_cart=BDD_STEPS)

    def scenarios(name: str, *args: str) -> list[tuple[str, str, list[str]]]:
        run(pytester, f"--cucumberjson={name}", *args)
        features = json.loads((pytester.path / name).read_text())
        return [
            (
                feature["name"],
                element["name"],
                [step["result"]["status"] for step in element["steps"]],
            )
            for feature in features
            for element in feature["elements"]
        ]

    def gherkin_lines(*args: str) -> list[str]:
        result = run(pytester, "--gherkin-terminal-reporter", "-v", *args)
        return [line for line in result.outlines if "Scenario:" in line or "Feature:" in line]

    serial = scenarios("serial.json")
    assert ("Cart", "Add two", ["passed", "passed", "passed", "failed"]) in serial
    serial_lines = gherkin_lines()
    assert "    Scenario: Add two FAILED" in serial_lines
    for start in ("fork", "spawn"):
        pool = ("--pool", "2", "--pool-start", start, "--pool-report-order", "collection")
        assert scenarios(f"{start}.json", *pool) == serial, start
        assert gherkin_lines(*pool) == serial_lines, start


INLINE_SNAPSHOTS = """
from inline_snapshot import snapshot

def test_sum():
    assert 1 + 2 == snapshot()

def test_word():
    assert "ab" == snapshot("xx")
"""


def test_inline_snapshot_edits_are_refused_and_its_missing_report_is_said(
    pytester: pytest.Pytester,
) -> None:
    """inline-snapshot keeps what each snapshot() saw in the worker that ran it:
    --inline-snapshot=create ended as serially and wrote nothing, and the default run's report
    was missing, both without a word.  inline-snapshot is installed in tox's py311-bddsnap
    cell only (see pyproject.toml)."""
    pytest.importorskip("inline_snapshot")
    source = pytester.makepyfile(test_snaps=INLINE_SNAPSHOTS)
    original = source.read_text()
    created = run(pytester, "--pool", "2", "--inline-snapshot=create")
    assert created.ret == pytest.ExitCode.USAGE_ERROR
    created.stderr.fnmatch_lines(
        ["ERROR: inline-snapshot's create cannot be combined with --pool*"]
    )
    assert source.read_text() == original
    serial = run(pytester, "--inline-snapshot=report")
    pooled = run(pytester, "--pool", "2", "--inline-snapshot=report")
    assert verdicts(pooled) == verdicts(serial) and pooled.ret == serial.ret == 1
    notice = "poolrun: inline-snapshot's report is not shown under --pool"
    assert any(line.startswith(notice) for line in pooled.outlines), pooled.stdout.str()
    pytester.makepyfile(test_plain="def test_bad():\n    assert 0\n")
    plain = run(pytester, "--pool", "2", "--inline-snapshot=report", "test_plain.py")
    assert plain.ret == 1
    assert not any(line.startswith(notice) for line in plain.outlines), "no snapshot was used"
    run(pytester, "--inline-snapshot=create")  # serially it writes: the check is not idle
    assert "snapshot(3)" in source.read_text()


ALLURE_SUITE = """
import os, time, pytest

@pytest.mark.parametrize("n", range(6))
def test_notes_its_process(n):
    time.sleep(0.1)
    with open(f"ran-{n}.txt", "w") as noted:
        noted.write(str(os.getpid()))
"""


def test_allure_results_name_the_process_that_ran_each_test(pytester: pytest.Pytester) -> None:
    """allure's listener reads its process's id for the results' thread label once, at
    configure: a forked worker's results named the controller, and Allure's timeline put tests
    that ran at once in two workers on one lane.  allure-pytest is installed in tox's
    py311-bddsnap cell only (see pyproject.toml)."""
    pytest.importorskip("allure_pytest")
    pytester.makepyfile(test_noted=ALLURE_SUITE)

    def thread_pids(directory: str, *args: str) -> dict[str, tuple[int, int]]:
        """By test: the pid in its result's thread label, and the pid that ran it."""
        run(pytester, f"--alluredir={directory}", *args).assert_outcomes(passed=6)
        found = {}
        for path in (pytester.path / directory).glob("*-result.json"):
            result = json.loads(path.read_text())
            (thread,) = [label["value"] for label in result["labels"] if label["name"] == "thread"]
            ran = (pytester.path / f"ran-{result['parameters'][0]['value']}.txt").read_text()
            found[result["name"]] = (int(thread.partition("-")[0]), int(ran))
        return found

    serial = thread_pids("serial")
    pooled = thread_pids("pooled", "--pool", "2")
    assert len(serial) == len(pooled) == 6
    for labelled, ran in (*serial.values(), *pooled.values()):
        assert labelled == ran
    assert len({ran for _, ran in pooled.values()}) == 2


def test_github_annotations_are_printed_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest-github-actions-annotate-failures prints a workflow command per failure and per
    warning: from the controller only, as serially (a forked worker printed each again)."""
    pytester.makepyfile(
        test_annotated="""
        import warnings

        def test_fails():
            assert 1 == 2

        def test_warns():
            warnings.warn(UserWarning("a user warning"))
        """
    )
    monkeypatch.setenv("GITHUB_ACTIONS", "true")

    def commands(*args: str) -> list[str]:
        result = run(pytester, "-p", "no:cacheprovider", *args)
        return sorted(line for line in result.errlines if line.startswith("::"))

    serial = commands()
    assert [line.split(" ")[0] for line in serial] == ["::error", "::warning"], serial
    assert commands("--pool", "2") == serial


RETRIED = """
import os
from pathlib import Path

import pytest

def attempt(name):
    count = Path(os.environ["RETRY_DIR"], name)
    count.write_text(str(int(count.read_text()) + 1) if count.exists() else "1")
    return int(count.read_text())

@pytest.mark.flaky(retries=2)
def test_second_attempt_passes():
    assert attempt("second") >= 2, "first attempt fails"

@pytest.mark.flaky(retries=1)
def test_always_fails():
    assert attempt("always") < 0, "never passes"

def test_plain():
    pass
"""


def retry_report(result: pytest.RunResult) -> list[str]:
    """pytest-retry's terminal section, one line per test and attempt, in a stable order."""
    text = result.stdout.str()
    start = text.find("the following tests were retried")
    end = text.find("end of test retry report")
    assert 0 <= start < end, text
    section = text[start:end]
    return sorted(
        re.findall(r"^\t(test_\w+ (?:passed|failed) (?:on|after) \d* ?attempts?.*)$", section, re.M)
    )


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_pytest_retry_report_matches_serial(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, start: str
) -> None:
    """pytest-retry prints each retried test's attempts at the end: a worker's attempts reach
    the controller's report (fork: they were lost; spawn: every worker failed to start).
    pytest-retry is installed in tox's py311-retry cell only (see pyproject.toml)."""
    pytest.importorskip("pytest_retry")
    pytester.makepyfile(test_retried=RETRIED)
    results = []
    for args in ((), ("--pool", "2", "--pool-start", start)):
        attempts = pytester.mkdir(f"attempts{len(results)}")
        monkeypatch.setenv("RETRY_DIR", str(attempts))
        # pytest-rerunfailures (installed too) would also rerun tests marked flaky.
        results.append(run(pytester, "-p", "no:rerunfailures", *args))
    serial, pooled = results
    assert retry_report(serial) == [
        "test_always_fails failed after 2 attempts!",
        "test_always_fails failed on attempt 1! Retrying!",
        "test_second_attempt_passes failed on attempt 1! Retrying!",
        "test_second_attempt_passes passed on attempt 2!",
    ]
    assert retry_report(pooled) == retry_report(serial)
    assert verdicts(pooled) == verdicts(serial) == {"failed": 1, "passed": 2, "retried": 2}


def test_report_log_holds_each_report_once(pytester: pytest.Pytester) -> None:
    """pytest-reportlog writes a JSON line per report as it comes: in the controller only, as
    serially (a forked worker inherited its writer and wrote every test report a second time)."""
    pytester.makepyfile(
        test_log="""
        import pytest

        @pytest.mark.parametrize("n", range(6))
        def test_n(n):
            assert n != 4
        """
    )

    def reports(name: str, *args: str) -> list[tuple[str, str]]:
        run(pytester, f"--report-log={name}", *args)
        lines = [json.loads(line) for line in (pytester.path / name).read_text().splitlines()]
        found = [(d["nodeid"], d["when"]) for d in lines if d["$report_type"] == "TestReport"]
        return sorted(found)

    serial = reports("serial.jsonl")
    assert len(serial) == 18
    assert reports("pool.jsonl", "--pool", "2") == serial


# ---------------------------------------------------------------------------------- threads, seeds


def test_forks_after_numpy_started_its_blas_threads(pytester: pytest.Pytester) -> None:
    """numpy's OpenBLAS starts a pool of native threads at import, which made every run that
    imports numpy at collection spawn its workers; OpenBLAS ends that pool at a fork itself,
    so the run forks, and BLAS works in the workers."""
    pytest.importorskip("numpy")
    pytester.makepyfile(
        test_blas="""
        import os
        import numpy

        THREADS_AT_IMPORT = len(os.listdir("/proc/self/task"))

        def test_threads_at_import():
            print("threads at import:", THREADS_AT_IMPORT)

        def test_matrix_product():
            a = numpy.ones((300, 300))
            assert (a @ a)[0, 0] == 300
        """
    )
    pooled = run(pytester, "--pool", "2", "-s")
    pooled.assert_outcomes(passed=2)
    (threads,) = re.findall(r"threads at import: (\d+)", pooled.stdout.str())
    if int(threads) == 1:
        pytest.skip("numpy started no BLAS thread here (one CPU, or a BLAS without a pool)")
    assert "forked after collection" in header(pooled), pooled.stdout.str()


NATIVE_SLEEPER = """
import ctypes, ctypes.util

libc = ctypes.CDLL(ctypes.util.find_library("c"))
thread = ctypes.c_ulong()
# A thread of C alone, started without Python, asleep in libc's sleep(30): no fork ends it.
assert libc.pthread_create(
    ctypes.byref(thread), None, ctypes.cast(libc.sleep, ctypes.c_void_p), ctypes.c_void_p(30)
) == 0
"""


def test_a_native_thread_that_a_fork_leaves_still_makes_the_run_spawn(
    pytester: pytest.Pytester,
) -> None:
    """Only threads that a fork itself ends (OpenBLAS's pool) are let through."""
    pytester.makeconftest(NATIVE_SLEEPER)
    pytester.makepyfile(test_two="def test_a(): pass\ndef test_b(): pass\n")
    pooled = run(pytester, "--pool", "2")
    pooled.assert_outcomes(passed=2)
    assert "spawned" in header(pooled) and "1 native thread" in header(pooled), header(pooled)


def test_forks_with_all_these_plugins_installed(pytester: pytest.Pytester) -> None:
    """pytest-xdist, -rerunfailures, -randomly, -cov, -timeout and -django are all installed
    (the test extras): an idle plugin thread must not cost the fork path, and -s output must
    reach the terminal."""
    pytester.makepyfile(
        test_print="""
        def test_a():
            print("printed-from-a")

        def test_b():
            print("printed-from-b")
        """
    )
    pooled = run(pytester, "--pool", "2", "-s", randomly=True)
    assert "forked after collection" in header(pooled), pooled.stdout.str()
    assert "printed-from-a" in pooled.stdout.str()
    assert "printed-from-b" in pooled.stdout.str()
    pooled.assert_outcomes(passed=2)


def test_randomly_seeded_collection_under_spawn(pytester: pytest.Pytester) -> None:
    """pytest-randomly shuffles the collection with a fresh seed per run; spawned workers must
    collect with the controller's seed (xdist passes it via pytest_configure_node)."""
    pytester.makepyfile(
        **{
            f"test_mod{m}": "\n".join(f"def test_{m}_{n}():\n    pass\n" for n in range(5))
            for m in range(4)
        }
    )
    serial = run(pytester, randomly=True)
    serial.assert_outcomes(passed=20)
    pooled = run(pytester, "--pool", "2", "--pool-start", "spawn", randomly=True)
    assert "collected differently" not in pooled.stdout.str(), pooled.stdout.str()
    pooled.assert_outcomes(passed=20)
    assert pooled.ret == 0


@pytest.mark.parametrize("start", ["default", "fork"])
def test_header_says_how_workers_really_started(pytester: pytest.Pytester, start: str) -> None:
    """pytest-rerunfailures' idle server thread runs in the controller. Whatever poolrun then
    does, the header must tell the truth: forked workers do not collect again; workers that
    do collect (spawn, forkserver) must be named so, with the thread that caused it."""
    pytester.makeconftest(
        """
        import os

        def pytest_collection_finish(session):
            with open("collections.txt", "a") as ledger:
                ledger.write(f"{os.getpid()}\\n")
        """
    )
    pytester.makepyfile(test_two="def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    pooled = run(pytester, "--pool", "2", *(("--pool-start", "fork") if start == "fork" else ()))
    pooled.assert_outcomes(passed=2)
    collections = len((pytester.path / "collections.txt").read_text().split())
    if "forked after collection" in header(pooled):
        assert collections == 1, f"{header(pooled)!r}, yet {collections} processes collected"
    else:
        assert "run_server" in header(pooled), header(pooled)  # names the thread


@pytest.mark.parametrize("mode", START_MODES)
def test_a_worker_that_runs_no_measured_code_does_not_warn(
    pytester: pytest.Pytester, mode: str
) -> None:
    # Each worker takes one test; one of them never runs the package.
    pytester.mkpydir("pkg")
    pytester.path.joinpath("pkg", "calc.py").write_text("def add(a, b):\n    return a + b\n")
    pytester.makepyfile(
        test_a="import time\nfrom pkg.calc import add\n"
        "def test_add():\n    time.sleep(0.5)\n    assert add(1, 2) == 3\n",
        test_b="import time\ndef test_wait():\n    time.sleep(0.5)\n",
    )
    cov = ("--cov=pkg", "--cov-report=term-missing")
    serial = run(pytester, *cov)
    pooled = run(pytester, *cov, *START_MODES[mode])
    assert pooled.ret == serial.ret == 0
    assert coverage_rows(pooled.stdout.str()) == coverage_rows(serial.stdout.str())
    output = pooled.stdout.str() + pooled.stderr.str()
    assert "CoverageWarning" not in output, output
