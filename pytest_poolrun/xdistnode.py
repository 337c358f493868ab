"""The pytest-xdist surface: what plugins written for pytest-xdist read, in workers and here.

Data flow::

    plugin, before it chooses how local workers start
      WorkerNodes(config, names, specs, testrun_uid): one WorkerNode per worker name, its
        workerinput {workerid, workercount, testrunuid, mainargv} ─▶ pytest_configure_node(node)
        (xdist's hook, called when pytest-xdist is installed: plugins add their keys, noted by
        plugin module)
      ─▶ plugins_configuring_each_worker(): a plugin whose keys differ from worker to worker
         (a database each) configures each worker for its own pytest_configure ─▶ spawned
         workers (respec); keys the same for all (a shared path) are what a forked worker has
      ─▶ inputs(): worker name → workerinput, handed to every worker (inherited by a fork,
         pickled in the pool's initargs for a fresh one)
    worker: itemrunner sets config.workerinput and config.workeroutput = {} (a fresh worker
        before pytest_configure, as pytest-xdist does; a forked one before its first test);
        at its end finish_session: workeroutput gets exitstatus, shouldfail and shouldstop,
        and the plugins that read a node's output in pytest_testnodedown run their
        pytest_sessionfinish there (they fill it); adapters fill it too ─▶ the WorkerOutput event
    controller: WorkerOutput ─▶ received(name, output); the worker's exit ─▶ down(name, error):
        pytest_testnodedown(node, error) with node.workeroutput as the worker left it

**A worker's session finish.**  A forked worker's plugins were configured for the controller:
their ``pytest_sessionfinish`` would write the controller's files and summaries.  So a worker
runs only the ``pytest_sessionfinish`` of plugins whose package also implements
``pytest_testnodedown``: those follow pytest-xdist's pattern of handing a worker's results over
in ``workeroutput`` (flaky's report).  pytest's own plugins, pytest-xdist's, this runner's and
the plugins its adapters serve (coverage, syrupy, benchmark, metadata, rerunfailures) are left
out.

pytest-cov's plugin is left out of these hook calls: in a run without ``-n`` it runs in its
serial mode, which has no node methods, and this runner merges coverage itself (``adapters``).
A replacement worker gets the workerinput of the worker it replaces, and a node of its own.
"""

from __future__ import annotations

import os
import pickle
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace
from typing import Any

import pluggy
import pytest

WorkerInput = dict[str, Any]
# pytest-cov registers its plugin object under this name.
COVERAGE_PLUGIN = "_cov"


@dataclass(frozen=True)
class NodeGateway:
    """The part of an execnet gateway that plugins read off a node (``node.gateway.id``)."""

    id: str
    spec: str

    def _rinfo(self) -> SimpleNamespace:
        return SimpleNamespace(
            executable=sys.executable,
            version_info=sys.version_info,
            platform=sys.platform,
            cwd=os.getcwd(),
        )


class WorkerNode:
    """One worker as pytest-xdist's hooks see it (``WorkerController``'s readable part).

    As on pytest-xdist's nodes, ``workeroutput`` exists only once the worker sent it: plugins
    check ``hasattr(node, "workeroutput")`` to tell a finished worker from a crashed one.
    """

    workeroutput: dict[str, Any]

    def __init__(self, config: pytest.Config, gateway: NodeGateway, workerinput: WorkerInput):
        self.config = config
        self.gateway = gateway
        self.workerinput = workerinput

    @property
    def reported(self) -> bool:
        return hasattr(self, "workeroutput")

    def __repr__(self) -> str:
        return f"<WorkerNode {self.gateway.id}>"


def xdist_hooks_present(config: pytest.Config) -> bool:
    return hasattr(config.hook, "pytest_configure_node")


# Packages whose pytest_configure_node a forked worker needs nothing more for: pytest-xdist's,
# this runner's, and those its adapters serve (read where a forked worker has them).
NODE_HOOKS_SERVED = ("pytest_cov", "pytest_randomly", "pytest_rerunfailures", "xdist")


def _served(impl: pluggy.HookImpl) -> bool:
    package = str(getattr(impl.function, "__module__", "")).partition(".")[0]
    return impl.plugin_name == COVERAGE_PLUGIN or package in (*NODE_HOOKS_SERVED, __package__)


def _same(first: object, second: object) -> bool:
    try:
        return bool(first == second)
    except Exception:  # a value that cannot be compared: count it as one per worker
        return False


def call_node_hook(
    config: pytest.Config,
    name: str,
    after_each: Callable[[pluggy.HookImpl], None] | None = None,
    **kwargs: Any,
) -> None:
    """Call each plugin's pytest-xdist hook ``name``; one that fails is named in a warning;
    ``after_each`` is told of each implementation once it returned or failed.

    A plugin may expect what its own ``pytest_configure`` put in a worker's output, which a
    forked worker (configured once, in the controller) never ran: its failure must not end
    the run.  pytest-cov is left out (see the module docstring).
    """
    for impl in getattr(config.hook, name).get_hookimpls():
        if impl.plugin_name == COVERAGE_PLUGIN:
            continue
        try:
            impl.function(*(kwargs[arg] for arg in impl.argnames))
        except Exception as exc:
            warnings.warn(
                pytest.PytestWarning(
                    f"poolrun: {name} of plugin {impl.plugin_name!r} failed for worker "
                    f"{kwargs['node'].gateway.id}: {type(exc).__name__}: {exc}"
                ),
                stacklevel=1,
            )
        if after_each is not None:
            after_each(impl)


class WorkerNodes:
    """The nodes of one run, by worker name; configured before any worker starts."""

    def __init__(
        self, config: pytest.Config, names: Sequence[str], specs: Sequence[str], testrun_uid: str
    ) -> None:
        self._config = config
        self._xdist = xdist_hooks_present(config)
        self._inputs: dict[str, WorkerInput] = {}
        self._nodes: dict[str, WorkerNode] = {}
        # Plugin module ─▶ worker name ─▶ the keys its pytest_configure_node set, with values.
        self._given: dict[str, dict[str, WorkerInput]] = {}
        for name, spec in zip(names, specs):
            workerinput: WorkerInput = {
                "workerid": name,
                "workercount": len(names),
                "testrunuid": testrun_uid,
                "mainargv": list(sys.argv),
            }
            node = WorkerNode(config, NodeGateway(name, spec), workerinput)
            if self._xdist:
                call_node_hook(config, "pytest_configure_node", self._noting(node), node=node)
            self._inputs[name] = node.workerinput
            self._nodes[name] = node

    def _noting(self, node: WorkerNode) -> Callable[[pluggy.HookImpl], None]:
        """What notes, after each implementation, the keys it set on ``node``'s input."""
        before = dict(node.workerinput)

        def note(impl: pluggy.HookImpl) -> None:
            nonlocal before
            now = node.workerinput
            added = {key: value for key, value in now.items() if before.get(key, now) is not value}
            if added and not _served(impl):
                module = str(getattr(impl.function, "__module__", ""))
                self._given.setdefault(module, {}).setdefault(node.gateway.id, {}).update(added)
            before = dict(now)

        return note

    def plugins_configuring_each_worker(self) -> list[str]:
        """The modules of the plugins that gave workers different inputs in
        ``pytest_configure_node`` (not those ``NODE_HOOKS_SERVED``), for their own
        ``pytest_configure`` to read, as far as can be told: a forked worker was configured
        once, as the controller, and never reads them (SQLAlchemy's plugin gives each worker a
        database of its own that way).  Inputs the same for every worker (pytest-mypy's results
        path) are what a forked worker has already; with one worker nothing can differ."""
        found = []
        for module, by_worker in self._given.items():
            given = [by_worker.get(name) for name in self._nodes]
            if any(not _same(given[0], other) for other in given[1:]):
                found.append(module)
        return found

    def respec(self, specs: Sequence[str]) -> None:
        """The workers start otherwise than the nodes were made for (spawned, not forked)."""
        for node, spec in zip(self._nodes.values(), specs):
            node.gateway = NodeGateway(node.gateway.id, spec)

    def inputs(self) -> dict[str, WorkerInput]:
        return dict(self._inputs)

    def node(self, name: str) -> WorkerNode:
        return self._nodes[name]

    def received(self, name: str, output: dict[str, Any]) -> None:
        """The worker's ``config.workeroutput``, sent as it finished."""
        self._nodes[name].workeroutput = output

    def down(self, name: str, error: str | None) -> WorkerNode:
        """The worker ended: tell the plugins, and make a fresh node for a replacement."""
        node = self._nodes[name]
        if self._xdist:
            call_node_hook(self._config, "pytest_testnodedown", node=node, error=error)
        self._nodes[name] = WorkerNode(self._config, node.gateway, dict(self._inputs[name]))
        return node


def finish_session(session: pytest.Session, output: dict[str, Any]) -> None:
    """In a worker after its last test: what a pytest-xdist worker does as its session ends
    (see the module docstring); a plugin's error propagates."""
    status = pytest.ExitCode.TESTS_FAILED if session.testsfailed else pytest.ExitCode.OK
    output["exitstatus"] = int(status)
    output["shouldfail"] = session.shouldfail
    output["shouldstop"] = session.shouldstop
    manager = session.config.pluginmanager
    taking = getattr(manager.hook, "pytest_testnodedown", None)
    if taking is None:
        return
    # By package: a plugin may take the output in one object and fill it in another (flaky).
    takers = {_package(impl.plugin) for impl in taking.get_hookimpls()}
    finishing = [
        impl.plugin
        for impl in manager.hook.pytest_sessionfinish.get_hookimpls()
        if _package(impl.plugin) in takers and _package(impl.plugin) not in _CONTROLLER_ONLY
    ]
    if finishing:
        others = [plugin for plugin in manager.get_plugins() if plugin not in finishing]
        caller = manager.subset_hook_caller("pytest_sessionfinish", others)
        caller(session=session, exitstatus=status)


# Modules whose plugins finish in the controller only (see the module docstring).
_CONTROLLER_ONLY = (
    "_pytest",
    "pytest_poolrun",
    "xdist",
    "pytest_cov",
    "syrupy",
    "pytest_benchmark",
    "pytest_metadata",
    "pytest_rerunfailures",
)


def _package(plugin: object) -> str:
    """The top-level package of a plugin's module (of a module plugin, its own)."""
    module = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
    return module.split(".", 1)[0]


def sendable(output: dict[str, Any]) -> dict[str, Any]:
    """In a worker: ``output`` without the values that cannot travel (each named on stdout)."""
    kept = {}
    for key, value in output.items():
        try:
            pickle.dumps(value)
        except Exception as exc:
            print(f"poolrun: workeroutput[{key!r}] cannot be sent to the controller: {exc!r}")
            continue
        kept[key] = value
    return kept
