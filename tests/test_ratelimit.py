"""max_rps as the server sees it: arrival times recorded by a real loopback server."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiohttp import web
from pydantic import SecretStr

from exporter.config import TargetSettings
from exporter.vms.client import VmsClient, Window
from exporter.vms.ratelimit import RateLimiter
from tests.builders import T0, item, page

PAGES = 16


@pytest.fixture
async def recording_vms() -> AsyncIterator[tuple[str, list[float]]]:
    """A VMS of PAGES one-item pages that answers after a random delay and records arrivals."""
    arrivals: list[float] = []
    rng = random.Random(3)

    async def downloads(request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        await asyncio.sleep(rng.uniform(0, 0.15))  # jitter: answers overlap unevenly
        number = int(request.query["page"])
        body = page(
            [item(number, created=T0 - number)], page_no=number, last_page=PAGES, per_page=1
        )
        body["meta"]["total"] = PAGES
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/api/v1/users/downloads", downloads)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", arrivals
    await runner.cleanup()


def busiest_second(arrivals: list[float]) -> int:
    """The most arrivals within any half-open one-second window."""
    times = sorted(arrivals)
    return max(sum(1 for t in times[i:] if t - start < 1.0) for i, start in enumerate(times))


@pytest.mark.parametrize("max_rps", [5.0, 2.5])
async def test_no_second_at_the_server_holds_more_than_max_rps_plus_one(
    recording_vms: tuple[str, list[float]], max_rps: float
) -> None:
    url, arrivals = recording_vms
    target = TargetSettings(
        url=url, token=SecretStr("t"), per_page=1, concurrency=4, max_rps=max_rps
    )
    client = VmsClient("main", target)
    began = time.monotonic()
    try:
        result = await client.fetch_window(Window.at(datetime.fromtimestamp(T0, UTC), 86400, "UTC"))
    finally:
        await client.close()
    assert len(result.downloads) == PAGES
    assert len(arrivals) == PAGES
    assert busiest_second(arrivals) <= int(max_rps) + 1
    # paced, not merely slow: the whole poll took about (PAGES - 1) / max_rps
    elapsed = time.monotonic() - began
    assert (PAGES - 1) / max_rps - 0.05 <= elapsed <= (PAGES - 1) / max_rps + 2.0


async def test_waiters_leave_one_by_one_and_an_idle_pacer_lets_the_next_go_at_once() -> None:
    now = [100.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(4, clock=lambda: now[0], sleep=sleep)
    await asyncio.gather(*(limiter.acquire() for _ in range(4)))
    assert waits == [0.25, 0.25, 0.25]
    now[0] += 10
    await limiter.acquire()
    assert waits == [0.25, 0.25, 0.25]


async def test_zero_means_no_cap() -> None:
    limiter = RateLimiter(0, sleep=lambda s: pytest.fail("must not sleep"))
    for _ in range(100):
        await limiter.acquire()
