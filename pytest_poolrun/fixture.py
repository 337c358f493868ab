"""The ``pool`` fixture: a ready ``Pool`` for tests, its workers started once per session.

Data flow, all in the process that runs the test (pytest itself, or one of the runner's workers)::

    first test asking for ``pool`` ─▶ SharedPool.lease() starts Pool(size)  (the one start-up)
    every later test ──────────────▶ SharedPool.lease(): the same Pool, idle, every worker alive
    each test's teardown ──────────▶ SharedPool.release(): Pool.reset() cancels what the test
                                     left queued or running (busy workers are killed, replaced)
    session teardown ──────────────▶ SharedPool.close(): the workers are stopped

A test may ``close``, ``join`` or ``terminate`` the pool it was given (or use it in a ``with``
block): the next test then gets a new pool.  A worker that crashed during a test is replaced by
the pool itself.  So nothing a test does to the pool reaches the next test, except what its tasks
changed inside a worker's memory (module globals, caches), as with any reused worker.

**Size.**  ``--pool-fixture-workers N|auto`` or the ``pool_fixture_workers`` ini key; ``auto``
(the default) is the CPUs this process may use, divided by the number of runner workers sharing
them (``PYTEST_XDIST_WORKER_COUNT``, set by ``--pool`` and by pytest-xdist), at least 1.
``--pool-fixture-tx SPEC`` (repeatable, or the ``pool_fixture_tx`` ini key, one spec a line)
adds workers behind execnet gateways, as ``Pool(tx=[...])`` does.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from os import getpid  # bound once: a test may patch os.getpid
from typing import TYPE_CHECKING

import pytest

from pytest_poolrun import txspecs

if TYPE_CHECKING:  # imported by the first test that asks for the fixture, not at start-up
    from pytest_poolrun.pool import Pool

OPTION = "pool_fixture_workers"
TX_OPTION = "pool_fixture_tx"
AUTO = "auto"
# Set in each of the runner's (and pytest-xdist's) workers: how many test processes share the CPUs.
WORKER_COUNT_ENV = "PYTEST_XDIST_WORKER_COUNT"
HELP = (
    "Worker processes of the 'pool' fixture: a whole number >= 1, or 'auto' (the default: the "
    "CPUs available, shared among the test run's own workers)."
)


def add_fixture_options(parser: pytest.Parser) -> None:
    """Options and ini keys of the ``pool`` fixture (called from the plugin's pytest_addoption)."""
    group = parser.getgroup("poolrun")
    group.addoption(
        "--pool-fixture-workers",
        dest=OPTION,
        metavar="N|auto",
        type=_size_text,
        default=None,
        help=HELP,
    )
    parser.addini(OPTION, HELP, default=AUTO)
    tx_help = "Add a worker behind an execnet gateway to the 'pool' fixture (N*SPEC for N)."
    group.addoption(
        "--pool-fixture-tx",
        dest=TX_OPTION,
        metavar="SPEC",
        action="append",
        default=[],
        type=txspecs.option_value,
        help=tx_help,
    )
    parser.addini(TX_OPTION, tx_help, type="linelist", default=[])


def configured_tx(config: pytest.Config) -> list[str]:
    """The fixture's execnet specs: the command line's, else the ini file's."""
    given: list[str] = config.getoption(TX_OPTION, None) or []
    if given:
        return given
    try:
        return [str(spec) for spec in config.getini(TX_OPTION)]
    except ValueError:  # the plugin's options are not registered: the fixture was imported alone
        return []


def _size_text(text: str) -> str:
    """Check the command line's value at once, so a typo is a usage error, not a test error."""
    try:
        parse_size(text, "--pool-fixture-workers", None)
    except pytest.UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def auto_size(cpus: int, sharing: str | None) -> int:
    """A fair share of ``cpus`` among ``sharing`` test processes (the env var's text, or None)."""
    try:
        processes = max(1, int(sharing or 1))
    except ValueError:
        processes = 1
    return max(1, cpus // processes)


def parse_size(text: str, origin: str, sharing: str | None) -> int:
    """The pool size that ``text`` (from ``origin``) asks for; a usage error if it is invalid."""
    text = text.strip()
    if text == AUTO:
        from pytest_poolrun.workerset import available_cpus

        return auto_size(available_cpus(), sharing)
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size < 1:
        raise pytest.UsageError(
            f"{origin} is {text!r}, which is not a number of pool workers; "
            f"use a whole number >= 1 or {AUTO!r}"
        )
    return size


def check_ini_size(config: pytest.Config) -> None:
    """A bad ini value (size, specs) is a usage error as the run is configured, not when a test
    first asks for the fixture (``auto`` is resolved only then: it imports the pool's modules)."""
    try:
        ini = str(config.getini(OPTION)).strip()
    except ValueError:  # the plugin's options are not registered
        return
    if ini != AUTO:
        parse_size(ini, f"the ini key {OPTION}", None)
    for spec in config.getini(TX_OPTION):
        problem = txspecs.problem(str(spec))
        if problem is not None:
            raise pytest.UsageError(f"the ini key {TX_OPTION}: {problem}")


def configured_size(config: pytest.Config) -> int:
    sharing = os.environ.get(WORKER_COUNT_ENV)
    value = config.getoption(OPTION, None)
    if value is not None:
        return parse_size(str(value), "--pool-fixture-workers", sharing)
    try:
        ini = str(config.getini(OPTION))
    except ValueError:  # the plugin's options are not registered: the fixture was imported alone
        ini = AUTO
    return parse_size(ini, f"the ini key {OPTION}", sharing)


class SharedPool:
    """One pool lent to each test in turn, kept running between tests."""

    def __init__(self, size: int, tx: list[str] | None = None) -> None:
        self.size = size
        self.tx = tx or []
        self._pool: Pool | None = None
        self._owner_pid = getpid()

    def lease(self) -> Pool:
        pool = self._pool
        if pool is None or not pool.accepting:
            from pytest_poolrun.forksafety import behind_execnet_gateway
            from pytest_poolrun.pool import Pool

            # Behind an execnet gateway its receiver thread runs, and a pool never forks past
            # a thread: it starts its workers through a forkserver here, as a choice (with
            # the default it would warn about the thread, an error under -W error).
            method = "forkserver" if behind_execnet_gateway() else None
            pool = self._pool = Pool(
                self.size, name_prefix="pool-fixture-", tx=self.tx, start_method=method
            )
        return pool

    def release(self) -> None:
        if self._pool is not None and self._pool.accepting:
            self._pool.reset()

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()


_shared_key = pytest.StashKey[SharedPool]()


def _shared(request: pytest.FixtureRequest) -> SharedPool:
    config = request.config
    shared = config.stash.get(_shared_key, None)
    if shared is None or shared._owner_pid != getpid():
        # None yet, or one inherited through a fork, whose workers belong to the parent.
        shared = config.stash[_shared_key] = SharedPool(
            configured_size(config), configured_tx(config)
        )
    return shared


# Named pool_fixture in Python: the package re-exports it, and a package attribute called "pool"
# would be replaced by the submodule pytest_poolrun.pool as soon as that is imported.
@pytest.fixture(name="pool")
def pool_fixture(request: pytest.FixtureRequest) -> Iterator[Pool]:
    """A ready ``Pool`` (``multiprocessing.Pool``'s API, see ``pytest_poolrun.Pool``).

    Its workers are started once per session and reused, so a test pays no start-up.  Whatever
    the test leaves behind (queued or running tasks, a closed or terminated pool, a crashed
    worker) is cleaned up before the next test gets it.  The size is set with
    ``--pool-fixture-workers`` or the ``pool_fixture_workers`` ini key.
    """
    shared = _shared(request)
    if shared._pool is None:
        # Stop the workers when the session's fixtures are torn down, before pytest's summary.
        request.session.addfinalizer(shared.close)
    pool = shared.lease()
    try:
        yield pool
    finally:
        shared.release()
