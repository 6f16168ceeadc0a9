"""Client-side cap on requests per second to one VMS (``max_rps``)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable


class RateLimiter:
    """At most ``max_rps`` requests in any sliding one-second window; 0 means no cap.

    A fractional cap (0.5) is a window of ``1 / max_rps`` seconds per request.
    """

    def __init__(
        self,
        max_rps: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._burst = max(1, math.floor(max_rps)) if max_rps else 0
        self._period = 1.0 if max_rps >= 1 else (1.0 / max_rps if max_rps else 0.0)
        self._sent: deque[float] = deque()
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if not self._burst:
            return
        async with self._lock:
            while True:
                now = self._clock()
                while self._sent and now - self._sent[0] >= self._period:
                    self._sent.popleft()
                if len(self._sent) < self._burst:
                    self._sent.append(now)
                    return
                await self._sleep(self._period - (now - self._sent[0]))
