"""pytest-poolrun: run a pytest suite in a pool of worker processes, and a Pool for tests.

This package is also the pytest plugin (``-p pytest_poolrun``, or the ``pytest_poolrun`` entry
point): its hooks and fixtures live in ``pytest_poolrun.plugin`` and ``pytest_poolrun.fixture``
and are re-exported here, so that loading the plugin either way registers this one module object.

The names load lazily (PEP 562), so ``from pytest_poolrun import Pool`` does not import pytest:
a pool used outside pytest, and every spawned worker, starts without that cost.

PYTEST_DONT_REWRITE: the plugin has no assertions to rewrite, and a worker that imports it before
pytest reads ``-p pytest_poolrun`` must not be warned that it cannot be rewritten.  Its other
modules load from their bytecode, past pytest's rewriter (``ownmodules``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pytest_poolrun import ownmodules

__version__ = "0.1.0"

ownmodules.install()

_HOMES = {
    "AsyncResult": "pytest_poolrun.pool",
    "Pool": "pytest_poolrun.pool",
    "PoolHooks": "pytest_poolrun.pool",
    "WorkerExit": "pytest_poolrun.pool",
    "IMapIterator": "pytest_poolrun.pool",
    "MapResult": "pytest_poolrun.pool",
    "PoolExhaustedError": "pytest_poolrun.pool",
    "PoolTerminatedError": "pytest_poolrun.pool",
    "TaskCancelledError": "pytest_poolrun.pool",
    "TaskTimeoutError": "pytest_poolrun.pool",
    "WorkerLostError": "pytest_poolrun.pool",
    "ReceiveError": "pytest_poolrun.codec",
    "RemoteTraceback": "pytest_poolrun.codec",
    "SendError": "pytest_poolrun.codec",
    "pool_fixture": "pytest_poolrun.fixture",
    "pytest_addoption": "pytest_poolrun.plugin",
    "pytest_collection": "pytest_poolrun.plugin",
    "pytest_collection_modifyitems": "pytest_poolrun.plugin",
    "pytest_configure": "pytest_poolrun.plugin",
    "pytest_report_collectionfinish": "pytest_poolrun.plugin",
    "pytest_runtestloop": "pytest_poolrun.plugin",
}

__all__ = [
    "AsyncResult",
    "IMapIterator",
    "MapResult",
    "Pool",
    "PoolExhaustedError",
    "PoolHooks",
    "PoolTerminatedError",
    "ReceiveError",
    "RemoteTraceback",
    "SendError",
    "TaskCancelledError",
    "TaskTimeoutError",
    "WorkerExit",
    "WorkerLostError",
    "pool_fixture",
    "pytest_addoption",
    "pytest_collection",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_report_collectionfinish",
    "pytest_runtestloop",
]

if TYPE_CHECKING:
    from pytest_poolrun.codec import ReceiveError, RemoteTraceback, SendError
    from pytest_poolrun.fixture import pool_fixture
    from pytest_poolrun.plugin import (
        pytest_addoption,
        pytest_collection,
        pytest_collection_modifyitems,
        pytest_configure,
        pytest_report_collectionfinish,
        pytest_runtestloop,
    )
    from pytest_poolrun.pool import (
        AsyncResult,
        IMapIterator,
        MapResult,
        Pool,
        PoolExhaustedError,
        PoolHooks,
        PoolTerminatedError,
        TaskCancelledError,
        TaskTimeoutError,
        WorkerExit,
        WorkerLostError,
    )


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pytest_poolrun' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


# What pluggy and pytest look for in a plugin's dir(): its hooks and its fixture.
_PLUGIN_HOMES = ("pytest_poolrun.plugin", "pytest_poolrun.fixture")


def __dir__() -> list[str]:
    # The lazy names of the plugin's hooks and fixture too, but not the pool's: pytest reads
    # every name it finds here as the plugin registers, and would import the pool's modules in
    # every run, a serial one too (``__all__`` still lists them).
    return sorted(set(globals()) | {name for name, home in _HOMES.items() if home in _PLUGIN_HOMES})
