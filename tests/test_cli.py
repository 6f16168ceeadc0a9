"""The command line as a user runs it: real processes, real sockets on loopback."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from exporter import __version__
from tests.exporter_harness import parse_metrics
from tests.processes import DEADLINE, exporter_process, free_port, stop, wait_for
from vms_simulator import RunningSimulator, SimulatorConfig, start_simulator


async def run(*args: str) -> tuple[int, str, str]:
    async with exporter_process(*args) as proc:
        out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def simulator_url() -> AsyncIterator[str]:
    sim = await start_simulator(SimulatorConfig(downloads=200, seed=1, arrival_interval=0))
    yield sim.url
    await sim.close()


def config_file(tmp_path: Path, url: str, extra: str = "") -> Path:
    path = tmp_path / "exporter.toml"
    path.write_text(
        f'[poll]\ninterval = "5s"\ntimeout = "4s"\n[targets.main]\nurl = "{url}"\n'
        f'token = "demo"\ntimezone = "Europe/Moscow"\nrequest_timeout = "2s"\n{extra}'
    )
    return path


async def test_version() -> None:
    code, out, _ = await run("--version")
    assert code == 0 and __version__ in out


async def test_bad_configuration_exits_2_naming_each_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[poll]\ninterval = "10s"\ntimeout = "30s"\nspeed = 1\n'
        '[targets.main]\nurl = "http://127.0.0.1:1"\n'
    )
    port = free_port()
    code, _, err = await run(
        "--config.file", str(path), "--web.listen-address", f"127.0.0.1:{port}"
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert "configuration error: poll.speed: unknown key" in lines
    assert (
        "configuration error: targets.main: no way to authenticate: "
        "set token_file (or token), or login" in lines
    )
    with socket.socket() as sock:  # nothing was listening
        assert sock.connect_ex(("127.0.0.1", port)) != 0


async def test_a_missing_state_directory_exits_2_before_listening(tmp_path: Path) -> None:
    missing = tmp_path / "state"
    path = config_file(tmp_path, "http://127.0.0.1:1", f"[state]\ndirectory = '{missing}'\n")
    code, _, err = await run("--config.file", str(path))
    assert code == 2
    assert err.strip() == (
        f"configuration error: state.directory: {missing} is not an existing directory"
    )


async def test_bad_arguments_exit_2() -> None:
    code, _, err = await run("--log.level", "loud")
    assert code == 2 and "--log.level" in err
    code, _, err = await run("--demo", "--web.listen-address", "localhost")
    assert code == 2
    assert err.strip() == (
        "configuration error: --web.listen-address: expected HOST:PORT or :PORT, got 'localhost'"
    )


async def test_no_configuration_at_all_says_what_to_do(tmp_path: Path) -> None:
    code, _, err = await run()
    assert code == 2 and "no target configured" in err


async def test_check_reports_each_target(tmp_path: Path, simulator_url: str) -> None:
    path = config_file(tmp_path, simulator_url)
    code, out, _ = await run("check", "--config.file", str(path))
    assert code == 0, out
    assert out.startswith("main: ok: ") and "in_progress=" in out and "page(s)" in out


async def test_check_warns_about_a_time_zone_mismatch(tmp_path: Path, simulator_url: str) -> None:
    path = config_file(tmp_path, simulator_url)
    path.write_text(path.read_text().replace('timezone = "Europe/Moscow"', 'timezone = "UTC"'))
    code, out, _ = await run("check", "--config.file", str(path))
    assert code == 0
    assert "main: warning:" in out and "time zone" in out


async def test_check_exits_1_when_a_target_fails(tmp_path: Path) -> None:
    path = config_file(tmp_path, f"http://127.0.0.1:{free_port()}")
    code, out, _ = await run("check", "--config.file", str(path))
    assert code == 1
    assert "main: FAILED (connection_error)" in out


async def test_check_exits_2_on_bad_configuration(tmp_path: Path) -> None:
    path = config_file(tmp_path, "http://127.0.0.1:1", 'per_page = "many"\n')
    code, _, err = await run("check", "--config.file", str(path))
    assert code == 2 and "targets.main.per_page" in err


async def test_serves_metrics_and_stops_on_sigterm_within_2s(
    tmp_path: Path, simulator_url: str
) -> None:
    port = free_port()
    path = config_file(tmp_path, simulator_url)
    args = ("--config.file", str(path), "--web.listen-address", f"127.0.0.1:{port}")
    async with exporter_process(*args, "--log.format", "json") as proc:
        await wait_for(f"http://127.0.0.1:{port}/-/ready")
        samples = parse_metrics(await wait_for(f"http://127.0.0.1:{port}/metrics"))
        code, elapsed, _, err = await stop(proc, signal.SIGTERM)
    assert samples[("vms_up", frozenset({("target", "main")}))] == 1
    assert code == 0
    assert elapsed < 2.0, f"took {elapsed:.2f}s to stop"
    assert '"msg": "exporter started"' in err
    assert "demo" not in err.replace('"target": "main"', "")


async def _failed_ids(session: aiohttp.ClientSession, url: str) -> set[str]:
    params = {"per_page": "1000", "page": "1", "from": "2000-01-01 00:00:00"}
    params["to"] = "2100-01-01 00:00:00"
    async with session.get(
        url + "/api/v1/users/downloads", params=params, headers={"Authorization": "Bearer demo"}
    ) as response:
        body = await response.json()
    assert body["meta"]["last_page"] == 1
    return {str(i["id"]) for i in body["data"] if i["status"] == "failed"}


async def test_an_export_failed_while_stopped_is_counted_after_the_restart(
    tmp_path: Path,
) -> None:
    sim_config = SimulatorConfig(downloads=50, seed=2, arrival_interval=0.5, fail_ratio=0)
    sim = await start_simulator(sim_config)
    state = tmp_path / "state"
    state.mkdir()
    port = free_port()
    path = config_file(tmp_path, sim.url, f"[state]\ndirectory = '{state}'\n")
    args = ("--config.file", str(path), "--web.listen-address", f"127.0.0.1:{port}")
    try:
        async with aiohttp.ClientSession() as session:
            async with exporter_process(*args) as proc:
                await wait_for(f"http://127.0.0.1:{port}/-/ready")
                until = time.monotonic() + DEADLINE
                while not (state / "main.records.jsonl").exists():
                    assert time.monotonic() < until, "no state saved"
                    await asyncio.sleep(0.1)
                assert (await stop(proc))[0] == 0
            async with session.post(
                sim.url + "/-/sim/faults", json={"fail_new_exports": True}
            ) as response:
                assert response.status == 200
            until = time.monotonic() + 40
            while not await _failed_ids(session, sim.url):  # exports fail within 3 to 20 s
                assert time.monotonic() < until, "the simulator failed no export"
                await asyncio.sleep(0.5)
            async with exporter_process(*args) as proc:
                await wait_for(f"http://127.0.0.1:{port}/-/ready")
                text = await wait_for(f"http://127.0.0.1:{port}/metrics")
                failed = await _failed_ids(session, sim.url)
                assert (await stop(proc))[0] == 0
    finally:
        await sim.close()
    counted = parse_metrics(text)[
        ("vms_downloads_finished_total", frozenset({("target", "main"), ("status", "failed")}))
    ]
    assert 1 <= counted <= len(failed)  # a baseline would have counted 0


async def test_demo_shows_every_status_within_seconds() -> None:
    port = free_port()
    async with exporter_process("--demo", "--web.listen-address", f"127.0.0.1:{port}") as proc:
        await wait_for(f"http://127.0.0.1:{port}/-/ready")
        samples = parse_metrics(await wait_for(f"http://127.0.0.1:{port}/metrics"))
        code, _, out, _ = await stop(proc, signal.SIGINT)
    assert code == 0
    assert f"http://127.0.0.1:{port}/metrics" in out
    by_status: dict[str, float] = {}
    for (name, labels), number in samples.items():
        if name == "vms_downloads":
            status = dict(labels)["status"]
            by_status[status] = by_status.get(status, 0) + number
    assert all(by_status[s] > 0 for s in ("in_progress", "completed", "failed")), by_status


async def test_simulate_runs_the_simulator_alone() -> None:
    port = free_port()
    args = ("--listen", f"127.0.0.1:{port}", "--downloads", "50", "--seed", "4", "--token", "t0k")
    async with exporter_process("simulate", *args) as proc:
        await wait_for(f"http://127.0.0.1:{port}/api/v1/users/downloads", status=401)
        code, _, out, _ = await stop(proc)
    assert code == 0
    assert f"VMS_EXPORTER_URL=http://127.0.0.1:{port}" in out


@pytest.fixture
async def login_vms() -> AsyncIterator[RunningSimulator]:
    """A VMS that only knows logins, two sessions per account at most."""
    sim = await start_simulator(
        SimulatorConfig(downloads=50, seed=2, arrival_interval=0, token=None, max_sessions=2)
    )
    yield sim
    await sim.close()


def login_config(tmp_path: Path, url: str) -> Path:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    path = config_file(tmp_path, url, f'[state]\ndirectory = "{state}"\n')
    login = 'login = "exporter@example.com"\npassword = "demo"\n'
    path.write_text(path.read_text().replace('token = "demo"\n', login))
    return path


async def sim_stats(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(url + "/-/sim/stats") as response:
        result: dict[str, Any] = await response.json()
        return result


async def test_restarts_graceful_or_killed_never_pile_up_sessions(
    tmp_path: Path, login_vms: RunningSimulator
) -> None:
    path = login_config(tmp_path, login_vms.url)
    for cycle, sig in enumerate([signal.SIGTERM, signal.SIGKILL] * 3 + [signal.SIGTERM]):
        port = free_port()
        args = ("--config.file", str(path), "--web.listen-address", f"127.0.0.1:{port}")
        async with exporter_process(*args) as proc:
            await wait_for(f"http://127.0.0.1:{port}/-/ready")
            samples = parse_metrics(await wait_for(f"http://127.0.0.1:{port}/metrics"))
            assert len((await sim_stats(login_vms.url))["sessions"]) == 1, cycle
            code, elapsed, _, err = await stop(proc, sig)
        assert samples[("vms_up", frozenset({("target", "main")}))] == 1, (cycle, err)
        left = (await sim_stats(login_vms.url))["sessions"]
        if sig == signal.SIGTERM:
            assert (code, left) == (0, []), (cycle, err)
            assert elapsed < 2.0, f"took {elapsed:.2f}s to stop"
        else:
            assert len(left) == 1, cycle
    final = await sim_stats(login_vms.url)
    assert final["token_requests"]["by_code"] == {"200": 7}  # never a 419
    assert final["requests"]["by_code"].keys() == {"200"}


async def test_check_leaves_no_session(tmp_path: Path, login_vms: RunningSimulator) -> None:
    path = login_config(tmp_path, login_vms.url)
    for _ in range(3):
        code, out, _ = await run("check", "--config.file", str(path))
        assert code == 0, out
    stats = await sim_stats(login_vms.url)
    assert stats["sessions"] == []
    assert stats["session_closes"]["by_code"] == {"200": 3}
    assert list((tmp_path / "state").iterdir()) == []  # check keeps no state


async def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return parse_metrics(await wait_for(f"http://127.0.0.1:{port}/metrics"))


async def until(check: Any, what: str, deadline: float = DEADLINE) -> None:
    """Wait for the async predicate ``check`` to hold; fail after ``deadline`` seconds."""
    for _ in range(int(deadline * 10)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {deadline}s: {what}")


def polls(samples: dict[Any, float], target: str) -> float:
    return samples.get(
        ("vms_exporter_polls_total", frozenset({("target", target), ("result", "success")})), 0.0
    )


async def test_sighup_and_post_reload_apply_a_valid_config_and_keep_the_old_on_error(
    tmp_path: Path, simulator_url: str
) -> None:
    port = free_port()
    path = config_file(tmp_path, simulator_url)
    args = ("--config.file", str(path), "--web.listen-address", f"127.0.0.1:{port}")
    second = (
        f'[targets.second]\nurl = "{simulator_url}"\ntoken = "demo"\n'
        'timezone = "Europe/Moscow"\nrequest_timeout = "2s"\n'
    )
    async with exporter_process(*args) as proc:
        await wait_for(f"http://127.0.0.1:{port}/-/ready")
        before = polls(await scrape(port), "main")
        assert before >= 1

        faster = (path.read_text() + second).replace('interval = "5s"', 'interval = "1s"')
        path.write_text(faster.replace('"4s"', '"900ms"').replace('"2s"', '"800ms"'))
        proc.send_signal(signal.SIGHUP)

        async def second_polled() -> bool:
            return polls(await scrape(port), "second") >= 1

        await until(second_polled, "target second polled")
        samples = await scrape(port)
        assert polls(samples, "main") >= before  # counters of the kept target go on
        interval = ("vms_exporter_poll_interval_seconds", frozenset({("target", "main")}))
        assert samples[interval] == 1.0

        path.write_text(path.read_text() + "\n[metrics]\nspeed = 1\n")
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"http://127.0.0.1:{port}/-/reload") as response,
        ):
            refused = (response.status, await response.text())
        config_file(tmp_path, simulator_url)  # back to the first: target second removed
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"http://127.0.0.1:{port}/-/reload") as response,
        ):
            accepted = response.status
        samples = await scrape(port)
        code, elapsed, _, err = await stop(proc)
    assert refused[0] == 500
    assert "metrics.speed: unknown key" in refused[1], refused
    assert accepted == 200
    assert all(labels != frozenset({("target", "second")}) for _, labels in samples), "removed"
    assert polls(samples, "main") >= before
    assert "reload failed" in err
    assert (code, elapsed < 2.0) == (0, True), err


async def test_a_listen_address_change_is_logged_as_needing_a_restart(
    tmp_path: Path, simulator_url: str
) -> None:
    port = free_port()
    path = config_file(tmp_path, simulator_url, f'[web]\nlisten_address = "127.0.0.1:{port}"\n')
    async with exporter_process("--config.file", str(path)) as proc:
        await wait_for(f"http://127.0.0.1:{port}/-/ready")
        path.write_text(path.read_text().replace(f"127.0.0.1:{port}", "127.0.0.1:1"))
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"http://127.0.0.1:{port}/-/reload") as response,
        ):
            assert response.status == 200
        code, _, _, err = await stop(proc)
    assert code == 0
    assert "[web] changed; it takes effect only after a restart" in err


@pytest.mark.parametrize("after", [0.25, 0.6, 1.0])
async def test_sigterm_during_start_up_exits_0_within_2s(
    tmp_path: Path, simulator_url: str, after: float
) -> None:
    path = config_file(tmp_path, simulator_url)
    args = ("--config.file", str(path), "--web.listen-address", f"127.0.0.1:{free_port()}")
    async with exporter_process(*args) as proc:
        await asyncio.sleep(after)
        code, elapsed, _, err = await stop(proc)
    assert code == 0, err
    assert elapsed < 2.0
    assert "Traceback" not in err


async def test_a_second_sigterm_or_a_sighup_while_stopping_still_exits_0_within_2s(
    tmp_path: Path, login_vms: RunningSimulator
) -> None:
    port = free_port()
    path = login_config(tmp_path, login_vms.url)
    args = ("--config.file", str(path), "--web.listen-address", f"127.0.0.1:{port}")
    async with exporter_process(*args) as proc:
        await wait_for(f"http://127.0.0.1:{port}/-/ready")
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGHUP)
        code, elapsed, _, err = await stop(proc, signal.SIGTERM)
    assert code == 0, err
    assert elapsed < 2.0
    assert (await sim_stats(login_vms.url))["sessions"] == []


async def test_check_escapes_what_the_vms_says(tmp_path: Path) -> None:
    """A hostile VMS cannot forge lines or send escape sequences to the operator's terminal."""

    async def hostile(request: web.Request) -> web.Response:
        errors = {"from": ["bad\x1b[2J\x1b]0;pwned\x07\nmain: ok: 0 downloads\u2028\u202e"]}
        return web.json_response({"message": "x", "errors": errors}, status=422)

    app = web.Application()
    app.router.add_get("/api/v1/users/downloads", hostile)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        code, out, _ = await run("check", "--config.file", str(config_file(tmp_path, url)))
    finally:
        await runner.cleanup()
    assert code == 1
    assert out.count("\n") == 1, out
    assert out.startswith("main: FAILED (validation_error)")
    assert "\x1b" not in out and "\x07" not in out and "\u2028" not in out and "\u202e" not in out
    assert "bad\\x1b[2J\\x1b]0;pwned\\x07\\nmain: ok" in out
