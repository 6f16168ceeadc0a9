"""The HTTP side: /metrics, /-/healthy, /-/ready, /runbook and a small landing page."""

from __future__ import annotations

import html
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.typedefs import Handler

from exporter import __version__, runbook
from exporter.exposition import metrics_handler
from exporter.httpserver import EXPOSITION_VERSION, start_guarded
from exporter.metrics import ExporterMetrics
from exporter.poller import TargetPoller
from exporter.problems_page import problems_handler
from exporter.webauth import security_middleware
from exporter.webconfig import LiveWebConfig

SHUTDOWN_TIMEOUT = 1.0


Reload = Callable[[], Awaitable[list[str]]]
"""Re-read the configuration; the problems when it is invalid (and nothing changed)."""


def create_app(
    metrics: ExporterMetrics,
    pollers: Sequence[TargetPoller],
    web_config: LiveWebConfig | None = None,
    reload: Reload | None = None,
    clock: Callable[[], float] = time.time,
    external_url: str | None = None,
) -> web.Application:
    """The exporter's routes; with ``web_config``, behind its basic auth and headers.

    ``pollers`` is read on every request, so a reload that changes it shows at once.
    """
    app = web.Application(middlewares=[security_middleware(web_config)] if web_config else [])
    app[EXPOSITION_VERSION] = metrics.exposition_version  # /metrics answers shared until it changes
    # prometheus-client's negotiation (OpenMetrics) and output, rendered faster, off the loop.
    app.router.add_get("/metrics", metrics_handler(metrics.registry))
    app.router.add_get("/-/healthy", _healthy)
    app.router.add_get("/-/ready", _ready_handler(pollers))
    app.router.add_get("/", _landing_handler(pollers, external_url))
    app.router.add_get("/runbook", _runbook)
    app.router.add_get("/problems", problems_handler(pollers, clock))
    if reload is not None:
        app.router.add_post("/-/reload", _reload_handler(reload))
    return app


async def _runbook(request: web.Request) -> web.Response:
    return web.Response(text=runbook.page(), content_type="text/html")


def _reload_handler(reload: Reload) -> Handler:
    async def reload_config(request: web.Request) -> web.Response:
        problems = await reload()
        if problems:
            text = "".join(f"{problem}\n" for problem in problems)
            return web.Response(status=500, text=f"Configuration not reloaded:\n{text}")
        return web.Response(text="Configuration reloaded.\n")

    return reload_config


async def _healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy.\n")


def _ready_handler(pollers: Sequence[TargetPoller]) -> Handler:
    async def ready(request: web.Request) -> web.Response:
        waiting = [p.name for p in pollers if p.last is None]
        if waiting:
            return web.Response(
                status=503, text=f"Not ready: first poll pending for {', '.join(waiting)}.\n"
            )
        return web.Response(text="Ready.\n")

    return ready


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    when = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{when} ({time.time() - timestamp:.0f}s ago)"


def _landing_handler(pollers: Sequence[TargetPoller], external_url: str | None) -> Handler:
    async def landing(request: web.Request) -> web.Response:
        rows = []
        for poller in pollers:
            last = poller.last
            success = poller.last_success
            rows.append(
                "<tr>"
                f"<td>{html.escape(poller.name)}</td>"
                f"<td>{html.escape(poller.target.url)}</td>"
                f"<td>{_when(last.finished_at if last else None)}</td>"
                f"<td>{html.escape(last.result) if last else 'pending'}</td>"
                f"<td>{_when(success.finished_at if success else None)}</td>"
                f"<td>{success.downloads if success else '-'}</td>"
                f"<td>{html.escape(last.error or '') if last else ''}</td>"
                "</tr>"
            )
        if external_url:
            base = html.escape(external_url)
            links = (
                f"Alert links point here as <code>{base}/runbook</code> and "
                f"<code>{base}/problems</code> (<code>[web] external_url</code>; "
                "the mixin's <code>exporter_url</code> should be the same)."
            )
        else:
            links = (
                "Alert links reach this page at the address Prometheus scrapes "
                "(set <code>[web] external_url</code> and the mixin's "
                "<code>exporter_url</code> when people reach it elsewhere)."
            )
        page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>VMS downloads exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}</style></head>
<body><h1>VMS downloads exporter</h1>
<p>Version {html.escape(__version__)}. <a href="metrics">Metrics</a> ·
<a href="problems">Problems</a> (the downloads that need a person) ·
<a href="-/healthy">healthy</a> · <a href="-/ready">ready</a> ·
<a href="runbook">Runbook</a> (what each alert means and what to do)</p>
<p>Values come from a background poll of each VMS, not from the scrape.</p>
<p>{links}</p>
<table><tr><th>target</th><th>URL</th><th>last poll</th><th>result</th>
<th>last success</th><th>downloads in window</th><th>error</th></tr>
{"".join(rows)}
</table></body></html>
"""
        return web.Response(text=page, content_type="text/html")

    return landing


async def start_server(
    app: web.Application,
    host: str | None,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[web.AppRunner, list[str]]:
    """Listen on ``host:port`` (None: all interfaces, IPv4 and IPv6); return bound addresses.

    With ``ssl_context`` the server speaks HTTPS (HTTP/1.1) only. Either way it is
    guarded against hostile clients (see :mod:`exporter.httpserver`).
    """
    runner, _ = await start_guarded(
        app, host, port, shutdown_timeout=SHUTDOWN_TIMEOUT, ssl_context=ssl_context
    )
    addresses = []
    for sock in runner.addresses:
        host_part, port_part = sock[0], sock[1]
        addresses.append(
            f"[{host_part}]:{port_part}" if ":" in host_part else f"{host_part}:{port_part}"
        )
    return runner, addresses
