"""Soak: many polls of a faulty VMS in login mode, with restarts (graceful and kill -9) between.

Short by default; ``SOAK_POLLS=600 pytest -m soak`` runs a long one. Memory and
file descriptors of each process stay flat, the VMS never holds more than one
session of the exporter, and no counter ever decreases.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.exporter_harness import Samples, parse_metrics
from tests.processes import exporter_process, free_port, stop, wait_for
from vms_simulator import SimulatorConfig, start_simulator

POLLS = int(os.environ.get("SOAK_POLLS", "60"))
RUNS = 3
INTERVAL = 0.3
FAULTS: list[dict[str, Any]] = [
    {},
    {"error_rate": 0.3},
    {"truncate_rate": 0.3},
    {"latency": 0.05},
    {"rate_limit_rate": 0.2, "retry_after": 0},
    {"odd_items_rate": 0.2},
    {"unauthorized": True},
]
NO_FAULTS = {
    "error_rate": 0.0,
    "truncate_rate": 0.0,
    "latency": 0.0,
    "rate_limit_rate": 0.0,
    "odd_items_rate": 0.0,
    "unauthorized": False,
}


def counters(samples: Samples) -> dict[Any, float]:
    return {k: v for k, v in samples.items() if k[0].endswith(("_total", "_count", "_sum"))}


def sample(samples: Samples, name: str) -> float:
    return samples[(name, frozenset())]


@pytest.mark.soak
async def test_soak_in_login_mode_with_restarts_stays_flat(tmp_path: Path) -> None:
    rng = random.Random(8)
    state = tmp_path / "state"
    state.mkdir()
    config = SimulatorConfig(
        downloads=400, seed=3, arrival_interval=0.5, token=None, max_sessions=2
    )
    async with await start_simulator(config) as sim, aiohttp.ClientSession() as http:
        path = tmp_path / "exporter.toml"
        path.write_text(
            f'[poll]\ninterval = "{INTERVAL}s"\ntimeout = "280ms"\n'
            f'[state]\ndirectory = "{state}"\n'
            f'[targets.main]\nurl = "{sim.url}"\nlogin = "exporter@example.com"\n'
            'password = "demo"\ntimezone = "Europe/Moscow"\nrequest_timeout = "200ms"\n'
            "per_page = 50\n"
        )

        async def sessions() -> int:
            async with http.get(sim.url + "/-/sim/stats") as response:
                return len((await response.json())["sessions"])

        async def faults(values: dict[str, Any]) -> None:
            async with http.post(sim.url + "/-/sim/faults", json={**NO_FAULTS, **values}) as r:
                assert r.status == 200

        for run in range(RUNS):
            port = free_port()
            args = ("--config.file", str(path), "--web.listen-address", f"127.0.0.1:{port}")
            await faults({})
            async with exporter_process(*args) as proc:
                await wait_for(f"http://127.0.0.1:{port}/-/ready")
                previous: dict[Any, float] = {}
                rss: list[float] = []
                fds: list[float] = []
                for step in range(POLLS // RUNS):
                    if step % 5 == 0:
                        await faults(rng.choice(FAULTS))
                    await asyncio.sleep(INTERVAL)
                    samples = parse_metrics(await wait_for(f"http://127.0.0.1:{port}/metrics"))
                    now = counters(samples)
                    went_down = {k: (v, now.get(k)) for k, v in previous.items()
                                 if now.get(k, -1.0) < v}  # fmt: skip
                    assert not went_down, (run, step, went_down)
                    previous = now
                    rss.append(sample(samples, "process_resident_memory_bytes"))
                    fds.append(sample(samples, "process_open_fds"))
                    assert await sessions() <= 1, (run, step)
                polled = sum(
                    v for (name, _), v in previous.items() if name == "vms_exporter_polls_total"
                )
                sig = signal.SIGKILL if run % 2 else signal.SIGTERM
                code, _, _, err = await stop(proc, sig)
            assert polled >= POLLS // RUNS // 2, (run, polled)
            if sig == signal.SIGTERM:
                assert code == 0, err
                assert "Traceback" not in err
            settled = len(rss) // 3  # after warm-up: caches, first logins, imports
            print(  # the figures, with pytest -s
                f"soak run {run} ({sig.name}): {polled:.0f} polls, RSS "
                f"{rss[settled] / 2**20:.1f} -> max {max(rss[settled:]) / 2**20:.1f} MiB, "
                f"fds {min(fds[settled:]):.0f}..{max(fds[settled:]):.0f}"
            )
            assert max(rss[settled:]) - rss[settled] < 8 * 2**20, (run, rss)
            assert max(fds[settled:]) - min(fds[settled:]) <= 8, (run, fds)
            assert await sessions() <= 1
        await faults({})
        async with http.get(sim.url + "/-/sim/stats") as response:
            stats = await response.json()
        assert "419" not in stats["token_requests"]["by_code"], stats["token_requests"]
