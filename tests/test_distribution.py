"""Beyond one machine: execnet socket "hosts", spawned workers, collection checks."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import POOL, assert_no_process_left, junit_outcomes, pid_noting_conftest

PROJECT_TESTS = Path(__file__).parent

SUITE = """
import os, time, pytest
@pytest.mark.parametrize("n", range(24))
def test_n(n):
    time.sleep(0.05)
    assert n % 11 != 5
@pytest.mark.skip(reason="skipped here")
def test_skipped(): pass
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_socket_server(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    """An execnet socket server on loopback, standing for a second host."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "execnet.script.socketserver", f"127.0.0.1:{port}"],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
    return server, f"socket=127.0.0.1:{port}"


@pytest.fixture
def two_hosts(pytester: pytest.Pytester) -> Iterator[list[tuple[subprocess.Popen[bytes], str]]]:
    servers = [_start_socket_server(pytester.path) for _ in range(2)]
    # The probe connection above used up each server's first accept: it loops for the next.
    yield servers
    for server, _ in servers:
        server.kill()
        server.wait()


def test_local_and_execnet_workers_give_serial_verdicts(
    pytester: pytest.Pytester, two_hosts
) -> None:
    pid_file = pytester.path / "pids.txt"
    pytester.makeconftest(pid_noting_conftest(pid_file))
    pytester.makepyfile(test_suite=SUITE)
    serial = pytester.runpytest_subprocess(*POOL, "--junitxml=serial.xml")
    tx = [arg for _, spec in two_hosts for arg in ("--pool-tx", spec)]
    pooled = pytester.runpytest_subprocess(
        *POOL, "--pool", "2", *tx, "--pool-chunksize", "2", "--junitxml=pooled.xml"
    )
    pooled.stdout.fnmatch_lines(["poolrun: 2 workers, forked after collection + 2 execnet*"])
    assert pooled.ret == serial.ret == 1
    assert junit_outcomes(pytester.path / "pooled.xml") == junit_outcomes(
        pytester.path / "serial.xml"
    )
    hosts = frozenset(server.pid for server, _ in two_hosts)
    assert_no_process_left(pid_file, ignore=hosts)


def test_a_host_lost_mid_run_still_gives_every_verdict_once(
    pytester: pytest.Pytester, two_hosts
) -> None:
    pid_file = pytester.path / "pids.txt"
    doomed, _ = two_hosts[0]
    pytester.makeconftest(
        pid_noting_conftest(pid_file)
        + f"""
import os, signal
def pytest_runtest_call(item):
    # the first test that runs inside the doomed server's process kills that server
    if os.getpid() == {doomed.pid}:
        os.kill({doomed.pid}, signal.SIGKILL)
"""
    )
    pytester.makepyfile(test_suite=SUITE)
    tx = [arg for _, spec in two_hosts for arg in ("--pool-tx", spec)]
    result = pytester.runpytest_subprocess(
        *POOL, "--pool", "1", *tx, "--pool-chunksize", "3", "--junitxml=pooled.xml"
    )
    outcomes = junit_outcomes(pytester.path / "pooled.xml")
    assert len(outcomes) == 25, "every test has exactly one outcome"
    lost = [key for key, (_, message) in outcomes.items() if "gateway disconnected" in message]
    assert len(lost) == 1
    result.stdout.fnmatch_lines(["*its execnet gateway disconnected*"])
    doomed.wait(timeout=10)
    assert_no_process_left(pid_file, ignore=frozenset({two_hosts[1][0].pid}))


def test_unreachable_host_gets_no_work(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess(
        *POOL, "--pool", "1", "--pool-tx", f"socket=127.0.0.1:{_free_port()}"
    )
    result.stdout.fnmatch_lines(["poolrun: cannot reach execnet worker gw1*"])
    result.assert_outcomes(passed=22, failed=2, skipped=1)


def test_collection_mismatch_names_the_worker_and_skips_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # When this suite itself runs under --pool (or -n), the variable is inherited.
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makeconftest(
        """
        import os
        def pytest_collection_modifyitems(items):
            if os.environ.get("PYTEST_XDIST_WORKER") == "gw1":
                del items[-1]
        """
    )
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess(*POOL, "--pool", "1", "--pool-tx", "popen")
    result.stdout.fnmatch_lines(
        [
            "poolrun: worker gw1 collected 24 tests, the controller 25; it gets no work.*",
            "-test_suite.py::test_skipped",
        ]
    )
    result.assert_outcomes(passed=22, failed=2, skipped=1)


def test_spawned_workers_run_the_projects_own_scheduler_tests(pytester: pytest.Pytester) -> None:
    target = PROJECT_TESTS / "test_scheduling.py"
    pytester.makepyfile(test_copy=target.read_text())
    serial = pytester.runpytest_subprocess(*POOL, "--junitxml=serial.xml")
    spawned = pytester.runpytest_subprocess(
        *POOL, "--pool", "2", "--pool-start", "spawn", "--junitxml=spawned.xml"
    )
    spawned.stdout.fnmatch_lines(["poolrun: 2 workers, spawned, collecting for themselves*"])
    assert spawned.ret == serial.ret == 0
    assert junit_outcomes(pytester.path / "spawned.xml") == junit_outcomes(
        pytester.path / "serial.xml"
    )


def test_a_thread_in_the_controller_means_spawned_workers(pytester: pytest.Pytester) -> None:
    # Forking with a thread running is unsafe (Python 3.12+ warns, an error under -W error).
    pytester.makeconftest(
        """
        import threading, time
        def pytest_configure(config):
            threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
        """
    )
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2", "-W", "error")
    result.stdout.fnmatch_lines(["poolrun: 2 workers, spawned, collecting for themselves*"])
    result.assert_outcomes(passed=22, failed=2, skipped=1)


MODULE_POOL = """
from pytest_poolrun import Pool

def square(x):
    return x * x

POOL = Pool(2)

def test_maps_with_the_modules_pool():
    assert POOL.map(square, range(4)) == [0, 1, 4, 9]

def test_plain():
    pass
"""


def test_a_pool_made_at_collection_means_spawned_workers(pytester: pytest.Pytester) -> None:
    """A forked worker's copy of the test module's pool refuses work; a spawned worker imports
    the module and makes its own, and the test passes, as serially."""
    pytester.makepyfile(test_module_pool=MODULE_POOL)
    serial = pytester.runpytest_subprocess(*POOL)
    serial.assert_outcomes(passed=2)
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2")
    result.stdout.fnmatch_lines(
        [
            "poolrun: 2 workers, spawned, collecting for themselves (1 Pool made at "
            "test_module_pool.py:6 running, which a forked worker could not use; "
            "--pool-start fork forks anyway), for 2 items"
        ]
    )
    result.assert_outcomes(passed=2)
    forced = pytester.runpytest_subprocess(*POOL, "--pool", "2", "--pool-start", "fork")
    forced.stdout.fnmatch_lines(["poolrun: 2 workers, forked after collection, for 2 items"])
    forced.assert_outcomes(passed=1, failed=1)


MODULE_CONNECTION = """
import os, socket, time, pytest

CONNECTION = socket.create_connection(("127.0.0.1", int(os.environ["POOLRUN_TEST_PORT"])))
with open(f"import-{os.getpid()}.txt", "w") as noted:
    noted.write(str(CONNECTION.getsockname()[1]))

@pytest.mark.parametrize("n", range(6))
def test_talks_over_the_modules_connection(n):
    time.sleep(0.1)
    with open(f"test-{os.getpid()}.txt", "a") as noted:
        noted.write(f"{CONNECTION.getsockname()[1]}\\n")
"""


def _local_ports(directory: Path, prefix: str) -> dict[int, set[int]]:
    """The connection's local ports the suite noted, by the pid of the process that noted them."""
    return {
        int(path.stem.partition("-")[2]): {int(port) for port in path.read_text().split()}
        for path in directory.glob(f"{prefix}-*.txt")
    }


def test_a_connection_made_at_collection_means_spawned_workers(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forked workers would share the connection a test module opened at its import (two
    workers' requests interleaving on one stream); spawned workers connect for themselves, as
    pytest-xdist's do.  The listener never accepts: the kernel completes the connections."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        monkeypatch.setenv("POOLRUN_TEST_PORT", str(port))
        pytester.makepyfile(test_connected=MODULE_CONNECTION)
        result = pytester.runpytest_subprocess(*POOL, "--pool", "2")
        result.stdout.fnmatch_lines(
            [
                "poolrun: 2 workers, spawned, collecting for themselves (a connection to "
                f"127.0.0.1:{port} (file descriptor *) open, which forked workers would share; "
                "--pool-start fork forks anyway), for 6 items"
            ]
        )
        result.assert_outcomes(passed=6)
        imports, tests = _local_ports(pytester.path, "import"), _local_ports(pytester.path, "test")
        (controller,) = imports.keys() - tests.keys()
        assert all(ports == imports[pid] for pid, ports in tests.items())
        assert imports[controller].isdisjoint(set().union(*tests.values()))

        for path in pytester.path.glob("*-*.txt"):
            path.unlink()
        forced = pytester.runpytest_subprocess(*POOL, "--pool", "2", "--pool-start", "fork")
        forced.stdout.fnmatch_lines(["poolrun: 2 workers, forked after collection, for 6 items"])
        forced.assert_outcomes(passed=6)
        (controller_ports,) = _local_ports(pytester.path, "import").values()
        assert set().union(*_local_ports(pytester.path, "test").values()) == controller_ports


def test_spawned_workers_keep_apart_under_a_given_basetemp(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import time, pytest
        @pytest.mark.parametrize("n", range(6))
        def test_writes(tmp_path, worker_id, n):
            (tmp_path / "mine").write_text(worker_id)
            time.sleep(0.05)
            assert (tmp_path / "mine").read_text() == worker_id
            assert f"popen-{worker_id}" in str(tmp_path)
        """
    )
    basetemp = pytester.path / "base"
    result = pytester.runpytest_subprocess(
        *POOL, "--pool", "2", "--pool-start", "spawn", f"--basetemp={basetemp}"
    )
    result.assert_outcomes(passed=6)


def _pid_of_square(x: int) -> tuple[int, int]:
    import os

    return x * x, os.getpid()


def test_pool_maps_over_execnet_workers() -> None:
    import os

    from pytest_poolrun import Pool, WorkerLostError

    with Pool(0, tx=["2*popen"]) as pool:
        results = pool.map(_pid_of_square, range(8), chunksize=1)
        assert [value for value, _ in results] == [x * x for x in range(8)]
        assert os.getpid() not in {pid for _, pid in results}
        assert pool.apply(lambda: 6 * 7) == 42, "closures travel to execnet workers too"
        with pytest.raises(WorkerLostError, match=r"gateway|died"):
            pool.apply(os._exit, (3,))
        assert pool.map(abs, [-1, -2]) == [1, 2], "the lost worker was replaced"


def test_pool_fixture_over_execnet_workers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os
        def test_remote(pool):
            pids = set(pool.map(lambda _: os.getpid(), range(8), chunksize=1))
            assert os.getpid() not in pids
            assert len(pool.worker_pids()) == 2
        """
    )
    result = pytester.runpytest_subprocess(
        *POOL, "--pool-fixture-workers", "1", "--pool-fixture-tx", "popen"
    )
    result.assert_outcomes(passed=1)
