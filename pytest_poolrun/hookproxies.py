"""Hook proxies: each test file's, built once instead of at every hook call.

Data flow, in a worker once its session is collected (``install``)::

    item.ihook ─▶ session.gethookproxy(item.path) ─▶ PerFile(path)
        this path seen before, and no plugin registered since?
        ├─ yes ─▶ the proxy built then
        └─ no  ─▶ pytest's own gethookproxy(path), kept for the next call
    pytest_plugin_registered (any plugin, a conftest among them) ─▶ every proxy is forgotten

and in the controller's replay, where a ``PerFile`` keeps each file's report hooks, made
from its proxy (``replayer.Replayer``).

Why: pytest's runner asks for ``item.ihook`` about seven times per test, and pytest works out
the proxy anew each time: which conftests lie above the file, and, where some conftest does
not apply to it, a new proxy whose hook callers leave that conftest out, made again at each
call.  The answer depends on the file and on the conftests the plugin manager holds, and
conftests are only added by registering them, which forgets every kept proxy.  A worker
collects nothing after its session is collected, so in practice it builds one proxy per file.
The controller imports no conftest while the pool runs, so the replay's need no forgetting.

A kept proxy stays live: a subset hook caller reads the plugin manager's implementations at
each call, so a plugin registered during the run is called through it as through a new one.
What is built is kept by path, so a caller that makes a new path object at each call gets
the same answer, and the memo holds one entry per file, not one per call.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Generic, TypeVar

import pytest

Built = TypeVar("Built")


class PerFile(Generic[Built]):
    """What ``build`` gives for a test file's path, built once for each path, until a plugin
    registers (``pytest_plugin_registered``, where this is registered as a plugin)."""

    def __init__(self, build: Callable[[os.PathLike[str]], Built]) -> None:
        self._build = build
        # By path: items of one file share their path object (a node takes its parent's), and
        # a path caches its hash, so a lookup costs what one by the object's id would.
        self._kept: dict[os.PathLike[str], Built] = {}

    def __call__(self, fspath: os.PathLike[str]) -> Built:
        try:
            return self._kept[fspath]
        except KeyError:
            built = self._kept[fspath] = self._build(fspath)
            return built

    def pytest_plugin_registered(self) -> None:
        self._kept.clear()


def install(session: pytest.Session) -> None:
    """Answer this worker's ``item.ihook`` from kept proxies from now on (a worker's own
    session only: it lives as long as the worker)."""
    proxies = PerFile(session.gethookproxy)  # pytest's own, bound before it is replaced
    # An instance attribute: Node.ihook looks the method up on the session object.
    setattr(session, "gethookproxy", proxies)  # noqa: B010 - mypy: cannot assign to a method
    session.config.pluginmanager.register(proxies, "poolrun-hook-proxies")
