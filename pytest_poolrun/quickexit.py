"""A ``--pool`` run's controller leaves the interpreter without its last walks over the heap.

Data flow, in the process that runs a ``--pool`` session (the controller)::

    pytest_configure of a --pool run ─▶ arm(): one atexit handler for this process
    ... the run, pytest's own last full collections (pytest_unconfigure, the config's cleanup)
    interpreter exit ─▶ the atexit handlers registered after arm() (the test modules', plugins')
                     ─▶ freeze_heap(): gc.freeze(), in this process only
                     ─▶ the handlers registered before it (logging's, coverage's when started
                        before pytest), then the interpreter's finalization: its full
                        collections pass over the frozen objects

**Why.**  After the last atexit handler, the interpreter makes its last full garbage collections
and frees every object in a reference cycle one by one: the collected session, its items and the
kept reports, all of them cyclic.  At 5,000 small tests that takes 0.3 to 0.45 s, a fifth of
the whole parallel run, all of it after the last result was shown; in packaging's suite
(64,000 tests) it was 0.85 s of the controller's 1.7 s after its summary line.  A serial run
pays it too, but there it is a small part of the run; the controller of a parallel run holds as
much as a serial run, so it would pay the same, undivided.  Frozen objects stay where they are
until the process ends and the operating system takes its memory back.

**What a program still gets at exit.**  Every atexit handler runs (the freeze is one of them,
and only cyclic garbage is left alone), as do ``weakref.finalize`` callbacks, ``logging``'s
shutdown, and the clearing of every module's globals, which frees what is not in a cycle and
runs its ``__del__``.  What the interpreter does not do: collect reference cycles that were
still alive when the handler ran, so their ``__del__`` methods do not run; Python never
promised that they would at exit, and pytest itself collected the run's garbage (and reported
unraisable exceptions from it) at ``pytest_unconfigure``, before.  Under Python's development
mode (``-X dev``), which asks to be shown what a program leaves unclosed, the interpreter
finalizes as ever.

Forked workers leave with ``os._exit`` and run no atexit handler; a process forked from the
controller that does exit normally skips the freeze (it is not the process that armed it).  A
program that runs a ``--pool`` session in its own process (``pytest.main``, pytester's in-process
runs) has its heap frozen at its own exit in the same way.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys


class _Armed:
    """The process whose exit freezes the heap (``arm``); None until a --pool run starts."""

    pid: int | None = None


def arm() -> None:
    """Freeze this process's heap at its exit; once per process, whatever the number of runs.

    Called as a ``--pool`` run is configured: the handler registered then runs after every
    handler registered later (the test modules' and plugins' imported by collection), so that
    they see the heap as ever.
    """
    if _Armed.pid == os.getpid() or sys.flags.dev_mode:
        return
    _Armed.pid = os.getpid()
    atexit.register(freeze_heap)


def freeze_heap() -> None:
    """The atexit handler: the interpreter's final collections skip every object alive now."""
    if _Armed.pid == os.getpid():
        gc.freeze()
