"""I/O-bound tests against a fake inventory service whose every call waits, like a network.

The ``warehouse`` fixture is module-scoped: it "boots" once per module in a serial run, and
once per worker that runs tests of this module in a parallel run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

# Each call to the fake service waits this long, like a round trip to a real one.
CALL_LATENCY_SECONDS = 0.08
# Booting the fake service, like starting a database container.
BOOT_SECONDS = 0.5


class FakeWarehouse:
    """An in-memory stock ledger that is slow on purpose."""

    def __init__(self) -> None:
        time.sleep(BOOT_SECONDS)
        self._stock: dict[str, int] = {}

    def _round_trip(self) -> None:
        time.sleep(CALL_LATENCY_SECONDS)

    def receive(self, sku: str, quantity: int) -> None:
        self._round_trip()
        self._stock[sku] = self._stock.get(sku, 0) + quantity

    def ship(self, sku: str, quantity: int) -> bool:
        self._round_trip()
        if self._stock.get(sku, 0) < quantity:
            return False
        self._stock[sku] -= quantity
        return True

    def level(self, sku: str) -> int:
        self._round_trip()
        return self._stock.get(sku, 0)


@pytest.fixture(scope="module")
def warehouse() -> Iterator[FakeWarehouse]:
    yield FakeWarehouse()


@pytest.mark.parametrize("sku", ["apple", "pear", "plum", "fig"])
def test_receive_then_level(warehouse: FakeWarehouse, sku: str) -> None:
    before = warehouse.level(sku)
    warehouse.receive(sku, 5)
    assert warehouse.level(sku) == before + 5


def test_ship_more_than_stocked_is_refused(warehouse: FakeWarehouse) -> None:
    warehouse.receive("kiwi", 2)
    assert not warehouse.ship("kiwi", 3)
    assert warehouse.level("kiwi") == 2


def test_ship_in_several_batches(warehouse: FakeWarehouse) -> None:
    warehouse.receive("lime", 6)
    assert all(warehouse.ship("lime", 1) for _ in range(4))
    assert warehouse.level("lime") == 2


def test_unknown_sku_has_no_stock(warehouse: FakeWarehouse) -> None:
    assert warehouse.level("durian") == 0
    assert not warehouse.ship("durian", 1)


def test_bulk_restock(warehouse: FakeWarehouse) -> None:
    for n in range(5):
        warehouse.receive(f"bulk-{n}", n)
    assert [warehouse.level(f"bulk-{n}") for n in range(5)] == list(range(5))
