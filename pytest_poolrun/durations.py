"""How long each test took, kept in pytest's cache so the next run can schedule by it.

Data flow::

    controller's pytest_runtest_logreport (serial or pooled run) ─▶ Durations.record
        (setup + call + teardown seconds per node id)
    pytest_sessionfinish ─▶ Durations.save ─▶ .pytest_cache/d/poolrun/durations.json
        (merged with what was stored before, so a run of a few tests keeps the others' times)
    next run ─▶ Durations.load ─▶ scheduling (longest first, estimates for new tests)

The stored durations are read when first asked for (planning a pool run, or saving), not at
configuration: a ``--collect-only`` run creates no cache folder of its own.  They are
written as compact JSON, replaced whole (a temporary file renamed over the old one, so that two
runs in one checkout never leave half a file): pytest's ``cache.set`` indents what it writes
with Python's pure-Python encoder, about 12 ms for 5,000 tests where this takes 5 ms, at the
end of every run.  Durations stored by 0.1.0, as the cache value ``poolrun/durations``, are
read when the file is not there yet.

With ``--pool-durations FILE`` the durations are read from, and written back to, a JSON file
(``{"node id": seconds}``) that can be committed; CI shards each write their own copy, and
``python -m pytest_poolrun.durations merge FILE SHARD_FILE...`` folds them into one: a value
that a shard changed from FILE's wins.  Otherwise nothing is stored when the cache provider is
disabled (``-p no:cacheprovider``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # shardround reads this module's cache folder name
    from pytest_poolrun.shardround import ShardRound

# pytest's cache folder (``cache.mkdir``) and the file in it.
CACHE_DIR = "poolrun"
CACHE_FILE = "durations.json"
# Where 0.1.0 kept them: a cache value (``cache.get``).
LEGACY_CACHE_KEY = "poolrun/durations"


class Durations:
    """Seconds per test node id: those stored by earlier runs (read from ``loader`` when first
    asked for) and those measured now."""

    def __init__(
        self,
        stored: dict[str, float] | None = None,
        loader: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        self._stored: dict[str, float] | None = None if stored is None else dict(stored)
        self._loader = loader
        self.measured: dict[str, float] = {}

    @property
    def stored(self) -> dict[str, float]:
        if self._stored is None:
            self._stored = {} if self._loader is None else self._loader()
        return self._stored

    @classmethod
    def load(cls, config: pytest.Config) -> Durations:
        path = durations_file(config)
        if path is not None:
            if not path.parent.is_dir():
                raise pytest.UsageError(
                    f"cannot write durations to {path}: its folder does not exist"
                )
            return cls(read_file(path))  # read now: a broken file is a usage error, at once
        cache: Any = getattr(config, "cache", None)
        if cache is None:
            return cls()
        return cls(loader=lambda: _read_cache(cache))

    def record(self, report: pytest.TestReport) -> None:
        nodeid = report.nodeid  # computed anew at each read (pytest 9): read it once
        self.measured[nodeid] = self.measured.get(nodeid, 0.0) + report.duration

    def get(self, nodeid: str) -> float | None:
        return self.stored.get(nodeid)

    def seconds_of(self, nodeids: Iterable[str]) -> list[float | None]:
        """``get`` for each node id, in order."""
        return list(map(self.stored.get, nodeids))

    def rounded_measurements(self) -> dict[str, float]:
        """This run's measurements as ``save`` stores them."""
        return {k: round(v, 6) for k, v in self.measured.items()}

    def save(self, config: pytest.Config) -> None:
        if not self.measured:
            return
        merged = {**self.stored, **self.rounded_measurements()}
        path = durations_file(config)
        if path is not None:
            try:
                write_file(path, merged)
            except OSError as exc:
                message = f"could not write durations to {path}: {exc}"
                warnings.warn(pytest.PytestWarning(message), stacklevel=2)
        cache: Any = getattr(config, "cache", None)
        if cache is not None:
            _write_cache(cache, merged)


def _read_cache(cache: Any) -> dict[str, float]:
    """The durations in pytest's cache; none where there are none, or none readable (the cache
    is disposable: a broken file is overwritten at the run's end)."""
    try:
        path = cache.mkdir(CACHE_DIR) / CACHE_FILE
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raw = cache.get(LEGACY_CACHE_KEY, {})
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    if all(type(value) is float for value in raw.values()):
        return raw  # as saved (JSON keys are strings): no conversion entry by entry
    return {str(k): float(v) for k, v in raw.items() if isinstance(v, (int, float))}


def _write_cache(cache: Any, durations: dict[str, float]) -> None:
    temporary: str | None = None
    try:
        folder = cache.mkdir(CACHE_DIR)
        descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{CACHE_FILE}.")
        with open(descriptor, "w", encoding="utf-8") as stream:
            # dumps, not dump: only a one-shot encoding takes json's C encoder.
            stream.write(json.dumps(durations, separators=(",", ":")))
        os.replace(temporary, folder / CACHE_FILE)
    except OSError as exc:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        # As pytest's own cache warns when it cannot write a value.
        message = f"could not store test durations: {exc}"
        warnings.warn(pytest.PytestCacheWarning(message), stacklevel=3)


def durations_file(config: pytest.Config) -> Path | None:
    value = config.getoption("pool_durations", None)
    return None if value is None else Path(config.invocation_params.dir, value)


def read_file(path: Path) -> dict[str, float]:
    """The durations in ``path``; an absent file is an empty one (a first run)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise pytest.UsageError(
            f"cannot read durations from {path}: {exc}; fix or delete the file"
        ) from None
    if not isinstance(raw, dict):
        raise pytest.UsageError(f"{path} holds no durations object; fix or delete the file")
    return {str(k): float(v) for k, v in raw.items() if isinstance(v, (int, float))}


def write_file(path: Path, durations: dict[str, float]) -> None:
    path.write_text(json.dumps(dict(sorted(durations.items())), indent=1) + "\n")


def merge(base: dict[str, float], shards: list[dict[str, float]]) -> dict[str, float]:
    """Fold shard files into ``base``: each value a shard changed from ``base`` wins."""
    merged = dict(base)
    for shard in shards:
        for nodeid, seconds in shard.items():
            if base.get(nodeid) != seconds:
                merged[nodeid] = seconds
    return merged


def main(argv: list[str]) -> int:
    """``merge OUT SHARD...``: merge shard files into OUT (read first as the base, if present)."""
    if len(argv) < 3 or argv[0] != "merge":
        print("usage: python -m pytest_poolrun.durations merge OUT SHARD_FILE...", file=sys.stderr)
        return 2
    out = Path(argv[1])
    try:
        merged = merge(read_file(out), [read_file(Path(name)) for name in argv[2:]])
    except pytest.UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_file(out, merged)
    print(f"merged {len(argv) - 2} files into {out}: {len(merged)} tests")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


class DurationRecorder:
    """Plugin object (registered by the plugin's configure) that feeds and saves ``Durations``.

    In the controller it sees every report, replayed or from a serial run; forked workers
    inherit it but never reach ``pytest_sessionfinish``, so only the controller saves.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.durations = Durations.load(config)
        # The round of CI shards this run is one of, if it is a shard (set at collection).
        self.shard_round: ShardRound | None = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.durations.record(report)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self) -> None:
        self.durations.save(self.config)
        if self.shard_round is not None:
            self.shard_round.finish(self.config, self.durations.rounded_measurements())
