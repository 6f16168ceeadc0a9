"""A fast page server for the benchmarks: N downloads shaped like the API sample, pre-rendered.

    .venv/bin/python benchmarks/pages.py --downloads 100000 [--per-page 100] [--odd-rate 0.002]

Pages are rendered once by the simulator's renderer (PHP-style JSON, Cyrillic
names as ``\\uXXXX``, a few odd items) and then served from memory under any
path ending in ``/api/v1/users/downloads``, whatever the ``from``/``to``, so
that serving is never the bottleneck. Prints one JSON line: the URL and the
truth (counts by label set as the exporter documents them, raw statuses).
``GET /-/requests`` answers the number of list requests served so far.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from exporter.vms.models import InvalidItem, parse_download  # noqa: E402
from vms_simulator.config import SimulatorConfig  # noqa: E402
from vms_simulator.dataset import Dataset  # noqa: E402
from vms_simulator.render import Renderer  # noqa: E402

HISTORY = 20 * 3600.0  # every download is created well within the exporter's 24 h lookback


def render(downloads: int, per_page: int, odd_rate: float, seed: int) -> tuple[list[bytes], float]:
    """Every page of a static window of ``downloads`` items, and the instant they describe."""
    config = SimulatorConfig(
        downloads=downloads,
        seed=seed,
        arrival_interval=0,
        history=HISTORY,
        server_timezone="UTC",
    )
    now = time.time()
    dataset = Dataset(config, now)
    renderer = Renderer(dataset, config)
    window = dataset.window(0, now + 3600)
    rng = random.Random(seed)
    last_page = max(1, math.ceil(len(window) / per_page))
    pages = [
        renderer.page(window, number, per_page, now, odd=lambda: rng.random() < odd_rate)
        for number in range(1, last_page + 1)
    ]
    return pages, now


def truth(pages: list[bytes]) -> dict[str, Any]:
    """What a correct exporter must report, read with stdlib json and the documented rules."""
    labels: Counter[str] = Counter()
    raw_status: Counter[str] = Counter()
    invalid: Counter[str] = Counter()
    ids: set[str] = set()
    total = 0
    for body in pages:
        page = json.loads(body)
        total = page["meta"]["total"]
        for item in page["data"]:
            raw_status[str(item.get("status"))] += 1
            try:
                download = parse_download(item)
            except InvalidItem as exc:
                invalid[exc.reason] += 1
                continue
            if download.id not in ids:
                ids.add(download.id)
                labels[f"{download.status}|{download.stream_type}|{download.file_exists}"] += 1
    return {
        "total": total,
        "last_page": len(pages),
        "labels": dict(labels),
        "raw_status": dict(raw_status),
        "invalid": dict(invalid),
        "bytes": sum(len(p) for p in pages),
    }


def make_app(pages: list[bytes], per_page: int) -> web.Application:
    served = [0]
    empty = json.dumps(
        {"data": [], "meta": {"last_page": len(pages), "per_page": per_page, "total": 0}}
    ).encode()

    async def listing(request: web.Request) -> web.Response:
        if not request.path.endswith("/api/v1/users/downloads"):
            raise web.HTTPNotFound()
        served[0] += 1
        number = int(request.query.get("page", "1"))
        body = pages[number - 1] if 1 <= number <= len(pages) else empty
        return web.Response(body=body, content_type="application/json")

    async def requests(request: web.Request) -> web.Response:
        return web.json_response({"requests": served[0]})

    app = web.Application()
    app.router.add_get("/-/requests", requests)
    app.router.add_get("/{tail:.*}", listing)
    return app


async def main(args: argparse.Namespace) -> None:
    began = time.perf_counter()
    pages, now = render(args.downloads, args.per_page, args.odd_rate, args.seed)
    facts = truth(pages)
    runner = web.AppRunner(make_app(pages, args.per_page), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    facts.update(url=f"http://{host}:{port}", now=now, ready_s=time.perf_counter() - began)
    print(json.dumps(facts), flush=True)
    try:
        await asyncio.sleep(args.lifetime)  # bounded: the parent normally ends it first
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--downloads", type=int, default=100_000)
    parser.add_argument("--per-page", type=int, default=100)
    parser.add_argument("--odd-rate", type=float, default=0.002)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lifetime", type=float, default=3600.0, help="seconds before it quits")
    asyncio.run(main(parser.parse_args()))
