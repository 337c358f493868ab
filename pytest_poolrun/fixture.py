"""The ``pool`` fixture: a ready ``Pool`` for tests that need a parallel map.

(Placeholder: being written.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_poolrun.pool import Pool


def add_fixture_options(parser: pytest.Parser) -> None:
    """Options and ini keys of the ``pool`` fixture (called from the plugin's pytest_addoption)."""


@pytest.fixture
def pool() -> Iterator[Pool]:
    with Pool(2) as workers:
        yield workers
