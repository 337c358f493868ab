"""``--pool-shared-fixture NAME``: a session fixture set up once for the run, in the controller.

Data flow::

    controller, after collection, before the run chooses fork or spawn (plugin) and forks:
      SharedFixtures.setup ─▶ check: session scope, one definition, not parametrized, depends
                              only on session fixtures (they are shared too) ─ else UsageError
                           ─▶ pytest's own FixtureDef.execute, through a request of the first
                              test that uses it: the value (or the error) is the FixtureDef's
                              cached_result, and its finalizer sits on the session's SetupState
                           ─▶ that SetupState entry is taken off while workers may fork
    forked workers ─▶ inherit cached_result: a test asking for the fixture gets the controller's
                      value from pytest's cache, and no finalizer for it exists in the worker
    fresh workers (spawn, execnet) ─▶ workerinput[SHARED_KEY]: each value pickled, or why it
                      could not be; install() puts it into the FixtureDef's cache the same way
    controller, after the last worker (pool.terminate): restore() puts the entry back;
      teardown() tears the fixtures down once ─▶ an error is reported at teardown of the last
      test, as serially; if the run was interrupted, pytest's own session finish tears them down

Why through pytest's machinery: ``execute`` caches the value (or the exception with its
traceback) exactly as a serial run does, so a setup error is raised at setup of every test that
uses the fixture, in whichever worker, with the serial traceback; and dependencies resolve and
tear down in pytest's order.  The finalizer entry must be off the SetupState for the pool's
whole life (workers are also forked later, as replacements), or each worker would run the
fixture's teardown when it finishes.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from functools import partial
from typing import Any

import pytest

from pytest_poolrun import clock

# The workerinput key under which fresh workers find the shared values.
SHARED_KEY = "poolrun_shared_fixtures"
# Fixture names that are not fixtures of a scope (pytest's request object).
PSEUDO_FIXTURES = frozenset({"request"})


class SharedFixtureError(Exception):
    """Raised at setup of a test whose shared fixture could not reach its worker."""


class SharedFixtures:
    """The shared fixtures of one run, in the controller."""

    def __init__(self, session: pytest.Session, names: Iterable[str]) -> None:
        self.session = session
        self.names = tuple(names)
        # name ─▶ (FixtureDef, the first item that uses it), dependencies included.
        self.defs: dict[str, tuple[Any, pytest.Item]] = {}
        self._entry: Any = None  # the session's SetupState entry, while it is set aside
        self._finalizers: dict[int, list[Any]] = {}  # each FixtureDef's, while set aside
        self._set_up = False
        # What setup() took and what failed, for announce() to print under the run's header.
        self._outcome: tuple[float, list[str]] | None = None

    def setup(self) -> None:
        """Check and set up every shared fixture a collected test uses (before any fork, and
        before the run chooses how workers start: a thread a fixture starts makes it spawn
        them); once, however often it is called."""
        if not self.names or self._set_up:
            return
        self._set_up = True
        for name in self.names:
            self._resolve(name, f"--pool-shared-fixture {name}")
        if not self.defs:
            return
        from _pytest.fixtures import TopRequest
        from _pytest.outcomes import OutcomeException

        started = clock.monotonic()
        state = self.session._setupstate
        state.stack.setdefault(self.session, ([self.session.teardown], None))
        capman: Any = self.session.config.pluginmanager.getplugin("capturemanager")
        failed: list[str] = []
        if capman is not None:
            capman.resume_global_capture()
        for name in self.names:
            if name not in self.defs:
                continue
            item = self.defs[name][1]
            try:
                TopRequest(item, _ispytest=True).getfixturevalue(name)  # type: ignore[arg-type]
            except (Exception, OutcomeException):
                # Cached by pytest with its traceback (a skip too): raised at each test's setup.
                failed.append(name)
        if capman is not None:
            capman.suspend_global_capture()
            capman.read_global_capture()  # what setup printed: hidden, as a passing run hides it
        self._entry = state.stack.pop(self.session)
        # A FixtureDef keeps its own teardown (a generator's rest) in its finalizers, and pytest
        # 8.1 has every worker's session call finish() at its end: a forked worker must find
        # nothing there to run.
        for fixturedef, _ in self.defs.values():
            self._finalizers[id(fixturedef)] = list(fixturedef._finalizers)
            fixturedef._finalizers.clear()
        self._outcome = (clock.monotonic() - started, failed)

    def announce(self) -> None:
        """One line under the run's header: what setup() set up, and what failed to (once)."""
        if self._outcome is None:
            return
        seconds, failed = self._outcome
        self._outcome = None
        config = self.session.config
        reporter: Any = config.pluginmanager.getplugin("terminalreporter")
        if reporter is None or config.get_verbosity() < -1:
            return
        names = ", ".join(
            name for name, (fixturedef, _) in self.defs.items() if not _from_pytest(fixturedef)
        )
        line = f"poolrun: shared fixtures set up once, in the controller: {names} ({seconds:.2f}s)"
        if failed:
            line += f"; {', '.join(failed)} did not set up (each test using it reports why)"
        reporter.write_line(line)

    def _resolve(self, name: str, context: str) -> None:
        if name in self.defs or name in PSEUDO_FIXTURES:
            return
        users = [item for item in self.session.items if name in _fixture_names(item)]
        if not users:
            # No collected test uses it (a -k run, say): nothing to set up, but a name that
            # could never be shared is still a mistake.
            anywhere = _all_definitions(self.session, name)
            if anywhere is not None and not anywhere:
                raise pytest.UsageError(
                    f"{context}: there is no fixture named {name!r}; name a session fixture"
                )
            if anywhere and all(fixture.scope != "session" for fixture in anywhere):
                raise pytest.UsageError(
                    f"{context}: fixture {name!r} has scope {anywhere[0].scope!r}; only "
                    "session fixtures can be shared (make it scope='session' or drop it from "
                    "the option)"
                )
            return
        definitions = {id(_definition(item, name)): _definition(item, name) for item in users}
        if len(definitions) > 1:
            raise pytest.UsageError(
                f"{context}: fixture {name!r} has {len(definitions)} definitions for different "
                "tests (conftest overrides); share a fixture that has one definition"
            )
        fixturedef = next(iter(definitions.values()))
        if fixturedef.scope != "session":
            raise pytest.UsageError(
                f"{context}: fixture {name!r} has scope {fixturedef.scope!r}; only session "
                "fixtures can be shared (make it scope='session' or drop it from the option)"
            )
        if fixturedef.params is not None:
            raise pytest.UsageError(
                f"{context}: fixture {name!r} is parametrized; share an unparametrized fixture"
            )
        self.defs[name] = (fixturedef, users[0])
        for dependency in fixturedef.argnames:
            self._resolve(dependency, f"{context} (through {name!r})")

    def restore(self) -> None:
        """Put the fixtures' finalizers back on the controller's SetupState (no fork follows)."""
        if self._entry is not None:
            state = self.session._setupstate
            state.stack = {self.session: self._entry, **state.stack}
            self._entry = None
        for fixturedef, _ in self.defs.values():
            fixturedef._finalizers[:0] = self._finalizers.pop(id(fixturedef), [])

    def teardown(self, last: pytest.Item) -> None:
        """Tear the shared fixtures down; an error is reported at teardown of ``last``."""
        if not self.defs:
            return
        self.restore()
        state = self.session._setupstate
        call = pytest.CallInfo.from_call(partial(_tear_down, state), when="teardown")
        if call.excinfo is None:
            return
        hook = last.ihook
        try:
            report = hook.pytest_runtest_makereport(item=last, call=call)
        except Exception:
            # A plugin's implementation that needs what its own protocol hooks left on the item
            # (pytest-rerunfailures'), which ran in a worker, not here: pytest's own report.
            report = pytest.TestReport.from_item_and_call(last, call)
        hook.pytest_runtest_logreport(report=report)

    def for_fresh_workers(
        self,
    ) -> dict[str, tuple[object, bytes | None, str | None, bytes | None]]:
        """Each shared value pickled, or why not: name ─▶ (cache key, pickled value, error,
        the exception its setup raised, pickled where it pickles: a skip stays a skip).
        Plain tuples: a spawned worker's input travels through execnet's serializer.

        A fresh worker has pytest's own session fixtures (``tmp_path_factory``,
        ``pytestconfig``) already, made for it; they are not sent.  A dependency that cannot be
        pickled is not sent either: the fresh worker sets it up again if a test asks for it.
        Only a named fixture that cannot travel becomes an error, at setup of its tests.
        """
        sent: dict[str, tuple[object, bytes | None, str | None, bytes | None]] = {}
        for name, (fixturedef, _) in self.defs.items():
            cached = fixturedef.cached_result
            if cached is None or _from_pytest(fixturedef):
                continue
            value, key, error = cached
            if error is not None:
                exc = error[0] if isinstance(error, tuple) else error  # pytest < 8.2: no tuple
                text = f"{type(exc).__name__}: {exc}"
                sent[name] = (
                    key,
                    None,
                    f"failed when the controller set it up: {text}",
                    _pickled_or_none(exc),
                )
                continue
            try:
                sent[name] = (key, pickle.dumps(value, pickle.HIGHEST_PROTOCOL), None, None)
            except Exception as exc:
                if name not in self.names:
                    continue
                sent[name] = (
                    key,
                    None,
                    f"its value ({type(value).__name__}) cannot be pickled: {exc}; make it "
                    "picklable, or run such tests in forked workers, which share the value "
                    "without pickling (the run's header says why it spawned: --pool-start "
                    "spawn, --pool-tx, or a thread running, which may be this fixture's own)",
                    None,
                )
        return sent

    def add_to(self, workerinputs: dict[str, dict[str, Any]], fresh_workers: bool) -> None:
        """Give the values to workers that start fresh (only they need them pickled)."""
        if fresh_workers and self.defs:
            sent = self.for_fresh_workers()
            for workerinput in workerinputs.values():
                workerinput[SHARED_KEY] = sent


def install(session: pytest.Session, workerinput: dict[str, Any]) -> None:
    """In a fresh worker: the controller's values become the fixtures' cached results."""
    sent = workerinput.get(SHARED_KEY)
    if not sent:
        return
    for name, (key, blob, error, raised) in sent.items():
        users = [item for item in session.items if name in _fixture_names(item)]
        if not users:
            continue
        fixturedef = _definition(users[0], name)
        if blob is not None:
            fixturedef.cached_result = (pickle.loads(blob), key, None)
            continue
        exc = _unpickled_or_none(raised) or SharedFixtureError(
            f"shared fixture {name!r} could not be sent to worker {workerinput.get('workerid')}"
            f": {error}"
        )
        # pytest 8.2 caches (exception, traceback), earlier versions the exception alone.
        cached_error = (exc, None) if pytest.version_tuple >= (8, 2) else exc
        fixturedef.cached_result = (None, key, cached_error)


def _tear_down(state: Any) -> None:
    __tracebackhide__ = True  # the error's traceback starts at the fixture, as serially
    state.teardown_exact(None)


def _pickled_or_none(exc: BaseException) -> bytes | None:
    """The exception a shared fixture's setup raised, as a worker can raise it again (its
    traceback stays behind)."""
    for kind, outcome in _OUTCOMES.items():
        if type(exc) is outcome:  # their classes name the builtins module: no pickle finds them
            return pickle.dumps(_Outcome(kind, str(exc.msg)), pickle.HIGHEST_PROTOCOL)  # type: ignore[attr-defined]
    try:
        blob = pickle.dumps(exc, pickle.HIGHEST_PROTOCOL)
        pickle.loads(blob)
    except Exception:
        return None
    return blob


# pytest's outcome exceptions a fixture's setup may raise, by a name to rebuild them from.
_OUTCOMES: dict[str, type[BaseException]] = {
    "skip": pytest.skip.Exception,
    "xfail": pytest.xfail.Exception,
    "fail": pytest.fail.Exception,
}


class _Outcome:
    """Pickles as pytest's outcome exception ``kind`` with its message."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return _outcome_exception, (self.kind, self.message)


def _outcome_exception(kind: str, message: str) -> BaseException:
    exc = _OUTCOMES[kind](message)
    if kind == "skip":
        # As pytest marks a skip raised in a fixture: reported at the test, not the fixture.
        exc._use_item_location = True  # type: ignore[attr-defined]
    return exc


def _unpickled_or_none(blob: bytes | None) -> BaseException | None:
    if blob is None:
        return None
    try:
        exc = pickle.loads(blob)
    except Exception:  # its class does not import in the worker
        return None
    return exc if isinstance(exc, BaseException) else None


def _all_definitions(session: pytest.Session, name: str) -> list[Any] | None:
    """Every definition of fixture ``name`` anywhere (conftests, test modules, plugins); None
    where pytest's fixture manager has none of the maps known here (they are private: name ─▶
    definitions before pytest 9, name ─▶ node or node id ─▶ definitions since)."""
    manager = session._fixturemanager
    maps = ("_arg2fixturedefs", "_arg2node2fixturedefs", "_arg2nodeid2fixturedefs")
    found: list[Any] | None = None
    for mapping in (getattr(manager, attr, None) for attr in maps):
        if not isinstance(mapping, dict):
            continue
        found = found or []
        entry = mapping.get(name, ())
        for definitions in entry.values() if isinstance(entry, dict) else [entry]:
            found += list(definitions)
    return found


def _from_pytest(fixturedef: Any) -> bool:
    return str(getattr(fixturedef.func, "__module__", "")).startswith("_pytest.")


def _fixture_names(item: pytest.Item) -> list[str]:
    info = getattr(item, "_fixtureinfo", None)
    return [] if info is None else list(info.name2fixturedefs)


def _definition(item: pytest.Item, name: str) -> Any:
    """The definition of fixture ``name`` that ``item`` gets (the closest one)."""
    return item._fixtureinfo.name2fixturedefs[name][-1]  # type: ignore[attr-defined]
