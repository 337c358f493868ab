"""A test's ``KeyboardInterrupt``, raised in the controller where the test raised it.

Data flow::

    worker: a test raises KeyboardInterrupt ─▶ itemrunner: ItemAborted(description, crash=
            crash_location(exc): the file and line of the innermost frame not hidden)
    controller, once the pool has stopped ─▶ raise_where_raised(description, crash):
            KeyboardInterrupt with the test's message, raised from a frame at that file and line
            ─▶ pytest's interrupted summary

**Why.**  pytest's summary of an interrupted run names where the interrupt was raised
(``test_api.py:12: KeyboardInterrupt``), from the innermost frame of its traceback that is not
hidden.  Raised plainly by the controller's run loop, it would name a line of this plugin.  So
the exception is raised from a code object compiled under the test's file name and line, as
template engines do to point tracebacks into their templates: the summary reads as serially,
and ``--fulltrace`` shows the test's line from the file.
"""

from __future__ import annotations

from types import TracebackType
from typing import NoReturn

Location = tuple[str, int]


def crash_location(exc: BaseException) -> Location | None:
    """The file and line of the innermost frame of ``exc``'s traceback that pytest would show
    (none hidden by ``__tracebackhide__``)."""
    found: Location | None = None
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        hidden = frame.f_locals.get("__tracebackhide__", frame.f_globals.get("__tracebackhide__"))
        if not hidden:
            found = (frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


def interrupt_like(description: str) -> KeyboardInterrupt:
    """A ``KeyboardInterrupt`` whose text is the one ``description`` (a formatted traceback)
    ends with: bare for a bare one, else with its message."""
    lines = description.strip().splitlines()
    last = lines[-1] if lines else ""
    if last == "KeyboardInterrupt":
        return KeyboardInterrupt()
    prefix = "KeyboardInterrupt: "
    return KeyboardInterrupt(last[len(prefix) :] if last.startswith(prefix) else last)


def raise_where_raised(description: str, location: Location | None) -> NoReturn:
    """Raise the interrupt ``description`` tells of, from ``location`` when it is known."""
    interrupt = interrupt_like(description)
    if location is None or location[1] < 1:
        raise interrupt
    path, lineno = location
    # One frame at the test's file and line, with nothing of ours above it in the traceback's
    # innermost entries.
    code = compile("\n" * (lineno - 1) + "raise interrupt", path, "exec")
    exec(code, {"interrupt": interrupt, "__name__": "__poolrun_interrupt__"})
    raise AssertionError("unreachable: the compiled code raises")
