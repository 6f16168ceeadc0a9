"""Requests a test makes of the simulator, and the constants they share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp

from vms_simulator import RunningSimulator

START = datetime(2024, 3, 10, 12, 0, tzinfo=UTC).timestamp()
"""When the simulator starts, in every test: 15:00 in Moscow."""
LIST = "/api/v1/users/downloads"
AUTH = {"Authorization": "Bearer demo", "Accept": "application/json"}
EVERYTHING = {"from": "2000-01-01", "to": "2100-01-01"}

Start = Callable[..., Awaitable[RunningSimulator]]


async def fetch(
    http: aiohttp.ClientSession,
    sim: RunningSimulator,
    params: dict[str, str] | None = None,
    *,
    headers: dict[str, str] | None = None,
    path: str = LIST,
) -> tuple[int, Any]:
    """GET a path; the status and the decoded JSON body."""
    query = {"per_page": "100", "page": "1", **EVERYTHING, **(params or {})}
    async with http.get(
        sim.url + path, params=query, headers=AUTH if headers is None else headers
    ) as response:
        return response.status, await response.json(content_type=None)


async def fetch_all(
    http: aiohttp.ClientSession, sim: RunningSimulator, params: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every item of a window, page by page."""
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        status, body = await fetch(http, sim, {**(params or {}), "page": str(page)})
        assert status == 200
        items.extend(body["data"])
        if page >= body["meta"]["last_page"]:
            return items
        page += 1


async def login(
    http: aiohttp.ClientSession, sim: RunningSimulator, **fields: object
) -> tuple[int, Any]:
    body = {"login": "exporter@example.com", "password": "demo", "session_id": None, **fields}
    async with http.post(sim.url + "/api/v1/token", json=body) as response:
        return response.status, await response.json()


async def set_faults(
    http: aiohttp.ClientSession, sim: RunningSimulator, **faults: object
) -> dict[str, Any]:
    async with http.post(sim.url + "/-/sim/faults", json=faults) as response:
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result


async def stats(http: aiohttp.ClientSession, sim: RunningSimulator) -> dict[str, Any]:
    async with http.get(sim.url + "/-/sim/stats") as response:
        result: dict[str, Any] = await response.json()
        return result
