"""The exporter's HTTP side against hostile clients, over real loopback sockets."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from exporter.httpserver import (
    EXPOSITION_VERSION,
    ConnectionGuard,
    connection_cap,
    start_guarded,
)
from tests.exporter_harness import exporter_on_simulator
from tests.processes import exporter_process, free_port, stop, wait_for
from vms_simulator import SimulatorConfig, start_simulator

Serve = Callable[..., Awaitable[tuple[int, ConnectionGuard]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """An app with /-/healthy and a slow /slow behind the guard, on a free port."""
    runners: list[web.AppRunner] = []

    async def start(**limits: Any) -> tuple[int, ConnectionGuard]:
        async def healthy(request: web.Request) -> web.Response:
            return web.Response(text="Healthy.\n")

        async def slow(request: web.Request) -> web.Response:
            await asyncio.sleep(0.3)
            return web.Response(text="done")

        app = web.Application()
        app.router.add_get("/-/healthy", healthy)
        app.router.add_get("/slow", slow)
        runner, guard = await start_guarded(app, "127.0.0.1", 0, shutdown_timeout=0.5, **limits)
        runners.append(runner)
        return int(runner.addresses[0][1]), guard

    yield start
    for runner in runners:
        await runner.cleanup()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server ends the connection (EOF or reset) within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(1024):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def get(port: int, path: str = "/-/healthy") -> int:
    client_timeout = aiohttp.ClientTimeout(total=2.0)
    async with (
        aiohttp.ClientSession(timeout=client_timeout) as http,
        http.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        await response.read()
        return response.status


async def test_a_slow_request_head_is_cut_off(serve: Serve) -> None:
    port, _ = await serve(header_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.monotonic()
    writer.write(b"GET /-/healthy HTTP/1.1\r\n")
    for _ in range(5):  # a byte at a time, never finishing the head
        await asyncio.sleep(0.1)
        writer.write(b"X")
    assert await closed_within(reader, 2.0)
    assert time.monotonic() - began < 1.5
    writer.close()


async def test_a_silent_connection_is_cut_off_but_an_idle_keep_alive_is_not(serve: Serve) -> None:
    port, guard = await serve(header_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await closed_within(reader, 1.5)
    writer.close()

    async with aiohttp.ClientSession() as http:
        for _ in range(2):  # one kept-alive connection, idle longer than the head deadline
            async with http.get(f"http://127.0.0.1:{port}/-/healthy") as response:
                assert response.status == 200
            await asyncio.sleep(0.6)
            assert guard.open_connections == 1


async def test_healthy_answers_while_an_attacker_holds_many_connections(serve: Serve) -> None:
    port, guard = await serve(max_connections=10, header_timeout=30)
    held = []
    for _ in range(60):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n")  # never finished
        held.append((reader, writer))
    await asyncio.sleep(0.1)

    statuses = [await get(port) for _ in range(5)]

    assert statuses == [200] * 5
    assert guard.open_connections <= 10
    assert guard.evicted >= 50
    for _, writer in held:
        writer.close()


async def test_requests_being_answered_are_never_evicted(serve: Serve) -> None:
    port, guard = await serve(max_connections=4)
    slow = [asyncio.create_task(get(port, "/slow")) for _ in range(4)]
    await asyncio.sleep(0.1)
    refused = await asyncio.gather(get(port), return_exceptions=True)
    assert await asyncio.gather(*slow) == [200] * 4
    assert isinstance(refused[0], aiohttp.ClientError)  # all busy: the newcomer is refused
    assert guard.refused >= 1
    assert await get(port) == 200


async def test_malformed_requests_do_not_flood_the_log(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    port, _ = await serve()
    with caplog.at_level(logging.INFO):
        for junk in [b"\x16\x03\x01\x02\x00\x01\x00", b"GET / HTTP/9.9\r\n\r\n", b"A" * 9000]:
            for _ in range(20):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(junk + b"\r\n\r\n")
                await closed_within(reader, 2.0)
                writer.close()
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []
    assert await get(port) == 200


async def test_the_exporter_keeps_answering_with_its_descriptors_held(tmp_path: Path) -> None:
    """A real process with a small descriptor limit; an attacker opens more than it allows."""
    async with await start_simulator(SimulatorConfig(downloads=50, arrival_interval=0)) as sim:
        port = free_port()
        path = tmp_path / "exporter.toml"
        path.write_text(
            f'[poll]\ninterval = "2s"\ntimeout = "1500ms"\n[targets.main]\nurl = "{sim.url}"\n'
            'token = "demo"\ntimezone = "Europe/Moscow"\nrequest_timeout = "1s"\n'
        )
        args = ("--config.file", str(path), "--web.listen-address", f"127.0.0.1:{port}")
        async with exporter_process(*args, fd_limit=128) as proc:
            await wait_for(f"http://127.0.0.1:{port}/-/ready")

            async def attack() -> asyncio.StreamWriter:
                async with asyncio.timeout(5):  # a full listen queue drops connects for a while
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /metrics HTTP/1.1\r\n")
                return writer

            tried = await asyncio.gather(*(attack() for _ in range(200)), return_exceptions=True)
            held = [w for w in tried if isinstance(w, asyncio.StreamWriter)]
            assert len(held) > 64  # well over the cap of (128 - 64) / 2 = 32 connections
            assert await get(port) == 200
            assert await get(port, "/metrics") == 200
            await asyncio.sleep(2.5)  # polls go on: they need descriptors too
            metrics = await wait_for(f"http://127.0.0.1:{port}/metrics")
            for writer in held:
                writer.close()
            code, _, _, err = await stop(proc)
    assert code == 0, err
    assert 'vms_exporter_polls_total{result="connection_error",target="main"} 0.0' in metrics
    assert "Too many open files" not in err
    assert "Traceback" not in err


async def test_a_storm_of_scrapes_never_makes_a_poll_time_out() -> None:
    sim = SimulatorConfig(downloads=3000, seed=5, arrival_interval=0, cameras=400)
    async with exporter_on_simulator(
        sim, poll={"timeout": 3}, metrics={"per_camera": True}, per_page=100, concurrency=2
    ) as h:
        assert (await h.poller.poll_once()).result == "success"  # a big exposition to render
        await h.sim_faults(latency=0.05)
        scraped = 0

        async def scraper() -> None:
            nonlocal scraped
            while True:  # raw reads: parsing here would load the loop the test shares
                async with h.session.get(h.url + "/metrics") as response:
                    assert response.status == 200
                    await response.read()
                scraped += 1

        storm = [asyncio.create_task(scraper()) for _ in range(40)]
        try:
            outcome = await h.poller.poll_once()
        finally:
            for task in storm:
                task.cancel()
            await asyncio.gather(*storm, return_exceptions=True)
    assert outcome.result == "success", outcome.error
    assert scraped > 40  # the scrapes were answered meanwhile, not just queued


def test_the_cap_stays_below_the_descriptor_limit() -> None:
    assert connection_cap(1024) == 256
    assert connection_cap(128) == 32
    assert connection_cap(20) == 4
    assert connection_cap() <= 256


async def test_scrapes_queued_behind_a_render_share_the_next_one_even_as_polls_end() -> None:
    """With many targets a poll ends during every render: each queued scrape must not re-render."""
    version, renders, arrivals = 0, 0, 0
    rendering, all_arrived, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    @web.middleware
    async def count_arrivals(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal arrivals
        arrivals += 1
        if arrivals == 4:
            all_arrived.set()
        return await handler(request)

    async def metrics(request: web.Request) -> web.Response:
        nonlocal version, renders
        renders += 1
        version += 1  # a poll ended while this render ran
        rendering.set()
        await release.wait()
        return web.Response(text=f"render {renders}\n")

    app = web.Application(middlewares=[count_arrivals])
    app[EXPOSITION_VERSION] = lambda: version
    app.router.add_get("/metrics", metrics)
    runner, _ = await start_guarded(app, "127.0.0.1", 0, shutdown_timeout=0.5)
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/metrics"
    try:
        async with aiohttp.ClientSession() as session:

            async def scrape() -> str:
                async with session.get(url) as response:
                    assert response.status == 200
                    return await response.text()

            first = asyncio.create_task(scrape())
            await asyncio.wait_for(rendering.wait(), 5)
            queued = [asyncio.create_task(scrape()) for _ in range(3)]
            await asyncio.wait_for(all_arrived.wait(), 5)
            release.set()
            answers = await asyncio.gather(first, *queued)
    finally:
        await runner.cleanup()
    assert answers == ["render 1\n"] + ["render 2\n"] * 3
    assert renders == 2
