"""Logging in for a token: validation, the session limit, dropping a session, expiry."""

from __future__ import annotations

import aiohttp
import pytest

from vms_simulator import Account, ManualClock, RunningSimulator

from .helpers import Start, fetch, login, stats

INVALID = "The given data was invalid."
NO_MATCH = "These credentials do not match our records."


def bearer(access_token: str) -> dict[str, str]:
    """Headers for a token as the login returned it (it already carries "Bearer ")."""
    return {"Authorization": access_token, "Accept": "application/json"}


async def test_a_login_token_reads_the_list(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    status, body = await login(http, sim)

    assert status == 200
    assert body["access_token"].startswith("Bearer ")
    assert body["user"]["login"] == "exporter@example.com"
    assert body["user"]["access_token_id"] is not None
    assert (await fetch(http, sim, headers=bearer(body["access_token"])))[0] == 200
    doubled = bearer("Bearer " + body["access_token"])
    assert (await fetch(http, sim, headers=doubled))[0] == 401


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"password": "wrong"}, {"login": [NO_MATCH]}),
        ({"login": "nobody@example.com"}, {"login": [NO_MATCH]}),
        ({"login": None, "password": ""}, {
            "login": ["The login field is required."],
            "password": ["The password field is required."],
        }),
        ({"password": 123}, {"password": ["The password must be a string."]}),
        ({"session_id": "first"}, {"session_id": ["The session id must be an integer."]}),
    ],
    ids=["wrong-password", "unknown-login", "missing", "not-a-string", "bad-session-id"],
)  # fmt: skip
async def test_a_refused_login_is_422(
    http: aiohttp.ClientSession,
    sim: RunningSimulator,
    fields: dict[str, object],
    errors: dict[str, list[str]],
) -> None:
    status, body = await login(http, sim, **fields)

    assert status == 422
    assert body == {"message": INVALID, "errors": errors}


async def test_a_body_that_is_not_json_misses_every_field(
    http: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    async with http.post(sim.url + "/api/v1/token", data=b"{not json") as response:
        body = await response.json()

    assert response.status == 422
    assert set(body["errors"]) == {"login", "password"}


async def test_a_form_body_works_too(http: aiohttp.ClientSession, sim: RunningSimulator) -> None:
    form = {"login": "exporter@example.com", "password": "demo"}
    async with http.post(sim.url + "/api/v1/token", data=form) as response:
        assert response.status == 200


async def test_the_session_limit_and_dropping_a_session(
    http: aiohttp.ClientSession, simulate: Start
) -> None:
    sim = await simulate(max_sessions=2)
    _, first = await login(http, sim)
    _, second = await login(http, sim)

    status, refused = await login(http, sim)
    assert status == 419
    assert set(refused) == {"message", "session_id"}
    assert refused["session_id"] == first["user"]["access_token_id"]  # the oldest
    assert (await stats(http, sim))["active_sessions"] == 2

    status, third = await login(http, sim, session_id=first["user"]["access_token_id"])
    assert status == 200
    assert (await fetch(http, sim, headers=bearer(first["access_token"])))[0] == 401
    assert (await fetch(http, sim, headers=bearer(second["access_token"])))[0] == 200
    assert (await fetch(http, sim, headers=bearer(third["access_token"])))[0] == 200
    counted = await stats(http, sim)
    assert counted["active_sessions"] == 2
    assert counted["logins"] == 3
    assert counted["token_requests"]["by_code"] == {"200": 3, "419": 1}


async def test_passwords_may_be_cyrillic(http: aiohttp.ClientSession, simulate: Start) -> None:
    sim = await simulate(accounts=(Account("оператор", "пароль"),))

    assert (await login(http, sim, login="оператор", password="пароль"))[0] == 200
    assert (await login(http, sim, login="оператор", password="парол"))[0] == 422


async def test_the_limit_is_per_account(http: aiohttp.ClientSession, simulate: Start) -> None:
    sim = await simulate(
        max_sessions=1, accounts=(Account("a@example.com", "pa"), Account("b@example.com", "pb"))
    )

    assert (await login(http, sim, login="a@example.com", password="pa"))[0] == 200
    assert (await login(http, sim, login="b@example.com", password="pb"))[0] == 200
    assert (await login(http, sim, login="a@example.com", password="pa"))[0] == 419


async def test_tokens_expire_and_stop_counting(
    http: aiohttp.ClientSession, simulate: Start, clock: ManualClock
) -> None:
    sim = await simulate(token_ttl=60, max_sessions=1)
    _, session = await login(http, sim)
    clock.advance(59)
    assert (await fetch(http, sim, headers=bearer(session["access_token"])))[0] == 200

    clock.advance(1)

    assert (await fetch(http, sim, headers=bearer(session["access_token"])))[0] == 401
    assert (await stats(http, sim))["active_sessions"] == 0
    assert (await login(http, sim))[0] == 200
    assert (await fetch(http, sim))[0] == 200  # the static token does not expire


async def test_with_captcha_on_a_login_cannot_succeed(
    http: aiohttp.ClientSession, simulate: Start
) -> None:
    sim = await simulate(captcha=True)

    status, body = await login(http, sim)
    solved_status, solved = await login(http, sim, captcha="x7f2", key="k")

    assert status == 422
    assert body["errors"]["captcha"] == ["The captcha field is required."]
    assert solved_status == 422
    assert solved["errors"] == {"captcha": ["Invalid captcha."]}


async def close(
    http: aiohttp.ClientSession, sim: RunningSimulator, session_id: object, access_token: str
) -> tuple[int, object]:
    async with http.post(
        f"{sim.url}/api/v1/sessions/{session_id}", headers=bearer(access_token)
    ) as response:
        return response.status, await response.json()


async def test_a_session_closed_is_gone_and_frees_its_place(
    http: aiohttp.ClientSession, simulate: Start, clock: ManualClock
) -> None:
    sim = await simulate(max_sessions=1)
    _, session = await login(http, sim)
    clock.advance(30 * 86400)  # sessions never expire unless closed
    assert (await fetch(http, sim, headers=bearer(session["access_token"])))[0] == 200
    assert (await login(http, sim))[0] == 419

    answer = await close(http, sim, session["user"]["access_token_id"], session["access_token"])

    assert answer == (200, {"status": "ok"})
    assert (await fetch(http, sim, headers=bearer(session["access_token"])))[0] == 401
    counted = await stats(http, sim)
    assert counted["sessions"] == []
    assert counted["session_closes"]["by_code"] == {"200": 1}
    assert (await login(http, sim))[0] == 200


async def test_only_a_valid_token_closes_and_only_sessions_of_its_account(
    http: aiohttp.ClientSession, simulate: Start
) -> None:
    sim = await simulate(accounts=(Account("a@example.com", "pa"), Account("b@example.com", "pb")))
    _, a = await login(http, sim, login="a@example.com", password="pa")
    _, b = await login(http, sim, login="b@example.com", password="pb")
    a_id, b_id = a["user"]["access_token_id"], b["user"]["access_token_id"]

    assert (await close(http, sim, a_id, "Bearer nonsense"))[0] == 401
    assert (await close(http, sim, b_id, a["access_token"]))[0] == 404
    assert (await close(http, sim, "x", a["access_token"]))[0] == 404
    assert (await close(http, sim, 999, a["access_token"]))[0] == 404
    assert [s["id"] for s in (await stats(http, sim))["sessions"]] == [a_id, b_id]
    assert (await close(http, sim, b_id, "Bearer demo"))[0] == 200  # the static token: any
    assert (await stats(http, sim))["sessions"] == [{"id": a_id, "login": "a@example.com"}]
