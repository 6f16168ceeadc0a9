"""Runs the real exporter pieces against the real simulator over loopback sockets."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from exporter.config import (
    MetricsSettings,
    PollSettings,
    Settings,
    StateSettings,
    TargetSettings,
    WebSettings,
)
from exporter.metrics import ExporterMetrics
from exporter.poller import TargetPoller
from exporter.records_store import store_for
from exporter.web import create_app, start_server
from exporter.webconfig import LiveWebConfig
from vms_simulator import ManualClock, RunningSimulator, SimulatorConfig, start_simulator

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and label set."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def parse_exemplars(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], dict[str, str]]:
    """The exemplar labels of every sample that has one, in an OpenMetrics exposition."""
    found: dict[tuple[str, frozenset[tuple[str, str]]], dict[str, str]] = {}
    for family in openmetrics_families(text):  # type: ignore[no-untyped-call]
        for sample in family.samples:
            if sample.exemplar is not None:
                key = (sample.name, frozenset(sample.labels.items()))
                found[key] = dict(sample.exemplar.labels)
    return found


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@dataclass
class Harness:
    simulator: RunningSimulator
    sim_config: SimulatorConfig
    clock: ManualClock
    metrics: ExporterMetrics
    poller: TargetPoller
    url: str
    session: aiohttp.ClientSession
    settings: Settings
    runner: web.AppRunner
    web_config: LiveWebConfig | None = None

    async def stop_exporter(self) -> None:
        await self.poller.close()
        await self.runner.cleanup()

    async def restart_exporter(self) -> None:
        """A new exporter process, as far as memory goes: new metrics, poller and server."""
        await self.stop_exporter()
        self.metrics, self.poller, self.runner, self.url = await _start_exporter(
            self.settings, self.clock, self.web_config
        )

    async def scrape(self, **headers: str) -> Samples:
        async with self.session.get(self.url + "/metrics", headers=headers) as response:
            assert response.status == 200
            return parse_metrics(await response.text())

    async def get(self, path: str, **headers: str) -> tuple[int, str, Any]:
        async with self.session.get(self.url + path, headers=headers) as response:
            return response.status, await response.text(), response.headers

    async def simulator_items(self, lookback: float = 86400) -> list[dict[str, Any]]:
        """The simulator's truth for the window, read independently of the exporter's client."""
        zone = ZoneInfo(self.sim_config.server_timezone)
        now = datetime.fromtimestamp(self.clock(), UTC)
        params = {
            "per_page": "1000",
            "from": (now - timedelta(days=3)).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
            "to": (now + timedelta(days=1)).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
        }
        items: list[dict[str, Any]] = []
        number = 1
        while True:
            params["page"] = str(number)
            async with self.session.get(
                self.simulator.url + "/api/v1/users/downloads",
                params=params,
                headers={"Authorization": "Bearer demo", "Accept": "application/json"},
            ) as response:
                body = await response.json()
            items.extend(body["data"])
            if number >= body["meta"]["last_page"]:
                break
            number += 1
        low, high = now.timestamp() - lookback, now.timestamp() + 3600
        return [
            i for i in items if low <= datetime.fromisoformat(i["created_at"]).timestamp() <= high
        ]

    async def sim_faults(self, **faults: Any) -> None:
        async with self.session.post(self.simulator.url + "/-/sim/faults", json=faults) as r:
            assert r.status == 200, await r.text()

    async def sim_stats(self) -> dict[str, Any]:
        async with self.session.get(self.simulator.url + "/-/sim/stats") as response:
            result: dict[str, Any] = await response.json()
            return result


@asynccontextmanager
async def exporter_on_simulator(
    sim: SimulatorConfig | None = None,
    *,
    start: float = datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp(),
    poll: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    web_config: Path | None = None,
    sim_ssl: ssl.SSLContext | None = None,
    web: dict[str, Any] | None = None,
    state_dir: Path | None = None,
    **target: Any,
) -> AsyncIterator[Harness]:
    """The exporter polling the simulator; with ``web_config`` behind that web config file,
    with ``sim_ssl`` the simulator speaking HTTPS."""
    sim = sim or SimulatorConfig(downloads=300, seed=7, arrival_interval=0)
    clock = ManualClock(start)
    simulator = await start_simulator(sim, clock=clock, ssl_context=sim_ssl)
    target_values: dict[str, Any] = {
        "url": simulator.url,
        "token": SecretStr("demo"),
        "timezone": sim.server_timezone,
        "per_page": 50,
        "request_timeout": 2,
    }
    target_values.update(target)
    settings = Settings(
        web=WebSettings(**(web or {})),
        poll=PollSettings(**{"interval": 60, "timeout": 10, **(poll or {})}),
        state=StateSettings(directory=state_dir),
        metrics=MetricsSettings(**(metrics or {})),
        targets={"main": TargetSettings(**target_values)},
    )
    live = LiveWebConfig.load(web_config) if web_config is not None else None
    exporter_metrics, poller, runner, url = await _start_exporter(settings, clock, live)
    session = aiohttp.ClientSession()
    h = Harness(
        simulator, sim, clock, exporter_metrics, poller, url, session, settings, runner, live
    )
    try:
        yield h
    finally:
        await session.close()
        await h.stop_exporter()
        await simulator.close()


async def _start_exporter(
    settings: Settings, clock: ManualClock, live: LiveWebConfig | None
) -> tuple[ExporterMetrics, TargetPoller, web.AppRunner, str]:
    exporter_metrics = ExporterMetrics(
        per_camera=settings.metrics.per_camera,
        max_staleness=settings.poll.max_staleness,
        clock=clock,
        process_metrics=False,
    )
    poller = TargetPoller(
        "main",
        settings.targets["main"],
        settings,
        exporter_metrics,
        clock=clock,
        store=store_for(
            settings.state.directory, "main", settings.targets["main"], settings.poll.lookback
        ),
    )
    context = live.ssl_context if live is not None else None
    app = create_app(
        exporter_metrics, [poller], live, clock=clock, external_url=settings.web.external_url
    )
    runner, addresses = await start_server(app, "127.0.0.1", 0, context)
    scheme = "https" if context is not None else "http"
    return exporter_metrics, poller, runner, f"{scheme}://{addresses[0]}"
