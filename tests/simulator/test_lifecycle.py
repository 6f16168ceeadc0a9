"""A living dataset: what moving the clock does, seeds, and size."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from vms_simulator import ManualClock, SimulatorConfig, start_simulator

from .helpers import AUTH, EVERYTHING, LIST, START, Start, fetch, fetch_all, set_faults

IN_PROGRESS = "in progress"


def epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def by_id(items: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {item["id"]: item for item in items}


async def test_an_hour_later_downloads_arrived_finished_and_vanished(
    http: aiohttp.ClientSession, simulate: Start, clock: ManualClock
) -> None:
    sim = await simulate(downloads=2000)
    before = by_id(await fetch_all(http, sim))

    clock.advance(3600)
    after = by_id(await fetch_all(http, sim))

    new = set(after) - set(before)
    assert set(before) < set(after)
    assert 1000 < len(new) < 1900  # one every 2.5 s on average
    assert min(new) > max(before)
    assert all(START < epoch(after[i]["created_at"]) <= START + 3600 for i in new)

    finished = [i for i in before if before[i]["status"] == IN_PROGRESS != after[i]["status"]]
    vanished = [i for i in before if before[i]["is_file_exists"] and not after[i]["is_file_exists"]]
    assert finished
    assert vanished
    for i in finished + vanished:
        assert START < epoch(after[i]["updated_at"]) <= START + 3600
    assert all(
        after[i]["status"] == "completed" for i in vanished if before[i]["status"] != IN_PROGRESS
    )
    for i, old in before.items():
        assert after[i]["updated_at"] >= old["updated_at"]
        if old["status"] != IN_PROGRESS:
            assert after[i]["status"] == old["status"]
        if after[i]["updated_at"] == old["updated_at"]:
            assert after[i] == old


async def test_a_demo_polling_every_5s_sees_activity_within_a_minute(
    http: aiohttp.ClientSession, simulate: Start, clock: ManualClock
) -> None:
    sim = await simulate(downloads=1000)
    _, first = await fetch(http, sim, {"per_page": "5000"})
    seen = by_id(first["data"])
    created = finished = 0
    for _ in range(12):
        clock.advance(5)
        _, body = await fetch(http, sim, {"per_page": "5000"})
        for item in body["data"]:
            old = seen.get(item["id"])
            created += old is None
            finished += item["status"] != IN_PROGRESS and (
                old is None or old["status"] == IN_PROGRESS
            )
            seen[item["id"]] = item

    assert created >= 10
    assert finished >= 1


async def test_some_exports_are_stuck_for_hours(
    http: aiohttp.ClientSession, simulate: Start
) -> None:
    sim = await simulate(downloads=1000)

    items = await fetch_all(http, sim)

    stuck = [
        i for i in items if i["status"] == IN_PROGRESS and epoch(i["created_at"]) < START - 3 * 3600
    ]
    assert stuck


async def test_fail_new_exports_fails_what_is_created_while_on(
    http: aiohttp.ClientSession, simulate: Start, clock: ManualClock
) -> None:
    sim = await simulate(downloads=0)
    clock.advance(600)
    await set_faults(http, sim, fail_new_exports=True)
    switched_on = clock()
    clock.advance(600)
    await set_faults(http, sim, fail_new_exports=False)
    switched_off = clock()
    clock.advance(1200)

    items = await fetch_all(http, sim)

    def statuses(start: float, end: float) -> list[str]:
        return [i["status"] for i in items if start < epoch(i["created_at"]) <= end]

    assert set(statuses(START, switched_on)) > {"completed"}
    assert set(statuses(switched_on, switched_off)) == {"failed"}
    assert len(statuses(switched_on, switched_off)) > 100
    assert "completed" in statuses(switched_off, clock())


async def test_a_seed_decides_the_data(http: aiohttp.ClientSession, clock: ManualClock) -> None:
    async def body(seed: int) -> bytes:
        sim = await start_simulator(SimulatorConfig(downloads=300, seed=seed), clock=clock)
        query = {"per_page": "1000", "page": "1", **EVERYTHING}
        try:
            async with http.get(sim.url + LIST, params=query, headers=AUTH) as response:
                return await response.read()
        finally:
            await sim.close()

    first = await body(7)
    assert await body(7) == first
    assert await body(8) != first


async def test_100k_downloads_start_within_seconds(http: aiohttp.ClientSession) -> None:
    began = time.perf_counter()
    sim = await start_simulator(SimulatorConfig(downloads=100_000), clock=ManualClock(START))
    started = time.perf_counter() - began
    try:
        day = {"from": "2024-03-09 15:00:00", "to": "2024-03-10 15:00:00"}
        began = time.perf_counter()
        status, body = await fetch(http, sim, {**day, "page": "300"})
        page_time = time.perf_counter() - began
    finally:
        await sim.close()

    print(
        f"100,000 downloads: start-up {started:.2f} s, one page of 100 in {page_time * 1000:.1f} ms"
    )
    assert started < 15
    assert status == 200
    assert 45_000 < body["meta"]["total"] < 55_000  # a 24 h window sees about half
    assert len(body["data"]) == 100
