"""The clock every deadline and duration of this package reads: the system's monotonic clock.

Data flow: ``monotonic()`` ─▶ ``time.clock_gettime(CLOCK_MONOTONIC)`` (``time.monotonic`` where
the platform has no ``clock_gettime``), the same in the controller and in every local worker, so
a start time a worker writes to the board is comparable with the controller's now.

**Why not ``time.monotonic``.**  Libraries that fake time for tests replace it: freezegun swaps
``time.monotonic`` and ``time.perf_counter`` for frozen ones, and rebinds every module attribute
that refers to the real ones, for every caller outside its ignore list.  A test that freezes
time for a whole module or session (an autouse fixture) then froze this package's clocks too:
slow-test notices and timeouts started late or never, and a ``Pool`` call's ``timeout=`` never
ran out.  Neither freezegun nor time-machine fakes ``clock_gettime`` of the monotonic clock.
"""

from __future__ import annotations

import time

if hasattr(time, "clock_gettime") and hasattr(time, "CLOCK_MONOTONIC"):
    _read_clock = time.clock_gettime
    _MONOTONIC = time.CLOCK_MONOTONIC

    def monotonic() -> float:
        """Seconds on the system's monotonic clock (a real one, whatever a test fakes)."""
        return _read_clock(_MONOTONIC)

else:  # pragma: no cover - platforms without clock_gettime (Windows)
    _time_monotonic = time.monotonic

    def monotonic() -> float:
        """Seconds on the system's monotonic clock."""
        return _time_monotonic()
