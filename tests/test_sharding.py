"""CI shards: every test runs in exactly one shard; durations balance the shards."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from helpers import POOL

from pytest_poolrun.durations import merge
from pytest_poolrun.scheduling import ItemInfo
from pytest_poolrun.sharding import split

SKEWED = """
import time, pytest
@pytest.mark.parametrize("n", range(40))
def test_fast(n): time.sleep(0.005)
@pytest.mark.parametrize("n", range(4))
def test_slow(n): time.sleep(0.3)
"""


def test_split_is_deterministic_complete_and_balanced() -> None:
    items = [ItemInfo(f"t::a[{n}]", 0.01) for n in range(40)] + [
        ItemInfo(f"t::b[{n}]", 0.3) for n in range(4)
    ]
    shards = split(items, 3)
    assert split(items, 3) == shards
    assert sorted(i for shard in shards for i in shard) == list(range(44))
    totals = [sum(0.01 if i < 40 else 0.3 for i in shard) for shard in shards]
    assert max(totals) <= 1.2 * min(totals)


def test_merge_keeps_what_shards_changed() -> None:
    base = {"a": 1.0, "b": 2.0, "c": 3.0}
    merged = merge(base, [{"a": 1.5, "b": 2.0, "c": 3.0}, {"a": 1.0, "b": 2.5, "d": 4.0}])
    assert merged == {"a": 1.5, "b": 2.5, "c": 3.0, "d": 4.0}


def _ran(result: pytest.RunResult) -> set[str]:
    return set(re.findall(r"(test_\w+\.py::\S+) PASSED", result.stdout.str()))


@pytest.mark.parametrize("pool", [(), ("--pool", "2")], ids=["serial", "pooled"])
def test_shards_together_run_every_test_once(pytester: pytest.Pytester, pool) -> None:
    pytester.makepyfile(test_skewed=SKEWED)
    seen: list[str] = []
    for number in (1, 2, 3):
        # Each CI job starts from the same durations; here, no cache stands for that.
        result = pytester.runpytest_subprocess(
            *POOL, *pool, "--pool-shard", f"{number}/3", "-v", "-p", "no:cacheprovider"
        )
        assert result.ret == 0
        result.stdout.fnmatch_lines([f"poolrun: shard {number}/3: * tests"])
        seen.extend(_ran(result))
    assert len(seen) == 44
    assert len(set(seen)) == 44


@pytest.mark.parametrize("store", ["cache", "file"])
def test_shards_run_one_after_another_in_one_checkout_run_every_test_once(
    pytester: pytest.Pytester, store: str
) -> None:
    """Each shard writes back what it measured; the next shards of the round still split by
    the durations the round started from.  Three rounds, the last in reverse order."""
    pytester.makepyfile(test_skewed=SKEWED)
    durations = pytester.path / "durations.json"
    store_args = (f"--pool-durations={durations}",) if store == "file" else ()
    pytester.runpytest_subprocess(*POOL, *store_args)  # durations to start from
    for numbers in ((1, 2, 3), (1, 2, 3), (3, 2, 1)):
        seen: list[str] = []
        for number in numbers:
            result = pytester.runpytest_subprocess(
                *POOL, "-p", "no:randomly", "--pool-shard", f"{number}/3", "-v", *store_args
            )
            assert result.ret == 0
            seen.extend(_ran(result))
        assert len(seen) == len(set(seen)) == 44, sorted(seen)


def test_durations_file_balances_shards_and_merges(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_skewed=SKEWED)
    durations = pytester.path / "durations.json"
    first = pytester.runpytest_subprocess(*POOL, f"--pool-durations={durations}")
    assert first.ret == 0
    stored = json.loads(durations.read_text())
    assert stored["test_skewed.py::test_slow[0]"] >= 0.3
    times = []
    shard_files = []
    for number in (1, 2):
        shard_file = pytester.path / f"shard{number}.json"
        shard_file.write_text(durations.read_text())
        result = pytester.runpytest_subprocess(
            *POOL, "--pool-shard", f"{number}/2", f"--pool-durations={shard_file}", "-v"
        )
        assert result.ret == 0
        times.append(sum(stored[nodeid] for nodeid in _ran(result)))
        shard_files.append(shard_file)
    assert max(times) <= 1.2 * min(times), times
    merged = subprocess.run(
        [sys.executable, "-m", "pytest_poolrun.durations", "merge", str(durations)]
        + [str(path) for path in shard_files],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "merged 2 files" in merged.stdout
    assert len(json.loads(durations.read_text())) == 44


def test_split_keeps_the_tests_of_a_tie_in_one_shard() -> None:
    items = [ItemInfo(f"t::a[{n}]", 0.01) for n in range(40)]
    items[3] = items[3]._replace(tie="t::a[3]")
    items[31] = items[31]._replace(tie="t::a[3]")
    items[32] = items[32]._replace(tie="t::a[3]")
    shards = split(items, 4)
    assert sorted(i for shard in shards for i in shard) == list(range(40))
    assert any({3, 31, 32} <= set(shard) for shard in shards)
