"""Requests per poll, incremental vs full, over an hour of polls of the living simulator.

    .venv/bin/python benchmarks/incremental_bench.py [--downloads 100000] [--minutes 60]

The simulator runs on a ManualClock, so an hour of polls every ``--interval``
takes as long as the polls themselves. One exporter target polls with
``poll.full_resync`` (incremental), another on the same simulator with
``full_resync = 0`` (every poll full) every ``--full-every`` steps, which is
enough to measure it (a full poll's cost hardly varies) and to check at each of
its polls that both have counted the same events; where both polls are full
re-scans, the window gauges must be equal too. Exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from pydantic import SecretStr

from exporter.config import PollSettings, Settings, TargetSettings
from exporter.metrics import ExporterMetrics
from exporter.poller import TargetPoller
from vms_simulator import ManualClock, SimulatorConfig, start_simulator

START = 1_795_694_400.0  # 2026-11-26 12:00 UTC
COMPARED = ("vms_downloads_created", "vms_downloads_finished", "vms_downloads_aged_out_in_progress")


def _samples(metrics: ExporterMetrics, names: tuple[str, ...]) -> dict[str, float]:
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for family in metrics.registry.collect()
        if family.name in names
        for s in family.samples
    }


def _requests(metrics: ExporterMetrics) -> float:
    return sum(
        s.value
        for family in metrics.registry.collect()
        if family.name == "vms_exporter_api_requests"
        for s in family.samples
        if s.name.endswith("_total")
    )


async def bench(args: argparse.Namespace) -> int:
    clock = ManualClock(START)
    sim = SimulatorConfig(downloads=args.downloads, seed=args.seed, stuck_ratio=args.stuck_ratio)
    began = time.perf_counter()
    simulator = await start_simulator(sim, clock=clock)
    print(f"simulator: {args.downloads} downloads, ready in {time.perf_counter() - began:.1f}s")
    target = TargetSettings(
        url=simulator.url,
        token=SecretStr("demo"),
        timezone=sim.server_timezone,
        per_page=args.per_page,
        concurrency=args.concurrency,
        request_timeout=args.interval * 0.8,
    )

    def poller(full_resync: float) -> tuple[TargetPoller, ExporterMetrics]:
        poll = PollSettings(
            interval=args.interval, timeout=args.interval * 0.9, full_resync=full_resync
        )
        settings = Settings(poll=poll, targets={"main": target})
        metrics = ExporterMetrics(clock=clock, process_metrics=False)
        return TargetPoller("main", target, settings, metrics, clock=clock), metrics

    cheap, cheap_metrics = poller(args.full_resync)
    full, full_metrics = poller(0)
    per_mode: dict[str, list[float]] = {"full": [], "incremental": []}
    full_mode: list[float] = []
    durations: dict[str, list[float]] = {"full": [], "incremental": [], "every poll full": []}
    problems = []
    steps = int(args.minutes * 60 / args.interval) + 1
    try:
        for step in range(steps):
            before = _requests(cheap_metrics)
            outcome = await cheap.poll_once()
            if outcome.result != "success":
                problems.append(f"step {step}: incremental poll failed: {outcome.error}")
                break
            per_mode[outcome.mode].append(_requests(cheap_metrics) - before)
            durations[outcome.mode].append(outcome.duration)
            if step % args.full_every == 0:
                before = _requests(full_metrics)
                reference = await full.poll_once()
                if reference.result != "success":
                    problems.append(f"step {step}: full poll failed: {reference.error}")
                    break
                full_mode.append(_requests(full_metrics) - before)
                durations["every poll full"].append(reference.duration)
                if _samples(cheap_metrics, COMPARED) != _samples(full_metrics, COMPARED):
                    problems.append(f"step {step}: event counters differ from full polling")
                if outcome.mode == "full" and _samples(
                    cheap_metrics, ("vms_downloads",)
                ) != _samples(full_metrics, ("vms_downloads",)):
                    problems.append(f"step {step}: window gauges differ after a full re-scan")
            clock.advance(args.interval)
    finally:
        await cheap.close()
        await full.close()
        await simulator.close()

    polls = sum(len(v) for v in per_mode.values())
    cheap_total = sum(sum(v) for v in per_mode.values())
    full_average = statistics.fmean(full_mode) if full_mode else float("nan")
    cheap_average = cheap_total / polls if polls else float("nan")
    print(
        f"{polls} polls over {args.minutes:g} simulated minutes, interval {args.interval:g}s, "
        f"full_resync {args.full_resync:g}s, per_page {args.per_page}, "
        f"concurrency {args.concurrency}, stuck_ratio {args.stuck_ratio:g}"
    )
    print(f"{'mode':<28}{'polls':>6}{'requests/poll':>15}{'median s':>10}")
    for mode, counts in per_mode.items():
        if counts:
            label = f"incremental: {mode}"
            mean = statistics.fmean(counts)
            print(
                f"{label:<28}{len(counts):>6}{mean:>15.1f}{statistics.median(durations[mode]):>10.2f}"
            )
    print(
        f"{'incremental: all polls':<28}{polls:>6}{cheap_average:>15.1f}"
        f"\n{'every poll full':<28}{len(full_mode):>6}{full_average:>15.1f}"
        f"{statistics.median(durations['every poll full']):>10.2f}"
    )
    print(f"ratio full / incremental (average per poll): {full_average / cheap_average:.1f}x")
    for problem in problems:
        print("PROBLEM:", problem)
    print("correctness:", "FAILED" if problems else "events and re-scan gauges equal to full polls")
    return 1 if problems else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--downloads", type=int, default=100_000)
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--interval", type=float, default=60)
    parser.add_argument("--full-resync", type=float, default=600)
    parser.add_argument("--full-every", type=int, default=10, help="steps between full polls")
    parser.add_argument("--per-page", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--stuck-ratio", type=float, default=0.0001, help="a few stuck exports: ~5 at 100,000"
    )
    parser.add_argument("--seed", type=int, default=1)
    raise SystemExit(asyncio.run(bench(parser.parse_args())))


if __name__ == "__main__":
    main()
