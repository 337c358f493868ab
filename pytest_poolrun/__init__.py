"""pytest-poolrun: run a pytest suite in a pool of worker processes, and a Pool for tests.

This package is also the pytest plugin (``-p pytest_poolrun``, or the ``pytest_poolrun`` entry
point): its hooks and fixtures live in ``pytest_poolrun.plugin`` and ``pytest_poolrun.fixture``
and are re-exported here, so that loading the plugin either way registers this one module object.
"""

from pytest_poolrun.fixture import pool
from pytest_poolrun.plugin import (
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_report_collectionfinish,
    pytest_runtestloop,
)
from pytest_poolrun.pool import (
    AsyncResult,
    Pool,
    PoolTerminatedError,
    RemoteTraceback,
    SendError,
    TaskTimeoutError,
    WorkerLostError,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "Pool",
    "PoolTerminatedError",
    "RemoteTraceback",
    "SendError",
    "TaskTimeoutError",
    "WorkerLostError",
    "pool",
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_report_collectionfinish",
    "pytest_runtestloop",
]
