"""Whole polls of the exporter against the raw floor, side by side, over loopback.

    .venv/bin/python benchmarks/poll_bench.py [--downloads 100000] [--per-page 100]
        [--concurrency 4] [--rounds 5] [--check-only]

A pre-rendered page server (``benchmarks/pages.py``) runs in its own process.
Each round runs, alternating, in fresh processes:

1. **floor**: bare aiohttp at the same concurrency, the fastest JSON decoder
   available, counting statuses in a loop — nothing else;
2. **exporter**: the real poller and /metrics server doing three full polls of
   the same window (the first is the baseline, the third is steady state),
   while this process scrapes its /metrics every 20 ms.

Prints a table of medians and the ratios exporter/floor, and checks in every
round that the exporter's ``vms_downloads`` equal the server's truth, that a
poll costs exactly ``ceil(total / per_page)`` requests, and that repeated
identical polls count no event. Exits 1 when a check fails. ``--check-only``
prints no figures (the CI smoke test runs it at a small N).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import resource
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCRAPE_EVERY = 0.02
POLL_END_MARGIN = (0.25, 0.05)
"""A scrape started this long before / after a poll ended counts as "at the end of the poll"."""


RATIOS = {
    "wall, first poll": ("exporter poll 1 wall s", "floor wall s"),
    "wall, steady state": ("exporter poll 3 wall s", "floor wall s"),
    "CPU, first poll (whole process)": (
        "exporter process CPU to end of poll 1 s",
        "floor process CPU s",
    ),
    "CPU, steady state (per poll vs fetch)": ("exporter poll 3 CPU s", "floor fetch CPU s"),
}
"""Ratio → (the exporter's figure, the floor's figure it is measured against)."""


def rusage() -> tuple[float, float]:
    """(CPU seconds of this process so far, peak RSS in MB)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


async def watch_loop(holds: list[float]) -> None:
    """Record the CPU time the loop spent between two 5 ms ticks (descheduling excluded)."""
    while True:
        cpu = time.thread_time()
        await asyncio.sleep(0.005)
        holds.append(time.thread_time() - cpu)


def fastest_loads() -> tuple[str, Callable[[bytes], Any]]:
    try:
        import orjson
    except ImportError:
        import json as stdlib

        return "json", stdlib.loads
    return "orjson", orjson.loads


async def floor(url: str, concurrency: int, per_page: int) -> dict[str, Any]:
    import aiohttp

    name, loads = fastest_loads()
    statuses: Counter[str] = Counter()
    requests = 0
    began, cpu_began = time.perf_counter(), time.process_time()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def get(number: int) -> Any:
            nonlocal requests
            params = {"per_page": str(per_page), "page": str(number), "from": "x", "to": "y"}
            async with session.get(url + "/api/v1/users/downloads", params=params) as response:
                body = await response.read()
            requests += 1
            page = loads(body)
            for item in page["data"]:
                statuses[str(item.get("status"))] += 1
            return page

        last_page = (await get(1))["meta"]["last_page"]
        numbers = iter(range(2, last_page + 1))

        async def worker() -> None:
            for number in numbers:
                await get(number)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    process_cpu, rss = rusage()
    return {
        "decoder": name,
        "wall": wall,
        "cpu": cpu,
        "process_cpu": process_cpu,
        "rss": rss,
        "requests": requests,
        "raw_status": dict(statuses),
    }


async def exporter(url: str, concurrency: int, per_page: int, polls: int) -> dict[str, Any]:
    from pydantic import SecretStr

    from exporter.config import PollSettings, Settings, TargetSettings
    from exporter.metrics import ExporterMetrics
    from exporter.poller import TargetPoller
    from exporter.web import create_app, start_server

    target = TargetSettings(
        url=url,
        token=SecretStr("bench"),
        per_page=per_page,
        concurrency=concurrency,
        request_timeout=60,
        max_pages=100_000,
    )
    poll = PollSettings(interval=900, timeout=600, full_resync=0)  # whole polls, every time
    settings = Settings(poll=poll, targets={"bench": target})
    metrics = ExporterMetrics()
    poller = TargetPoller("bench", target, settings, metrics)
    runner, addresses = await start_server(create_app(metrics, [poller]), "127.0.0.1", 0)
    gc.freeze()  # as serve() does once started
    print(json.dumps({"metrics": f"http://{addresses[0]}/metrics"}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # scraper ready

    def sample(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, {"target": "bench", **labels}) or 0.0

    def events() -> float:
        return sum(
            sample(name, **labels)
            for name, labels in [
                ("vms_downloads_created_total", {"stream_type": s})
                for s in ("high", "low", "unknown")
            ]
            + [("vms_downloads_finished_total", {"status": s}) for s in ("completed", "failed")]
        )

    holds: list[float] = []
    watcher = asyncio.create_task(watch_loop(holds))
    results = []
    for _ in range(polls):
        requests = sample("vms_exporter_api_requests_total", code="200")
        cpu = time.process_time()
        outcome = await poller.poll_once()
        results.append(
            {
                "result": outcome.result,
                "error": outcome.error,
                "wall": outcome.duration,
                "cpu": time.process_time() - cpu,
                "process_cpu": rusage()[0],
                "ended": time.time(),
                "requests": sample("vms_exporter_api_requests_total", code="200") - requests,
                "events": events(),
            }
        )
    watcher.cancel()
    labels: Counter[str] = Counter()
    for family in metrics.registry.collect():
        if family.name == "vms_downloads":
            for s in family.samples:
                key = f"{s.labels['status']}|{s.labels['stream_type']}|{s.labels['file_exists']}"
                labels[key] += int(s.value)
    result = {
        "polls": results,
        "labels": {k: v for k, v in labels.items() if v},
        "rss": rusage()[1],
        "hold": max(holds),
    }
    print(json.dumps(result), flush=True)
    # Measured once the scraper has stopped, so that it never delays a measured scrape.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # scraper done
    from prometheus_client import generate_latest

    scrape_cpu = []
    for _ in range(20):
        began = time.thread_time()
        generate_latest(metrics.registry)
        scrape_cpu.append(time.thread_time() - began)
    result["scrape_cpu"] = statistics.median(scrape_cpu)
    print(json.dumps({"scrape_cpu": result["scrape_cpu"]}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # quit
    await poller.close()
    await runner.cleanup()
    return result


async def child(role: str, *args: str) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    """Run one contender in a fresh process; scrape the exporter's /metrics meanwhile."""
    import aiohttp

    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, role, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        limit=2**24,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdin is not None
    scrapes: list[tuple[float, float]] = []
    if role == "exporter":
        metrics_url = json.loads(await asyncio.wait_for(process.stdout.readline(), 120))["metrics"]
        stop = asyncio.Event()

        async def scrape() -> None:
            async with aiohttp.ClientSession() as session:
                while not stop.is_set():
                    began = time.time()
                    async with session.get(metrics_url) as response:
                        await response.read()
                    scrapes.append((began, time.time() - began))
                    await asyncio.sleep(max(0.0, SCRAPE_EVERY - (time.time() - began)))

        scraper = asyncio.create_task(scrape())
        await asyncio.sleep(0.2)
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        line = await asyncio.wait_for(process.stdout.readline(), 1800)
        stop.set()
        await scraper
        process.stdin.write(b"scraper done\n")
        await process.stdin.drain()
        extra = await asyncio.wait_for(process.stdout.readline(), 120)
        process.stdin.write(b"quit\n")
        await process.stdin.drain()
    else:
        line = extra = await asyncio.wait_for(process.stdout.readline(), 1800)
    await asyncio.wait_for(process.wait(), 60)
    if not line or not extra:
        raise SystemExit(f"the {role} process failed (exit {process.returncode})")
    return {**json.loads(line), **json.loads(extra)}, scrapes


def check(round_no: int, truth: dict[str, Any], per_page: int, floor_r: dict[str, Any],
          exp: dict[str, Any]) -> list[str]:  # fmt: skip
    problems = []
    expected_requests = math.ceil(truth["total"] / per_page)
    if floor_r["raw_status"] != truth["raw_status"]:
        problems.append(f"round {round_no}: the floor counted {floor_r['raw_status']}")
    for number, poll in enumerate(exp["polls"], 1):
        if poll["result"] != "success":
            problems.append(f"round {round_no}: poll {number} {poll['result']}: {poll['error']}")
        if poll["requests"] != expected_requests:
            problems.append(
                f"round {round_no}: poll {number} made {poll['requests']:.0f} requests, "
                f"not {expected_requests}"
            )
        if number > 1 and poll["events"] != 0:
            problems.append(f"round {round_no}: an identical poll {number} counted events")
    if exp["labels"] != truth["labels"]:
        problems.append(f"round {round_no}: vms_downloads {exp['labels']} != {truth['labels']}")
    return problems


def worst_at_poll_ends(scrapes: list[tuple[float, float]], ends: list[float]) -> float:
    before, after = POLL_END_MARGIN
    near = [
        latency
        for began, latency in scrapes
        if any(end - before <= began <= end + after for end in ends)
    ]
    return max(near, default=float("nan"))


async def orchestrate(args: argparse.Namespace) -> int:
    server = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "benchmarks" / "pages.py"), "--downloads", str(args.downloads),
        "--per-page", str(args.per_page), stdout=asyncio.subprocess.PIPE, cwd=ROOT, limit=2**24,
    )  # fmt: skip
    assert server.stdout is not None
    try:
        truth = json.loads(await asyncio.wait_for(server.stdout.readline(), 600))
        url = truth["url"]
        common = [url, str(args.concurrency), str(args.per_page)]
        rows: list[dict[str, float]] = []
        problems: list[str] = []
        decoder = "?"
        for round_no in range(1, args.rounds + 1):
            floor_r, _ = await child("floor", *common)
            exp, scrapes = await child("exporter", *common)
            decoder = floor_r["decoder"]
            problems += check(round_no, truth, args.per_page, floor_r, exp)
            first, *_, steady = exp["polls"]
            rows.append(
                {
                    "floor wall s": floor_r["wall"],
                    "floor fetch CPU s": floor_r["cpu"],
                    "floor process CPU s": floor_r["process_cpu"],
                    "floor peak RSS MB": floor_r["rss"],
                    "exporter poll 1 wall s": first["wall"],
                    "exporter poll 3 wall s": steady["wall"],
                    "exporter poll 1 CPU s": first["cpu"],
                    "exporter poll 3 CPU s": steady["cpu"],
                    "exporter process CPU to end of poll 1 s": first["process_cpu"],
                    "exporter peak RSS after 3 polls MB": exp["rss"],
                    "requests per poll": steady["requests"],
                    "worst scrape ms": 1000 * max(lat for _, lat in scrapes),
                    "longest loop hold, CPU ms": 1000 * exp["hold"],
                    "worst scrape at poll ends ms": 1000
                    * worst_at_poll_ends(scrapes, [p["ended"] for p in exp["polls"]]),
                    "scrapes": len(scrapes),
                    "CPU of one uncached exposition, ms": 1000 * exp["scrape_cpu"],
                }
            )
    finally:
        server.terminate()
        await server.wait()
    for problem in problems:
        print("WRONG:", problem)
    if args.check_only:
        print(f"correct: {args.rounds} round(s) at N={args.downloads}" if not problems else "")
        return 1 if problems else 0
    median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    print(
        f"N={args.downloads:,} downloads, {truth['bytes'] / 1e6:.0f} MB of JSON in "
        f"{truth['last_page']} pages, per_page={args.per_page}, concurrency={args.concurrency}; "
        f"medians of {args.rounds} alternating rounds; floor decoder: {decoder}"
    )
    for key, value in median.items():
        print(f"  {key:42} {value:10.3f}")
    # Each round's ratio compares two runs seconds apart: the machine's drift
    # (shared hosts) cancels out better than in a ratio of the medians.
    ratios = {
        name: [row[mine] / row[floors] for row in rows] for name, (mine, floors) in RATIOS.items()
    }
    print(f"ratios exporter / floor (median of the {args.rounds} rounds' ratios, and their range):")
    for key, values in ratios.items():
        print(f"  {key:42} {statistics.median(values):10.2f}   {min(values):.2f}-{max(values):.2f}")
    return 1 if problems else 0


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("floor", "exporter"):
        role, url, concurrency, per_page = (
            sys.argv[1],
            sys.argv[2],
            int(sys.argv[3]),
            int(sys.argv[4]),
        )
        sys.path.insert(0, str(ROOT))
        if role == "floor":
            print(json.dumps(asyncio.run(floor(url, concurrency, per_page))), flush=True)
        else:
            logging.disable(logging.WARNING)  # the odd items are expected: no log line
            asyncio.run(exporter(url, concurrency, per_page, polls=3))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--downloads", type=int, default=100_000)
    parser.add_argument("--per-page", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--check-only", action="store_true", help="correctness only, no figures")
    sys.exit(asyncio.run(orchestrate(parser.parse_args())))


if __name__ == "__main__":
    main()
