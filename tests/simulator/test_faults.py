"""Fault switches (flags and the control endpoint) and the stats tests count with."""

from __future__ import annotations

import json
import time

import aiohttp
import pytest

from vms_simulator import Faults, RunningSimulator

from .helpers import AUTH, EVERYTHING, LIST, Start, fetch, login, set_faults, stats

DEFAULTS = {
    "latency": 0.0,
    "jitter": 0.0,
    "error_rate": 0.0,
    "unauthorized": False,
    "rate_limit_rate": 0.0,
    "retry_after": 1,
    "truncate_rate": 0.0,
    "odd_items_rate": 0.0,
    "fail_new_exports": False,
    "oversized_body": 0,
    "endless_body": False,
    "arrivals_between_pages": 0,
}


async def test_post_merges_the_given_fields(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    async with http.get(sim.url + "/-/sim/faults") as response:
        assert await response.json() == DEFAULTS

    assert await set_faults(http, sim, error_rate=1) == {**DEFAULTS, "error_rate": 1.0}
    merged = await set_faults(http, sim, retry_after=5)

    assert merged == {**DEFAULTS, "error_rate": 1.0, "retry_after": 5}


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"eror_rate": 1}, "eror_rate"),
        ({"error_rate": 2}, "error_rate"),
        ({"latency": -1}, "latency"),
        ({"unauthorized": 1}, "unauthorized"),
        ({"retry_after": 1.5}, "retry_after"),
        ({"oversized_body": -1}, "oversized_body"),
        ({"endless_body": "yes"}, "endless_body"),
        ({"arrivals_between_pages": 0.5}, "arrivals_between_pages"),
        ([1, 2], "JSON object"),
        ("{broken", ""),
    ],
)
async def test_a_bad_fault_request_is_400_and_changes_nothing(
    http: aiohttp.ClientSession, sim: RunningSimulator, body: object, complaint: str
) -> None:
    raw = body if isinstance(body, str) else json.dumps(body)
    async with http.post(sim.url + "/-/sim/faults", data=raw) as response:
        answer = await response.json()

    assert response.status == 400
    assert complaint in answer["error"]
    async with http.get(sim.url + "/-/sim/faults") as response:
        assert await response.json() == DEFAULTS


async def test_error_rate_answers_500(http: aiohttp.ClientSession, sim: RunningSimulator) -> None:
    await set_faults(http, sim, error_rate=1)

    status, body = await fetch(http, sim)

    assert status == 500
    assert body == {"message": "Server Error"}


async def test_a_partial_rate_hits_some_requests(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    await set_faults(http, sim, error_rate=0.5)

    codes = [(await fetch(http, sim, {"per_page": "1"}))[0] for _ in range(40)]

    assert 5 < codes.count(500) < 35
    assert codes.count(200) == 40 - codes.count(500)


async def test_rate_limit_answers_429_with_retry_after(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    await set_faults(http, sim, rate_limit_rate=1, retry_after=7)
    query = {"per_page": "10", "page": "1", **EVERYTHING}

    async with http.get(sim.url + LIST, params=query, headers=AUTH) as response:
        body = await response.json()

    assert response.status == 429
    assert response.headers["Retry-After"] == "7"
    assert body == {"message": "Too Many Attempts."}


async def test_truncated_bodies_are_cut_mid_json(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    await set_faults(http, sim, truncate_rate=1)
    query = {"per_page": "50", "page": "1", **EVERYTHING}

    async with http.get(sim.url + LIST, params=query, headers=AUTH) as response:
        raw = await response.read()

    assert response.status == 200
    assert raw.startswith(b'{"data":[{"id":')
    with pytest.raises(ValueError, match=r"."):
        json.loads(raw)


async def test_odd_items_break_one_field_each(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    status, clean = await fetch(http, sim, {"per_page": "10"})
    assert status == 200
    await set_faults(http, sim, odd_items_rate=1)
    status, odd = await fetch(http, sim, {"per_page": "10"})
    assert status == 200
    for before, after in zip(clean["data"], odd["data"], strict=True):
        changed = {key for key in before if before[key] != after[key]}
        expected = [{"status"}, {"id"}, {"created_at"}, {"stream", "is_file_exists"}, {"id"}]
        assert changed == expected[before["id"] % 5], (before["id"], changed)
        if before["id"] % 5 == 4:
            assert after["id"] == str(before["id"])
    assert odd["meta"] == clean["meta"]


async def test_oversized_body_is_padded_valid_json(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    query = {"per_page": "5", "page": "1", **EVERYTHING}
    async with http.get(sim.url + LIST, params=query, headers=AUTH) as response:
        clean = await response.read()
    await set_faults(http, sim, oversized_body=100_000)

    async with http.get(sim.url + LIST, params=query, headers=AUTH) as response:
        padded = await response.read()

    assert len(padded) == len(clean) + 100_000
    assert json.loads(padded) == json.loads(clean)


async def test_endless_body_keeps_coming(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    await set_faults(http, sim, endless_body=True)
    query = {"per_page": "5", "page": "1", **EVERYTHING}

    async with http.get(sim.url + LIST, params=query, headers=AUTH) as response:
        assert response.status == 200
        assert response.headers["Transfer-Encoding"] == "chunked"
        received = 0
        async for chunk in response.content.iter_chunked(65536):
            received += len(chunk)
            if received > 4_000_000:
                break

    assert received > 4_000_000
    assert (await stats(http, sim))["requests"]["by_code"] == {"200": 1}


async def test_arrivals_between_pages_push_items_to_later_pages(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    await set_faults(http, sim, arrivals_between_pages=2)

    pages = [(await fetch(http, sim, {"per_page": "10"}))[1] for _ in range(4)]

    assert [p["meta"]["total"] - pages[0]["meta"]["total"] for p in pages] == [0, 1, 2, 2]
    assert [i["id"] for i in pages[3]["data"][2:]] == [i["id"] for i in pages[0]["data"][:8]]
    async with http.get(sim.url + "/-/sim/faults") as response:
        assert (await response.json())["arrivals_between_pages"] == 0


async def test_latency_delays_list_requests(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    await set_faults(http, sim, latency=0.3)

    began = time.monotonic()
    status, _ = await fetch(http, sim, {"per_page": "1"})

    assert status == 200
    assert time.monotonic() - began >= 0.3


async def test_unauthorized_refuses_every_token_and_revokes_sessions(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    _, before = await login(http, sim)
    await set_faults(http, sim, unauthorized=True)
    _, during = await login(http, sim)

    assert (await fetch(http, sim))[0] == 401
    assert (await fetch(http, sim, headers={"Authorization": during["access_token"]}))[0] == 401

    await set_faults(http, sim, unauthorized=False)

    assert (await fetch(http, sim))[0] == 200
    assert (await fetch(http, sim, headers={"Authorization": before["access_token"]}))[0] == 401
    assert (await fetch(http, sim, headers={"Authorization": during["access_token"]}))[0] == 200


async def test_faults_can_be_on_from_the_start(
    http: aiohttp.ClientSession, simulate: Start
) -> None:
    sim = await simulate(faults=Faults(error_rate=1.0))

    assert (await fetch(http, sim))[0] == 500


async def test_stats_count_requests_by_code_and_logins(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    headers = {**AUTH, "X-Client": "web", "X-UUID": "0f8e-test"}
    await fetch(http, sim, {"per_page": "3", "from": "2024-03-09 00:00:00"}, headers=headers)
    await fetch(http, sim, headers={})
    await fetch(http, sim, {"page": "x"})
    await login(http, sim)
    await login(http, sim, password="bad")

    counted = await stats(http, sim)

    assert counted["requests"] == {"total": 3, "by_code": {"200": 1, "401": 1, "422": 1}}
    assert counted["token_requests"] == {"total": 2, "by_code": {"200": 1, "422": 1}}
    assert counted["logins"] == 1
    assert counted["active_sessions"] == 1
    assert counted["downloads"] == 200
    assert counted["x_client"] == {"web": 1, "": 2}
    assert counted["x_uuid"] == {"0f8e-test": 1, "": 2}
    assert counted["last_query"] == {
        "per_page": "100",
        "page": "x",
        "from": "2000-01-01",
        "to": "2100-01-01",
    }
