"""The ``worker_id`` and ``testrun_uid`` fixtures, with the meanings pytest-xdist gives them.

The plugin registers this module in ``pytest_configure``, after every entry-point plugin, so these
fixtures take precedence over pytest-xdist's namesakes when both plugins are installed; under a
pytest-xdist worker they answer as pytest-xdist's would.
"""

from __future__ import annotations

import pytest

from pytest_poolrun.runid import testrun_uid_key


@pytest.fixture(scope="session")
def worker_id(request: pytest.FixtureRequest) -> str:
    """``gw0``, ``gw1``… in a worker; ``master`` in a serial run."""
    workerinput = getattr(request.config, "workerinput", None)
    if workerinput is not None:  # a pytest-xdist worker
        return str(workerinput["workerid"])
    from pytest_poolrun import itemrunner  # the runner's, imported by a run that asks for it

    return itemrunner.worker_name(request.session) or "master"


@pytest.fixture(scope="session")
def testrun_uid(request: pytest.FixtureRequest) -> str:
    """The same hex id in the controller and every worker of one run."""
    workerinput = getattr(request.config, "workerinput", None)
    if workerinput is not None:
        return str(workerinput["testrunuid"])
    return request.config.stash[testrun_uid_key]
