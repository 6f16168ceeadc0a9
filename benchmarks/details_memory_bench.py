"""Memory the remembered records take, with ``web.show_details`` off and on.

    .venv/bin/python benchmarks/details_memory_bench.py [--downloads 100000]

Polls the simulator (every download within the lookback) once per setting and
prints the bytes held by the records: the dict, every record, and every
string only it references (shared strings such as interned labels and logins
are counted once). The simulator's names look like the vendor's sample.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping

from pydantic import SecretStr

from exporter.config import PollSettings, Settings, TargetSettings, WebSettings
from exporter.metrics import ExporterMetrics
from exporter.poller import TargetPoller
from exporter.vms.models import Download
from vms_simulator import SimulatorConfig, start_simulator


def held_bytes(records: Mapping[str, Download]) -> int:
    """Deep size of ``records``: each object once, by identity."""
    seen: set[int] = set()
    total = sys.getsizeof(records)
    for key, record in records.items():
        total += sys.getsizeof(record)
        for part in (key, *(getattr(record, slot) for slot in _slots(type(record)))):
            if part is not None and id(part) not in seen:
                seen.add(id(part))
                total += sys.getsizeof(part)
    return total


def _slots(cls: type) -> list[str]:
    return [s for klass in cls.__mro__ for s in getattr(klass, "__slots__", ())]


async def measure(url: str, timezone: str, details: bool) -> tuple[int, int]:
    target = TargetSettings(
        url=url, token=SecretStr("demo"), timezone=timezone, per_page=1000, request_timeout=60
    )
    settings = Settings(
        web=WebSettings(show_details=details),
        poll=PollSettings(interval=600, timeout=300, lookback=3 * 86400),
        targets={"bench": target},
    )
    poller = TargetPoller("bench", target, settings, ExporterMetrics(process_metrics=False))
    try:
        outcome = await poller.poll_once()
        assert outcome.result == "success", outcome.error
        return len(poller.records), held_bytes(poller.records)
    finally:
        await poller.close()


async def bench(downloads: int) -> None:
    sim_config = SimulatorConfig(downloads=downloads, seed=1, arrival_interval=0)
    simulator = await start_simulator(sim_config)
    try:
        results = {}
        for details in (False, True):
            results[details] = await measure(simulator.url, sim_config.server_timezone, details)
    finally:
        await simulator.close()
    (count, off), (_, on) = results[False], results[True]
    print(f"records: {count}")
    print(f"show_details = false: {off / 2**20:7.1f} MiB  ({off / count:5.0f} B per record)")
    print(f"show_details = true:  {on / 2**20:7.1f} MiB  ({on / count:5.0f} B per record)")
    cost = on - off
    print(f"cost of details:      {cost / 2**20:7.1f} MiB  (+{cost / count:.0f} B per record)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--downloads", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(bench(args.downloads))


if __name__ == "__main__":
    main()
