"""A test's report hooks (and the status question about each report), called without pluggy's
general-purpose call path where that changes nothing a plugin can see.

Data flow, in the process that calls the hook (a worker's runner, the controller's replay and
its terminal reporter)::

    DirectHook(plugin manager, hook caller, skip): built once
      each call ─▶ the caller's implementations are still those it was built with,
                   every one a plain function (no wrapper, no keyword with a default),
                   and no one watches hook calls (pytest --debug, pytester's recorder)?
                   ├─ yes ─▶ each implementation but the skipped ones, in pluggy's order
                   │         (the list reversed: tryfirst first, trylast last); the results
                   │         that are not None, as a list (a first-result hook: the first one)
                   └─ no  ─▶ the hook caller itself, as if this were not here

Why: every test makes five report hook calls (logstart, three logreports, logfinish), in its
worker and again in the controller's replay, where a serial run makes them once.  pluggy's
call checks the arguments against the specification, copies the implementation list and runs
the wrapper machinery each time: in a worker that is about 40,000 instructions per test, more
than the implementations themselves.  With no wrapper among the implementations, calling them
in order is all that machinery amounts to.

In a worker (``install_in_worker``) the runner's calls reach ``config.hook``, so the direct
callers take the hook callers' places there; anything else asked of them (registering a plugin,
``get_hookimpls``) goes to the hook caller they stand for.  They also skip what has no effect in
a worker (``worker_noops``): pytest's last-failed bookkeeping and this plugin's durations,
which only the controller saves, and the live-logging phase names while live logging is off
(no-op methods of a null handler).
The controller's replay holds its own direct callers (``ReportHooks``).  On the controller's
``config.hook`` only ``pytest_report_teststatus`` (a first-result hook: the first answer that
is not None) gets a direct caller, while the pool runs (``install_in_controller``): the
terminal reporter asks it three times per test.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import pluggy
import pytest

from pytest_poolrun.durations import DurationRecorder

try:  # Skipped in workers when they are pytest's own (see worker_noops).
    from _pytest.cacheprovider import LFPlugin
    from _pytest.logging import LoggingPlugin, _LiveLoggingNullHandler
except ImportError:  # pragma: no cover - a pytest without them: nothing is skipped
    LFPlugin = LoggingPlugin = _LiveLoggingNullHandler = None  # type: ignore[assignment,misc]

REPORT_HOOKS = ("pytest_runtest_logstart", "pytest_runtest_logreport", "pytest_runtest_logfinish")
# The terminal reporter asks it of every report it gets, through config.hook.
STATUS_HOOK = "pytest_report_teststatus"

# What a plugin manager runs its hook calls through while no one monitors them; monitoring
# (pluggy's add_hookcall_monitoring) puts a wrapper there.
_PLAIN_HOOKEXEC = getattr(pluggy.PluginManager("poolrun"), "_inner_hookexec", None)

Skip = Callable[[str, pluggy.HookImpl], bool]


def _skip_nothing(hook_name: str, impl: pluggy.HookImpl) -> bool:
    return False


class _DirectCall(NamedTuple):
    """One implementation, called as ``function(*arguments(kwargs))`` if ``spread``, else as
    ``function(arguments(kwargs))`` (one argument: no tuple to build and unpack)."""

    function: Callable[..., Any]
    arguments: Callable[[dict[str, Any]], Any]
    spread: bool


def _no_arguments(kwargs: dict[str, Any]) -> tuple[()]:
    return ()


def _direct_call(impl: pluggy.HookImpl) -> _DirectCall:
    names = tuple(impl.argnames)
    if not names:
        return _DirectCall(impl.function, _no_arguments, True)
    return _DirectCall(impl.function, operator.itemgetter(*names), len(names) > 1)


class DirectHook:
    """Calls the implementations of the hook of ``caller`` directly (see the module docstring)."""

    def __init__(
        self,
        pluginmanager: pluggy.PluginManager,
        caller: pluggy.HookCaller,
        skip: Skip = _skip_nothing,
    ) -> None:
        self._pluginmanager = pluginmanager
        self._caller = caller
        self._skip = skip
        self._impls: list[pluggy.HookImpl] = []
        # pluggy's own list, changed in place as plugins come and go.  Read directly: a copy
        # per call is measurable here.  None where there is no such list (a subset caller
        # computes a new one at each read): each call then compares a copy.
        live = getattr(caller, "_hookimpls", None)
        computed = isinstance(inspect.getattr_static(caller, "_hookimpls", None), property)
        self._live: list[pluggy.HookImpl] | None = (
            live if type(live) is list and not computed else None
        )
        self._firstresult = False  # the first result that is not None is the answer
        # What to call, in call order (see _direct_call); None: call through the hook caller.
        self._calls: list[_DirectCall] | None = None
        self._prepare(caller.get_hookimpls())

    def _prepare(self, impls: list[pluggy.HookImpl]) -> None:
        self._impls = impls
        spec = self._caller.spec
        self._firstresult = spec is not None and bool(spec.opts.get("firstresult"))
        plain = (
            _PLAIN_HOOKEXEC is not None  # else no way to tell whether someone watches calls
            and spec is not None
            and not self._caller.is_historic()
            and not getattr(spec, "kwargdefaults", None)
            and all(
                not impl.hookwrapper and not getattr(impl, "wrapper", False) and not impl.kwargnames
                for impl in impls
            )
        )
        self._calls = (
            [
                _direct_call(impl)
                for impl in reversed(impls)
                if not self._skip(self._caller.name, impl)
            ]
            if plain
            else None
        )

    def __call__(self, **kwargs: Any) -> Any:
        live = self._live
        if (self._caller.get_hookimpls() if live is None else live) != self._impls:
            self._prepare(self._caller.get_hookimpls())  # a plugin came or went
        calls = self._calls
        if calls is None or self._pluginmanager._inner_hookexec is not _PLAIN_HOOKEXEC:
            return self._caller(**kwargs)
        results = []
        for function, arguments, spread in calls:
            # pluggy passes an implementation the arguments it names, positionally.
            if spread:
                result = function(*arguments(kwargs))
            else:
                result = function(arguments(kwargs))
            if result is not None:
                if self._firstresult:
                    return result
                results.append(result)
        return None if self._firstresult else results

    def __getattr__(self, name: str) -> Any:
        # Registering, unregistering, get_hookimpls, spec...: the hook caller's own.
        return getattr(self._caller, name)


class ReportHooks(NamedTuple):
    """The controller's callers of a test's report hooks."""

    logstart: Callable[..., Any]
    logreport: Callable[..., Any]
    logfinish: Callable[..., Any]


def report_hooks(config: pytest.Config, relay: Any = None) -> ReportHooks:
    """Direct callers of the report hooks of ``relay`` (default: ``config.hook``; or a test
    file's hook proxy), for the controller's replay."""
    pluginmanager = config.pluginmanager
    hooks = config.hook if relay is None else relay
    return ReportHooks(*(DirectHook(pluginmanager, getattr(hooks, name)) for name in REPORT_HOOKS))


def worker_noops(hook_name: str, impl: pluggy.HookImpl) -> bool:
    """Whether ``impl`` of a report hook has no effect in a worker (see the module docstring)."""
    plugin = impl.plugin
    if type(plugin) is DurationRecorder or (LFPlugin is not None and type(plugin) is LFPlugin):
        return hook_name == "pytest_runtest_logreport"
    return (
        LoggingPlugin is not None
        and type(plugin) is LoggingPlugin
        and type(getattr(plugin, "log_cli_handler", None)) is _LiveLoggingNullHandler
    )


def install_in_controller(config: pytest.Config) -> Callable[[], None]:
    """Make the controller's ``pytest_report_teststatus`` calls direct while the run lasts
    (see the module docstring); returns what puts the hook caller back."""
    caller = getattr(config.hook, STATUS_HOOK, None)
    if not isinstance(caller, pluggy.HookCaller):
        return _nothing_to_restore
    direct = DirectHook(config.pluginmanager, caller)
    setattr(config.hook, STATUS_HOOK, direct)

    def restore() -> None:
        if getattr(config.hook, STATUS_HOOK, None) is direct:
            setattr(config.hook, STATUS_HOOK, caller)

    return restore


def _nothing_to_restore() -> None:
    pass


def install_in_worker(config: pytest.Config) -> None:
    """Make the runner's report hook calls in this worker direct (see the module docstring)."""
    pluginmanager = config.pluginmanager
    for name in REPORT_HOOKS:
        caller = getattr(config.hook, name)
        if isinstance(caller, pluggy.HookCaller):
            setattr(config.hook, name, DirectHook(pluginmanager, caller, worker_noops))
