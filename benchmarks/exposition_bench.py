"""One /metrics exposition: prometheus-client's renderers against ours, both formats.

    .venv/bin/python benchmarks/exposition_bench.py [--targets 1 200] [--downloads 2000]
        [--rounds 9]

Builds the exporter's registry as one successful poll of each target leaves it
(window gauges of 2,000 downloads, event counters, histograms with exemplars),
then renders it, alternating the contenders, ``--rounds`` times each: the
Prometheus text format (0.0.4) and OpenMetrics (1.0.0), prometheus-client's
``generate_latest`` vs ``exporter.exposition.Renderer`` (whose prefix memo is
warm after the first scrape, as in production). Prints the median CPU ms per
exposition, which includes collecting the registry (``collect`` alone is shown
too), then serves it both ways (prometheus-client's aiohttp handler, rendering on
the event loop; the exporter's app, rendering in a thread) and prints the slowest
``/-/healthy`` answer while a scrape renders. Every render is checked byte for
byte against prometheus-client's; exits 1 when one differs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from exporter.exposition import Renderer
from exporter.httpserver import EXPOSITION_VERSION
from exporter.metrics import ExporterMetrics
from exporter.web import create_app, start_server
from tests.builders import busy_metrics


def cpu_ms(render: Callable[[Collector], object], registry: Collector) -> float:
    started = time.process_time()
    render(registry)
    return (time.process_time() - started) * 1000


def bench(targets: int, downloads: int, rounds: int) -> bool:
    registry = busy_metrics(targets, downloads).registry
    renderer = Renderer()
    formats: dict[str, tuple[Callable[[Collector], bytes], Callable[[Collector], bytes]]] = {
        "text 0.0.4": (generate_latest, renderer.text),
        "OpenMetrics 1.0.0": (generate_openmetrics, renderer.openmetrics),
    }
    identical = True
    for name, (reference, ours) in formats.items():
        expected = reference(registry)
        identical &= ours(registry) == expected  # also warms the memo
        times: dict[str, list[float]] = {"prometheus-client": [], "ours": [], "collect": []}
        for _ in range(rounds):
            times["prometheus-client"].append(cpu_ms(reference, registry))
            times["ours"].append(cpu_ms(ours, registry))
            times["collect"].append(cpu_ms(lambda r: list(r.collect()), registry))
        identical &= ours(registry) == expected
        ref, mine, collect = (statistics.median(t) for t in times.values())
        lines = expected.count(b"\n")
        print(
            f"| {targets} | {name} | {lines:,} | {len(expected) / 1e6:.2f} "
            f"| {ref:.1f} | {mine:.1f} | {ref / mine:.1f}x | {collect:.1f} |",
            flush=True,
        )
    return identical


async def worst_health(app: web.Application, metrics: ExporterMetrics, rounds: int) -> float:
    """Median over ``rounds`` scrapes of the slowest /-/healthy answered while one ran (ms)."""
    runner, addresses = await start_server(app, "127.0.0.1", 0)
    base = f"http://{addresses[0]}"
    worst: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:

            async def scrape() -> None:
                async with session.get(base + "/metrics") as response:
                    await response.read()

            for _ in range(rounds):
                metrics.version += 1  # new data: the scrape renders
                scraping = asyncio.create_task(scrape())
                slowest = 0.0
                while not scraping.done():
                    started = time.perf_counter()
                    async with session.get(base + "/-/healthy") as health:
                        await health.read()
                    slowest = max(slowest, time.perf_counter() - started)
                await scraping
                worst.append(slowest * 1000)
    finally:
        await runner.cleanup()
    return statistics.median(worst)


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy.\n")


async def stalls(targets: int, downloads: int, rounds: int) -> None:
    metrics = busy_metrics(targets, downloads)
    reference = web.Application()
    reference[EXPOSITION_VERSION] = metrics.exposition_version
    reference.router.add_get("/-/healthy", healthy)
    reference.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
    before = await worst_health(reference, metrics, rounds)
    after = await worst_health(create_app(metrics, []), metrics, rounds)
    print(
        f"{targets} targets: slowest /-/healthy during a text scrape (median of {rounds}): "
        f"{before:.0f} ms with prometheus-client's handler on the loop, {after:.0f} ms ours",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[1, 200])
    parser.add_argument("--downloads", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    print(f"{args.downloads} downloads per target, median CPU ms of {args.rounds} rounds")
    print(
        "| targets | format | lines | MB | prometheus-client ms | ours ms | speed-up | collect ms |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    identical = True
    for targets in args.targets:
        identical &= bench(targets, args.downloads, args.rounds)
    for targets in args.targets:
        asyncio.run(stalls(targets, args.downloads, args.rounds))
    print("identical to prometheus-client" if identical else "DIFFERENT from prometheus-client")
    sys.exit(0 if identical else 1)


if __name__ == "__main__":
    main()
