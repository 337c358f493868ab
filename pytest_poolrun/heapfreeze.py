"""The controller's heap, kept out of the garbage collector from collection to pytest's end.

Data flow, in the controller of a ``--pool`` run::

    pytest_cmdline_main (the plugin, before pytest_configure) ─▶ for_config(config): a FrozenHeap,
        its release the config's first cleanup, so the last to run
    pytest_collection, first of all ─▶ FrozenHeap.collecting(): everything alive now (pytest,
        the plugins, the conftests read so far) leaves the collector's generations
    pytest_collectreport, after each collector ─▶ FrozenHeap.freeze_new(): the collector's nodes
    Controller.run, before the first fork ─▶ FrozenHeap.freeze() again: the collected session
    Controller._on_event, after each batch ─▶ FrozenHeap.freeze_new(): what the replay left alive
    pytest_unconfigure, then the config's cleanups ─▶ pytest's own final collections walk only
        what is not frozen ─▶ FrozenHeap.release(), last: gc.unfreeze()

**Why freeze.**  What is alive at each of those points lives to the end of the run, yet each
full collection walks it all again.  The collected session above all: once the workers are
forked, a walk writes to every page that holds one of its objects, which makes the kernel copy
the page; on 5,000 small tests one such collection cost the controller 70-120 ms while the
workers ran.  Before that, collection's own full collections walked pytest and the plugins each
time, and the items collected so far: 30 ms of 5,000 small tests' collection, none with them
frozen.  Garbage in reference cycles among frozen objects waits for the release; refcounting
frees the rest as ever.

**Why give it back last.**  pytest's unraisable-exception plugin ends a session with full
collections, to report objects whose finalizers failed: one in its ``pytest_unconfigure`` and
one (five on pytest 8.4) in its cleanup.  Given back before them, the heap is walked by each of
them, and again by the interpreter's collection at exit: 30-40 ms a walk at 5,000 tests, with
nothing running beside it.  Given back after them, it is walked once, at exit (or at the next
full collection of a caller of ``pytest.main`` that goes on, which gets its heap back as after a
serial run).  What those collections are for is kept: the tests ran in the workers, so the
controller's heap holds no test's garbage, and what the run's end left behind is not frozen.

**Someone else's frozen heap.**  If more than ``INTERPRETER_FROZEN_OBJECTS`` are frozen already
(a program that froze its own heap, or a run inside a pool worker), nothing is frozen:
unfreezing would release that heap too.
"""

from __future__ import annotations

import gc

import pytest

# CPython 3.12 keeps a few hundred objects of its own frozen from startup (the tuples of its
# static types: 375 on 3.12.1; none on the other versions), and freezes them again at its next
# full collection after gc.unfreeze().  More than this many frozen, and someone froze a heap of
# their own, which the run must not unfreeze.
INTERPRETER_FROZEN_OBJECTS = 1000


class FrozenHeap:
    """Whether this run froze the heap, and the release that gives it back.

    Registered as a plugin as collection starts (``collecting``), for ``pytest_collectreport``.
    """

    def __init__(self) -> None:
        self.frozen = False

    def freeze(self) -> bool:
        """Freeze everything alive now, unless another heap is frozen; returns whether it did."""
        if not self.frozen and gc.get_freeze_count() > INTERPRETER_FROZEN_OBJECTS:
            return False
        gc.freeze()
        self.frozen = True
        return True

    def collecting(self, config: pytest.Config) -> None:
        """Freeze now, and again after each collector (a package, a module, a class) is done."""
        if self.freeze() and not config.pluginmanager.is_registered(self):
            config.pluginmanager.register(self, "poolrun-frozen-heap")

    def freeze_new(self) -> None:
        """Freeze what was made since the last freeze, if this run froze the heap."""
        if self.frozen:
            gc.freeze()

    def pytest_collectreport(self) -> None:
        # A collector's nodes (a module's items above all) live to the end of the run.
        self.freeze_new()

    def release(self) -> None:
        if self.frozen:
            self.frozen = False
            gc.unfreeze()


_frozen_heap_key = pytest.StashKey[FrozenHeap]()


def for_config(config: pytest.Config) -> FrozenHeap:
    """The run's ``FrozenHeap``; the first call registers its release as a cleanup of ``config``.

    The plugin calls this before ``pytest_configure``, so that the release is the earliest
    cleanup and runs after every other (cleanups run last registered first).
    """
    heap = config.stash.get(_frozen_heap_key, None)
    if heap is None:
        heap = config.stash[_frozen_heap_key] = FrozenHeap()
        config.add_cleanup(heap.release)
    return heap
