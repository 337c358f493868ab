"""What a runner worker sets up, at its start, for the features beyond pytest-xdist.

Data flow, in a worker, from ``itemrunner.start_worker`` once its session is ready::

    extraoptions.read(config) ─▶ fresh worker: sharedfixtures.install (the controller's values)
                              ─▶ leaks.register (the LeakWatch plugin, unless ignore)
                              ─▶ a Recycler, which run_chunk asks between items

One call keeps ``itemrunner`` about running items; each feature stays in its own module.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_poolrun import extraoptions, leaks, sharedfixtures
from pytest_poolrun.recycling import Recycler


def start(session: pytest.Session, workerinput: dict[str, Any], forked: bool) -> Recycler:
    """Prepare this worker; returns its retirement policy."""
    config = session.config
    extras = extraoptions.read(config)
    if not forked:  # a forked worker inherited the shared values with the session
        sharedfixtures.install(session, workerinput)
    leaks.register(config, extras.leaks, session.items)
    return Recycler(extras.max_tests_per_worker, extras.max_worker_rss_mb)
