"""/problems over real sockets, against the simulator's own truth."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from tests.certs import bcrypt_hash, outcome
from tests.exporter_harness import exporter_on_simulator
from vms_simulator import SimulatorConfig

SIM = SimulatorConfig(downloads=600, seed=11, arrival_interval=0, stuck_ratio=0.2)
FIELDS = {"id", "status", "camera_id", "stream_type", "created_at", "updated_at"}


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def expected(items: list[dict[str, Any]], now: float) -> dict[str, list[str]]:
    """Per kind the ids, newest first, as the simulator sees them."""
    kinds: dict[str, list[dict[str, Any]]] = {"failed": [], "stuck": [], "file_missing": []}
    for i in items:
        if i["status"] == "failed":
            kinds["failed"].append(i)
        elif i["status"] == "in progress" and now - epoch(i["created_at"]) > 7200:
            kinds["stuck"].append(i)
        elif i["status"] == "completed" and i["is_file_exists"] is False:
            kinds["file_missing"].append(i)
    return {
        kind: [str(i["id"]) for i in sorted(found, key=lambda i: -epoch(i["created_at"]))][:100]
        for kind, found in kinds.items()
    }


async def test_json_lists_what_needs_a_person_and_nothing_of_a_person() -> None:
    async with exporter_on_simulator(SIM) as h:
        status, text, _ = await h.get("/problems?format=json")
        assert status == 200
        assert json.loads(text) == {"targets": {"main": {k: [] for k in expected([], 0)}}}
        await h.poller.poll_once()
        truth = expected(await h.simulator_items(), h.clock())
        status, text, headers = await h.get("/problems?format=json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    body = json.loads(text)["targets"]["main"]
    assert {kind: [e["id"] for e in entries] for kind, entries in body.items()} == truth
    assert all(truth.values()), "the simulator should have every kind of problem"
    entries = [e for kind in body.values() for e in kind]
    assert all(set(e) >= FIELDS and e["created_at"].endswith("Z") for e in entries)
    assert not [e for e in entries if "name" in e or "login" in e]
    assert "operator" not in text and "ул." not in text


async def test_html_is_linked_from_the_landing_page_and_filters_by_target() -> None:
    async with exporter_on_simulator(SIM) as h:
        await h.poller.poll_once()
        truth = expected(await h.simulator_items(), h.clock())
        _, landing, _ = await h.get("/")
        status, page, headers = await h.get("/problems?target=main")
        missing, message, _ = await h.get("/problems?target=nope")
        bad_format, _, _ = await h.get("/problems?format=xml")
        _, by_accept, accept_headers = await h.get("/problems", Accept="application/json")
    assert 'href="problems"' in landing
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "<h2>main</h2>" in page and "In progress for longer than 2h" in page
    assert all(f"<td>{ident}</td>" in page for ids in truth.values() for ident in ids)
    assert missing == 404 and "nope" in message and "main" in message
    assert bad_format == 400
    assert accept_headers["Content-Type"].startswith("application/json")
    assert json.loads(by_accept)["targets"]["main"]["failed"][0]["id"] == truth["failed"][0]


async def test_names_and_logins_only_with_show_details_behind_basic_auth(tmp_path: Path) -> None:
    web_config = tmp_path / "web.yml"
    web_config.write_text(f"basic_auth_users:\n  oncall: '{bcrypt_hash('pw')}'\n")
    async with exporter_on_simulator(SIM, web={"show_details": True}, web_config=web_config) as h:
        await h.poller.poll_once()
        items = {str(i["id"]): i for i in await h.simulator_items()}
        assert await outcome(h.url + "/problems", None, None) == 401
        auth = aiohttp.encode_basic_auth("oncall", "pw")
        _, text, _ = await h.get("/problems?format=json", Authorization=auth)
        _, page, _ = await h.get("/problems", Authorization=auth)
    failed = json.loads(text)["targets"]["main"]["failed"]
    assert failed
    for shown in failed:
        truth = items[shown["id"]]
        assert shown["name"] == truth["name"]
        assert shown["login"] == truth["user"]["login"]
    assert "<th>login</th>" in page
