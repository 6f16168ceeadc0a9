"""How fast the simulator starts and serves pages, at 100,000 downloads, over loopback.

Start-up is timed in-process (generating the dataset) and as a separate process
(until it listens). Throughput is pages of per_page=100 per second from a client
in this process against the simulator in another, sequentially and with 4
concurrent clients; each figure is the median of a few fixed-length runs.

    .venv/bin/python benchmarks/simulator_bench.py [--downloads N] [--runs R] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vms_simulator import SimulatorConfig, create_app  # noqa: E402

PER_PAGE = 100
HEADERS = {"Authorization": "Bearer demo", "Accept": "application/json"}


def query(page: int) -> dict[str, str]:
    """Page ``page`` of a window that holds every download."""
    return {"per_page": str(PER_PAGE), "page": str(page), "from": "2000-01-01", "to": "2100-01-01"}


def startup_in_process(downloads: int, runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        create_app(SimulatorConfig(downloads=downloads))
        times.append(time.perf_counter() - began)
    return statistics.median(times)


async def start_server(downloads: int) -> tuple[asyncio.subprocess.Process, str, float]:
    began = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vms_simulator", "--listen", "127.0.0.1:0",
        "--downloads", str(downloads), stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    url = line.decode().split()[4]
    return process, url, time.perf_counter() - began


async def pages_per_second(
    http: aiohttp.ClientSession, url: str, last_page: int, clients: int, seconds: float
) -> float:
    pages = itertools.cycle(range(1, last_page + 1))
    deadline = time.perf_counter() + seconds
    served = 0

    async def client() -> None:
        nonlocal served
        while time.perf_counter() < deadline:
            async with http.get(url, params=query(next(pages)), headers=HEADERS) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")
            served += 1

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return served / (time.perf_counter() - began)


async def main(downloads: int, runs: int, seconds: float) -> None:
    print(f"simulator benchmark: {downloads:,} downloads, per_page={PER_PAGE}, median of {runs}")
    print(f"  start-up, dataset in-process:   {startup_in_process(downloads, runs):6.2f} s")
    process, base, ready = await start_server(downloads)
    try:
        print(f"  start-up, process until listening: {ready:4.2f} s")
        url = base + "/api/v1/users/downloads"
        async with aiohttp.ClientSession() as http:
            async with http.get(url, params=query(1), headers=HEADERS) as response:
                last_page = (await response.json())["meta"]["last_page"]
            for clients in (1, 4):
                rates = [
                    await pages_per_second(http, url, last_page, clients, seconds)
                    for _ in range(runs)
                ]
                label = "sequential" if clients == 1 else f"{clients} concurrent clients"
                print(
                    f"  pages/s, {label + ':':24} {statistics.median(rates):7.0f}"
                    f"  (runs: {', '.join(f'{r:.0f}' for r in rates)})"
                )
    finally:
        process.terminate()
        await process.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--downloads", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one run")
    args = parser.parse_args()
    asyncio.run(main(args.downloads, args.runs, args.seconds))
