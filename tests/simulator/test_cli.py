"""The simulator's flags, its start-up message, running it alone, and its independence."""

from __future__ import annotations

import argparse
import ast
import asyncio
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from vms_simulator import Account, Faults, SimulatorConfig
from vms_simulator.cli import add_arguments, config_from_args, serve

PACKAGE = Path(__file__).resolve().parents[2] / "exporter" / "simulator"


def parse(*argv: str) -> tuple[SimulatorConfig, str, int]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_no_flags_means_the_default_config() -> None:
    assert parse() == (SimulatorConfig(), "127.0.0.1", 8080)


def test_every_flag_reaches_the_config() -> None:
    config, host, port = parse(
        "--listen", "[::1]:9000", "--downloads", "5", "--seed", "9", "--token", "",
        "--timezone", "Asia/Tokyo", "--public-url", "https://vms.local", "--path",
        "/api/v1/downloads", "--omit-status", "--per-page-cap", "50", "--account", "a@b:pw",
        "--account", "c@d:pw2", "--max-sessions", "2", "--token-ttl", "600", "--captcha",
        "--history", "3600", "--arrival-interval", "0", "--export-time", "1:60",
        "--fail-ratio", "0.5", "--stuck-ratio", "0", "--vanish-ratio", "1", "--cameras", "3",
        "--latency", "0.5", "--error-rate", "0.1", "--unauthorized", "--rate-limit-rate",
        "0.2", "--retry-after", "9", "--truncate-rate", "0.3", "--fail-new-exports",
    )  # fmt: skip

    assert (host, port) == ("::1", 9000)
    assert config == SimulatorConfig(
        downloads=5,
        seed=9,
        token=None,
        server_timezone="Asia/Tokyo",
        public_url="https://vms.local",
        path="/api/v1/downloads",
        omit_status=True,
        per_page_cap=50,
        accounts=(Account("a@b", "pw"), Account("c@d", "pw2")),
        max_sessions=2,
        token_ttl=600,
        captcha=True,
        history=3600,
        arrival_interval=0,
        export_time=(1, 60),
        fail_ratio=0.5,
        stuck_ratio=0,
        vanish_ratio=1,
        cameras=3,
        faults=Faults(
            latency=0.5,
            error_rate=0.1,
            unauthorized=True,
            rate_limit_rate=0.2,
            retry_after=9,
            truncate_rate=0.3,
            fail_new_exports=True,
        ),
    )


def test_a_bare_port_listens_everywhere() -> None:
    _, host, port = parse("--listen", ":0")

    assert (host, port) == ("0.0.0.0", 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--listen", "localhost"], "--listen: expected HOST:PORT"),
        (["--listen", "h:70000"], "--listen: expected HOST:PORT"),
        (["--timezone", "Mars/Olympus"], "--timezone: unknown IANA time zone 'Mars/Olympus'"),
        (["--error-rate", "2"], "--error-rate: must be between 0 and 1, got 2.0"),
        (["--downloads", "-1"], "--downloads: must be a whole number >= 0, got -1"),
        (["--per-page-cap", "0"], "--per-page-cap: must be a whole number >= 1"),
        (["--account", "nopassword"], "--account: expected LOGIN:PASSWORD"),
        (["--account", "a:"], "--account: must be passwords that are not empty"),
        (["--export-time", "a:b"], "--export-time: expected LOW:HIGH"),
        (["--export-time", "9:1"], "--export-time: must be (low, high)"),
        (["--path", "api"], "--path: must be an absolute path"),
        (["--public-url", "vms.local"], "--public-url: must be an http:// or https:// URL"),
    ],
)
def test_a_bad_value_names_its_flag(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=r".") as caught:
        parse(*argv)

    assert str(caught.value).startswith(message)


async def test_serve_tells_how_to_point_an_exporter_at_it(
    capsys: pytest.CaptureFixture[str], http: aiohttp.ClientSession
) -> None:
    stop = asyncio.Event()
    config = SimulatorConfig(downloads=10, path="/api/v1/downloads")
    task = asyncio.create_task(serve(config, "127.0.0.1", 0, stop))
    output = ""
    for _ in range(200):
        output += capsys.readouterr().out
        if output:
            break
        await asyncio.sleep(0.01)
    url = output.split()[4]

    async with http.get(url + "/-/sim/stats") as response:
        assert (await response.json())["downloads"] == 10
    stop.set()
    await asyncio.wait_for(task, 5)

    assert url.startswith("http://127.0.0.1:")
    command = output.splitlines()[-1].split()
    assert command == [
        f"VMS_EXPORTER_URL={url}",
        "VMS_EXPORTER_TOKEN=demo",
        "VMS_EXPORTER_PATH=/api/v1/downloads",
        "VMS_EXPORTER_TIMEZONE=Europe/Moscow",
        "vms-downloads-exporter",
    ]
    with pytest.raises(aiohttp.ClientConnectionError):
        await http.get(url + "/-/sim/stats")


async def test_it_runs_alone_and_stops_on_sigterm(http: aiohttp.ClientSession) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vms_simulator", "--listen", "127.0.0.1:0",
        "--downloads", "10", stdout=asyncio.subprocess.PIPE, cwd=PACKAGE.parents[1],
    )  # fmt: skip
    assert process.stdout is not None
    try:
        first_line = await asyncio.wait_for(process.stdout.readline(), 20)
        url = first_line.decode().split()[4]
        async with http.get(url + "/-/sim/stats") as response:
            assert response.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 10)

    assert code == 0


def test_it_imports_nothing_of_the_exporter_outside_itself() -> None:
    for source in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name == "exporter" or name.startswith("exporter."):
                    assert name.startswith("vms_simulator"), f"{source.name} imports {name}"
