"""Measures the exporter process's memory (RSS) on the simulator: what container limits rest on.

    .venv/bin/python benchmarks/memory_rss.py [--downloads 1000 10000 50000] [--polls 3]

For each size, runs ``vms-downloads-exporter simulate`` and the exporter (as in the image:
configured by the environment, per-camera metrics on) as separate processes on loopback,
waits for ``--polls`` successful polls plus a scrape of /metrics, and prints the downloads
in the window, the exporter's current RSS (VmRSS) and its peak (VmHWM). Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from tests.exporter_harness import parse_metrics, value
from tests.processes import free_port, wait_for

DEADLINE = 300.0


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(rest.split()[0])
    return fields


async def measure(downloads: int, polls: int) -> None:
    sim_port, port = free_port(), free_port()
    simulator = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        "simulate",
        "--listen",
        f"127.0.0.1:{sim_port}",
        "--downloads",
        str(downloads),
        "--arrival-interval",
        "1",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    env = {
        **os.environ,
        "VMS_EXPORTER_URL": f"http://127.0.0.1:{sim_port}",
        "VMS_EXPORTER_TOKEN": "demo",
        "VMS_EXPORTER_TIMEZONE": "Europe/Moscow",
        "VMS_EXPORTER_WEB__LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "VMS_EXPORTER_POLL__INTERVAL": "30s",
        "VMS_EXPORTER_POLL__TIMEOUT": "25s",
        "VMS_EXPORTER_METRICS__PER_CAMERA": "true",
    }
    exporter = None
    try:
        await wait_for(f"http://127.0.0.1:{sim_port}/-/sim/stats", deadline=DEADLINE)
        exporter = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "exporter",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}/metrics"
        until = time.monotonic() + DEADLINE
        while time.monotonic() < until:
            if exporter.returncode is not None:
                raise SystemExit(f"the exporter exited with {exporter.returncode}")
            samples = parse_metrics(await wait_for(url))
            done = value(samples, "vms_exporter_polls_total", target="default", result="success")
            failed = {
                dict(labels)["result"]
                for (name, labels), v in samples.items()
                if name == "vms_exporter_polls_total" and v and dict(labels)["result"] != "success"
            }
            if failed:
                raise SystemExit(f"polls failed ({', '.join(sorted(failed))}): a smaller size?")
            if (done or 0) >= polls:
                break
            await asyncio.sleep(1)
        else:
            raise SystemExit(f"{polls} polls did not succeed within {DEADLINE}s")
        window = sum(v for (name, _), v in samples.items() if name == "vms_downloads")
        kib = memory_kib(exporter.pid)
        print(
            f"downloads={downloads:>6} in_window={window:>6.0f} "
            f"rss={kib['VmRSS'] / 1024:6.1f}MiB peak={kib['VmHWM'] / 1024:6.1f}MiB"
        )
    finally:
        for proc in (exporter, simulator):
            if proc is not None and proc.returncode is None:
                proc.terminate()
                await proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--downloads", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--polls", type=int, default=3)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}; {args.polls} successful polls each; shared machine")
    for downloads in args.downloads:
        asyncio.run(measure(downloads, args.polls))


if __name__ == "__main__":
    main()
