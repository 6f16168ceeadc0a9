"""Reloading a running exporter in-process: what a reload keeps, changes and refuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from exporter.config import ConfigError, PollSettings, Settings, TargetSettings
from exporter.metrics import ExporterMetrics
from exporter.service import Service
from vms_simulator import RunningSimulator, SimulatorConfig, start_simulator


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    simulator = await start_simulator(SimulatorConfig(downloads=60, arrival_interval=0))
    yield simulator
    await simulator.close()


def settings(sim: RunningSimulator, *names: str, **target: Any) -> Settings:
    values: dict[str, Any] = {
        "url": sim.url,
        "token": SecretStr("demo"),
        "timezone": "Europe/Moscow",
        "request_timeout": 1,
        **target,
    }
    return Settings(
        poll=PollSettings(interval=30, timeout=5),
        targets={name: TargetSettings(**values) for name in names},
    )


def counted(metrics: ExporterMetrics, target: str) -> float:
    value = metrics.registry.get_sample_value(
        "vms_exporter_polls_total", {"target": target, "result": "success"}
    )
    return -1.0 if value is None else value


async def test_a_reload_keeps_same_identity_targets_and_swaps_the_rest(
    sim: RunningSimulator,
) -> None:
    metrics = ExporterMetrics(process_metrics=False)
    stop = asyncio.Event()
    pending: list[Settings] = []
    service = Service(settings(sim, "a", "b"), metrics, stop, load=lambda: pending.pop())
    for poller in service.pollers:
        await poller.poll_once()
    a, b = service.pollers
    memory = a._memory
    assert memory is not None and counted(metrics, "a") == 1

    # a: other per_page (same identity); b: another path (a new target); c: added
    new = settings(sim, "a", "c")
    new.targets["a"] = new.targets["a"].model_copy(update={"per_page": 7})
    pending.append(new)
    assert await service.reload() == []

    assert [p.name for p in service.pollers] == ["a", "c"]
    assert service.pollers[0] is a and a._memory is memory and a.target.per_page == 7
    assert counted(metrics, "a") == 1
    assert counted(metrics, "b") == -1  # its series are gone, every one of them
    assert not [
        sample.name
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.labels.get("target") == "b"
    ]
    outcome = await a.poll_once()
    assert outcome.result == "success" and counted(metrics, "a") == 2

    def invalid() -> Settings:
        raise ConfigError(["targets: no target configured"])

    service._load = invalid
    assert await service.reload() == ["targets: no target configured"]
    assert [p.name for p in service.pollers] == ["a", "c"]
    stop.set()
    await service.close()
    assert b.client._session is None  # the removed target's client was closed


async def test_a_changed_url_is_a_new_target_with_fresh_counters(sim: RunningSimulator) -> None:
    metrics = ExporterMetrics(process_metrics=False)
    pending = [settings(sim, "a", path="/api/v1/downloads")]
    service = Service(settings(sim, "a"), metrics, asyncio.Event(), load=lambda: pending.pop())
    old = service.pollers[0]
    await old.poll_once()
    assert await service.reload() == []
    assert service.pollers[0] is not old
    assert counted(metrics, "a") == 0
    await service.close()
