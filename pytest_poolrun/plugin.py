"""The pytest plugin, read top to bottom as the user's story: options, configure, the run, fixtures.

Data flow::

    command line ─▶ pytest_addoption / pytest_configure (checks, usage errors)
    collection (once, in this process, with every plugin's reordering and deselection)
    pytest_runtestloop ─▶ runner.Controller: forked workers run the items, the controller replays
                          their reports into its own hooks (terminal, junitxml, cache, warnings)
    fixtures: worker_id, testrun_uid (identity.py, pytest-xdist's meanings), pool (fixture.py)

Without ``--pool`` (or with ``--pool 0``) nothing here changes the run.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_poolrun import (
    bddscenarios,
    checkmessages,
    dependencies,
    extraoptions,
    fixture,
    identity,
    inlinesnapshots,
    quickexit,
    runid,
    scheduling,
    sharding,
    txspecs,
)
from pytest_poolrun.durations import DurationRecorder, durations_file
from pytest_poolrun.shardround import ShardRound
from pytest_poolrun.timeouts import MAX_TIMEOUT, MIN_TIMEOUT

if TYPE_CHECKING:  # imported where a run asks for workers (see pytest_runtestloop)
    from pytest_poolrun.xdistnode import WorkerNodes

recorder_key = pytest.StashKey[DurationRecorder]()
# Options whose output is written from inside the test protocol, to the terminal writer of the
# process that runs the test: under --pool they would print nothing.
SERIAL_ONLY_OPTIONS = {
    "setupshow": "--setup-show",
    "setuponly": "--setup-only",
    "setupplan": "--setup-plan",
}
# A dead worker is replaced this many times per worker before the run gives up on the rest.
RESTARTS_PER_WORKER = 4


_NO_AUTO = object()


def _number_type(
    convert: Callable[[str], float],
    valid: Callable[[float], bool],
    what: str,
    hint: str,
    auto: object = _NO_AUTO,
) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text, check it, or fail with a one-line usage error.

    With ``auto`` given, the text ``auto`` stands for that value.
    """

    def parse(text: str) -> Any:
        if auto is not _NO_AUTO and text == "auto":
            return auto
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}; use {hint}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


_workers_value = _number_type(
    int, lambda n: n >= 0, "a number of workers", "a whole number >= 0 or 'auto'", auto="auto"
)
_chunksize_value = _number_type(
    int, lambda n: n >= 1, "a chunk size", "a whole number >= 1 or 'auto'", auto=None
)
_timeout_value = _number_type(
    float,
    lambda n: MIN_TIMEOUT <= n <= MAX_TIMEOUT,  # false for nan and inf too
    "a timeout",
    f"a number of seconds from {MIN_TIMEOUT:g} to {MAX_TIMEOUT:.0f}",
)
_restarts_value = _number_type(int, lambda n: n >= 0, "a count", "a whole number >= 0")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("poolrun", "parallel runs in a pool of worker processes (poolrun)")
    group.addoption(
        "--pool",
        dest="pool",
        metavar="N",
        type=_workers_value,
        default=None,
        help="Run the tests in N worker processes ('auto': one per CPU this process may use; "
        "0 or absent: a serial run).",
    )
    group.addoption(
        "--pool-chunksize",
        dest="pool_chunksize",
        metavar="N",
        type=_chunksize_value,
        default=None,
        help="Items per chunk sent to a worker ('auto', the default: large chunks first, "
        "smaller ones toward the end, cut at module or class boundaries).",
    )
    group.addoption(
        "--pool-max-restarts",
        dest="pool_max_restarts",
        metavar="N",
        type=_restarts_value,
        default=None,
        help=f"Replace dead workers at most N times in a run (default: {RESTARTS_PER_WORKER} "
        "per worker); past it the tests not yet run are reported as not run.",
    )
    group.addoption(
        "--pool-timeout",
        dest="pool_timeout",
        metavar="SECONDS",
        type=_timeout_value,
        default=None,
        help="Fail a test still running after SECONDS: its worker's stacks go into the report, "
        "the worker is killed and replaced, and the run goes on.",
    )
    group.addoption(
        "--pool-dist",
        dest="pool_dist",
        choices=scheduling.DIST_MODES,
        default="load",
        help="How items are shared out: 'load' (default) in chunks sized by stored durations, "
        "each worker running its tests in collection order; 'longest' hands the longest tests "
        "out first (ends sooner when a few are long, but a worker may run a later module "
        "first); 'module', 'class' and 'group' keep each module, class, or xdist_group on one "
        "worker.",
    )
    group.addoption(
        "--pool-shard",
        dest="pool_shard",
        metavar="K/N",
        type=sharding.parse_shard,
        default=None,
        help="Run only shard K of N: a deterministic split of the collected tests, balanced by "
        "stored durations, so that N CI jobs together run every test once.",
    )
    group.addoption(
        "--pool-durations",
        dest="pool_durations",
        metavar="PATH",
        default=None,
        help="Read test durations from PATH (JSON) instead of pytest's cache, and write them "
        "back after the run; merge shards' files with 'python -m pytest_poolrun.durations merge'.",
    )
    group.addoption(
        "--pool-report-order",
        dest="pool_report_order",
        choices=("completion", "collection"),
        default="completion",
        help="'completion' (default): report each test as it finishes; 'collection': report in "
        "collection order, so the output is a serial run's line for line (progress comes in "
        "bursts), also after -x.",
    )
    group.addoption(
        "--pool-tx",
        dest="pool_tx",
        metavar="SPEC",
        type=txspecs.option_value,
        action="append",
        default=[],
        help="Add a worker behind an execnet gateway (repeatable; N*SPEC for N): 'popen', "
        "'popen//python=...', 'ssh=host//python=...//chdir=...', 'socket=host:port'. Such a "
        "worker collects for itself; a collection that differs from this one gets no work.",
    )
    group.addoption(
        "--pool-start",
        dest="pool_start",
        choices=("fork", "spawn"),
        default=None,
        help="How local workers start: 'fork' (after collection, the default where fork is "
        "safe) or 'spawn' (fresh interpreters that collect for themselves).",
    )
    fixture.add_fixture_options(parser)
    extraoptions.add_options(parser, _number_type)


# pytest-xdist's --dist modes and the --pool-dist that does the same.
_XDIST_DIST_EQUIVALENTS = {
    "load": "load",
    "worksteal": "load",
    "loadfile": "module",
    "loadscope": "class",
    "loadgroup": "group",
}


def _refuse_xdist_distribution(config: pytest.Config) -> None:
    """pytest-xdist's own distribution options would hand the run to pytest-xdist (or be
    ignored): a usage error naming this plugin's option instead."""
    if config.getoption("distload", False) or config.getoption("tx", None):
        raise pytest.UsageError(
            "--pool and pytest-xdist's -d/--tx both ask for workers; use --pool-tx SPEC for "
            "workers behind execnet gateways"
        )
    mode = config.getoption("dist", "no")
    if mode and mode != "no":
        equivalent = _XDIST_DIST_EQUIVALENTS.get(mode)
        advice = f"use --pool-dist {equivalent}" if equivalent else "see --pool-dist"
        raise pytest.UsageError(
            f"--dist {mode} is pytest-xdist's and does not apply to --pool; {advice} "
            "(--dist no overrides an ini file's addopts)"
        )


def _pool_requested(config: pytest.Config) -> bool:
    value = config.getoption("pool", None)
    return bool(value) or bool(config.getoption("pool_tx", None))


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.stash[runid.testrun_uid_key] = runid.new_testrun_uid()
    recorder = DurationRecorder(config)
    config.stash[recorder_key] = recorder
    config.pluginmanager.register(recorder, "poolrun-durations")
    # Registered now, after every entry-point plugin, so these fixtures take precedence over
    # pytest-xdist's namesakes when both plugins are installed.
    config.pluginmanager.register(identity, "poolrun-identity")
    # The command line's fixture size is checked as it is parsed; the ini file's here.
    fixture.check_ini_size(config)
    if not _pool_requested(config):
        return
    if config.getoption("numprocesses", None):
        raise pytest.UsageError(
            "--pool and pytest-xdist's -n both ask for parallel workers; use one of them"
        )
    _refuse_xdist_distribution(config)
    extraoptions.read(config)  # a bad ini value is a usage error before anything runs
    checkmessages.register(config)
    bddscenarios.register(config)
    inlinesnapshots.check(config)
    for option, flag in (("usepdb", "--pdb"), ("trace", "--trace")):
        if config.getoption(option, False):
            raise pytest.UsageError(
                f"{flag} cannot be used with --pool: a debugger needs the terminal, which "
                "workers do not have; drop --pool (or use --pool 0) to debug"
            )
    quickexit.arm()


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session: pytest.Session) -> None:
    if _pool_requested(session.config):
        # What collection builds lives to the end of the run: no full garbage collection need
        # walk it again and again while it grows and while the workers share it (see gcpause).
        from pytest_poolrun import gcpause

        gcpause.for_config(session.config).hold(session.config)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    config = session.config
    if not _pool_requested(config) or config.option.collectonly:
        return None
    if session.testsfailed and not config.option.continue_on_collection_errors:
        return None  # pytest's own loop interrupts the run as a serial run does
    # The runner's modules are imported only by a run that asks for workers: a serial run with
    # this plugin installed does not pay for them (about 20 ms).
    from pytest_poolrun.runner import Controller, RunOptions, resolve_workers
    from pytest_poolrun.sharedfixtures import SharedFixtures
    from pytest_poolrun.xdistnode import WorkerNodes

    tx = txspecs.expand(config.getoption("pool_tx"))
    local = resolve_workers(config.getoption("pool"), len(session.items) - len(tx))
    workers = local + len(tx)
    if workers == 0 or not session.items:
        return None
    reporter: Any = config.pluginmanager.getplugin("terminalreporter")
    serial_only = [
        flag for dest, flag in SERIAL_ONLY_OPTIONS.items() if config.getoption(dest, False)
    ]
    if serial_only:
        if reporter is not None:
            reporter.write_line(
                f"poolrun: {serial_only[0]} prints from inside each test's process, so this run "
                "is serial; drop it to run in parallel"
            )
        return None
    extras = extraoptions.read(config)
    # Set up before the start method is chosen: a thread a shared fixture starts (a server's)
    # makes the run spawn, as any other thread does; and a usage error comes before the header.
    shared = SharedFixtures(session, extras.shared_fixtures)
    shared.setup()
    max_restarts = config.getoption("pool_max_restarts")
    if max_restarts is None:
        max_restarts = RESTARTS_PER_WORKER * workers
    options = RunOptions(
        workers=workers,
        chunksize=config.getoption("pool_chunksize"),
        max_restarts=max_restarts,
        timeout=config.getoption("pool_timeout"),
        dist=config.getoption("pool_dist"),
        tx=tuple(tx),
        start="fork",  # until _start_method says otherwise
        report_order=_report_order(config),
        testrun_uid=config.stash[runid.testrun_uid_key],
        extras=extras,
    )
    # Configured before the start method is chosen: what plugins give each worker tells.
    nodes = WorkerNodes(config, options.worker_names(), options.worker_specs(), options.testrun_uid)
    start, why_not_fork = _start_method(config.getoption("pool_start"), nodes, config.rootpath)
    if start != options.start:
        options = dataclasses.replace(options, start=start)
        nodes.respec(options.worker_specs())
    if reporter is not None and config.get_verbosity() >= -1:
        reporter.write_line(_header(local, tx, start, len(session.items), why_not_fork))
    durations = config.stash[recorder_key].durations
    Controller(session, options, durations, shared=shared, nodes=nodes).run()
    if session.shouldfail:
        raise session.Failed(session.shouldfail)
    if session.shouldstop:
        raise session.Interrupted(session.shouldstop)
    return True


def _report_order(config: pytest.Config) -> str:
    """``--pool-report-order``, except under ``--sw``: stepwise must see the failures in
    collection order to stop at, and record, the one a serial run stops at."""
    if config.getoption("stepwise", False) or config.getoption("stepwise_skip", False):
        return "collection"
    return str(config.getoption("pool_report_order"))


def _start_method(asked: str | None, nodes: WorkerNodes, rootpath: Path) -> tuple[str, str | None]:
    """How local workers start, and why they are not forked when fork was possible.

    Forking after collection is the default wherever the platform allows it; a thread that
    ``forksafety`` does not know to be idle makes the run spawn its workers instead (also when
    ``--pool-start fork`` asked for a fork: a fork then could deadlock the worker), and the
    header names that thread.  So do, unless ``--pool-start fork`` asked for a fork:

    - a ``Pool`` made before the run (a test module's, at its import) and still running: a
      forked worker's copy of it refuses work, where a spawned worker imports the module and
      makes a pool of its own, as a pytest-xdist worker does;
    - a connection open before the run (a test module's database client, made at its import):
      forked workers would share it, where spawned ones connect for themselves
      (``openconnections``);
    - a plugin that gave ``nodes`` inputs that differ from worker to worker in
      ``pytest_configure_node`` (``xdistnode``): spawned workers run its ``pytest_configure``
      with their own ``workerinput``, as pytest-xdist's do.
    """
    from pytest_poolrun.forksafety import fork_blockers, platform_forks_safely

    if asked == "spawn" or not platform_forks_safely():
        return "spawn", None
    blockers = fork_blockers()
    if blockers:
        return "spawn", f"{', '.join(blockers)} running, and a fork copies no thread"
    if asked == "fork":
        return "fork", None
    from pytest_poolrun.pool import running_pool_sites

    pool_sites = running_pool_sites()
    if pool_sites:
        sites = ", ".join(sorted({_site(site, rootpath) for site in pool_sites}))
        count = len(pool_sites)
        return "spawn", (
            f"{count} Pool{'s' if count != 1 else ''} made at {sites} running, "
            "which a forked worker could not use; --pool-start fork forks anyway"
        )
    from pytest_poolrun.openconnections import shared_connections

    connections = shared_connections()
    if connections:
        more = f" and {len(connections) - 1} more" if len(connections) > 1 else ""
        return "spawn", (
            f"{connections[0].describe()}{more} open, which forked workers would share; "
            "--pool-start fork forks anyway"
        )
    configuring = nodes.plugins_configuring_each_worker()
    if configuring:
        return "spawn", (
            f"{', '.join(configuring)} configures each worker in pytest_configure_node; "
            "--pool-start fork forks anyway"
        )
    return "fork", None


def _site(site: tuple[str, int], rootpath: Path) -> str:
    """``file:line``, the file relative to the rootdir where it lies below it."""
    filename, lineno = site
    path = Path(filename)
    if path.is_relative_to(rootpath):
        path = path.relative_to(rootpath)
    return f"{path}:{lineno}"


def _header(
    local: int, tx: list[str], start: str, items: int, why_not_fork: str | None = None
) -> str:
    parts = []
    if local:
        how = "forked after collection" if start == "fork" else "spawned, collecting for themselves"
        if why_not_fork is not None:
            how += f" ({why_not_fork})"
        parts.append(f"{local} worker{'s' if local != 1 else ''}, {how}")
    if tx:
        parts.append(f"{len(tx)} execnet worker{'s' if len(tx) != 1 else ''} ({', '.join(tx)})")
    return f"poolrun: {' + '.join(parts)}, for {items} item{'s' if items != 1 else ''}"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    shard = config.getoption("pool_shard", None)
    if shard is None:
        return
    recorder = config.stash[recorder_key]
    path = durations_file(config)
    source = "the cache" if path is None else str(path.resolve())
    shard_round = ShardRound.begin(config, recorder.durations.stored, shard, source)
    recorder.shard_round = shard_round
    basis = shard_round.basis
    nodeids = [item.nodeid for item in items]
    ties = dependencies.ties(config, items, nodeids) or [None] * len(items)
    infos = [
        scheduling.ItemInfo(nodeid, basis.get(nodeid), tie=tie)
        for nodeid, tie in zip(nodeids, ties)
    ]
    mine = set(sharding.split(infos, shard.total)[shard.number - 1])
    kept = [item for index, item in enumerate(items) if index in mine]
    dropped = [item for index, item in enumerate(items) if index not in mine]
    items[:] = kept
    if dropped:
        config.hook.pytest_deselected(items=dropped)


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> str | None:
    shard = config.getoption("pool_shard", None)
    return None if shard is None else f"poolrun: shard {shard}: {len(items)} tests"
