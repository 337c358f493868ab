"""The ``Pool``'s arguments: checked, with errors that name the fix, and turned into its parts.

Data flow, in the caller's thread, before anything is queued::

    Pool(processes, initializer, ..., tx) ─▶ worker_slots ─▶ None per local worker, the specs
    Pool(start_method, context)           ─▶ resolve_start_method ─▶ the WorkerSet's method
    apply_async / map_async / imap (func) ─▶ dump_function ─▶ the pickled function of each Job
    map_async (items, chunksize)          ─▶ map_chunks ─▶ chunk size and count (dispatch.py
                                              chunks them; MapResult waits for that many)
    imap (chunksize)                      ─▶ check_imap_chunksize

**Why apart from ``pool``.**  The facade reads as ``multiprocessing.Pool``'s API; the rules for
what each argument may be (and the messages when it may not) are checked here, in one place, so
the facade's methods stay a line or two of delegation each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_poolrun import codec
from pytest_poolrun.dispatch import auto_chunksize
from pytest_poolrun.workerset import START_METHODS, available_cpus, default_start_method


def worker_slots(
    processes: int | None,
    specs: list[str],
    initializer: Callable[..., object] | None,
    maxtasksperchild: int | None,
) -> list[str | None]:
    """Check the pool's arguments; return its slots: None for each local worker (``processes``,
    or all CPUs if None and there are no execnet ``specs``), then one per spec."""
    if processes is None:
        processes = 0 if specs else available_cpus()
    if not isinstance(processes, int) or isinstance(processes, bool):
        raise TypeError(
            f"processes must be an int or None, not {type(processes).__qualname__}; "
            "pass the number of worker processes"
        )
    if processes < (0 if specs else 1):
        raise ValueError(f"Number of processes must be at least 1, not {processes!r}")
    if initializer is not None and not callable(initializer):
        raise TypeError(
            f"initializer must be a callable, not {type(initializer).__qualname__}; "
            "pass the function each worker runs once at its start, or None"
        )
    if maxtasksperchild is not None and (
        not isinstance(maxtasksperchild, int) or maxtasksperchild < 1
    ):
        raise ValueError("maxtasksperchild must be a positive int or None")
    return [None] * processes + list(specs)


def resolve_start_method(requested: str | None, context: Any) -> str:
    """The start method: ``start_method=``, else the ``context``'s, else the default."""
    own = getattr(context, "get_start_method", None)
    of_context = own() if callable(own) else None
    if of_context not in START_METHODS:
        of_context = None  # a context of another kind: it starts its processes its own way
    if requested is not None and of_context is not None and requested != of_context:
        raise ValueError(
            f"start_method={requested!r} contradicts the context's start method "
            f"{of_context!r}; pass one of them"
        )
    method = requested or of_context or default_start_method()
    if method not in START_METHODS:
        choices = ", ".join(START_METHODS)
        raise ValueError(f"start_method must be one of {choices}, not {method!r}")
    return method


def dump_function(
    func: Callable[..., Any],
    by_value: bool = False,
    main: codec.MainAtReceiver = codec.OTHER_MAIN,
) -> bytes:
    """Pickle the function a task runs; by value when some worker may not import its module
    (``main``: see ``codec.dumps``)."""
    if not callable(func):
        raise TypeError(f"the function to run must be callable, not {type(func).__qualname__}")
    if by_value:
        try:
            return codec.dumps_by_value(func)
        except Exception:
            pass  # the checks below name what does not pickle
    return codec.dump_value(func, "the function", "pass a picklable function", main)


def map_chunks(length: int, chunksize: int | None, processes: int) -> tuple[int, int]:
    """The chunk size of a map over ``length`` items (automatic if None), and the chunk count."""
    size = auto_chunksize(length, processes) if chunksize is None else chunksize
    if size < 1:
        raise ValueError(f"chunksize must be at least 1, not {size!r}")
    return size, len(range(0, length, size))


def check_imap_chunksize(chunksize: int) -> None:
    if chunksize < 1:
        raise ValueError(f"Chunksize must be 1+, not {chunksize!r}")
