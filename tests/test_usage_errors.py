"""Bad input: a clear usage error (exit code 4), no traceback, no test run, no hang."""

from __future__ import annotations

import pytest
from helpers import POOL

CASES = [
    (("--pool", "-1"), "*--pool: '-1' is not a number of workers*"),
    (("--pool", "two"), "*--pool: 'two' is not a number of workers*"),
    (("--pool", "2", "--pool-chunksize", "0"), "*--pool-chunksize: '0' is not a chunk size*"),
    (("--pool", "2", "--pool-timeout", "-5"), "*--pool-timeout: '-5' is not a timeout*"),
    (("--pool", "2", "--pool-timeout", "inf"), "*'inf' is not a timeout; use*0.05 to 1000000*"),
    (("--pool", "2", "--pool-timeout", "1e-9"), "*--pool-timeout: '1e-9' is not a timeout*"),
    (("--pool", "2", "--pool-max-restarts", "x"), "*--pool-max-restarts: 'x' is not a count*"),
    (("--pool", "2", "--pool-dist", "random"), "*--pool-dist: invalid choice: 'random'*"),
    (("--pool", "2", "--pool-start", "vfork"), "*--pool-start: invalid choice: 'vfork'*"),
    (("--pool-shard", "0/3"), "*--pool-shard: '0/3' is not a shard*"),
    (("--pool-shard", "4/3"), "*--pool-shard: '4/3' is not a shard*"),
    (("--pool-shard", "x"), "*--pool-shard: 'x' is not a shard*"),
    (("--pool-fixture-workers", "many"), "*'many'*not a number of pool workers*"),
    (("--pool-tx", "bogus"), "*--pool-tx: 'bogus' is not a gateway; use*popen*"),
    (("--pool-tx", "0*popen"), "*--pool-tx: '0*popen' is not a gateway; use*"),
    (("-o", "pool_fixture_workers=-2"), "*pool_fixture_workers is '-2', which is not a number*"),
    (
        ("--pool-durations", "missing/durations.json"),
        "*cannot write durations to *durations.json: its folder does not exist*",
    ),
    (("--pool", "2", "--pdb"), "*--pdb cannot be used with --pool*"),
    (("--pool", "2", "--trace"), "*--trace cannot be used with --pool*"),
    (("--pool", "2", "-n", "2"), "*--pool and pytest-xdist's -n both ask*"),
    (("--pool", "2", "-d", "--tx", "popen"), "*-d/--tx both ask for workers; use --pool-tx*"),
    (
        ("--pool", "2", "--dist", "loadfile"),
        "*--dist loadfile is pytest-xdist's*--pool-dist module*",
    ),
    (("--pool-fixture-tx", "bogus"), "*--pool-fixture-tx: 'bogus' is not a gateway; use*"),
    (("-o", "pool_fixture_tx=bogus"), "*the ini key pool_fixture_tx: 'bogus' is not a gateway*"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_a_usage_error(
    pytester: pytest.Pytester, args: tuple[str, ...], message: str
) -> None:
    pytester.makepyfile("def test_one(): pass")
    result = pytester.runpytest_subprocess(*POOL, *args, timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    assert "passed" not in result.stdout.str()
