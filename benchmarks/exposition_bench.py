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
too). Every render is checked byte for byte against prometheus-client's; exits
1 when one differs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from exporter.exposition import Renderer
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
    print("identical to prometheus-client" if identical else "DIFFERENT from prometheus-client")
    sys.exit(0 if identical else 1)


if __name__ == "__main__":
    main()
