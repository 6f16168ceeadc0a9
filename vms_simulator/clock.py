"""Where the simulator takes the time from: the wall clock, or one a test moves by hand."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Returns the current time as UTC epoch seconds. It must never go backwards."""


class WallClock:
    """The system clock, held still rather than stepping back (an NTP correction)."""

    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self) -> float:
        self._last = max(self._last, time.time())
        return self._last


class ManualClock:
    """A clock that stands still until told to move."""

    def __init__(self, start: float) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock must not go backwards")
        self._now += seconds
