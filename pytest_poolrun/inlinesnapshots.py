"""inline-snapshot under ``--pool``: a usage error where it would write, a notice where it reports.

Data flow, in the controller's pytest_configure, after inline-snapshot's own::

    inline-snapshot loaded and active? ─▶ the kinds of edit its flags allow (from the command
        line's ``--inline-snapshot``, else its pyproject ``default-flags``)
        ├─ any (create, fix, trim, update; review allows all) ─▶ UsageError (exit 4)
        └─ its report (the default) ─▶ ReportNotice: one line in the terminal summary of a
           run with a failure or an error (where a snapshot to create or fix is likely) that
           collected a test module using inline-snapshot

**Why.**  inline-snapshot records what each ``snapshot()`` saw in the process that ran the
test, and edits the test files from that record at the session's end.  Under ``--pool`` those
records stay in the workers: ``--inline-snapshot=create`` ended as serially, exit code and all,
and wrote nothing, and the default run's report of snapshots to create or fix was missing.
pytest-xdist refuses the flags that write and turns the library off otherwise, which also
changes verdicts; here the workers still compare every snapshot, so verdicts stay serial, and
the user is told what is not done, instead of finding it out.

inline-snapshot keeps them in its private state (``state().update_flags``, from 0.20 on at
least); an inline-snapshot that keeps them elsewhere gets no check (``_edits`` answers None).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pytest

from pytest_poolrun.loadedplugins import module_loaded

PACKAGE = "inline_snapshot"
PLUGIN_MODULE = "inline_snapshot.pytest_plugin"
STATE_MODULE = "inline_snapshot._global_state"
NOTICE = (
    "poolrun: inline-snapshot's report is not shown under --pool (each worker compared its "
    "tests' snapshots); run without --pool to see it"
)


class ReportNotice:
    """Says, at the end of the summary, that inline-snapshot's report is missing: in a run
    with a failure or an error (where a snapshot to create or fix is likely) that collected a
    test module using inline-snapshot (installed, it is active in every run)."""

    def __init__(self) -> None:
        self.used = False

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        modules = {id(module): module for module in map(_module_of, session.items)}
        self.used = any(_uses_inline_snapshot(module) for module in modules.values())

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        stats = terminalreporter.stats
        if self.used and (stats.get("failed") or stats.get("error")):
            terminalreporter.write_line(NOTICE)


def _module_of(item: pytest.Item) -> ModuleType | None:
    return getattr(item, "module", None)


def _uses_inline_snapshot(module: ModuleType | None) -> bool:
    """Whether the module imported inline-snapshot or one of its names."""
    if module is None:
        return False
    for value in vars(module).values():
        name = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", "")
        if isinstance(name, str) and name.split(".")[0] == PACKAGE:
            return True
    return False


def check(config: pytest.Config) -> None:
    """Refuse inline-snapshot's file-editing flags; register the notice for its report."""
    if not module_loaded(config, PLUGIN_MODULE):
        return
    edits = _edits()
    if edits is None:
        return
    if edits:
        raise pytest.UsageError(
            f"inline-snapshot's {','.join(edits)} cannot be combined with --pool: its workers "
            "keep the snapshots they saw, so no file would be written; run it without --pool"
        )
    config.pluginmanager.register(ReportNotice(), "poolrun-inline-snapshot-notice")


def _edits() -> list[str] | None:
    """The kinds of edit inline-snapshot would make; None where it is off (``disable``, a CI
    run, pytest-xdist) or keeps its state otherwise."""
    try:
        state = importlib.import_module(STATE_MODULE).state()
        return sorted(str(kind) for kind in state.update_flags.to_set()) if state.active else None
    except Exception:  # an inline-snapshot whose state looks otherwise: nothing to go by
        return None
