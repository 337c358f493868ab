"""The frames of this plugin's wrappers around a test's code, pruned from its report as pytest
prunes its own.

Data flow, once per wrapper, where the wrapper is defined::

    internal(function) ─▶ the same function, its code named ``<pytest_poolrun internal>``
    a test's error ─▶ pytest's report: ``filter_traceback`` drops entries of generated code
        (a file name in angle brackets), of pytest and of pluggy; ``__tracebackhide__`` hides
        the rest of ours

Why: pytest cuts an error's traceback down to the entries outside pytest and pluggy, and where
none is left (an error of pytest's own, a fixture's scope mismatch) it keeps them all and lets
``__tracebackhide__`` hide what it may.  A wrapper of ours in the traceback is an entry outside
both: it was kept, then hidden, and pytest added "All traceback entries are hidden" to a
report that a serial run shows without it.  Under ``--tb=native`` the frame shows as
``File "<pytest_poolrun internal>"``; ``itemrunner`` takes such entries out.

A wrapper that catches an error on its way may also take its own entry out of the error's
traceback before it raises it again (``drop_own_entry``): then no one sees it, neither a plugin
that lists the traceback whole (flaky's report) nor ``--fulltrace``, which prunes nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

FILENAME = "<pytest_poolrun internal>"

Function = TypeVar("Function", bound=Callable[..., object])


def internal(function: Function) -> Function:
    """``function``, its frames marked as generated code (see the module docstring)."""
    function.__code__ = function.__code__.replace(co_filename=FILENAME)
    return function


def drop_own_entry(error: BaseException) -> None:
    """Take the entry of the frame that caught ``error`` out of its traceback, for a bare
    ``raise`` that follows.  Python 3.11 and later re-raise with the traceback the exception
    holds; before, with the one it was caught with, so there the entry stays."""
    if sys.version_info < (3, 11):
        return
    caught_here = error.__traceback__
    if caught_here is not None and caught_here.tb_next is not None:
        error.__traceback__ = caught_here.tb_next
