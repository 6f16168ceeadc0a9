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
too). Then a child process serves the registry both ways (prometheus-client's
aiohttp handler, rendering on the event loop; the exporter's app, rendering in a
thread), with new data every 20 ms so that every scrape renders, and this one
prints the slowest ``/-/healthy`` answer while a scrape is in flight. Every
render is checked byte for byte against prometheus-client's; exits 1 when one
differs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


async def serve_both(targets: int, downloads: int) -> None:
    """The child: the registry behind prometheus-client's handler and behind ours, on two
    ports (printed as JSON), with new data every 20 ms so that every scrape renders."""
    metrics = busy_metrics(targets, downloads)
    reference = web.Application()
    reference.router.add_get("/-/healthy", healthy)
    reference.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
    reference[EXPOSITION_VERSION] = metrics.exposition_version
    urls = {}
    for name, app in (("prometheus-client", reference), ("ours", create_app(metrics, []))):
        _, addresses = await start_server(app, "127.0.0.1", 0)
        urls[name] = f"http://{addresses[0]}"
    print(json.dumps(urls), flush=True)
    while True:
        metrics.version += 1
        await asyncio.sleep(0.02)


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy.\n")


async def slowest_health(session: aiohttp.ClientSession, base: str) -> float:
    """The slowest /-/healthy answer (ms) while one scrape of /metrics is in flight."""

    async def scrape() -> None:
        async with session.get(base + "/metrics") as response:
            await response.read()

    scraping = asyncio.create_task(scrape())
    slowest = 0.0
    while not scraping.done():
        started = time.perf_counter()
        async with session.get(base + "/-/healthy") as health:
            await health.read()
        slowest = max(slowest, time.perf_counter() - started)
    await scraping
    return slowest * 1000


async def stalls(targets: int, downloads: int, rounds: int) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", str(targets), str(downloads),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        urls: dict[str, str] = json.loads(await asyncio.wait_for(child.stdout.readline(), 300))
        worst: dict[str, list[float]] = {name: [] for name in urls}
        async with aiohttp.ClientSession() as session:
            for _ in range(rounds):
                for name, base in urls.items():
                    worst[name].append(await slowest_health(session, base))
    finally:
        child.kill()
        await child.wait()
    before, after = (statistics.median(worst[name]) for name in urls)
    print(
        f"{targets} targets: slowest /-/healthy during a scrape (exporter in its own process, "
        f"median of {rounds}): {before:.0f} ms with prometheus-client's handler on the loop, "
        f"{after:.0f} ms ours",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[1, 200])
    parser.add_argument("--downloads", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--serve", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_both(*args.serve))
        return
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
