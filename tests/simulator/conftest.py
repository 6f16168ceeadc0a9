"""Fixtures: a simulator on a free loopback port, a clock the test moves, an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from vms_simulator import ManualClock, RunningSimulator, SimulatorConfig, start_simulator

from .helpers import START, Start


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def simulate(clock: ManualClock) -> AsyncIterator[Start]:
    """Start simulators with SimulatorConfig overrides, on the test's clock."""
    running: list[RunningSimulator] = []

    async def start(**overrides: Any) -> RunningSimulator:
        config = SimulatorConfig(**{"downloads": 200, **overrides})
        sim = await start_simulator(config, clock=clock)
        running.append(sim)
        return sim

    yield start
    for sim in running:
        await sim.close()


@pytest.fixture
async def sim(simulate: Start) -> RunningSimulator:
    return await simulate()
