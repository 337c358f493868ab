"""The durations a round of CI shards splits the suite by, kept steady while the round runs.

Data flow, in a ``--pool-shard K/N`` run::

    pytest_collection_modifyitems ─▶ ShardRound.begin(config, stored durations, shard)
        ├─ the round in pytest's cache (.pytest_cache/d/poolrun/shard-round.json) goes on
        │  while it is the same source and N, shard K has not run in it yet, and the stored
        │  durations are its basis plus what its shards measured ─▶ split by its basis
        └─ else a new round, whose basis is the stored durations ─▶ split by them
    pytest_sessionfinish, after the durations are saved ─▶ ShardRound.finish: the round with
        shard K's measurements, written back to the cache

**Why.**  Each shard writes what it measured back to the durations it read (the cache, or
``--pool-durations FILE``), so that the next CI run splits by fresher numbers.  Shards run one
after another in one checkout (a developer's machine, a test of this plugin) then split by
different numbers: shard 2 of 2 is balanced by durations that shard 1 has just changed, and
some tests run in both shards, others in neither.  Within a round every shard splits by the
same basis.  A new round starts once a shard runs a second time, once the stored durations
change otherwise (an unsharded run, a merge, a commit), and in every CI job that starts
without the cache.  With ``-p no:cacheprovider`` there is no round: each shard splits by the
durations it finds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_poolrun.durations import CACHE_DIR
from pytest_poolrun.sharding import Shard

ROUND_FILE = "shard-round.json"


class ShardRound:
    """One round of shards: the durations they split by, what they measured, who ran."""

    def __init__(self, source: str, total: int, basis: dict[str, float]) -> None:
        self.source = source
        self.total = total
        self.basis = basis
        self.measured: dict[str, float] = {}
        self.ran: list[int] = []

    @classmethod
    def begin(
        cls, config: pytest.Config, stored: dict[str, float], shard: Shard, source: str
    ) -> ShardRound:
        """The round shard ``shard`` belongs to: the one under way, or a new one."""
        found = cls._read(config)
        if (
            found is None
            or found.source != source
            or found.total != shard.total
            or shard.number in found.ran
            or stored != {**found.basis, **found.measured}
        ):
            found = cls(source, shard.total, dict(stored))
        found.ran.append(shard.number)
        return found

    def finish(self, config: pytest.Config, measured: dict[str, float]) -> None:
        """Keep this shard's measurements (as the durations store saved them) in the round."""
        self.measured.update(measured)
        cache: Any = getattr(config, "cache", None)
        if cache is None:
            return
        record = {
            "source": self.source,
            "total": self.total,
            "basis": self.basis,
            "measured": self.measured,
            "ran": self.ran,
        }
        try:
            path: Path = cache.mkdir(CACHE_DIR) / ROUND_FILE
            temporary = path.with_name(f".{ROUND_FILE}.{os.getpid()}")
            temporary.write_text(json.dumps(record, separators=(",", ":")), encoding="utf-8")
            os.replace(temporary, path)
        except OSError:
            pass  # without it the next shard starts a round of its own, as without a cache

    @classmethod
    def _read(cls, config: pytest.Config) -> ShardRound | None:
        cache: Any = getattr(config, "cache", None)
        if cache is None:
            return None
        try:
            raw = json.loads((cache.mkdir(CACHE_DIR) / ROUND_FILE).read_text(encoding="utf-8"))
            found = cls(str(raw["source"]), int(raw["total"]), dict(raw["basis"]))
            found.measured = dict(raw["measured"])
            found.ran = [int(number) for number in raw["ran"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return found
