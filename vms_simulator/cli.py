"""Command-line face of the simulator: flags, their translation to a config, and serving."""

from __future__ import annotations

import argparse
import asyncio
import shlex
from typing import Any

from vms_simulator.config import DEFAULT_PATH, LOGIN_PATH, Account, Faults, SimulatorConfig
from vms_simulator.server import start_simulator

DEFAULT_LISTEN = "127.0.0.1:8080"
_DEFAULTS = SimulatorConfig()
_FAULT_DEFAULTS = Faults()

# config field -> flag, for error messages and for copying parsed values
_FLAGS = {
    "downloads": "--downloads",
    "seed": "--seed",
    "token": "--token",
    "server_timezone": "--timezone",
    "public_url": "--public-url",
    "path": "--path",
    "omit_status": "--omit-status",
    "per_page_cap": "--per-page-cap",
    "accounts": "--account",
    "max_sessions": "--max-sessions",
    "token_ttl": "--token-ttl",
    "captcha": "--captcha",
    "history": "--history",
    "arrival_interval": "--arrival-interval",
    "export_time": "--export-time",
    "fail_ratio": "--fail-ratio",
    "stuck_ratio": "--stuck-ratio",
    "vanish_ratio": "--vanish-ratio",
    "cameras": "--cameras",
}
_FAULT_FLAGS = {name: "--" + name.replace("_", "-") for name in Faults.field_names()}


def _dest(flag: str) -> str:
    return "sim_" + flag.lstrip("-").replace("-", "_")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's flags; every one is optional and defaults to SimulatorConfig's."""
    d, f = _DEFAULTS, _FAULT_DEFAULTS
    account = f"{d.accounts[0].login}:{d.accounts[0].password}"
    seconds = {"type": float, "metavar": "SECONDS"}
    ratio = {"type": float, "metavar": "R"}
    count = {"type": int, "metavar": "N"}
    switch = {"action": "store_true", "default": None}
    options: list[tuple[str, str, dict[str, Any]]] = [
        ("--listen", f"HOST:PORT to listen on (default {DEFAULT_LISTEN}; port 0: any free one)",
         {"metavar": "HOST:PORT", "default": DEFAULT_LISTEN}),
        ("--downloads", f"downloads present at start-up (default {d.downloads})", count),
        ("--seed", f"seed of the generated data (default {d.seed})", count),
        ("--token", f"static bearer token, '' for none (default {d.token})", {"metavar": "T"}),
        ("--timezone", f"the server's IANA time zone (default {d.server_timezone})",
         {"metavar": "ZONE"}),
        ("--public-url", f"URL the server writes in links and meta (default {d.public_url})",
         {"metavar": "URL"}),
        ("--path", f"path of the list (default {DEFAULT_PATH}; newer releases /api/v1/downloads)",
         {"metavar": "PATH"}),
        ("--omit-status", "leave the status field out of items, like release 24.03", switch),
        ("--per-page-cap", "largest per_page the server honours (default: none)", count),
        ("--account", f"LOGIN:PASSWORD for POST {LOGIN_PATH}, repeatable (default {account})",
         {"action": "append", "metavar": "LOGIN:PASSWORD"}),
        ("--max-sessions", f"concurrent sessions per account (default {d.max_sessions})", count),
        ("--token-ttl", "seconds a login token stays valid (default: forever)", seconds),
        ("--captcha", "demand a captcha at login (so every login fails)", switch),
        ("--history", f"seconds over which the start-up downloads were created "
         f"(default {d.history:g})", seconds),
        ("--arrival-interval", "mean seconds between new downloads, 0 for none "
         f"(default {d.arrival_interval:g})", seconds),
        ("--export-time", "LOW:HIGH seconds an ordinary export takes "
         f"(default {d.export_time[0]:g}:{d.export_time[1]:g})", {"metavar": "LOW:HIGH"}),
        ("--fail-ratio", f"share of exports that fail (default {d.fail_ratio:g})", ratio),
        ("--stuck-ratio", f"share of exports stuck for hours (default {d.stuck_ratio:g})", ratio),
        ("--vanish-ratio",
         f"share of completed files removed later (default {d.vanish_ratio:g})", ratio),
        ("--cameras", f"number of cameras (default {d.cameras})", count),
        ("--latency", f"fault: seconds added to each list request (default {f.latency:g})",
         seconds),
        ("--jitter", "fault: up to this many more seconds at random per list request (default 0)",
         seconds),
        ("--error-rate", "fault: share of list requests answered 500 (default 0)", ratio),
        ("--unauthorized", "fault: answer every list request 401", switch),
        ("--rate-limit-rate", "fault: share of list requests answered 429 (default 0)", ratio),
        ("--retry-after", f"Retry-After seconds sent with a 429 (default {f.retry_after})",
         {"type": int, "metavar": "SECONDS"}),
        ("--truncate-rate", "fault: share of list bodies cut mid-JSON (default 0)", ratio),
        ("--odd-items-rate", "fault: share of items sent with odd or broken fields (default 0)",
         ratio),
        ("--fail-new-exports", "fault: every download created from now on fails", switch),
        ("--oversized-body", "fault: bytes of whitespace added to every list body (default 0)",
         {"type": int, "metavar": "BYTES"}),
        ("--endless-body", "fault: every list body is chunked and never ends", switch),
        ("--arrivals-between-pages", "fault: the next N list pages each create a download",
         {"type": int, "metavar": "N"}),
    ]  # fmt: skip
    for flag, help_text, kwargs in options:
        parser.add_argument(flag, dest=_dest(flag), help=help_text, **kwargs)


def _listen(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"--listen: expected HOST:PORT, got {value!r}")
    host = host.removeprefix("[").removesuffix("]") or "0.0.0.0"  # noqa: S104 (":PORT" = all)
    return host, int(port_text)


def _account(value: str) -> Account:
    login, sep, password = value.partition(":")
    if not sep:
        raise ValueError(f"accounts: expected LOGIN:PASSWORD, got {login!r} without a password")
    return Account(login, password)


def _export_time(value: str) -> tuple[float, float]:
    low, _, high = value.partition(":")
    try:
        return float(low), float(high)
    except ValueError:
        raise ValueError(f"export_time: expected LOW:HIGH in seconds, got {value!r}") from None


def config_from_args(args: argparse.Namespace) -> tuple[SimulatorConfig, str, int]:
    """The config, host and port the flags ask for; ValueError naming the flag if invalid."""
    host, port = _listen(getattr(args, _dest("--listen")))
    values: dict[str, Any] = {}
    for name, flag in _FLAGS.items():
        value = getattr(args, _dest(flag))
        if value is not None:
            values[name] = value
    if "token" in values:
        values["token"] = values["token"] or None
    faults = {
        name: value
        for name, flag in _FAULT_FLAGS.items()
        if (value := getattr(args, _dest(flag))) is not None
    }
    try:
        if "export_time" in values:
            values["export_time"] = _export_time(values["export_time"])
        if "accounts" in values:
            values["accounts"] = tuple(_account(v) for v in values["accounts"])
        values["faults"] = Faults(**faults)
        config = SimulatorConfig(**values)
    except ValueError as exc:
        field, _, reason = str(exc).partition(": ")
        flag = _FLAGS.get(field) or _FAULT_FLAGS.get(field) or field
        raise ValueError(f"{flag}: {reason}") from None
    return config, host, port


def connection_help(config: SimulatorConfig, url: str) -> str:
    """What to tell a user about a simulator listening at ``url``."""
    env = {"VMS_EXPORTER_URL": url}
    if config.token is not None:
        env["VMS_EXPORTER_TOKEN"] = config.token
        auth = f"Bearer token {config.token!r}"
    else:
        env["VMS_EXPORTER_LOGIN"] = config.accounts[0].login
        env["VMS_EXPORTER_PASSWORD"] = config.accounts[0].password
        auth = "log in for a token"
    if config.path != DEFAULT_PATH:
        env["VMS_EXPORTER_PATH"] = config.path
    env["VMS_EXPORTER_TIMEZONE"] = config.server_timezone
    account = config.accounts[0]
    command = " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items())
    return "\n".join(
        [
            f"VMS simulator listening on {url} ({config.downloads} downloads at start, "
            f"seed {config.seed}, server time zone {config.server_timezone})",
            f"  list:   GET  {url}{config.path}  ({auth})",
            f"  login:  POST {url}{LOGIN_PATH}  (login {account.login!r}, "
            f"password {account.password!r})",
            f"  faults: {url}/-/sim/faults   stats: {url}/-/sim/stats",
            "Point an exporter at it (its time zone must be the server's):",
            f"  {command} vms-downloads-exporter",
        ]
    )


async def serve(config: SimulatorConfig, host: str, port: int, stop: asyncio.Event) -> None:
    """Run the simulator until ``stop`` is set, telling on stdout how to reach it."""
    running = await start_simulator(config, host, port)
    try:
        print(connection_help(config, running.url), flush=True)
        await stop.wait()
    finally:
        await running.close()
