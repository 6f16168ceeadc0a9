"""The list endpoint: envelope, items, paging and links, as a client sees them."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiohttp

from vms_simulator import RunningSimulator

from .helpers import AUTH, EVERYTHING, LIST, Start, fetch, fetch_all

# Keys of the documented sample (shared/vms-api/downloads-page.sample.json), in its order.
ITEM_KEYS = [
    "id", "attributes", "name", "type", "url", "from", "to", "created_at", "updated_at",
    "status", "is_file_exists", "stream", "user_id", "user",
]  # fmt: skip
STREAM_KEYS = [
    "id", "type", "camera_id", "is_preview_from_server", "is_archive_from_server", "status",
    "has_sound", "width", "height",
]  # fmt: skip
USER_KEYS = [
    "id", "login", "name", "parent_id", "created_at", "updated_at", "access_token_id",
    "can_update_password",
]  # fmt: skip
META_KEYS = ["current_page", "from", "last_page", "links", "path", "per_page", "to", "total"]
LOCAL = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
UTC_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000000Z")


def parse_utc(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


async def test_page_has_the_documented_envelope(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    status, body = await fetch(http, sim, {"per_page": "25"})

    assert status == 200
    assert list(body) == ["data", "links", "meta"]
    assert list(body["links"]) == ["first", "last", "prev", "next"]
    assert list(body["meta"]) == META_KEYS
    assert len(body["data"]) == 25
    for item in body["data"]:
        assert list(item) == ITEM_KEYS
        assert list(item["stream"]) == STREAM_KEYS
        assert list(item["user"]) == USER_KEYS


async def test_items_are_shaped_like_the_sample(
    http: aiohttp.ClientSession, simulate: Start
) -> None:
    sim = await simulate(downloads=3000)
    items = await fetch_all(http, sim)

    assert len(items) == 3000
    for item in items:
        assert isinstance(item["id"], int)
        assert item["attributes"] == []
        assert item["type"] == "mp4"
        assert item["url"] == "http://127.0.0.1:8080/storage/"
        assert re.fullmatch(r"г\. [^,]+, [^,]+ \d+, file\.\d{8}-\d{6}-\d{6}\.mp4", item["name"])
        assert LOCAL.fullmatch(item["from"])
        assert LOCAL.fullmatch(item["to"])
        assert item["from"] <= item["to"]
        assert UTC_STAMP.fullmatch(item["created_at"])
        assert UTC_STAMP.fullmatch(item["updated_at"])
        assert item["updated_at"] >= item["created_at"]
        assert item["status"] in {"in progress", "completed", "failed"}
        assert isinstance(item["is_file_exists"], bool)
        stream = item["stream"]
        assert stream["type"] in {"high", "low"}
        assert stream["id"] == 2 * stream["camera_id"] - (stream["type"] == "high")
        assert stream["is_archive_from_server"] is None
        assert stream["width"] is None
        assert item["user_id"] == item["user"]["id"]
    assert {i["status"] for i in items} == {"in progress", "completed", "failed"}
    assert {i["is_file_exists"] for i in items} == {True, False}
    assert {i["stream"]["type"] for i in items} == {"high", "low"}


async def test_pages_hold_every_item_exactly_once_newest_first(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    seen: list[dict[str, object]] = []
    for page in range(1, 30 + 1):
        status, body = await fetch(http, sim, {"per_page": "7", "page": str(page)})
        assert status == 200
        meta = body["meta"]
        assert (meta["current_page"], meta["per_page"], meta["total"]) == (page, 7, 200)
        assert meta["last_page"] == 29
        assert meta["from"] == (page - 1) * 7 + 1
        assert meta["to"] == min(page * 7, 200)
        assert len(body["data"]) == meta["to"] - meta["from"] + 1
        seen.extend(body["data"])
        if page == meta["last_page"]:
            break

    assert len(seen) == 200
    assert len({item["id"] for item in seen}) == 200
    order = [(item["created_at"], item["id"]) for item in seen]
    assert order == sorted(order, reverse=True)


async def test_a_page_beyond_the_last_is_empty_with_true_meta(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    status, body = await fetch(http, sim, {"per_page": "50", "page": "9"})

    assert status == 200
    assert body["data"] == []
    meta = body["meta"]
    assert (meta["current_page"], meta["last_page"], meta["total"]) == (9, 4, 200)
    assert meta["from"] is None
    assert meta["to"] is None
    assert body["links"]["next"] is None
    assert body["links"]["prev"].endswith("?page=8")


async def test_an_empty_window_has_one_empty_page(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    status, body = await fetch(http, sim, {"from": "1999-01-01", "to": "1999-12-31"})

    assert status == 200
    assert body["data"] == []
    assert body["meta"]["total"] == 0
    assert body["meta"]["last_page"] == 1
    assert body["links"]["next"] is None
    assert [b["label"] for b in body["meta"]["links"]] == [
        "pagination.previous",
        "1",
        "pagination.next",
    ]


async def test_links_come_from_the_public_url_and_drop_the_filter(
    http: aiohttp.ClientSession, simulate: Start
) -> None:
    sim = await simulate(public_url="https://vms.example.test")
    status, body = await fetch(http, sim, {"per_page": "20", "page": "2"})

    assert status == 200
    path = "https://vms.example.test" + LIST
    assert body["meta"]["path"] == path
    assert body["links"] == {
        "first": f"{path}?page=1",
        "last": f"{path}?page=10",
        "prev": f"{path}?page=1",
        "next": f"{path}?page=3",
    }
    urls = [button["url"] for button in body["meta"]["links"] if button["url"]]
    assert urls
    for url in urls:
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == path
        assert re.fullmatch(r"page=\d+", parts.query)
    assert sim.url not in str(body)


async def test_paginator_buttons_follow_laravel(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    _, small = await fetch(http, sim, {"per_page": "70", "page": "2"})
    _, large = await fetch(http, sim, {"per_page": "2", "page": "50"})

    assert [(b["label"], b["active"]) for b in small["meta"]["links"]] == [
        ("pagination.previous", False),
        ("1", False),
        ("2", True),
        ("3", False),
        ("pagination.next", False),
    ]
    assert [b["label"] for b in large["meta"]["links"]] == [
        "pagination.previous", "1", "2", "...", "47", "48", "49", "50", "51", "52", "53",
        "...", "99", "100", "pagination.next",
    ]  # fmt: skip
    gap = large["meta"]["links"][3]
    assert gap == {"url": None, "label": "...", "active": False}


async def test_body_is_encoded_like_php(http: aiohttp.ClientSession, sim: RunningSimulator) -> None:
    query = {"per_page": "1", "page": "1", **EVERYTHING}
    async with http.get(sim.url + LIST, params=query, headers=AUTH) as response:
        raw = await response.text()

    assert response.content_type == "application/json"
    assert "\\u0433. " in raw  # "г. " of the camera address
    assert '"url":"http:\\/\\/127.0.0.1:8080\\/storage\\/"' in raw


async def test_the_window_filters_on_created_at_inclusively(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    items = await fetch_all(http, sim)
    newest = parse_utc(items[0]["created_at"])
    moscow = newest.timestamp() + 3 * 3600
    edge = datetime.fromtimestamp(moscow, UTC).strftime("%Y-%m-%d %H:%M:%S")

    _, up_to_edge = await fetch(http, sim, {"from": "2000-01-01", "to": edge})
    _, from_edge = await fetch(http, sim, {"from": edge, "to": "2100-01-01"})

    same_second = sum(1 for item in items if item["created_at"] == items[0]["created_at"])
    assert up_to_edge["meta"]["total"] == 200
    assert from_edge["meta"]["total"] == same_second
