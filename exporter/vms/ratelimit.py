"""Client-side cap on requests per second to one VMS (``max_rps``): a smooth pacer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class RateLimiter:
    """Requests start at least ``1 / max_rps`` seconds apart, one at a time; 0 means no cap.

    No burst is allowed (a bucket of one): a sliding window of ``max_rps`` per
    second lets ``max_rps`` requests leave at once and as many again a second
    later, which a server sees as up to twice the cap within one second. Spaced
    evenly, any one-second window at the server holds at most ``max_rps`` + 1
    requests, the one extra being the allowance for network jitter.
    """

    def __init__(
        self,
        max_rps: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._spacing = 1.0 / max_rps if max_rps else 0.0
        self._next = float("-inf")
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until this request may start; callers leave in the order they came."""
        if not self._spacing:
            return
        async with self._lock:
            wait = self._next - self._clock()
            if wait > 0:
                await self._sleep(wait)
            self._next = max(self._clock(), self._next) + self._spacing
