"""Login sessions against the simulator: closed on stop, replaced after a kill, never others'."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from pydantic import SecretStr

from exporter.config import TargetSettings
from exporter.state import StateDirectory
from exporter.vms.auth import StaticToken
from exporter.vms.client import LOGOUT_TIMEOUT, VmsClient, Window
from exporter.vms.errors import Unauthorized
from tests.builders import T0, page
from vms_simulator import RunningSimulator, SimulatorConfig, start_simulator

ACCOUNT = {"login": "exporter@example.com", "password": "demo"}
PERSON = {"login": "exporter@example.com", "password": "demo", "session_id": None}


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    simulator = await start_simulator(
        SimulatorConfig(downloads=20, token=None, max_sessions=2, arrival_interval=0)
    )
    yield simulator
    await simulator.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def sessions(http: aiohttp.ClientSession, sim: RunningSimulator) -> list[int]:
    async with http.get(sim.url + "/-/sim/stats") as response:
        return [s["id"] for s in (await response.json())["sessions"]]


async def person_logs_in(http: aiohttp.ClientSession, sim: RunningSimulator) -> dict[str, Any]:
    """Somebody else using the same account, e.g. in a browser."""
    async with http.post(sim.url + "/api/v1/token", json=PERSON) as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


async def can_read(http: aiohttp.ClientSession, sim: RunningSimulator, token: str) -> bool:
    params = {"per_page": "1", "page": "1", "from": "2000-01-01", "to": "2100-01-01"}
    headers = {"Authorization": token, "Accept": "application/json"}
    async with http.get(sim.url + "/api/v1/users/downloads", params=params, headers=headers) as r:
        return r.status == 200


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def window() -> Window:
    return Window.at(datetime.now(UTC), 86400, "Europe/Moscow")


Make = Callable[..., VmsClient]


@pytest.fixture
async def make(sim: RunningSimulator) -> AsyncIterator[Make]:
    made: list[VmsClient] = []

    def build(state: Path | None = None, **overrides: Any) -> VmsClient:
        values: dict[str, Any] = {
            "url": sim.url,
            "login": ACCOUNT["login"],
            "password": SecretStr(ACCOUNT["password"]),
            "timezone": "Europe/Moscow",
            **overrides,
        }
        client = VmsClient(
            "main", TargetSettings(**values), state=None if state is None else StateDirectory(state)
        )
        made.append(client)
        return client

    yield build
    for client in made:
        await client.close()


async def test_a_stop_closes_the_session_and_forgets_its_id(
    http: aiohttp.ClientSession, sim: RunningSimulator, make: Make, tmp_path: Path
) -> None:
    client = make(tmp_path)
    await client.fetch_window(window())
    (opened,) = await sessions(http, sim)
    saved = json.loads((tmp_path / "main.session.json").read_text())
    assert saved == {
        "format": 1,
        "kind": "session",
        "url": sim.url,
        "login": ACCOUNT["login"],
        "session_id": opened,
    }  # and nothing secret

    await client.log_out()

    assert await sessions(http, sim) == []
    assert files_in(tmp_path) == []


async def test_after_a_kill_the_next_login_replaces_the_session_it_left(
    http: aiohttp.ClientSession, sim: RunningSimulator, make: Make, tmp_path: Path
) -> None:
    for _ in range(5):  # each client is dropped without log_out, as by kill -9
        await make(tmp_path).fetch_window(window())
        assert len(await sessions(http, sim)) == 1


async def test_without_state_a_kill_leaves_one_session_per_unclean_end(
    http: aiohttp.ClientSession, sim: RunningSimulator, make: Make
) -> None:
    """What the README warns about: no [state] directory, no memory across processes."""
    await make().fetch_window(window())
    await make().fetch_window(window())
    assert len(await sessions(http, sim)) == 2
    with pytest.raises(Unauthorized, match="too many sessions"):
        await make().fetch_window(window())


async def test_it_never_closes_or_replaces_a_session_it_did_not_open(
    http: aiohttp.ClientSession, sim: RunningSimulator, make: Make, tmp_path: Path
) -> None:
    person = await person_logs_in(http, sim)
    theirs = person["user"]["access_token_id"]
    # a state file of another exporter (another login) naming the person's session
    StateDirectory(tmp_path).write(
        "main", "session", {"url": sim.url, "login": "other@example.com", "session_id": theirs}
    )
    client = make(tmp_path)
    await client.fetch_window(window())
    await client.log_out()
    assert await sessions(http, sim) == [theirs]
    assert await can_read(http, sim, person["access_token"])

    # the account full of the person's sessions: refused, and the offered session kept
    second = await person_logs_in(http, sim)
    with pytest.raises(Unauthorized, match="did not open") as refused:
        await make(tmp_path).fetch_window(window())
    assert f"end session {theirs}" in str(refused.value)
    assert await sessions(http, sim) == [theirs, second["user"]["access_token_id"]]


async def test_a_failed_close_is_logged_bounded_and_kept_for_the_next_login(
    sim: RunningSimulator, make: Make, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = make(tmp_path)
    await client.fetch_window(window())
    await sim.close()  # the VMS is gone when the exporter stops

    began = time.monotonic()
    with caplog.at_level(logging.WARNING):
        await client.log_out()

    assert time.monotonic() - began < LOGOUT_TIMEOUT + 0.5
    assert "could not close the login session" in caplog.text
    assert "demo" not in caplog.text
    assert StateDirectory(tmp_path).read("main", "session") is not None


async def test_a_token_written_like_a_login_answer_works(tmp_path: Path) -> None:
    settings = TargetSettings(url="https://vms.local", token=SecretStr("Bearer  abc "))
    assert settings.token is not None and settings.token.get_secret_value() == "abc"
    token_file = tmp_path / "token"
    token_file.write_text("Bearer xyz\n")
    assert await StaticToken(None, token_file).token() == "xyz"


async def test_a_remembered_session_the_vms_does_not_know_is_dropped(tmp_path: Path) -> None:
    """A VMS that answers 422 to a session_id it does not know: the login is retried without."""
    StateDirectory(tmp_path).write(
        "main", "session", {"url": "https://vms.local", "login": "svc", "session_id": 41}
    )
    client = VmsClient(
        "main",
        TargetSettings(url="https://vms.local", login="svc", password=SecretStr("pw")),
        state=StateDirectory(tmp_path),
    )
    sent: list[object] = []
    with aioresponses() as mock:

        def token(url: object, **kwargs: Any) -> None:
            sent.append(kwargs["json"]["session_id"])

        mock.post(
            "https://vms.local/api/v1/token",
            status=422,
            payload={
                "message": "x",
                "errors": {"session_id": ["The selected session id is invalid."]},
            },
            callback=token,
        )
        mock.post(
            "https://vms.local/api/v1/token",
            payload={"user": {"access_token_id": 42}, "access_token": "Bearer new"},
            callback=token,
        )
        mock.get(
            "https://vms.local/api/v1/users/downloads?page=1&per_page=100"
            "&from=2026-11-19+12:00:00&to=2026-11-20+13:00:00",
            payload=page([]),
        )
        await client.fetch_window(Window.at(datetime.fromtimestamp(T0, UTC), 0, "UTC"))
        await client.close()
    assert sent == [41, None]
    saved = StateDirectory(tmp_path).read("main", "session")
    assert saved is not None and saved["session_id"] == 42
