"""What the list endpoint accepts and refuses: tokens, parameters, dates, the server's zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from vms_simulator import RunningSimulator

from .helpers import AUTH, LIST, START, Start, fetch, fetch_all

INVALID = "The given data was invalid."


def created(item: dict[str, Any]) -> datetime:
    return datetime.strptime(item["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer Bearer demo"},
        {"Authorization": "bearer demo"},
        {"Authorization": "demo"},
    ],
    ids=["none", "wrong", "doubled-prefix", "lowercase", "no-scheme"],
)
async def test_a_missing_or_wrong_token_is_401(
    http: aiohttp.ClientSession, sim: RunningSimulator, headers: dict[str, str]
) -> None:
    status, body = await fetch(http, sim, headers={"Accept": "application/json", **headers})

    assert status == 401
    assert body == {"message": "Unauthenticated."}


async def test_without_a_static_token_only_login_tokens_work(
    http: aiohttp.ClientSession, simulate: Start
) -> None:
    sim = await simulate(token=None)

    status, _ = await fetch(http, sim)

    assert status == 401


async def test_all_missing_parameters_are_reported_by_field(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    headers = {"Authorization": "Bearer demo", "Accept": "application/json"}
    async with http.get(sim.url + LIST + "?page=", headers=headers) as response:
        body = await response.json()

    assert response.status == 422
    assert body == {
        "message": INVALID,
        "errors": {
            "per_page": ["The per page field is required."],
            "page": ["The page field is required."],
            "from": ["The from field is required."],
            "to": ["The to field is required."],
        },
    }


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("per_page", "abc", "The per page must be an integer."),
        ("per_page", "2.5", "The per page must be an integer."),
        ("per_page", "99999999999999999999", "The per page must be an integer."),
        ("per_page", "0", "The per page must be at least 1."),
        ("page", "-1", "The page must be at least 1."),
        ("page", "1e3", "The page must be an integer."),
        ("from", "yesterday-ish", "The from is not a valid date."),
        ("from", "2024-13-01", "The from is not a valid date."),
        ("to", "2024-02-30", "The to is not a valid date."),
        ("to", "2024-03-01 25:00:00", "The to is not a valid date."),
        ("to", "01.03.2024", "The to is not a valid date."),
    ],
)
async def test_a_malformed_parameter_gets_its_own_reason(
    http: aiohttp.ClientSession, sim: RunningSimulator, field: str, value: str, reason: str
) -> None:
    status, body = await fetch(http, sim, {field: value})

    assert status == 422
    assert body == {"message": INVALID, "errors": {field: [reason]}}


@pytest.mark.parametrize(
    "value",
    [
        "2024-03-09",
        "2024-03-09 10:00:00",
        "2024-03-09 10:00",
        "2024-03-09T10:00:00Z",
        "2024-03-09T10:00:00.123456Z",
        "2024-03-09T10:00:00+03:00",
        "2024-03-09T10:00:00+0300",
    ],
)
async def test_dates_in_the_forms_laravel_accepts(
    http: aiohttp.ClientSession, sim: RunningSimulator, value: str
) -> None:
    status, body = await fetch(http, sim, {"from": value})

    assert status == 200
    assert 0 < body["meta"]["total"] < 200


async def test_integers_may_carry_a_sign_or_blanks(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    status, body = await fetch(http, sim, {"per_page": " 5 ", "page": "+2"})

    assert status == 200
    assert (body["meta"]["per_page"], body["meta"]["current_page"]) == (5, 2)


async def test_a_window_sent_in_utc_loses_the_newest_hours(
    http: aiohttp.ClientSession, simulate: Start
) -> None:
    sim = await simulate(downloads=2000)
    now = datetime.fromtimestamp(START, UTC)
    since = now - timedelta(hours=24)

    def window(zone: tzinfo) -> dict[str, str]:
        return {
            "from": since.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
            "to": now.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
        }

    local = await fetch_all(http, sim, window(ZoneInfo("Europe/Moscow")))
    in_utc = await fetch_all(http, sim, window(UTC))
    with_offset = await fetch_all(
        http, sim, {"from": since.isoformat(), "to": now.isoformat().replace("+00:00", "Z")}
    )

    assert max(map(created, local)) > now - timedelta(minutes=30)
    assert min(map(created, local)) >= since
    # The server reads UTC digits as Moscow time: the window ends three hours early.
    assert max(map(created, in_utc)) <= now - timedelta(hours=3)
    assert min(map(created, in_utc)) >= since - timedelta(hours=3)
    assert len(in_utc) < len(local)
    # A zone suffix does not help: Laravel ignores it.
    assert [i["id"] for i in with_offset] == [i["id"] for i in in_utc]


async def test_the_server_zone_is_configurable(
    http: aiohttp.ClientSession, simulate: Start
) -> None:
    sim = await simulate(downloads=2000, server_timezone="UTC")
    now = datetime.fromtimestamp(START, UTC)
    since = now - timedelta(hours=24)
    query = {"from": f"{since:%Y-%m-%d %H:%M:%S}", "to": f"{now:%Y-%m-%d %H:%M:%S}"}

    items = await fetch_all(http, sim, query)

    assert max(map(created, items)) > now - timedelta(minutes=30)
    assert items[0]["from"] < items[0]["created_at"].replace("T", " ")


async def test_video_spans_are_written_in_the_server_zone(
    http: aiohttp.ClientSession, simulate: Start
) -> None:
    """The same dataset in two zones: the same instants, wall-clock digits 9 h apart."""
    utc = await fetch_all(http, await simulate(server_timezone="UTC", downloads=50))
    tokyo = await fetch_all(http, await simulate(server_timezone="Asia/Tokyo", downloads=50))

    assert [i["id"] for i in utc] == [i["id"] for i in tokyo]
    for in_utc, in_tokyo in zip(utc, tokyo, strict=True):
        for key in ("from", "to"):
            shown_utc = datetime.strptime(in_utc[key], "%Y-%m-%d %H:%M:%S")
            shown_tokyo = datetime.strptime(in_tokyo[key], "%Y-%m-%d %H:%M:%S")
            assert shown_tokyo - shown_utc == timedelta(hours=9)
        span_end = datetime.strptime(in_tokyo["to"], "%Y-%m-%d %H:%M:%S")
        assert span_end.replace(tzinfo=ZoneInfo("Asia/Tokyo")) <= created(in_tokyo)


async def test_a_capped_per_page_shows_in_meta(
    http: aiohttp.ClientSession, simulate: Start
) -> None:
    sim = await simulate(per_page_cap=30)

    status, body = await fetch(http, sim, {"per_page": "100"})
    _, small = await fetch(http, sim, {"per_page": "10"})

    assert status == 200
    assert len(body["data"]) == 30
    assert body["meta"]["per_page"] == 30
    assert body["meta"]["last_page"] == 7
    assert small["meta"]["per_page"] == 10


async def test_the_newer_path_and_items_without_status(
    http: aiohttp.ClientSession, simulate: Start
) -> None:
    sim = await simulate(path="/api/v1/downloads", omit_status=True)

    status, body = await fetch(http, sim, path="/api/v1/downloads")
    old_status, old_body = await fetch(http, sim)

    assert status == 200
    assert body["meta"]["path"] == "http://127.0.0.1:8080/api/v1/downloads"
    assert all("status" not in item for item in body["data"])
    assert "is_file_exists" in body["data"][0]
    assert old_status == 404
    assert old_body == {"message": "The route api/v1/users/downloads could not be found."}


async def test_a_wrong_method_is_405_in_json(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    async with http.post(sim.url + LIST) as response:
        body = await response.json()

    assert response.status == 405
    assert "Supported methods: GET" in body["message"]


async def test_a_repeated_parameter_counts_once_the_last_one_wins(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    url = f"{sim.url}{LIST}?per_page=10&page=1&page=3&from=2000-01-01&to=2100-01-01"
    async with http.get(url, headers=AUTH) as response:
        body = await response.json()

    assert body["meta"]["current_page"] == 3
