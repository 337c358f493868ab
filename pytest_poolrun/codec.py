"""Turning functions, arguments, results and exceptions into bytes and back.

Everything a pool sends is pickled here, once, in the sending process.  The standard pickler goes
first because it is the fastest; what it refuses (lambdas, closures, classes defined in
``__main__``) goes through cloudpickle, which pickles such objects by value.  The receiving side
always uses plain ``pickle.loads``.

An exception travels with its traceback as text.  On arrival it is re-raised with its own type and
a ``RemoteTraceback`` chained as its cause, so pytest and the interpreter show the worker's frames
under "The above exception was the direct cause of the following exception".
"""

from __future__ import annotations

import pickle
import traceback
from typing import Any

import cloudpickle

PROTOCOL = pickle.HIGHEST_PROTOCOL
# How much of an object's repr to show in an error about it.
REPR_LIMIT = 120


class SendError(pickle.PicklingError):
    """An argument or result could not be pickled; the message names the object and its type."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, as the worker formatted it."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class RemoteError(Exception):
    """Stands for a worker's exception that could not be sent as itself."""


def _short_repr(obj: object) -> str:
    try:
        text = repr(obj)
    except Exception:
        text = object.__repr__(obj)
    return text if len(text) <= REPR_LIMIT else text[: REPR_LIMIT - 3] + "..."


def dumps(obj: object) -> bytes:
    """Pickle with the standard pickler, falling back to cloudpickle for what it refuses."""
    try:
        return pickle.dumps(obj, PROTOCOL)
    except Exception:
        return cloudpickle.dumps(obj, PROTOCOL)  # type: ignore[no-any-return]


def dump_value(obj: object, what: str) -> bytes:
    """Pickle ``obj``; on failure raise ``SendError`` saying which part of ``what`` failed."""
    try:
        return dumps(obj)
    except Exception as exc:
        culprit, where = _find_unpicklable(obj, what)
        raise SendError(
            f"cannot send {where} to the pool: {_short_repr(culprit)} "
            f"of type {type(culprit).__qualname__} cannot be pickled ({exc}); "
            "pass something picklable, or create it inside the task"
        ) from None


def _find_unpicklable(obj: object, what: str) -> tuple[object, str]:
    """Walk into tuples, lists and dicts to name the smallest part that does not pickle."""
    parts: list[tuple[object, str]] = []
    if isinstance(obj, (tuple, list)):
        parts = [(item, f"{what}[{index}]") for index, item in enumerate(obj)]
    elif isinstance(obj, dict):
        parts = [(value, f"{what}[{key!r}]") for key, value in obj.items()]
    for part, where in parts:
        try:
            dumps(part)
        except Exception:
            return _find_unpicklable(part, where)
    return obj, what


def dump_error(exc: BaseException) -> bytes:
    """Pickle an exception with its traceback text; one that cannot travel becomes RemoteError."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        blob = dumps((exc, text))
        pickle.loads(blob)  # some exceptions pickle but cannot be rebuilt
    except Exception:
        stand_in = RemoteError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
        blob = pickle.dumps((stand_in, text), PROTOCOL)
    return blob


def load_error(blob: bytes) -> BaseException:
    exc, text = pickle.loads(blob)
    exc.__cause__ = RemoteTraceback(text)
    return exc  # type: ignore[no-any-return]


def load(blob: bytes) -> Any:
    return pickle.loads(blob)
