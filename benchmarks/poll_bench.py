"""Measures whole polls of the exporter against the simulator on loopback.

    .venv/bin/python benchmarks/poll_bench.py [--downloads 5000] [--per-page 100] [--runs 5]

Prints, for the window the simulator holds: downloads kept, pages and requests
per poll, and the median / min / max poll duration over ``--runs`` polls, plus
the time to reconcile and aggregate (the pure core) for that window.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime

from pydantic import SecretStr

from exporter.config import PollSettings, Settings, TargetSettings
from exporter.core import aggregate, reconcile
from exporter.metrics import ExporterMetrics
from exporter.poller import TargetPoller
from exporter.vms.client import Window
from vms_simulator import SimulatorConfig, start_simulator


async def bench(downloads: int, per_page: int, concurrency: int, runs: int) -> None:
    sim_config = SimulatorConfig(downloads=downloads, seed=1, arrival_interval=0)
    began = time.perf_counter()
    simulator = await start_simulator(sim_config)
    print(f"simulator: {downloads} downloads, ready in {time.perf_counter() - began:.2f}s")
    target = TargetSettings(
        url=simulator.url,
        token=SecretStr("demo"),
        timezone=sim_config.server_timezone,
        per_page=per_page,
        concurrency=concurrency,
        request_timeout=30,
    )
    settings = Settings(poll=PollSettings(interval=600, timeout=120), targets={"bench": target})
    metrics = ExporterMetrics(process_metrics=False)
    poller = TargetPoller("bench", target, settings, metrics)

    def requests_so_far() -> float:
        value = metrics.registry.get_sample_value(
            "vms_exporter_api_requests_total", {"target": "bench", "code": "200"}
        )
        return value or 0.0

    durations = []
    per_poll_requests = []
    try:
        for _ in range(runs):
            before = requests_so_far()
            outcome = await poller.poll_once()
            assert outcome.result == "success", outcome.error
            durations.append(outcome.duration)
            per_poll_requests.append(requests_so_far() - before)
        window = await poller.client.fetch_window(
            Window.at(datetime.now(UTC), settings.poll.lookback, target.timezone)
        )
    finally:
        await poller.close()
        await simulator.close()
    items = window.downloads
    core_times = []
    for _ in range(runs):
        t = time.perf_counter()
        first = reconcile(None, items, poll_started=0, window_start=0, seen_at=1)
        second = reconcile(first.memory, items, poll_started=1, window_start=0, seen_at=2)
        aggregate(second.current)
        core_times.append(time.perf_counter() - t)
    print(
        f"window: {outcome.downloads} downloads kept, {outcome.pages} pages of {per_page}, "
        f"{statistics.median(per_poll_requests):.0f} requests per poll, concurrency {concurrency}"
    )
    print(
        f"poll duration over {runs} runs: median {statistics.median(durations):.3f}s "
        f"(min {min(durations):.3f}s, max {max(durations):.3f}s)"
    )
    core_ms = statistics.median(core_times) * 1000
    print(f"core (baseline + reconcile + aggregate) median {core_ms:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--downloads", type=int, default=5000)
    parser.add_argument("--per-page", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(bench(args.downloads, args.per_page, args.concurrency, args.runs))


if __name__ == "__main__":
    main()
