"""The options that go beyond pytest-xdist: shared fixtures, leaks, recycling, slow notices.

Data flow::

    pytest_addoption ─▶ add_options: each option, and an ini key of the same name
    controller and every worker ─▶ read(config) ─▶ ExtraOptions (command line over ini)

Every process reads the same values from its own config: a forked worker has the controller's,
a spawned or execnet one parsed the same arguments in the same directory, so nothing has to be
sent.  A bad value is a one-line usage error (exit code 4), on the command line as in the ini
file.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

LEAK_MODES = ("ignore", "warn", "fail")
# A test that runs a minute is worth a line: long enough that ordinary slow tests stay quiet,
# short enough that a hung test shows up well before a CI job's own timeout.
DEFAULT_SLOW_SECONDS = 60.0

# Parses option text into a value or raises argparse.ArgumentTypeError (plugin._number_type).
NumberType = Callable[..., Callable[[str], Any]]


@dataclass(frozen=True)
class ExtraOptions:
    """What the command line and ini file decide about the features beyond pytest-xdist."""

    shared_fixtures: tuple[str, ...] = ()
    leaks: str = "warn"
    max_tests_per_worker: int | None = None
    max_worker_rss_mb: float | None = None
    slow: float | None = DEFAULT_SLOW_SECONDS


class _Parsers:
    """The value parsers, made once by ``add_options`` from the plugin's ``_number_type``."""

    count: Callable[[str], Any] | None = None
    megabytes: Callable[[str], Any] | None = None
    seconds: Callable[[str], Any] | None = None


def add_options(parser: pytest.Parser, number_type: NumberType) -> None:
    _Parsers.count = number_type(int, lambda n: n >= 1, "a count of tests", "a whole number >= 1")
    _Parsers.megabytes = number_type(
        float, lambda n: n > 0, "a memory size", "a number of megabytes greater than 0"
    )
    _Parsers.seconds = number_type(
        float, lambda n: n > 0, "a duration", "a number of seconds greater than 0"
    )
    group = parser.getgroup("poolrun")
    group.addoption(
        "--pool-shared-fixture",
        dest="pool_shared_fixtures",
        metavar="NAME",
        action="append",
        default=None,
        help="Set up session fixture NAME once, in the controller before the workers fork, "
        "and tear it down once after the last worker (repeatable).",
    )
    group.addoption(
        "--pool-leaks",
        dest="pool_leaks",
        choices=LEAK_MODES,
        default=None,
        help="What to do with a process a test started and left running: 'warn' (default) "
        "names it in a warning, 'fail' fails the test, 'ignore'; it is killed either way.",
    )
    numbers = (
        (
            "--pool-max-tests-per-worker",
            "N",
            _Parsers.count,
            "Replace a worker after it ran N tests (its fixtures are set up again).",
        ),
        (
            "--pool-max-worker-rss",
            "MB",
            _Parsers.megabytes,
            "Replace a worker whose resident memory exceeds MB megabytes after a test.",
        ),
        (
            "--pool-slow",
            "SECONDS",
            _Parsers.seconds,
            "Print a line for a test still running "
            f"after SECONDS, and at each further multiple (default {DEFAULT_SLOW_SECONDS:g}).",
        ),
    )
    for flag, metavar, parse, text in numbers:
        dest = flag.lstrip("-").replace("-", "_")
        group.addoption(flag, dest=dest, metavar=metavar, type=parse, default=None, help=text)
    parser.addini(
        "pool_shared_fixtures",
        "Session fixtures set up once for the whole --pool run (names, by spaces or lines).",
        type="args",
        default=[],
    )
    parser.addini("pool_leaks", "As --pool-leaks: ignore, warn or fail.", default="")
    parser.addini("pool_max_tests_per_worker", "As --pool-max-tests-per-worker.", default="")
    parser.addini("pool_max_worker_rss", "As --pool-max-worker-rss (megabytes).", default="")
    parser.addini("pool_slow", "As --pool-slow (seconds).", default="")


def read(config: pytest.Config) -> ExtraOptions:
    """The options of this run, from the command line, else the ini file, else the defaults."""
    shared = config.getoption("pool_shared_fixtures", None)
    if shared is None:
        shared = list(config.getini("pool_shared_fixtures"))
    leaks = config.getoption("pool_leaks", None) or _ini(config, "pool_leaks", _leak_mode)
    slow = _pick(config, "pool_slow", _Parsers.seconds)
    return ExtraOptions(
        shared_fixtures=tuple(dict.fromkeys(shared)),
        leaks=leaks or "warn",
        max_tests_per_worker=_pick(config, "pool_max_tests_per_worker", _Parsers.count),
        max_worker_rss_mb=_pick(config, "pool_max_worker_rss", _Parsers.megabytes),
        slow=DEFAULT_SLOW_SECONDS if slow is None else slow,
    )


def _leak_mode(text: str) -> str:
    if text not in LEAK_MODES:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LEAK_MODES)}")
    return text


def _pick(config: pytest.Config, name: str, parse: Callable[[str], Any] | None) -> Any:
    value = config.getoption(name, None)
    return value if value is not None else _ini(config, name, parse)


def _ini(config: pytest.Config, name: str, parse: Callable[[str], Any] | None) -> Any:
    text = str(config.getini(name)).strip()
    if not text or parse is None:
        return None
    try:
        return parse(text)
    except argparse.ArgumentTypeError as exc:
        raise pytest.UsageError(f"ini option {name}: {exc}") from None
