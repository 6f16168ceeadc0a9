"""Many targets in one exporter process: CPU share, memory, scrape latency, polls on time.

    .venv/bin/python benchmarks/many_targets_bench.py [--targets 200] [--downloads 2000]
        [--interval 60] [--duration 150] [--scrape-every 0.5]

One pre-rendered page server (``benchmarks/pages.py``) plays every VMS (each
target has its own URL prefix, so its own client and connections). The exporter
runs as it does in production (``serve()``: staggered polls, its /metrics) in a
child process for ``--duration`` seconds, while this process scrapes /metrics.
Prints the child's CPU share of one core (whole run and after the first
interval), peak RSS, the worst scrape, and whether every target's every poll
succeeded within ``poll.timeout`` with counts equal to the server's truth.
Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 45.0


async def child(url: str, targets: int, interval: float, duration: float) -> None:
    from pydantic import SecretStr

    from exporter.cli import serve
    from exporter.config import PollSettings, Settings, TargetSettings, WebSettings

    timeout = min(TIMEOUT, interval * 0.75)
    settings = Settings(
        web=WebSettings(listen_address="127.0.0.1:0"),
        poll=PollSettings(interval=interval, timeout=timeout, full_resync=0),  # full polls
        targets={
            f"t{i:03d}": TargetSettings(
                url=f"{url}/t{i:03d}",
                token=SecretStr("bench"),
                request_timeout=min(10, timeout / 2),
            )
            for i in range(targets)
        },
    )
    stop = asyncio.Event()
    marks: dict[str, float] = {}

    def announce(addresses: list[str]) -> None:
        print(json.dumps({"metrics": f"http://{addresses[0]}/metrics"}), flush=True)

    async def stop_later() -> None:
        await asyncio.sleep(interval)
        marks["after_first_interval"] = cpu()
        await asyncio.sleep(duration - interval)
        stop.set()

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    holds: list[float] = []
    steady_holds: list[float] = [0.0]

    async def watch_loop() -> None:
        """The CPU time the loop spent between two 5 ms ticks (descheduling excluded)."""
        while not stop.is_set():
            tick = time.thread_time()
            await asyncio.sleep(0.005)
            holds.append(time.thread_time() - tick)
            if "after_first_interval" in marks:
                steady_holds.append(holds[-1])

    began, cpu_began = time.monotonic(), cpu()
    timer = asyncio.create_task(stop_later())
    watcher = asyncio.create_task(watch_loop())
    code = await serve(settings, stop=stop, announce=announce)
    await timer
    await watcher
    wall = time.monotonic() - began
    print(
        json.dumps(
            {
                "code": code,
                "wall": wall,
                "cpu": cpu() - cpu_began,
                "cpu_after_first_interval": cpu() - marks["after_first_interval"],
                "steady_wall": duration - interval,
                "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "hold": max(holds),
                "steady_hold": max(steady_holds),
            }
        ),
        flush=True,
    )


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def orchestrate(args: argparse.Namespace) -> int:
    import aiohttp

    server = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "benchmarks" / "pages.py"), "--downloads", str(args.downloads),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert server.stdout is not None
    problems: list[str] = []
    try:
        truth = json.loads(await asyncio.wait_for(server.stdout.readline(), 600))
        exporter = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "child", truth["url"], str(args.targets),
            str(args.interval), str(args.duration), stdout=asyncio.subprocess.PIPE, cwd=ROOT,
            limit=2**24,
        )  # fmt: skip
        assert exporter.stdout is not None
        metrics_url = json.loads(await asyncio.wait_for(exporter.stdout.readline(), 120))["metrics"]
        latencies: list[float] = []
        last = ""
        result_line = asyncio.ensure_future(exporter.stdout.readline())
        async with aiohttp.ClientSession() as session:
            while not result_line.done():
                began = time.monotonic()
                try:
                    async with session.get(metrics_url) as response:
                        text = await response.text()
                    latencies.append(time.monotonic() - began)
                    last = text
                except aiohttp.ClientError:
                    pass
                await asyncio.wait({result_line}, timeout=args.scrape_every)
        result = json.loads(await result_line)
        steady = min(len(latencies) - 1, int(args.interval / args.scrape_every))
        await asyncio.wait_for(exporter.wait(), 30)
    finally:
        server.terminate()
        await server.wait()
    samples = parse(last)
    per_target: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for (name, labels), value in samples.items():
        label = dict(labels)
        if name == "vms_exporter_polls_total":
            per_target[label["target"]][label["result"]] += value
        elif name == "vms_downloads":
            per_target[label["target"]]["downloads"] += value
    expected = sum(truth["labels"].values())
    polls = 0
    for target, facts in sorted(per_target.items()):
        failed = {k: v for k, v in facts.items() if k not in ("success", "downloads") and v}
        polls += int(facts["success"])
        if failed or facts["success"] < 1:
            problems.append(f"{target}: polls {dict(facts)}")
        if facts["downloads"] != expected:
            problems.append(f"{target}: {facts['downloads']:.0f} downloads, not {expected}")
    if len(per_target) != args.targets:
        problems.append(f"{len(per_target)} targets in /metrics, not {args.targets}")
    print(
        f"{args.targets} targets x {args.downloads:,} downloads in one process, interval "
        f"{args.interval:g}s, {args.duration:g}s run, scraped every {args.scrape_every:g}s"
    )
    print(f"  successful polls                        {polls:10d}")
    print(f"  CPU share of one core, whole run        {result['cpu'] / result['wall']:10.1%}")
    print(
        "  CPU share of one core, after interval 1 "
        f"{result['cpu_after_first_interval'] / result['steady_wall']:10.1%}"
    )
    print(f"  peak RSS MB                             {result['rss']:10.1f}")
    print(f"  worst scrape ms                         {1000 * max(latencies):10.1f}")
    print(f"  worst scrape after the first interval   {1000 * max(latencies[steady:]):10.1f}")
    print(f"  longest loop hold, CPU ms               {1000 * result['hold']:10.1f}")
    print(f"  ... after the first interval            {1000 * result['steady_hold']:10.1f}")
    print(f"  scrapes                                 {len(latencies):10d}")
    for problem in problems:
        print("WRONG:", problem)
    print("every poll succeeded within its timeout" if not problems else "checks failed")
    return 1 if problems else 0


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        sys.path.insert(0, str(ROOT))
        logging.disable(logging.WARNING)
        url, targets, interval, duration = sys.argv[2:6]
        asyncio.run(child(url, int(targets), float(interval), float(duration)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--downloads", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--duration", type=float, default=150.0)
    parser.add_argument("--scrape-every", type=float, default=0.5)
    sys.exit(asyncio.run(orchestrate(parser.parse_args())))


if __name__ == "__main__":
    main()
