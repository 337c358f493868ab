"""Turning functions, arguments, results and exceptions into bytes and back.

Everything a pool sends is pickled here, once, in the sending process.  The standard pickler goes
first because it is the fastest; what it refuses (lambdas, closures, local classes) goes through
cloudpickle, which pickles such objects by value.  The receiving side always uses plain
``pickle.loads``.

**The main script's functions and classes** (``dumps``'s ``main``, a ``MainAtReceiver``).  A
receiver that runs this script as its main module resolves a reference to one of them in its own
copy of the module, as ``multiprocessing`` does: a task then sees the globals its worker's
initializer set, and an exception or a result comes back as the caller's own class (``except``
and ``isinstance`` work).  So:

- every receiver forked from this process (``at_fork``): a reference to an object the module had
  at the fork, still the very same, stays a reference; anything else goes by value (one defined
  since, which the workers do not have, or a name rebound since);
- receivers that run the script but may lack the object (``same_script``: spawned and forkserver
  workers run it again without its guarded block; a worker's results and errors go back to the
  process that made the pool): both, a ``_ReferenceOrCopy`` that resolves the reference where it
  can and unpickles the copy by value where it cannot;
- receivers that may run another main module (execnet workers, whose ``__main__`` is execnet's):
  by value only, since a reference could resolve to an unrelated object of the same name.

An exception travels with its traceback as text.  On arrival it is re-raised with its own type and
a ``RemoteTraceback`` chained as its cause, so pytest and the interpreter show the worker's frames
under "The above exception was the direct cause of the following exception".
"""

from __future__ import annotations

import io
import multiprocessing.pool
import pickle
import sys
import traceback
import types
from collections.abc import Mapping
from typing import Any, NamedTuple

PROTOCOL = pickle.HIGHEST_PROTOCOL
# How a pickle names the main script's module when it refers to one of its functions or classes.
MAIN_REFERENCE = b"\x8c\x08__main__"
# How much of an object's repr to show in an error about it.
REPR_LIMIT = 120


class SendError(pickle.PicklingError):
    """An argument or result could not be pickled; the message names the object and its type."""


# ``multiprocessing.pool``'s error for a result it cannot pickle (typeshed does not list it).
MaybeEncodingError: type[Exception] = multiprocessing.pool.MaybeEncodingError  # type: ignore[attr-defined]


class ResultSendError(SendError, MaybeEncodingError):  # type: ignore[misc,valid-type]
    """A task's result could not be pickled: a ``SendError``, and ``multiprocessing``'s
    ``MaybeEncodingError`` too, so that code written for ``multiprocessing.Pool`` catches it."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)
        # MaybeEncodingError's fields: the reprs of the pickler's error and of what it refused.
        self.exc = ""
        self.value = ""

    def __str__(self) -> str:
        return Exception.__str__(self)

    def __repr__(self) -> str:
        return Exception.__repr__(self)


# The traceback of an exception raised in a worker, as the worker formatted it (``.tb``): the
# cause of the re-raised exception.  ``multiprocessing.pool``'s own class, so that code written
# for ``multiprocessing.Pool`` recognises it.
# (It takes the text, keeps it as ``.tb`` and shows it as its ``str``.)
RemoteTraceback: type[Exception] = multiprocessing.pool.RemoteTraceback  # type: ignore[attr-defined]


class RemoteError(Exception):
    """Stands for a worker's exception that could not be sent as itself."""


def _short_repr(obj: object) -> str:
    try:
        text = repr(obj)
    except Exception:
        text = object.__repr__(obj)
    return text if len(text) <= REPR_LIMIT else text[: REPR_LIMIT - 3] + "..."


def _cloudpickle() -> Any:
    # Imported when first needed: most runs never pickle by value, and every pytest run with
    # this plugin installed would pay for the import at startup.
    import cloudpickle

    return cloudpickle


class MainAtReceiver(NamedTuple):
    """What the processes that may receive a blob have of this process's main script."""

    # Every receiver was forked from this process with these functions and classes, by name.
    at_fork: Mapping[str, object] | None = None
    # Every receiver runs this script as its main module, but may lack some of its objects.
    same_script: bool = False


# Receivers that may run another main module: the main script's objects travel by value.
OTHER_MAIN = MainAtReceiver()
# The process that made the pool, receiving a worker's results and errors.
CALLER = MainAtReceiver(same_script=True)


def dumps(obj: object, main: MainAtReceiver = OTHER_MAIN) -> bytes:
    """Pickle with the standard pickler, falling back to cloudpickle for what it refuses; a
    reference to the main script's module travels as ``main`` allows (see the module's text)."""
    try:
        blob = pickle.dumps(obj, PROTOCOL)
    except Exception:
        return _cloudpickle().dumps(obj, PROTOCOL)  # type: ignore[no-any-return]
    if MAIN_REFERENCE not in blob:
        return blob
    if main.at_fork is not None:
        if _main_references_known(obj, main.at_fork):
            return blob
        return _cloudpickle().dumps(obj, PROTOCOL)  # type: ignore[no-any-return]
    if not main.same_script:
        return _cloudpickle().dumps(obj, PROTOCOL)  # type: ignore[no-any-return]
    try:
        copy: bytes = _cloudpickle().dumps(obj, PROTOCOL)
    except Exception:
        # The copy takes the globals a function uses along (a lock, a connection): the
        # reference alone then, which a receiver that lacks the object fails to resolve, as
        # under multiprocessing.
        return blob
    return pickle.dumps(_ReferenceOrCopy(blob, copy), PROTOCOL)


class _ReferenceOrCopy:
    """Unpickles as what ``reference`` holds where the receiver's main module has every object
    it names, else as what ``copy`` holds (the same pickled by value)."""

    def __init__(self, reference: bytes, copy: bytes) -> None:
        self.reference = reference
        self.copy = copy

    def __reduce__(self) -> tuple[Any, ...]:
        return _reference_or_copy, (self.reference, self.copy)


def _reference_or_copy(reference: bytes, copy: bytes) -> Any:
    try:
        return pickle.loads(reference)
    except Exception:
        # A name the receiver's main module lacks (defined in the script's guarded block, or
        # after the fork), or one it cannot rebuild: the copy does not depend on the module.
        return pickle.loads(copy)


def main_functions_and_classes() -> dict[str, object]:
    """The main module's functions and classes by name (a ``MainAtReceiver``'s ``at_fork``)."""
    namespace = getattr(sys.modules.get("__main__"), "__dict__", {})
    return {
        name: value
        for name, value in namespace.items()
        if isinstance(value, (type, types.FunctionType))
    }


_MISSING = object()


class _MainReferences(pickle.Pickler):
    """Pickles into nothing, noting whether each function or class of the main module that
    it meets is one that ``known`` holds (``known`` by the name its qualified name starts with,
    the rest looked up as attributes)."""

    def __init__(self, known: Mapping[str, object]) -> None:
        super().__init__(io.BytesIO(), PROTOCOL)
        self._known = known
        self.all_known = True

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (type, types.FunctionType)) and obj.__module__ == "__main__":
            top, *path = obj.__qualname__.split(".")
            found: object = self._known.get(top, _MISSING)
            for name in path:
                found = getattr(found, name, _MISSING)
            self.all_known = self.all_known and found is obj
        return NotImplemented


def _main_references_known(obj: object, known: Mapping[str, object]) -> bool:
    check = _MainReferences(known)
    try:
        check.dump(obj)
    except Exception:
        return False
    return check.all_known


def _installed_roots() -> tuple[str, ...]:
    return tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})


def dumps_by_value(func: object) -> bytes:
    """Pickle a function so that an interpreter that cannot import its module can still run it.

    Workers behind execnet gateways start elsewhere, without this process's ``sys.path``; a
    function from a test module (or any module outside the installed packages) travels by
    value, as cloudpickle does for lambdas.  Functions of installed packages stay references.
    """
    name = getattr(func, "__module__", "") or ""
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    if (
        module is None
        or not path
        or path.startswith(_installed_roots())
        # This package keeps state in its modules that a copy by value would not share.
        or name.partition(".")[0] == __name__.partition(".")[0]
    ):
        return dumps(func)
    cloudpickle = _cloudpickle()
    cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(func, PROTOCOL)  # type: ignore[no-any-return]
    finally:
        cloudpickle.unregister_pickle_by_value(module)


def dump_value(
    obj: object,
    what: str,
    advice: str = "pass something picklable",
    main: MainAtReceiver = OTHER_MAIN,
    error_type: type[SendError] = SendError,
) -> bytes:
    """Pickle ``obj``; on failure raise ``error_type`` naming the part of it that failed.

    ``what`` names ``obj`` as the user knows it (``"args"``, ``"iterable[3]"``, ``"the result"``);
    ``advice`` ends the message with what to do; ``main`` as for ``dumps``.
    """
    try:
        return dumps(obj, main)
    except Exception as exc:
        culprit, where = _find_unpicklable(obj, what)
        error = error_type(
            f"cannot pickle {where}: {_short_repr(culprit)} of type "
            f"{type(culprit).__qualname__} cannot be pickled ({exc}); {advice}"
        )
        if isinstance(error, ResultSendError):
            error.exc, error.value = repr(exc), _short_repr(culprit)
        raise error from exc


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


def dump_error(exc: BaseException, main: MainAtReceiver = OTHER_MAIN) -> bytes:
    """Pickle an exception with its traceback text, keeping its type whenever possible.

    An exception whose ``__init__`` takes other arguments than its ``args`` pickles but cannot be
    rebuilt the usual way; it is then rebuilt without calling ``__init__``.  Only one whose class
    itself cannot travel becomes a ``RemoteError`` naming it.  ``main`` as for ``dumps``.
    """
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    for candidate in (exc, _ExceptionCopy(exc, with_state=True), _ExceptionCopy(exc)):
        try:
            blob = dumps((candidate, text), main)
            pickle.loads(blob)
            return blob
        except Exception:
            continue
    stand_in = RemoteError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
    return pickle.dumps((stand_in, text), PROTOCOL)


class _ExceptionCopy:
    """Pickles as an exception of the same class and ``args``, rebuilt without ``__init__``."""

    def __init__(self, exc: BaseException, with_state: bool = False) -> None:
        self.exc = exc
        self.with_state = with_state

    def __reduce__(self) -> tuple[Any, ...]:
        state = dict(getattr(self.exc, "__dict__", {})) if self.with_state else {}
        return _rebuild_exception, (type(self.exc), self.exc.args, state)


def _rebuild_exception(
    cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]
) -> BaseException:
    exc = cls.__new__(cls, *args)
    exc.args = args
    if state:
        exc.__dict__.update(state)
    return exc


class ReceiveError(pickle.UnpicklingError):
    """A task's result or error arrived but could not be unpickled in the caller's process."""


def load_outcome(ok: bool, blob: bytes) -> tuple[bool, Any]:
    """``(ok, value or exception)`` from a worker's result; an unpicklable one becomes an error."""
    try:
        return ok, load(blob) if ok else load_error(blob)
    except Exception as exc:
        what = "result" if ok else "exception"
        return False, ReceiveError(
            f"the task's {what} arrived but cannot be unpickled here ({type(exc).__name__}: "
            f"{exc}); return objects whose classes the calling process can import"
        )


def load_error(blob: bytes) -> BaseException:
    exc, text = pickle.loads(blob)
    exc.__cause__ = RemoteTraceback(text)
    return exc  # type: ignore[no-any-return]


def load(blob: bytes) -> Any:
    return pickle.loads(blob)
