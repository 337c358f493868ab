"""One ``testrun_uid`` per run: made once in the controller, handed to every worker.

Data flow::

    controller: plugin.pytest_configure ─▶ new id ─▶ config.stash[testrun_uid_key]
    runner ─▶ Pool initializer args ─▶ each worker: adopt(config, uid)
              (forked: the controller's config; spawned or execnet: the worker's own config,
               whose pytest_configure made an id of its own that ``adopt`` replaces)
    testrun_uid fixture ◀── the stash; PYTEST_XDIST_TESTRUNUID ◀── set by the worker from the
                                                              same initializer argument
"""

from __future__ import annotations

import uuid

import pytest

testrun_uid_key = pytest.StashKey[str]()


def new_testrun_uid() -> str:
    return uuid.uuid4().hex


def adopt(config: pytest.Config, testrun_uid: str) -> None:
    """Make ``testrun_uid`` the id of the run that ``config`` belongs to."""
    config.stash[testrun_uid_key] = testrun_uid
