"""The controller's automatic full garbage collections, held off while its heap is built and shared.

Data flow, in the controller of a ``--pool`` run::

    pytest_collection, first of all ─▶ FullCollectionPause.hold(): the collector's third threshold
        out of reach, so no automatic full collection starts; young ones run as ever
    the runner, just before it forks the workers ─▶ settle(): one full collection, so that
        no worker inherits the collections held off
    a worker, forked while it is held ─▶ release() in the worker before its first test
        (itemrunner.start_worker): the thresholds the run found, for the tests
    the config's cleanup, after every pytest_unconfigure ─▶ release(): the thresholds the run
        found, for the program that called pytest

**Why.**  A full collection walks every object the collector tracks.  Collection builds the items,
and each full collection during it walked pytest, the plugins and every item so far: 30 ms of
5,000 small tests' collection.  Once the workers are forked, the walk also writes to every page
holding a tracked object, so the kernel copies each page still shared with a worker: 70-120 ms
of the controller's time at 5,000 tests, while the workers wait for chunks, and at 50,000 tests
seven full collections, 660 ms, as the kept reports piled up.  Young collections still free what
dies young; cyclic garbage that reached the oldest generation waits for the collections pytest
itself makes at the session's end, and an explicit ``gc.collect()`` collects everything, as ever.

**Why release only at the cleanup.**  Released any earlier (at ``pytest_sessionfinish``, say),
the collections owed from the whole run come due at once: the next young collection becomes a
full one, a walk of the session and every kept report (65 ms at 5,000 small tests) that a serial
run does not make, just before pytest (8.4 and later) makes its own full collection of the same
heap at the session's very end.  Released next to that one, nothing more is walked.  The price:
the hooks from ``pytest_sessionfinish`` to ``pytest_unconfigure`` see the held-off third
threshold too.

**Why settle before the fork.**  The collector counts what a held-off full collection owes
(the young collections since the last full one, the objects that survived them), and a forked
worker inherits the count: its first automatic collection after ``release`` was a full one, a
walk of the whole inherited heap that writes to every page of it, so each worker copied the
pages it shared with the controller (40-90 ms of each worker at 5,000 small tests, at times
180 ms).  One full collection in the controller before the fork (25-35 ms, on pages no one
shares yet) leaves nothing owed; workers that keep no objects then start no full collection.

**Why not gc.freeze().**  It spares the same walks, but ``gc.get_objects()`` and
``gc.get_referrers()`` do not see frozen objects, and tests and plugins read them: a leak test
counts live objects, hypothesis's ``register_random`` warns when a generator has no referrer
(an error under ``-W error``: a frozen heap failed jinja2's suite at its summary).  Held-off
collections show only in ``gc.get_threshold()``, and only in the controller's hooks from
collection to the config's cleanup; a test sees the thresholds the run found.

**Someone else's thresholds.**  A threshold set while the pause holds (a conftest, a plugin) is
theirs to keep: ``release`` restores the third threshold only where it is still this module's.
"""

from __future__ import annotations

import gc

import pytest

# gc.set_threshold() takes C ints: the largest is a count of young collections no run reaches.
HELD_OFF = 2**31 - 1


class FullCollectionPause:
    """Holds off automatic full collections (``hold``) until ``release``, which the config's
    cleanup calls once anything was held."""

    def __init__(self) -> None:
        # The third threshold found by hold(); None while nothing is held.
        self._found: int | None = None
        self._cleanup_registered = False

    @property
    def held(self) -> bool:
        return self._found is not None

    def hold(self, config: pytest.Config) -> None:
        if self.held:
            return
        young, middle, old = gc.get_threshold()
        self._found = old
        gc.set_threshold(young, middle, HELD_OFF)
        if not self._cleanup_registered:
            self._cleanup_registered = True
            config.add_cleanup(self.release)

    def release(self) -> None:
        found, self._found = self._found, None
        if found is None:
            return
        young, middle, old = gc.get_threshold()
        if old == HELD_OFF:
            gc.set_threshold(young, middle, found)

    def settle(self) -> None:
        """While held: one full collection now (just before the workers fork)."""
        if self.held:
            gc.collect()


_pause_key = pytest.StashKey[FullCollectionPause]()


def for_config(config: pytest.Config) -> FullCollectionPause:
    """The run's ``FullCollectionPause`` (one per config)."""
    pause = config.stash.get(_pause_key, None)
    if pause is None:
        pause = config.stash[_pause_key] = FullCollectionPause()
    return pause
