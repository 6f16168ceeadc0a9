"""Command line: run (default), ``check``, ``simulate``, ``--demo``; logging, signals, exit codes.

Exit codes: 0 after SIGTERM/SIGINT or success, 1 when a ``check`` poll failed
or the server cannot listen, 2 for a bad configuration or bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import logging
import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from exporter import __version__
from exporter.config import (
    ConfigError,
    MetricsSettings,
    PollSettings,
    Settings,
    TargetSettings,
    WebSettings,
    load_settings,
    parse_listen_address,
)
from exporter.logs import LEVELS, setup_logging
from exporter.metrics import ExporterMetrics
from exporter.poller import PollOutcome, TargetPoller
from exporter.service import Service
from exporter.web import create_app, start_server
from exporter.webconfig import LiveWebConfig, WebConfigError

log = logging.getLogger("exporter")

DEMO_LISTEN = "127.0.0.1:9877"
STOP_BUDGET = 1.8
"""Seconds a stop may take (polls cancelled, sessions closed, server shut): exit within 2 s."""


def _add_common(parser: argparse.ArgumentParser, default: Any) -> None:
    """Options that both the exporter and ``check`` take (``default`` SUPPRESS in subcommands)."""
    parser.add_argument(
        "--config.file",
        dest="config_file",
        type=Path,
        default=default,
        metavar="PATH",
        help="TOML configuration (default: $VMS_EXPORTER_CONFIG, else ./config.toml if present)",
    )
    parser.add_argument(
        "--log.level",
        dest="log_level",
        choices=list(LEVELS),
        default=default,
        help="log level (default: info)",
    )
    parser.add_argument(
        "--log.format",
        dest="log_format",
        choices=["logfmt", "json"],
        default=default,
        help="log format (default: logfmt)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vms-downloads-exporter",
        description="Prometheus exporter for the archive downloads of a VMS Client API.",
    )
    _add_common(parser, None)
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        metavar="HOST:PORT",
        help="address to serve /metrics on (default :9877; overrides web.listen_address)",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        type=Path,
        metavar="PATH",
        help="TLS and basic auth configuration (exporter-toolkit format)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="run the built-in VMS simulator and the exporter polling it; no configuration needed",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{check,simulate}")
    check = commands.add_parser(
        "check",
        help="validate the configuration and poll every target once",
        description="Validate the configuration, poll every target once and print what it saw. "
        "Exit 0 when all targets answered, 1 when one failed, 2 for a bad configuration.",
    )
    _add_common(check, argparse.SUPPRESS)
    # The simulator parses its own flags (see _run_simulator), so that the exporter
    # imports it only when it runs.
    commands.add_parser("simulate", help="run the built-in VMS simulator alone", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "simulate":
        from vms_simulator.__main__ import main as run_simulator

        setup_logging(args.log_level or "info", args.log_format or "logfmt")
        return run_simulator(rest, prog=f"{parser.prog} simulate")
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    setup_logging(args.log_level or "info", args.log_format or "logfmt")
    if args.demo:
        return asyncio.run(_demo(args))
    overrides: dict[str, dict[str, Any]] = {}
    if args.command is None:
        if args.listen_address is not None:
            overrides.setdefault("web", {})["listen_address"] = args.listen_address
        if args.web_config_file is not None:
            overrides.setdefault("web", {})["config_file"] = args.web_config_file
    try:
        settings = load_settings(args.config_file, overrides)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"configuration error: {escape_terminal(problem)}", file=sys.stderr)
        return 2
    if args.command == "check":
        return asyncio.run(_check(settings))
    return asyncio.run(
        serve(settings, load=functools.partial(load_settings, args.config_file, overrides))
    )


def _stop_on_signals(stop: asyncio.Event, reload: Callable[[], object] | None = None) -> None:
    """SIGTERM/SIGINT set ``stop`` (again: just logged); SIGHUP calls ``reload``."""
    loop = asyncio.get_running_loop()

    def on_stop() -> None:
        if stop.is_set():
            log.info("already stopping")
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop)
    if reload is not None:
        loop.add_signal_handler(signal.SIGHUP, reload)


async def serve(
    settings: Settings,
    stop: asyncio.Event | None = None,
    announce: Callable[[list[str]], None] | None = None,
    load: Callable[[], Settings] | None = None,
) -> int:
    """Run the exporter until ``stop`` is set (or SIGTERM/SIGINT); return the exit code.

    ``announce`` is called with the bound addresses once the server listens;
    ``load`` re-reads the configuration on SIGHUP and ``POST /-/reload``.
    """
    metrics = ExporterMetrics(
        per_camera=settings.metrics.per_camera, max_staleness=settings.poll.max_staleness
    )
    own_signals = stop is None
    stop = stop or asyncio.Event()
    service = Service(settings, metrics, stop, load)
    reloads: set[asyncio.Task[list[str]]] = set()

    def reload_on_signal() -> None:
        log.info("SIGHUP: reloading the configuration")
        task = asyncio.create_task(service.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    if own_signals:
        _stop_on_signals(stop, reload_on_signal)
    if settings.state.directory is None and any(t.login for t in settings.targets.values()):
        log.warning(
            "login mode without [state] directory: after a kill (not a graceful stop) "
            "the next start cannot replace the old session, which stays open on the VMS"
        )
    host, port = parse_listen_address(settings.web.listen_address)
    web_config = None
    if settings.web.config_file is not None:
        try:
            web_config = LiveWebConfig.load(settings.web.config_file)
        except WebConfigError as exc:  # changed since load_settings validated it
            for problem in exc.problems:
                print(f"configuration error: web.config_file: {problem}", file=sys.stderr)
            return 2
    service.web_config = web_config
    try:
        runner, addresses = await start_server(
            create_app(
                metrics,
                service.pollers,
                web_config,
                reload=service.reload,
                external_url=settings.web.external_url,
            ),
            host,
            port,
            web_config.ssl_context if web_config else None,
        )
    except OSError as exc:
        log.error(
            "cannot listen", extra={"address": settings.web.listen_address, "error": exc.strerror}
        )
        await service.close()
        return 1
    log.info(
        "exporter started",
        extra={
            "version": __version__,
            "addresses": addresses,
            "targets": list(settings.targets),
            "tls": bool(web_config and web_config.ssl_context),
            "basic_auth": bool(web_config and web_config.config.users),
        },
    )
    if announce is not None:
        announce(addresses)
    service.start()
    # What start-up built (modules, settings, metrics) lives as long as the process: kept out
    # of the garbage collector's full passes, which then walk only what polls keep.
    gc.freeze()
    if web_config is not None:
        service.supervise(asyncio.create_task(web_config.watch(), name="web-config-watch"))
    await stop.wait()
    log.info("stopping")
    for task in reloads:
        task.cancel()
    try:
        async with asyncio.timeout(STOP_BUDGET):
            await asyncio.gather(service.close(), runner.cleanup())
    except TimeoutError:
        log.warning("stopping took too long; exiting anyway")
    return 1 if service.died else 0


_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape_terminal(text: str) -> str:
    """Control characters (line breaks, ESC, bidi overrides) shown as escapes, never obeyed."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _describe(outcome: PollOutcome) -> str:
    if outcome.result != "success":
        return f"FAILED ({outcome.result}): {escape_terminal(outcome.error or '')}"
    counts = ", ".join(f"{k}={v}" for k, v in sorted((outcome.status_counts or {}).items()))
    return (
        f"ok: {outcome.downloads} downloads in the window ({counts}); "
        f"{outcome.pages} page(s) in {outcome.duration:.2f}s"
    )


async def _check(settings: Settings) -> int:
    """Poll each target once. The login session is closed at the end and never saved in
    ``[state]``: a check beside a running exporter must not replace the exporter's session.
    SIGTERM/SIGINT end it (exit 1: not every target was checked) after closing sessions.
    """
    stop = asyncio.Event()
    _stop_on_signals(stop)
    metrics = ExporterMetrics(process_metrics=False)
    failed = False
    for name, target in settings.targets.items():
        poller = TargetPoller(name, target, settings, metrics)
        try:
            checked = asyncio.ensure_future(_check_one(name, poller))
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({checked, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not checked.done():
                checked.cancel()
                await asyncio.gather(checked, return_exceptions=True)
                print(f"{name}: interrupted", file=sys.stderr)
                return 1
            failed |= not checked.result()
        finally:
            await poller.close()  # bounded: closing the session takes at most LOGOUT_TIMEOUT
    return 1 if failed else 0


async def _check_one(name: str, poller: TargetPoller) -> bool:
    outcome = await poller.poll_once()
    print(f"{name}: {_describe(outcome)}", flush=True)
    if outcome.result != "success":
        return False
    warning = await poller.timezone_warning()
    if warning:
        print(f"{name}: warning: {escape_terminal(warning)}", flush=True)
    return True


async def _demo(args: argparse.Namespace) -> int:
    """The simulator on a free loopback port and the exporter polling it every few seconds."""
    listen = args.listen_address or DEMO_LISTEN
    try:
        parse_listen_address(listen)
    except ValueError as exc:
        print(f"configuration error: --web.listen-address: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    _stop_on_signals(stop)
    from vms_simulator import SimulatorConfig, start_simulator

    sim_config = SimulatorConfig(token="demo")  # noqa: S106 (the simulator's demo token)
    simulator = await start_simulator(sim_config, "127.0.0.1", 0)
    try:
        # model_construct: the demo's own settings, untouched by VMS_EXPORTER_* variables
        # (each part is validated by its own model).
        settings = Settings.model_construct(
            web=WebSettings(listen_address=listen),
            poll=PollSettings(interval=5, timeout=4, lookback=86400, max_staleness=60),
            metrics=MetricsSettings(per_camera=True, max_cameras=50),
            targets={
                "demo": TargetSettings(
                    url=simulator.url,
                    token=SecretStr("demo"),
                    timezone=sim_config.server_timezone,
                    request_timeout=3,
                )
            },
        )

        def announce(addresses: list[str]) -> None:
            shown = addresses[0].replace("0.0.0.0", "127.0.0.1").replace("[::]", "[::1]")  # noqa: S104
            exporter_url = f"http://{shown}"
            print(
                f"Demo: simulated VMS at {simulator.url} ({sim_config.downloads} downloads, "
                f"token {sim_config.token!r})\n"
                f"      exporter metrics at {exporter_url}/metrics, "
                f"landing page {exporter_url}/\n"
                "      press Ctrl-C to stop",
                flush=True,
            )

        return await serve(settings, stop, announce)
    finally:
        with contextlib.suppress(Exception):
            await simulator.close()
