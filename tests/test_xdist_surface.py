"""What plugins written for pytest-xdist see under --pool: workerinput, workeroutput, node hooks,
and which threads keep the run from forking."""

from __future__ import annotations

import json

import pytest
from helpers import POOL

NODE_PLUGIN = """
import json, os

def pytest_configure_node(node):
    node.workerinput["greeting"] = "hello " + node.gateway.id

def pytest_testnodedown(node, error):
    with open("nodes-down.jsonl", "a") as log:
        log.write(json.dumps({
            "id": node.gateway.id,
            "error": error,
            "output": getattr(node, "workeroutput", None),
        }) + "\\n")
"""

TESTS_READING_WORKERINPUT = """
import pytest

@pytest.mark.parametrize("n", range(4))
def test_sees_its_workerinput(request, worker_id, n):
    workerinput = request.config.workerinput
    assert workerinput["workerid"] == worker_id
    assert workerinput["workercount"] == 2
    assert workerinput["greeting"] == "hello " + worker_id
    assert workerinput["testrunuid"] == request.getfixturevalue("testrun_uid")
    request.config.workeroutput.setdefault("ran", []).append(n)
"""


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_workers_get_workerinput_and_hand_back_workeroutput(
    pytester: pytest.Pytester, start: str
) -> None:
    pytester.makeconftest(NODE_PLUGIN)
    pytester.makepyfile(TESTS_READING_WORKERINPUT)
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2", "--pool-start", start)
    result.assert_outcomes(passed=4)
    downs = [
        json.loads(line) for line in (pytester.path / "nodes-down.jsonl").read_text().splitlines()
    ]
    assert sorted(down["id"] for down in downs) == ["gw0", "gw1"]
    assert all(down["error"] is None for down in downs)
    ran = sorted(n for down in downs for n in down["output"].get("ran", []))
    assert ran == [0, 1, 2, 3]


CONFIGURED_PER_WORKER = """
import pytest

IDENT = None

def pytest_configure(config):
    global IDENT
    if hasattr(config, "workerinput"):
        IDENT = config.workerinput["ident"]

def pytest_configure_node(node):
    node.workerinput["ident"] = "db-" + node.gateway.id

@pytest.fixture
def database(worker_id):
    return IDENT
"""


def test_a_plugin_that_configures_each_worker_gets_spawned_workers(
    pytester: pytest.Pytester,
) -> None:
    """SQLAlchemy's pattern: pytest_configure_node hands each worker an id, which the worker's
    own pytest_configure reads.  A forked worker ran no pytest_configure of its own."""
    pytester.makeconftest(CONFIGURED_PER_WORKER)
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.parametrize("n", range(4))
        def test_has_its_own_database(database, worker_id, n):
            assert database == "db-" + worker_id
        """
    )
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "poolrun: 2 workers, spawned, collecting for themselves (conftest configures each "
            "worker in pytest_configure_node; --pool-start fork forks anyway), for 4 items"
        ]
    )
    forked = pytester.runpytest_subprocess(*POOL, "--pool", "2", "--pool-start", "fork")
    forked.stdout.fnmatch_lines(["poolrun: 2 workers, forked after collection, for 4 items"])
    forked.assert_outcomes(failed=4)


CONFIGURED_ALIKE = """
import os, random, pytest

RESULTS = None

def pytest_configure(config):
    global RESULTS
    RESULTS = config.workerinput["results"] if hasattr(config, "workerinput") else str(os.getpid())

def pytest_configure_node(node):
    node.workerinput["results"] = RESULTS

@pytest.fixture
def results():
    return RESULTS
"""


def test_a_plugin_that_gives_every_worker_the_same_input_keeps_the_fork(
    pytester: pytest.Pytester,
) -> None:
    """pytest-mypy's and pytest-testmon's pattern: pytest_configure_node hands every worker the
    controller's value (a results path), which a forked worker has already.  The fork stays,
    so tests whose ids differ from process to process (random parameters) still run."""
    pytester.makeconftest(CONFIGURED_ALIKE)
    pytester.makepyfile(
        """
        import os, random, pytest
        @pytest.mark.parametrize("n", [random.random() for _ in range(4)])
        def test_sees_the_controllers_value(results, n):
            assert results != str(os.getpid())
        """
    )
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2")
    result.stdout.fnmatch_lines(["poolrun: 2 workers, forked after collection, for 4 items"])
    result.assert_outcomes(passed=4)


SESSIONFINISH_FILLS_OUTPUT = """
import os

def pytest_sessionfinish(session, exitstatus):
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["finished"] = {"pid": os.getpid(), "status": int(exitstatus)}
    elif os.path.exists("nodes-down.jsonl"):
        # The controller's own session finish: every worker went down before it.
        with open("controller-finished.txt", "w") as out:
            out.write("after the workers")
"""


@pytest.mark.parametrize("mode", ["fork", "spawn", "xdist"])
def test_a_worker_finishes_its_session_for_plugins_that_read_its_output(
    pytester: pytest.Pytester, mode: str
) -> None:
    """pytest-xdist's pattern: a worker's pytest_sessionfinish fills workeroutput, which
    pytest_testnodedown reads in the controller; xdist's own keys come with it."""
    pytester.makeconftest(NODE_PLUGIN + SESSIONFINISH_FILLS_OUTPUT)
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.parametrize("n", range(4))
        def test_it(n): assert n != 3
        """
    )
    if mode == "xdist":
        args: tuple[str, ...] = ("-p", "xdist", "-n", "2")
    else:
        args = (*POOL, "--pool", "2", "--pool-start", mode)
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=3, failed=1)
    outputs = [
        json.loads(line)["output"]
        for line in (pytester.path / "nodes-down.jsonl").read_text().splitlines()
    ]
    assert len(outputs) == 2
    assert all({"exitstatus", "shouldfail", "shouldstop", "finished"} <= set(o) for o in outputs)
    # Each worker's status is its own: 1 where the failing test ran, else 0.
    assert sorted(o["exitstatus"] for o in outputs) == [0, 1]
    assert sorted(o["finished"]["status"] for o in outputs) == [0, 1]
    assert len({o["finished"]["pid"] for o in outputs}) == 2
    assert (pytester.path / "controller-finished.txt").read_text() == "after the workers"


def test_a_crashed_worker_goes_down_with_an_error_and_no_output(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(NODE_PLUGIN)
    pytester.makepyfile(
        """
        import os
        def test_crash(): os._exit(7)
        def test_fine(): pass
        """
    )
    # Forked: a worker that a fork started says how it ended (a spawned one's gateway does not).
    result = pytester.runpytest_subprocess(*POOL, "--pool", "1", "--pool-start", "fork")
    result.assert_outcomes(passed=1, failed=1)
    downs = [
        json.loads(line) for line in (pytester.path / "nodes-down.jsonl").read_text().splitlines()
    ]
    crashed = [down for down in downs if down["error"] is not None]
    assert len(crashed) == 1
    assert "exit code 7" in crashed[0]["error"]
    assert crashed[0]["output"] is None


def test_an_unknown_thread_makes_the_run_spawn_and_the_header_names_it(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
        import threading
        stop = threading.Event()

        def serve_forever():
            stop.wait()

        def pytest_configure(config):
            threading.Thread(target=serve_forever, name="app-server", daemon=True).start()

        def pytest_unconfigure(config):
            stop.set()
        """
    )
    pytester.makepyfile("def test_a(): pass\ndef test_b(): pass\n")
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "poolrun: 2 workers, spawned, collecting for themselves (thread 'app-server' "
            "(conftest.serve_forever) running, and a fork copies no thread), for 2 items"
        ]
    )


def test_a_known_idle_thread_keeps_the_fork_without_a_warning(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest-rerunfailures' status server (pytest-xdist installed) is idle in accept(): the run
    forks, and Python 3.12+'s fork-with-threads warning does not fail a -W error run."""
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:randomly")  # rerunfailures stays loaded
    pytester.makepyfile("def test_a(): pass\ndef test_b(): pass\n")
    result = pytester.runpytest_subprocess(*POOL, "-W", "error", "--pool", "2")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["poolrun: 2 workers, forked after collection, for 2 items"])
    assert "multi-threaded" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize("beside_unknown", [False, True], ids=["alone", "beside-an-unknown-thread"])
def test_a_known_thread_on_its_way_to_park_is_waited_for(
    beside_unknown: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest-rerunfailures starts a connection's thread as a forked worker connects, which may
    be while the next worker is launched: the fork waits for it to park in recv(), where it
    fell back to forkserver with a warning (an INTERNALERROR under -W error).  Beside a thread
    that blocks the fork anyway, it is not waited for: it is still on its way when named."""
    import socket
    import threading
    import time

    from pytest_poolrun.forksafety import fork_blockers

    ours, theirs = socket.socketpair()

    def recv() -> None:  # named as the call the thread parks in
        ours.recv(1)

    def run_connection() -> None:
        time.sleep(0.2)  # on its way: not parked yet, and parked well before the grace ends
        recv()

    def serve() -> None:
        ours.recv(1)

    run_connection.__module__ = "pytest_rerunfailures"
    run_connection.__qualname__ = "ServerStatusDB.run_connection"
    threads = [threading.Thread(target=run_connection, name="connection", daemon=True)]
    if beside_unknown:
        threads.append(threading.Thread(target=serve, name="app", daemon=True))
    for thread in threads:
        thread.start()
    # The threads of this test alone: any other that runs in this process (a plugin's) would
    # block the fork too.  They count as native threads then, a line of their own.
    main = threading.current_thread()
    monkeypatch.setattr(threading, "enumerate", lambda: [main, *threads])
    try:
        named = [line for line in fork_blockers() if line.startswith("thread ")]
        expected = (
            [
                "thread 'connection' (pytest_rerunfailures.ServerStatusDB.run_connection)",
                f"thread 'app' ({__name__}.{serve.__qualname__})",
            ]
            if beside_unknown
            else []
        )
        assert named == expected
    finally:
        theirs.send(b"xy")
        for thread in threads:
            thread.join()
        ours.close()
        theirs.close()


def test_a_plugin_that_reads_no_worker_output_finishes_in_the_controller_only(
    pytester: pytest.Pytester,
) -> None:
    """A forked worker's plugins were configured for the controller: one that takes no node's
    output (here, a summary file) must not finish its session in each worker too."""
    pytester.makeconftest(
        """
        import os
        def pytest_sessionfinish(session):
            with open("finished-by.txt", "a") as out:
                out.write(f"{os.getpid()}\\n")
        """
    )
    pytester.makepyfile("def test_a(): pass\ndef test_b(): pass\n")
    result = pytester.runpytest_subprocess(*POOL, "--pool", "2")
    result.assert_outcomes(passed=2)
    assert len((pytester.path / "finished-by.txt").read_text().split()) == 1
