"""Cost of saving and loading remembered records under ``[state] directory``.

    .venv/bin/python benchmarks/state_bench.py [--records 100000] [--runs 5]

Prints the file size, the median / max time of a save (temp file, fsync,
rename) and of a load, and the longest the event loop was held up while a
save ran in a worker thread (what a scrape arriving meanwhile would wait),
next to the same for one ``json.dumps`` of everything in a thread (one C call
that keeps the GIL: why the records are encoded chunk by chunk) and for a
pure-Python busy thread (the floor on a shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from exporter.core import Memory
from exporter.records_store import RecordStore
from exporter.vms.models import Download

T0 = 1_795_000_000.0


def records(count: int) -> Memory:
    statuses = ("completed",) * 7 + ("failed", "in_progress", "other")
    kept = {}
    for n in range(count):
        ident = str(1_000_000 + n)
        created = T0 + n * 0.863 + 0.123456
        kept[ident] = Download(
            ident,
            statuses[n % len(statuses)],
            ("high", "low")[n % 2],
            ("true", "false")[n % 5 == 0],
            created,
            created + 37.5 + n % 600,
            str(n % 400),
        )
    return Memory(kept, T0 + count)


async def longest_stall(work: Callable[[], object]) -> tuple[float, float]:
    """Run ``work`` in a thread; return its duration and the longest loop stall meanwhile."""
    loop = asyncio.get_running_loop()
    began = time.perf_counter()
    task = loop.run_in_executor(None, work)
    worst = 0.0
    while not task.done():
        tick = time.perf_counter()
        await asyncio.sleep(0.001)
        worst = max(worst, time.perf_counter() - tick - 0.001)
    await task
    return time.perf_counter() - began, worst


def busy() -> None:
    """The best a worker thread can do: bytecode only, the GIL offered every 5 ms."""
    end = time.perf_counter() + 0.8
    while time.perf_counter() < end:
        pass


def one_dump(memory: Memory) -> None:
    json.dumps([[r.id, r.status, r.created_at, r.updated_at] for r in memory.records.values()])


async def bench(count: int, runs: int) -> None:
    memory = records(count)
    with tempfile.TemporaryDirectory() as directory:
        store = RecordStore(Path(directory), "bench", "http://127.0.0.1/api", 7 * 86400)
        saves, stalls, loads = [], [], []
        for _ in range(runs):
            took, stall = await longest_stall(lambda: store.save(memory, T0 + count))
            saves.append(took)
            stalls.append(stall)
            began = time.perf_counter()
            loaded = store.load(T0 + count)
            loads.append(time.perf_counter() - began)
            assert loaded == memory
        size = store.path.stat().st_size
        _, dump_stall = await longest_stall(lambda: one_dump(memory))
        _, busy_stall = await longest_stall(busy)
    print(f"records: {count}, file {size / 2**20:.1f} MiB")
    print(
        f"save (in a thread): median {statistics.median(saves) * 1000:.0f} ms, "
        f"max {max(saves) * 1000:.0f} ms"
    )
    print(
        f"event loop held up during a save: longest {statistics.median(stalls) * 1000:.0f} ms "
        f"(median of runs), worst {max(stalls) * 1000:.0f} ms; a pure-Python busy thread "
        f"holds it up {busy_stall * 1000:.0f} ms on this machine"
    )
    print(f"load: median {statistics.median(loads) * 1000:.0f} ms, max {max(loads) * 1000:.0f} ms")
    print(f"for comparison, one json.dumps of all records in a thread held the loop "
          f"{dump_stall * 1000:.0f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(bench(args.records, args.runs))


if __name__ == "__main__":
    main()
