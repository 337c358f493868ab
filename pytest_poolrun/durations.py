"""How long each test took, kept in pytest's cache so the next run can schedule by it.

Data flow::

    controller's pytest_runtest_logreport (serial or pooled run) ─▶ Durations.record
        (setup + call + teardown seconds per node id)
    pytest_sessionfinish ─▶ Durations.save ─▶ config.cache["poolrun/durations"]
        (merged with what was stored before, so a run of a few tests keeps the others' times)
    next run ─▶ Durations.load ─▶ scheduling (longest first, estimates for new tests)

Nothing is stored when the cache provider is disabled (``-p no:cacheprovider``).
"""

from __future__ import annotations

from typing import Any

import pytest

CACHE_KEY = "poolrun/durations"


class Durations:
    """Seconds per test node id: those stored by earlier runs and those measured now."""

    def __init__(self, stored: dict[str, float] | None = None) -> None:
        self.stored: dict[str, float] = dict(stored or {})
        self.measured: dict[str, float] = {}

    @classmethod
    def load(cls, config: pytest.Config) -> Durations:
        cache: Any = getattr(config, "cache", None)
        if cache is None:
            return cls()
        raw = cache.get(CACHE_KEY, {})
        if not isinstance(raw, dict):
            return cls()
        return cls({str(k): float(v) for k, v in raw.items() if isinstance(v, (int, float))})

    def record(self, report: pytest.TestReport) -> None:
        self.measured[report.nodeid] = self.measured.get(report.nodeid, 0.0) + report.duration

    def get(self, nodeid: str) -> float | None:
        return self.stored.get(nodeid)

    def save(self, config: pytest.Config) -> None:
        cache: Any = getattr(config, "cache", None)
        if cache is None or not self.measured:
            return
        merged = {**self.stored, **{k: round(v, 6) for k, v in self.measured.items()}}
        cache.set(CACHE_KEY, merged)


class DurationRecorder:
    """Plugin object (registered by the plugin's configure) that feeds and saves ``Durations``.

    In the controller it sees every report, replayed or from a serial run; forked workers
    inherit it but never reach ``pytest_sessionfinish``, so only the controller saves.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.durations = Durations.load(config)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.durations.record(report)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self) -> None:
        self.durations.save(self.config)
