"""A test's ``KeyboardInterrupt``, raised in the controller where the test raised it.

Data flow::

    worker: a test raises KeyboardInterrupt ─▶ itemrunner: ItemAborted(..., interrupt=
            Interrupt.of(exc): its message, and the file and line of the innermost frame of its
            traceback that is not hidden)
    controller, once the pool has stopped ─▶ raise_where_raised(interrupt): KeyboardInterrupt
            with that message, raised from a frame at that file and line ─▶ pytest's
            interrupted summary

    Ctrl-C, which reaches the controller only (each worker leads a process group of its own)
        ─▶ the runner has the worker of the longest-running test dump its stacks
        ─▶ innermost_in_dump(stacks): the file and line that test's thread was at
        ─▶ raise_where_raised, as above

**Why.**  pytest's summary of an interrupted run names where the interrupt was raised
(``test_api.py:12: KeyboardInterrupt``), from the innermost frame of its traceback that is not
hidden.  Raised plainly by the controller's run loop, it would name a line of this plugin.  So
the exception is raised from a code object compiled under the test's file name and line, as
template engines do to point tracebacks into their templates: the summary reads as serially,
and ``--fulltrace`` shows the test's line from the file.  A serial run's Ctrl-C lands in the
running test, and its summary names the line the test was at; so does the parallel run's, from
the stacks faulthandler writes (the longest-running test's: a serial run has only one).
"""

from __future__ import annotations

import re
from types import TracebackType
from typing import NamedTuple, NoReturn


class Interrupt(NamedTuple):
    """A test's ``KeyboardInterrupt``: its message (None: raised bare) and the file and line it
    was raised at (None: no frame pytest would show)."""

    message: str | None
    location: tuple[str, int] | None

    @classmethod
    def of(cls, exc: BaseException) -> Interrupt:
        return cls(str(exc) if exc.args else None, _innermost_shown(exc))


def _innermost_shown(exc: BaseException) -> tuple[str, int] | None:
    """The file and line of the innermost frame of ``exc``'s traceback that pytest would show
    (none hidden by ``__tracebackhide__``)."""
    found: tuple[str, int] | None = None
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        hidden = frame.f_locals.get("__tracebackhide__", frame.f_globals.get("__tracebackhide__"))
        if not hidden:
            found = (frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


# A frame of faulthandler's dump, and one of pytest's runner, which only the thread running the
# test has on its stack.
_DUMPED_FRAME = re.compile(r'^\s*File "(?P<path>.+)", line (?P<line>\d+) in ')
_RUNNER_FILE = re.compile(r"[\\/]_pytest[\\/]runner\.py$")


def innermost_in_dump(dump: str) -> tuple[str, int] | None:
    """The file and line of the innermost frame of the thread running a test, in ``dump``
    (faulthandler's stacks of every thread, most recent call first); None: no thread runs one."""
    frames: list[tuple[str, int]] = []
    for line in [*dump.splitlines(), ""]:
        match = _DUMPED_FRAME.match(line)
        if match is not None:
            frames.append((match["path"], int(match["line"])))
            continue
        # A thread's header or the blank line after its frames: the thread before it ended.
        if any(_RUNNER_FILE.search(path) for path, _ in frames):
            return frames[0]
        frames = []
    return None


def raise_where_raised(interrupt: Interrupt) -> NoReturn:
    """Raise ``interrupt`` again, from the file and line it was raised at when they are known."""
    exc = KeyboardInterrupt() if interrupt.message is None else KeyboardInterrupt(interrupt.message)
    if interrupt.location is None or interrupt.location[1] < 1:
        raise exc
    path, lineno = interrupt.location
    # One frame at the test's file and line, the innermost of the traceback.
    code = compile("\n" * (lineno - 1) + "raise interrupt", path, "exec")
    exec(code, {"interrupt": exc, "__name__": "__poolrun_interrupt__"})
    raise AssertionError("unreachable: the compiled code raises")
