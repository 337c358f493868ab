"""--pool-shared-fixture: a session fixture set up once, in the controller, before the workers
fork; every worker sees its value; torn down once after the last worker; errors as serially."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from helpers import POOL

CONFTEST = """
import os, pytest
LOG = {log!r}
def note(text):
    with open(LOG, "a") as f:
        f.write(f"{{text}} {{os.getpid()}}\\n")
@pytest.fixture(scope="session")
def base(tmp_path_factory, pytestconfig):  # pytest's own session fixtures: not sent
    note("setup-base")
    yield "base"
    note("teardown-base")
@pytest.fixture(scope="session")
def server(base):
    note("setup-server")
    yield {{"pid": os.getpid(), "base": base, "make": {make}}}
    note("teardown-server")
"""

USERS = """
import os, time, pytest
@pytest.mark.parametrize("n", range(8))
def test_uses(server, n, tmp_path):
    from conftest import note
    note(f"sees-{server['pid']}")
    assert server["base"] == "base"
    time.sleep(0.1)  # work enough that both workers get some of these tests
"""


def _suite(pytester: pytest.Pytester, make: str = "None") -> Path:
    log = pytester.path / "log.txt"
    pytester.makeconftest(CONFTEST.format(log=str(log), make=make))
    pytester.makepyfile(test_users=USERS)
    return log


def _events(log: Path) -> list[tuple[str, str]]:
    return [tuple(line.split()) for line in log.read_text().splitlines()]  # type: ignore[misc]


@pytest.mark.parametrize(
    "args",
    [("--pool-shared-fixture", "server"), ("-o", "pool_shared_fixtures=server other")],
    ids=["option", "ini"],
)
def test_set_up_once_in_the_controller_and_seen_by_every_worker(
    pytester: pytest.Pytester, args: tuple[str, str]
) -> None:
    pytester.makepyfile(
        test_other="""
        import pytest
        @pytest.fixture(scope="session")
        def other(): return 1
        def test_plain(): pass
        """
    )
    log = _suite(pytester)
    result = pytester.runpytest_subprocess(
        *POOL, "--pool", "2", "--pool-chunksize", "1", *args, timeout=120
    )
    assert result.ret == 0
    result.assert_outcomes(passed=9)
    events = _events(log)
    counts = Counter(what for what, _ in events)
    assert counts["setup-server"] == counts["teardown-server"] == 1
    assert counts["setup-base"] == counts["teardown-base"] == 1
    controller = {pid for what, pid in events if what == "setup-server"}.pop()
    assert {what for what, _ in events if what.startswith("sees")} == {f"sees-{controller}"}
    workers = {pid for what, pid in events if what.startswith("sees")}
    assert len(workers) == 2 and controller not in workers
    assert events[-2:] == [("teardown-server", controller), ("teardown-base", controller)]


def test_spawned_workers_get_the_value_pickled(pytester: pytest.Pytester) -> None:
    log = _suite(pytester)
    result = pytester.runpytest_subprocess(
        *POOL,
        "--pool",
        "2",
        "--pool-start",
        "spawn",
        "--pool-shared-fixture",
        "server",
        timeout=120,
    )
    assert result.ret == 0
    result.assert_outcomes(passed=8)
    events = _events(log)
    controller = {pid for what, pid in events if what == "setup-server"}.pop()
    assert Counter(what for what, _ in events)["setup-server"] == 1
    assert {what for what, _ in events if what.startswith("sees")} == {f"sees-{controller}"}


def test_a_value_that_cannot_be_pickled_is_a_clear_error_for_spawned_workers(
    pytester: pytest.Pytester,
) -> None:
    _suite(pytester, make="lambda: None")
    result = pytester.runpytest_subprocess(
        *POOL,
        "--pool",
        "1",
        "--pool-start",
        "spawn",
        "--pool-shared-fixture",
        "server",
        timeout=120,
    )
    result.assert_outcomes(errors=8)
    result.stdout.fnmatch_lines(
        [
            "*SharedFixtureError: shared fixture 'server' could not be sent to worker gw0: its "
            "value (dict) cannot be pickled*"
        ]
    )


def test_a_fixture_that_starts_a_thread_makes_the_run_spawn_and_says_so(
    pytester: pytest.Pytester,
) -> None:
    """A shared fixture's server thread runs in the controller from its setup on: the run
    spawns its workers, as for any other thread, and the header says so; a value that pickles
    (the server's address) reaches them."""
    pytester.makeconftest(
        """
        import socketserver, threading, pytest

        class Echo(socketserver.BaseRequestHandler):
            def handle(self):
                self.request.sendall(self.request.recv(64))

        @pytest.fixture(scope="session")
        def echo_address():
            server = socketserver.TCPServer(("127.0.0.1", 0), Echo)
            thread = threading.Thread(target=server.serve_forever, name="echo-server")
            thread.start()
            yield server.server_address
            server.shutdown()
            thread.join()
            server.server_close()
        """
    )
    pytester.makepyfile(
        test_echo="""
        import socket, pytest

        @pytest.mark.parametrize("n", range(4))
        def test_echo(echo_address, n):
            with socket.create_connection(echo_address, timeout=10) as connection:
                connection.sendall(b"ping %d" % n)
                assert connection.recv(64) == b"ping %d" % n
        """
    )
    result = pytester.runpytest_subprocess(
        *POOL, "--pool", "2", "--pool-shared-fixture", "echo_address", timeout=120
    )
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "poolrun: 2 workers, spawned, collecting for themselves (thread 'echo-server'*",
            "poolrun: shared fixtures set up once, in the controller: echo_address*",
        ]
    )
    assert "forkserver" not in result.stdout.str() + result.stderr.str()


def test_a_usage_error_comes_before_the_header(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_one="import pytest\n@pytest.fixture\ndef per_test(): pass\n"
        "def test_one(per_test): pass\n"
    )
    result = pytester.runpytest_subprocess(
        *POOL, "--pool", "1", "--pool-shared-fixture", "per_test", timeout=60
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "poolrun: 1 worker" not in result.stdout.str()


def test_setup_and_teardown_errors_are_reported_as_serially(pytester: pytest.Pytester) -> None:
    log = pytester.path / "log.txt"
    pytester.makepyfile(
        test_errors=f"""
        import pytest
        @pytest.fixture(scope="session")
        def broken():
            with open({str(log)!r}, "a") as f:
                f.write("setup\\n")
            raise RuntimeError("no server today")
        @pytest.fixture(scope="session")
        def fragile():
            yield 1
            raise RuntimeError("teardown went wrong")
        @pytest.mark.parametrize("n", range(3))
        def test_broken(broken, n): pass
        @pytest.mark.parametrize("n", range(3))
        def test_fragile(fragile, n): pass
        """
    )
    shared = ("--pool-shared-fixture", "broken", "--pool-shared-fixture", "fragile")
    serial = pytester.runpytest_subprocess(*POOL, *shared, timeout=120)
    log.unlink()
    pooled = pytester.runpytest_subprocess(*POOL, "--pool", "2", *shared, timeout=120)
    assert pooled.parseoutcomes() == serial.parseoutcomes() == {"passed": 3, "errors": 4}
    assert log.read_text() == "setup\n", "set up once, in the controller"
    text = pooled.stdout.str()
    assert text.count("E       RuntimeError: no server today") == 3, text
    pooled.stdout.fnmatch_lines(["*ERROR at teardown of test_fragile*", "*teardown went wrong*"])


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_a_skip_or_an_error_in_setup_reads_as_serially_in_every_kind_of_worker(
    pytester: pytest.Pytester, start: str
) -> None:
    """A fresh worker gets the exception the controller's setup raised: a skip skips each test
    where serially, an error shows as itself."""
    pytester.makeconftest(
        """
        import pytest
        @pytest.fixture(scope="session")
        def absent():
            pytest.skip("no server here")
        @pytest.fixture(scope="session")
        def broken():
            raise RuntimeError("setup boom")
        """
    )
    pytester.makepyfile(
        "def test_one(absent): pass\ndef test_two(absent): pass\ndef test_three(broken): pass\n"
    )
    shared = ("--pool-shared-fixture", "absent", "--pool-shared-fixture", "broken", "-rsE")
    serial = pytester.runpytest_subprocess(*POOL, *shared, timeout=120)
    pooled = pytester.runpytest_subprocess(
        *POOL, *shared, "--pool", "2", "--pool-start", start, timeout=120
    )
    assert pooled.parseoutcomes() == serial.parseoutcomes() == {"skipped": 2, "errors": 1}

    def summary(result: pytest.RunResult) -> list[str]:
        return sorted(line for line in result.outlines if line.startswith(("SKIPPED", "ERROR")))

    assert summary(pooled) == summary(serial)


@pytest.mark.parametrize(
    ("fixtures", "message"),
    [
        ("@pytest.fixture\ndef server(): pass", "*fixture 'server' has scope 'function'*"),
        (
            "@pytest.fixture(scope='module')\ndef mod(): pass\n"
            "@pytest.fixture(scope='session')\ndef server(mod): pass",
            "*--pool-shared-fixture server (through 'server'): fixture 'mod' has scope 'module'*",
        ),
        ("", "*--pool-shared-fixture server: there is no fixture named 'server'*"),
    ],
    ids=["function-scope", "module-dependency", "unknown"],
)
def test_what_cannot_be_shared_is_a_usage_error(
    pytester: pytest.Pytester, fixtures: str, message: str
) -> None:
    uses = "server" if fixtures else ""
    pytester.makepyfile(test_one=f"import pytest\n{fixtures}\ndef test_one({uses}): pass\n")
    result = pytester.runpytest_subprocess(
        *POOL, "--pool", "1", "--pool-shared-fixture", "server", timeout=60
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("per_test", "*fixture 'per_test' has scope 'function'*"),
        ("tmp_path", "*fixture 'tmp_path' has scope 'function'*"),
        ("nowhere", "*there is no fixture named 'nowhere'*"),
    ],
)
def test_what_cannot_be_shared_is_a_usage_error_also_when_no_test_uses_it(
    pytester: pytest.Pytester, name: str, message: str
) -> None:
    pytester.makepyfile(
        test_one="""
        import pytest
        @pytest.fixture
        def per_test(): pass
        @pytest.fixture(scope="session")
        def server(): pass
        def test_one(per_test, server): pass
        def test_two(): pass
        """
    )
    selected = ("--pool", "1", "-k", "test_two", "--pool-shared-fixture")
    result = pytester.runpytest_subprocess(*POOL, *selected, name, timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    # A session fixture that only deselected tests use: nothing to set up, no error.
    result = pytester.runpytest_subprocess(*POOL, *selected, "server", timeout=60)
    result.assert_outcomes(passed=1, deselected=1)


def test_without_pool_the_option_changes_nothing(pytester: pytest.Pytester) -> None:
    log = _suite(pytester)
    result = pytester.runpytest_subprocess(*POOL, "--pool-shared-fixture", "server", timeout=60)
    result.assert_outcomes(passed=8)
    assert Counter(what for what, _ in _events(log))["setup-server"] == 1


def test_a_skip_in_a_shared_fixture_skips_its_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_skip="""
        import pytest
        @pytest.fixture(scope="session")
        def docker(): pytest.skip("no docker here")
        def test_needs_docker(docker): pass
        def test_plain(): pass
        """
    )
    result = pytester.runpytest_subprocess(
        *POOL, "--pool", "2", "--pool-shared-fixture", "docker", "-rs", timeout=60
    )
    assert result.ret == 0
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "poolrun: shared fixtures set up once, in the controller: docker (*s); docker did "
            "not set up (each test using it reports why)",
            "SKIPPED*no docker here",
        ]
    )
