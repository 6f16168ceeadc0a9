"""``/problems``: the downloads that need a person, as HTML for the on-call or JSON for scripts.

JSON with ``?format=json`` or ``Accept: application/json``; ``?target=NAME``
shows one target. Built from the poller's remembered records: a request never
calls the VMS.
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections.abc import Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler

from exporter.config import format_duration
from exporter.poller import TargetPoller
from exporter.problems import KINDS, Problems, entry, find_problems, rfc3339, stuck_after
from exporter.vms.models import DetailedDownload

TITLES = {
    "failed": "Failed",
    "stuck": "In progress for longer than {threshold}",
    "file_missing": "Completed, file missing",
}
COLUMNS = ("id", "status", "camera_id", "stream_type", "created_at", "updated_at", "age")


def _wants_json(request: web.Request) -> bool:
    if request.query.get("format") == "json":
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def problems_handler(
    pollers: Sequence[TargetPoller], clock: Callable[[], float] = time.time
) -> Handler:
    async def problems(request: web.Request) -> web.Response:
        form = request.query.get("format", "html")
        if form not in ("html", "json"):
            raise web.HTTPBadRequest(text="format: expected html or json\n")
        wanted = request.query.get("target")
        chosen = [p for p in pollers if wanted is None or p.name == wanted]
        if not chosen:
            known = ", ".join(p.name for p in pollers)
            raise web.HTTPNotFound(text=f"target: no target named {wanted!r} (known: {known})\n")
        now = clock()
        # In a thread: 100,000 records take a while, and scrapes must not wait for them.
        found = {
            p.name: await asyncio.to_thread(
                find_problems, p.records.values(), now=now, lookback=p.lookback
            )
            for p in chosen
        }
        if _wants_json(request):
            body = {
                "targets": {
                    name: {kind: [entry(r, now) for r in result.shown[kind]] for kind in KINDS}
                    for name, result in found.items()
                }
            }
            return web.Response(text=json.dumps(body), content_type="application/json")
        sections = [_section(p, found[p.name], now) for p in chosen]
        return web.Response(text=_page(pollers, sections), content_type="text/html")

    return problems


def _cell(column: str, shown: dict[str, object]) -> str:
    if column == "age":
        seconds = shown["age_seconds"]
        assert isinstance(seconds, int)
        return format_duration(seconds) if seconds >= 1 else "0s"
    value = shown[column]
    return "" if value is None else html.escape(str(value))


def _section(poller: TargetPoller, result: Problems, now: float) -> str:
    success = poller.last_success
    when = rfc3339(success.finished_at) if success else None
    parts = [
        f"<h2>{html.escape(poller.name)}</h2>",
        f"<p>As of the last successful poll: {when or 'none yet'}.</p>",
    ]
    threshold = format_duration(stuck_after(poller.lookback))
    for kind in KINDS:
        records = result.shown[kind]
        columns = list(COLUMNS)
        if any(isinstance(r, DetailedDownload) for r in records):
            columns += ["name", "login"]
        title = TITLES[kind].format(threshold=threshold)
        count = f"{len(records)} of {result.total[kind]}" if records else "none"
        parts.append(f"<h3>{html.escape(title)} ({count})</h3>")
        if not records:
            continue
        head = "".join(f"<th>{c}</th>" for c in columns)
        rows = []
        for record in records:
            shown = entry(record, now)
            rows.append("<tr>" + "".join(f"<td>{_cell(c, shown)}</td>" for c in columns) + "</tr>")
        parts.append(f"<table><tr>{head}</tr>{''.join(rows)}</table>")
    return "\n".join(parts)


def _page(pollers: Sequence[TargetPoller], sections: list[str]) -> str:
    links = " · ".join(
        f'<a href="problems?target={html.escape(p.name)}">{html.escape(p.name)}</a>'
        for p in pollers
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Problems · VMS downloads exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}</style></head>
<body><h1>Downloads that need a person</h1>
<p><a href="./">Home</a> · targets: <a href="problems">all</a> · {links} ·
<a href="problems?format=json">JSON</a></p>
<p>From the exporter's memory of each target's window (newest first, at most 100 per kind);
times in UTC.</p>
{"".join(sections)}
</body></html>
"""
