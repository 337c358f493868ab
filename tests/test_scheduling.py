"""The scheduler on plain data: chunk sizes, order, scope boundaries, estimates."""

from __future__ import annotations

import pytest

from pytest_poolrun.scheduling import (
    DEFAULT_SECONDS,
    FREE_UNIT_FLOOR_DIVISOR,
    MIN_CHUNK_SECONDS,
    TAIL_CHUNKS_PER_WORKER,
    UNIT_SLACK,
    ItemInfo,
    estimates,
    plan_chunks,
    units,
)


def suite(modules: int, tests: int, seconds: float | None = None) -> list[ItemInfo]:
    return [
        ItemInfo(f"test_m{m}.py::test_t[{t}]", seconds)
        for m in range(modules)
        for t in range(tests)
    ]


def covers_each_once(chunks: list[list[int]], count: int) -> bool:
    flat = [index for chunk in chunks for index in chunk]
    return sorted(flat) == list(range(count))


@pytest.mark.parametrize("dist", ["load", "longest", "module", "class", "group"])
@pytest.mark.parametrize("chunksize", [None, 1, 7])
def test_every_item_is_planned_exactly_once(dist: str, chunksize: int | None) -> None:
    items = [*suite(9, 13, 0.01), ItemInfo("test_z.py::TestK::test_a", 2.0, group="g")]
    chunks = plan_chunks(items, 3, chunksize, dist)
    assert covers_each_once(chunks, len(items))
    assert all(chunks)


def test_fixed_chunksize_is_exact_and_in_collection_order_without_durations() -> None:
    chunks = plan_chunks(suite(2, 5), 2, 3)
    assert chunks == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


def test_automatic_chunks_shrink_toward_the_end() -> None:
    sizes = [len(chunk) for chunk in plan_chunks(suite(50, 100), 2)]
    assert sizes[0] >= 1000
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[-1] <= 2
    assert len(sizes) < 40, "few messages for 5,000 items"


def with_setups(modules: int, tests: int, seconds: float, setup: float) -> list[ItemInfo]:
    """``suite``, where each module's first test also sets up a module fixture."""
    items = suite(modules, tests, seconds)
    for start in range(0, len(items), tests):
        items[start] = items[start]._replace(seconds=seconds + setup)
    return items


def assert_cut_no_finer_than_the_floor(items: list[ItemInfo], chunks: list[list[int]]) -> None:
    """Each chunk holds the whole rest of its module, or at least the floor of a short run
    (``TAIL_CHUNKS_PER_WORKER`` chunks per worker, two workers) of estimated time."""
    floor = sum(estimates(items)) / (2 * TAIL_CHUNKS_PER_WORKER)
    for chunk in chunks:
        module = items[chunk[0]].module
        rest = [item for item in items[chunk[0] :] if item.module == module]
        taken = sum(estimates([items[index] for index in chunk]))
        assert taken >= min(floor * 0.99, sum(estimates(rest)) * 0.99)


def test_automatic_chunks_take_whole_modules_when_they_fit() -> None:
    # 30 modules of 20 tests, each with a module fixture: every chunk starts and ends on a module
    # boundary, so each module fixture is set up once, as in a serial run.
    chunks = plan_chunks(with_setups(30, 20, 0.01, 0.05), 2)
    assert all(chunk[0] % 20 == 0 and (chunk[-1] + 1) % 20 == 0 for chunk in chunks)


def two_classes(setup: float | None) -> list[ItemInfo]:
    """TestA's 6 tests, then TestB's 14, of 0.5 s (``None``: not timed); TestB's first test
    also takes ``setup`` seconds, for a class fixture."""
    seconds = None if setup is None else 0.5
    items = [ItemInfo(f"test_m.py::TestA::test_{n}", seconds) for n in range(6)] + [
        ItemInfo(f"test_m.py::TestB::test_{n}", seconds) for n in range(14)
    ]
    if setup:
        items[6] = items[6]._replace(seconds=0.5 + setup)
    return items


def test_a_cut_inside_a_module_moves_to_a_class_boundary_that_saves_a_setup() -> None:
    # 2 workers: the first chunk wants about a quarter of the time, i.e. 5 tests; TestA ends
    # one test later, near enough to cut there instead, so TestB's setup runs on one worker.
    assert plan_chunks(two_classes(setup=0.3), 2)[0] == list(range(6))
    # Not timed yet: any class edge may hold a setup.
    assert plan_chunks(two_classes(setup=None), 2)[0] == list(range(6))


def test_a_cut_stays_put_where_the_next_class_has_no_setup() -> None:
    # Timed, and TestB's first test takes no longer than the rest: moving the cut to TestA's end
    # would save nothing, and would part two classes that may run in sequence serially.
    first = plan_chunks(two_classes(setup=0.0), 2)[0]
    assert first != list(range(6))
    assert len(first) == 5


def fast_then_slow() -> list[ItemInfo]:
    return [ItemInfo(f"test_a.py::test_fast[{n}]", 0.01) for n in range(100)] + [
        ItemInfo(f"test_b.py::test_slow[{n}]", 1.5 + n * 0.1) for n in range(3)
    ]


def test_the_longest_mode_hands_the_longest_work_out_first() -> None:
    chunks = plan_chunks(fast_then_slow(), 2, dist="longest")
    first_of_each = [chunk[0] for chunk in chunks]
    slow_positions = [first_of_each.index(index) for index in (100, 101, 102)]
    assert max(slow_positions) < len(chunks) - 1, "no slow test is left for the end"
    assert chunks[0] == [102], "the longest test starts first"


@pytest.mark.parametrize("dist", ["load", "module", "class", "group"])
def test_durations_size_the_chunks_but_keep_collection_order(dist: str) -> None:
    # The workers take the chunks in this order: each then runs its tests in collection order.
    items = [*fast_then_slow(), ItemInfo("test_c.py::test_last", 0.01)]
    chunks = plan_chunks(items, 2, dist=dist)
    assert [index for chunk in chunks for index in chunk] == list(range(len(items)))


def test_no_durations_keeps_collection_order() -> None:
    chunks = plan_chunks(suite(4, 10), 2)
    assert [index for chunk in chunks for index in chunk] == list(range(40))


def test_group_mode_keeps_collection_order_between_groups_and_loose_tests() -> None:
    items = [
        ItemInfo("test_a.py::test_1"),
        ItemInfo("test_b.py::test_2", group="db"),
        ItemInfo("test_c.py::test_3"),
        ItemInfo("test_d.py::test_4", group="db"),
    ]
    assert plan_chunks(items, 2, dist="group") == [[0], [1, 3], [2]]


def test_new_tests_are_estimated_from_the_known_ones() -> None:
    items = [ItemInfo("a::t1", 1.0), ItemInfo("a::t2", 3.0), ItemInfo("a::new")]
    assert estimates(items) == [1.0, 3.0, 2.0]
    assert estimates([ItemInfo("a::new")]) == [DEFAULT_SECONDS]


def test_durations_known_floor_the_chunk_time() -> None:
    # 20 s of 1 ms tests after a module setup of 1 s: no chunk is planned below
    # MIN_CHUNK_SECONDS (the last takes the rest); without the setup, the floor is lower.
    chunks = plan_chunks(with_setups(1, 20000, 0.001, 1.0), 2)
    assert all(len(chunk) * 0.001 >= MIN_CHUNK_SECONDS * 0.99 for chunk in chunks[:-1])
    chunks = plan_chunks(suite(1, 20000, 0.001), 2)
    assert min(len(chunk) for chunk in chunks[:-1]) * 0.001 < MIN_CHUNK_SECONDS / 2
    floor = MIN_CHUNK_SECONDS / FREE_UNIT_FLOOR_DIVISOR
    assert all(len(chunk) * 0.001 >= floor * 0.99 for chunk in chunks[:-1])


def test_a_short_run_still_gets_several_chunks_per_worker() -> None:
    # 1 s of work: a floor of MIN_CHUNK_SECONDS would leave 5 chunks for 2 workers, and the
    # run would wait up to 0.2 s for the last; the floor shrinks to keep the tail short.
    items = with_setups(1, 1000, 0.001, 0.1)
    chunks = plan_chunks(items, 2)
    tail = max(len(chunk) for chunk in chunks[-3:]) * 0.001
    assert tail <= sum(estimates(items)) / (2 * TAIL_CHUNKS_PER_WORKER) + 0.001


def test_units_without_a_setup_end_in_finer_chunks() -> None:
    # 1 s of equal tests in modules of 0.05 s: a cut costs no setup, so the last chunks are cut
    # FREE_UNIT_FLOOR_DIVISOR times finer than where each module's first test carries one.
    chunks = plan_chunks(suite(20, 50, 0.001), 2)
    assert covers_each_once(chunks, 1000)
    coarse = 1.0 / (2 * TAIL_CHUNKS_PER_WORKER)
    tail = max(len(chunk) for chunk in chunks[-3:]) * 0.001
    assert tail <= coarse / FREE_UNIT_FLOOR_DIVISOR * (1 + UNIT_SLACK) + 0.001
    assert tail < coarse / 2

    items = with_setups(20, 50, 0.001, 0.01)
    chunks = plan_chunks(items, 2)
    assert covers_each_once(chunks, 1000)
    assert_cut_no_finer_than_the_floor(items, chunks)


def test_a_class_setup_keeps_its_module_from_fine_chunks() -> None:
    # Modules of two classes of 25 equal tests; the second class's first test also sets up a
    # class fixture: cutting the module costs that setup again, so no fine chunks.
    items = [
        ItemInfo(f"test_m{m}.py::Test{k}::test_t[{t}]", 0.011 if (k, t) == (1, 0) else 0.001)
        for m in range(20)
        for k in range(2)
        for t in range(25)
    ]
    chunks = plan_chunks(items, 2)
    assert covers_each_once(chunks, len(items))
    assert_cut_no_finer_than_the_floor(items, chunks)


@pytest.mark.parametrize(("dist", "expected"), [("module", 3), ("class", 4)])
def test_module_and_class_modes_keep_units_whole(dist: str, expected: int) -> None:
    items = [
        ItemInfo("test_a.py::test_1"),
        ItemInfo("test_a.py::TestK::test_2"),
        ItemInfo("test_a.py::TestK::test_3"),
        ItemInfo("test_b.py::test_4"),
        ItemInfo("test_c.py::test_5"),
    ]
    chunks = plan_chunks(items, 2, dist=dist)
    assert len(chunks) == expected
    assert [1, 2] in chunks or [0, 1, 2] in chunks


def test_group_mode_gathers_each_group_even_when_apart() -> None:
    items = [
        ItemInfo("test_a.py::test_1", group="db"),
        ItemInfo("test_a.py::test_2"),
        ItemInfo("test_b.py::test_3", group="db"),
        ItemInfo("test_c.py::test_4", group="net"),
    ]
    grouped = units(items, "group")
    assert [0, 2] in grouped and [3] in grouped
    assert [0, 2] in plan_chunks(items, 2, dist="group")


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown distribution mode"):
        plan_chunks(suite(1, 2), 2, dist="random")


def test_items_asked_for_first_go_out_first_whatever_their_duration() -> None:
    items = [ItemInfo(f"t.py::test_{n}", seconds=1.0 + n) for n in range(6)]
    items[1] = items[1]._replace(first=True)
    items[4] = items[4]._replace(first=True)
    chunks = plan_chunks(items, workers=2)
    assert chunks[:2] == [[1], [4]]
    assert sorted(index for chunk in chunks for index in chunk) == list(range(6))


@pytest.mark.parametrize("dist", ["module", "class"])
def test_scope_modes_keep_an_interleaved_module_on_one_chunk(dist: str) -> None:
    order = ["a.py::test_1", "b.py::test_1", "a.py::test_2", "b.py::test_2", "a.py::test_3"]
    chunks = plan_chunks([ItemInfo(nodeid) for nodeid in order], workers=2, dist=dist)
    assert sorted(chunks) == [[0, 2, 4], [1, 3]]


def tied_suite() -> list[ItemInfo]:
    """Two modules of 20 tests; test_b.py's 15th test depends on test_a.py's 3rd one."""
    items = suite(2, 20, 0.01)
    tie = items[2].nodeid
    items[2] = items[2]._replace(tie=tie)
    items[35] = items[35]._replace(tie=tie)
    return items


def worker_of(chunks: list[list[int]], index: int) -> list[int]:
    return next(chunk for chunk in chunks if index in chunk)


@pytest.mark.parametrize("dist", ["load", "longest", "module", "class", "group"])
@pytest.mark.parametrize("chunksize", [None, 1, 7])
def test_tied_items_share_a_chunk_in_order_in_every_mode(dist: str, chunksize: int | None) -> None:
    items = tied_suite()
    chunks = plan_chunks(items, 2, chunksize, dist)
    assert covers_each_once(chunks, len(items))
    chunk = worker_of(chunks, 2)
    assert 35 in chunk
    assert chunk.index(2) < chunk.index(35)


def test_a_tie_keeps_its_modules_whole_and_leaves_the_rest_divisible() -> None:
    items = tied_suite() + suite(1, 20, 0.01)
    items[40:] = [item._replace(nodeid=item.nodeid.replace("m0", "m9")) for item in items[40:]]
    chunks = plan_chunks(items, 2, 5)
    assert worker_of(chunks, 2) == list(range(40))
    assert [chunk for chunk in chunks if chunk[0] >= 40] == [
        [40, 41, 42, 43, 44],
        *([n, n + 1, n + 2, n + 3, n + 4] for n in range(45, 60, 5)),
    ]


def test_a_tied_item_asked_for_first_stays_with_its_tie() -> None:
    items = tied_suite()
    items[35] = items[35]._replace(first=True)
    items[10] = items[10]._replace(first=True)
    chunks = plan_chunks(items, 2)
    assert chunks[0] == [10]
    assert 2 in worker_of(chunks, 35)
