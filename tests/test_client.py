"""The VMS client against aioresponses: headers, window, login, paging, retries, errors."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aioresponses import CallbackResult, aioresponses
from pydantic import SecretStr
from yarl import URL

from exporter.config import TargetSettings
from exporter.vms.client import VmsClient, Window
from exporter.vms.errors import (
    ConnectionFailed,
    HttpError,
    InvalidResponse,
    LimitExceeded,
    PollTimeout,
    Unauthorized,
    ValidationFailed,
)
from tests.builders import T0, item, page, rec

BASE = "https://vms.local"
LIST = re.compile(r"^https://vms\.local/api/v1/users/downloads(\?.*)?$")
TOKEN_URL = f"{BASE}/api/v1/token"
START = datetime.fromtimestamp(T0, UTC)  # 2026-11-20 12:00 UTC


def target(**overrides: Any) -> TargetSettings:
    values: dict[str, Any] = {"url": BASE, "token": SecretStr("tok-1"), "per_page": 2}
    values.update(overrides)
    return TargetSettings(**values)


def window(tz: str = "UTC") -> Window:
    return Window.at(START, 86400, tz)


@pytest.fixture
def mock() -> Iterator[aioresponses]:
    with aioresponses() as m:
        yield m


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
async def make_client(sleeps: list[float]) -> AsyncIterator[Callable[..., VmsClient]]:
    """Clients with a recorded, instant sleep; all closed at teardown."""
    made: list[VmsClient] = []
    now = [1000.0]

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    def make(**overrides: Any) -> VmsClient:
        client = VmsClient("main", target(**overrides), sleep=fake_sleep, monotonic=lambda: now[0])
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


def requests_to(
    mock: aioresponses, pattern: re.Pattern[str] | str = LIST
) -> list[tuple[URL, dict[str, Any]]]:
    found: list[tuple[URL, dict[str, Any]]] = []
    for (_, url), calls in mock.requests.items():
        if re.match(pattern, str(url)) if isinstance(pattern, re.Pattern) else str(url) == pattern:
            found.extend((url, call.kwargs) for call in calls)
    return found


def pages_of(items: list[dict[str, Any]], size: int) -> Callable[..., CallbackResult]:
    """A callback serving ``items`` in pages of ``size`` whatever per_page was asked for."""
    chunks = [items[i : i + size] for i in range(0, len(items), size)] or [[]]

    def serve(_: URL, **kwargs: Any) -> CallbackResult:
        number = int(kwargs["params"]["page"])
        data = chunks[number - 1] if number <= len(chunks) else []
        return CallbackResult(
            payload=page(
                data, page_no=number, last_page=len(chunks), per_page=size, total=len(items)
            )
        )

    return serve


async def test_headers_params_and_window_in_a_non_utc_zone(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    mock.get(LIST, payload=page([item(1, created=T0 - 60)]))
    client = make_client(timezone="Europe/Moscow", client="thick-legal")
    result = await client.fetch_window(window("Europe/Moscow"))
    await client.close()
    [(_, kwargs)] = requests_to(mock)
    headers = kwargs["headers"]
    assert headers["Authorization"] == "Bearer tok-1"
    assert headers["Accept"] == "application/json"
    assert headers["X-Client"] == "thick-legal"
    assert headers["X-UUID"] == target().device_id("main")
    # 12:00 UTC is 15:00 in Moscow: to = start + 1 h, from = start - 24 h - 1 day
    assert kwargs["params"] == {
        "per_page": "2",
        "page": "1",
        "from": "2026-11-18 15:00:00",
        "to": "2026-11-20 16:00:00",
    }
    assert [d.id for d in result.downloads] == ["1"]


async def test_items_outside_the_window_are_dropped(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    items = [
        item(1, created=T0 + 7200),
        item(2, created=T0 + 1800),
        item(3, created=T0 - 3600),
        item(4, created=T0 - 86400 - 60),
        item(5, created=T0 - 86400 * 2),
    ]
    mock.get(LIST, payload=page(items, per_page=10))
    client = make_client(per_page=10)
    result = await client.fetch_window(window())
    await client.close()
    assert sorted(d.id for d in result.downloads) == ["2", "3"]
    assert result.reported_total == 5


async def test_paging_respects_a_server_cap_and_dedupes_across_pages(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    items = [item(i, created=T0 - i) for i in range(1, 8)]
    items.insert(3, item(3, created=T0 - 3))  # the same id again (shifted onto the next page)
    items.insert(5, item("5", created=T0 - 5))  # and a string id for an int one
    mock.get(LIST, callback=pages_of(items, 3), repeat=True)
    client = make_client(per_page=100)
    result = await client.fetch_window(window())
    await client.close()
    assert sorted(int(d.id) for d in result.downloads) == [1, 2, 3, 4, 5, 6, 7]
    asked = sorted(int(kw["params"]["page"]) for _, kw in requests_to(mock))
    assert asked == [1, 2, 3]
    assert result.pages == 3


async def test_links_are_never_followed(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    evil = "https://attacker.example"

    def serve(url: URL, **kwargs: Any) -> CallbackResult:
        number = int(kwargs["params"]["page"])
        return CallbackResult(
            payload=page(
                [item(number, created=T0 - number)], page_no=number, last_page=2, host=evil
            )
        )

    mock.get(LIST, callback=serve, repeat=True)
    mock.get(re.compile(r"^https://attacker\.example.*"), payload=page([]), repeat=True)
    client = make_client()
    result = await client.fetch_window(window())
    await client.close()
    assert sorted(d.id for d in result.downloads) == ["1", "2"]
    assert requests_to(mock, re.compile(r"^https://attacker")) == []
    for _, kwargs in requests_to(mock):
        assert set(kwargs["params"]) == {"per_page", "page", "from", "to"}


async def test_pages_added_while_paging_are_fetched(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    def serve(url: URL, **kwargs: Any) -> CallbackResult:
        number = int(kwargs["params"]["page"])
        last = 2 if number == 1 else 3  # new items arrived after page 1 was read
        return CallbackResult(
            payload=page([item(number * 10, created=T0 - number)], page_no=number, last_page=last)
        )

    mock.get(LIST, callback=serve, repeat=True)
    client = make_client()
    result = await client.fetch_window(window())
    await client.close()
    assert sorted(d.id for d in result.downloads) == ["10", "20", "30"]


async def test_too_many_pages_is_limit_exceeded(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    mock.get(LIST, payload=page([item(1)], last_page=50))
    client = make_client(max_pages=10)
    with pytest.raises(LimitExceeded, match="50 pages"):
        await client.fetch_window(window())
    await client.close()
    assert len(requests_to(mock)) == 1


async def test_within_a_poll_the_newer_copy_of_an_id_wins(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    newer = item(7, "completed", created=T0 - 100, updated=T0 - 10)
    older = item("7", "in progress", created=T0 - 100, updated=T0 - 90)
    mock.get(LIST, callback=pages_of([newer, item(8), older, item(9)], 2), repeat=True)
    result = await make_client().fetch_window(window())
    assert {d.id: d.status for d in result.downloads}["7"] == "completed"
    mock.clear()
    mock.get(LIST, callback=pages_of([older, item(8), newer, item(9)], 2), repeat=True)
    result = await make_client().fetch_window(window())
    assert {d.id: d.status for d in result.downloads}["7"] == "completed"


@pytest.mark.parametrize(
    ("ident", "kept_as"),
    [
        (6414, "6414"),
        ("6414", "6414"),
        (" 006414 ", "6414"),
        (6414.0, "6414"),
        ("²", "²"),
        ("abc-1", "abc-1"),
        ("9" * 5000, None),
        ("", None),
        (True, None),
        ([1], None),
    ],
)
async def test_odd_ids_never_fail_the_page(
    mock: aioresponses,
    make_client: Callable[..., VmsClient],
    ident: object,
    kept_as: str | None,
) -> None:
    odd = item(ident, camera="①")
    mock.get(LIST, payload=page([odd, item(1)], per_page=10))
    result = await make_client(per_page=10).fetch_window(window())
    ids = {d.id for d in result.downloads}
    assert ids == ({"1", kept_as} if kept_as else {"1"})
    assert result.invalid["no_id"] == (0 if kept_as else 1)


async def test_invalid_items_are_counted_and_the_rest_kept(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    broken_date = item(3)
    broken_date["created_at"] = "yesterday"
    no_created = item(4)
    del no_created["created_at"]
    odd = item(5, status=None, stream_type=None, exists=None, camera=None)
    odd["stream"] = None
    items: list[Any] = [
        item(1, status="queued"),
        {"name": "no id"},
        broken_date,
        no_created,
        "junk",
        odd,
        item(None),
        item(True),
    ]
    mock.get(LIST, payload=page(items, per_page=10))
    client = make_client(per_page=10)
    result = await client.fetch_window(window())
    await client.close()
    assert dict(result.invalid) == {"no_id": 3, "bad_created_at": 2, "not_an_object": 1}
    by_id = {d.id: d for d in result.downloads}
    assert set(by_id) == {"1", "5"}
    assert by_id["1"].status == "other"
    assert (by_id["5"].status, by_id["5"].stream_type, by_id["5"].file_exists) == (
        "other",
        "unknown",
        "unknown",
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("<html>oops</html>", "not valid JSON"),
        ('{"data": [', "not valid JSON"),
        ("[]", "not an object"),
        ('{"meta": {"last_page": 1, "total": 0}}', "no 'data' list"),
        ('{"data": []}', "no 'meta' object"),
        ('{"data": [], "meta": {"last_page": "x", "total": 0}}', "last_page"),
        ('{"data": [], "meta": {"last_page": 1, "total": "\u00b2"}}', "total"),
    ],
)
async def test_garbage_bodies_are_invalid_response(
    mock: aioresponses, make_client: Callable[..., VmsClient], body: str, reason: str
) -> None:
    mock.get(LIST, body=body)
    client = make_client()
    with pytest.raises(InvalidResponse, match=reason):
        await client.fetch_window(window())
    await client.close()


async def test_5xx_and_connection_errors_are_retried_with_backoff(
    mock: aioresponses,
    make_client: Callable[..., VmsClient],
    sleeps: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn: list[tuple[float, float]] = []

    def widest(low: float, high: float) -> float:  # full jitter drawn at its upper bound
        drawn.append((low, high))
        return high

    monkeypatch.setattr("exporter.vms.client.random.uniform", widest)
    mock.get(LIST, status=503)
    mock.get(LIST, exception=ConnectionResetError("reset"))
    mock.get(LIST, payload=page([item(1)]))
    client = make_client()
    result = await client.fetch_window(window())
    assert [d.id for d in result.downloads] == ["1"]
    assert drawn == [(0, 0.5), (0, 1.0)]  # exponential, from zero (full jitter)
    assert sleeps == [0.5, 1.0]


async def test_5xx_after_the_retries_is_http_error(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    mock.get(LIST, status=502, repeat=True)
    client = make_client()
    with pytest.raises(HttpError, match="HTTP 502"):
        await client.fetch_window(window())
    await client.close()
    assert len(requests_to(mock)) == 3


async def test_connection_refused_after_the_retries(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    client = make_client()  # nothing mocked: aioresponses refuses the connection
    with pytest.raises(ConnectionFailed, match="cannot reach the VMS"):
        await client.fetch_window(window())
    await client.close()


async def test_429_honours_retry_after(
    mock: aioresponses, make_client: Callable[..., VmsClient], sleeps: list[float]
) -> None:
    mock.get(LIST, status=429, headers={"Retry-After": "7"})
    mock.get(LIST, payload=page([item(1)]))
    client = make_client()
    await client.fetch_window(window())
    await client.close()
    assert sleeps == [7.0]


async def test_429_persisting_is_limit_exceeded(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    mock.get(LIST, status=429, headers={"Retry-After": "1"}, repeat=True)
    client = make_client()
    with pytest.raises(LimitExceeded, match="429"):
        await client.fetch_window(window())
    await client.close()
    mock.clear()
    mock.get(LIST, status=429, headers={"Retry-After": "3600"})
    client = make_client()
    with pytest.raises(LimitExceeded, match="3600"):
        await client.fetch_window(window())
    await client.close()


async def test_timeouts_are_retried_then_reported(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    mock.get(LIST, timeout=True, repeat=True)
    client = make_client()
    with pytest.raises(PollTimeout, match="request_timeout"):
        await client.fetch_window(window())
    await client.close()
    assert len(requests_to(mock)) == 3


async def test_422_is_not_retried_and_reports_field_reasons(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    mock.get(
        LIST,
        status=422,
        payload={
            "message": "Тут не будет информативного сообщения",
            "errors": {"from": ["The from is not a valid date."]},
        },
    )
    client = make_client()
    with pytest.raises(ValidationFailed, match="from: The from is not a valid date"):
        await client.fetch_window(window())
    await client.close()
    assert len(requests_to(mock)) == 1


async def test_401_with_inline_token_is_unauthorized_without_retry(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    mock.get(LIST, status=401, payload={"message": "Unauthenticated."}, repeat=True)
    client = make_client()
    with pytest.raises(Unauthorized):
        await client.fetch_window(window())
    await client.close()
    assert len(requests_to(mock)) == 1


async def test_401_rereads_a_rotated_token_file_and_retries_once(
    mock: aioresponses, make_client: Callable[..., VmsClient], tmp_path: Path
) -> None:
    secret = tmp_path / "token"
    secret.write_text("old-token\n")
    client = make_client(token=None, token_file=secret)
    secret.write_text("new-token\n")  # rotated after start

    def serve(url: URL, **kwargs: Any) -> CallbackResult:
        if kwargs["headers"]["Authorization"] != "Bearer new-token":
            return CallbackResult(status=401, payload={"message": "Unauthenticated."})
        return CallbackResult(payload=page([item(1)]))

    mock.get(LIST, callback=serve, repeat=True)
    result = await client.fetch_window(window())
    await client.close()
    assert [d.id for d in result.downloads] == ["1"]
    assert [kw["headers"]["Authorization"] for _, kw in requests_to(mock)] == [
        "Bearer old-token",
        "Bearer new-token",
    ]


async def test_login_is_never_retried(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    """A login the VMS accepted but answered slowly would open another session."""
    mock.post(TOKEN_URL, timeout=True, repeat=True)
    client = make_client(**login_target())
    with pytest.raises(PollTimeout):
        await client.fetch_window(window())
    mock.clear()
    mock.post(TOKEN_URL, status=503, repeat=True)
    with pytest.raises(HttpError, match="login failed"):
        await client.fetch_window(window())
    assert len(requests_to(mock, TOKEN_URL)) == 2  # one per poll, never a retry


def login_target() -> dict[str, Any]:
    return {"token": None, "login": "svc@example.com", "password": SecretStr("pw")}


async def test_login_once_across_many_polls(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    mock.post(TOKEN_URL, payload={"user": {"id": 1}, "access_token": "Bearer abc"})
    mock.get(LIST, payload=page([item(1)]), repeat=True)
    client = make_client(**login_target())
    for _ in range(5):
        await client.fetch_window(window())
    await client.close()
    logins = requests_to(mock, TOKEN_URL)
    assert len(logins) == 1
    assert logins[0][1]["json"] == {
        "login": "svc@example.com",
        "password": "pw",
        "session_id": None,
    }
    assert {kw["headers"]["Authorization"] for _, kw in requests_to(mock)} == {"Bearer abc"}


async def test_token_without_bearer_prefix(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    mock.post(TOKEN_URL, payload={"access_token": "plain"})
    mock.get(LIST, payload=page([]))
    client = make_client(**login_target())
    await client.fetch_window(window())
    await client.close()
    assert requests_to(mock)[0][1]["headers"]["Authorization"] == "Bearer plain"


async def test_relogin_after_the_token_expires(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    mock.post(TOKEN_URL, payload={"access_token": "Bearer first"})
    mock.post(TOKEN_URL, payload={"access_token": "Bearer second"})
    expired: set[str] = set()

    def serve(url: URL, **kwargs: Any) -> CallbackResult:
        if kwargs["headers"]["Authorization"] in expired:
            return CallbackResult(status=401, payload={"message": "Unauthenticated."})
        return CallbackResult(payload=page([item(1)]))

    mock.get(LIST, callback=serve, repeat=True)
    client = make_client(**login_target())
    await client.fetch_window(window())
    expired.add("Bearer first")  # the VMS ends the session
    await client.fetch_window(window())  # 401, one login, the same request again
    await client.fetch_window(window())
    await client.close()
    assert len(requests_to(mock, TOKEN_URL)) == 2
    assert [kw["headers"]["Authorization"] for _, kw in requests_to(mock)] == [
        "Bearer first",
        "Bearer first",
        "Bearer second",
        "Bearer second",
    ]


async def test_token_rejected_after_relogin_fails_the_poll_without_more_logins(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    mock.post(TOKEN_URL, payload={"access_token": "Bearer x"}, repeat=True)
    mock.get(LIST, status=401, payload={"message": "Unauthenticated."}, repeat=True)
    client = make_client(**login_target())
    with pytest.raises(Unauthorized):
        await client.fetch_window(window())
    assert len(requests_to(mock, TOKEN_URL)) == 1  # first login; no second in the same poll
    with pytest.raises(Unauthorized):
        await client.fetch_window(window())
    assert len(requests_to(mock, TOKEN_URL)) == 2  # one re-login in the next poll
    await client.close()


@pytest.mark.parametrize(
    ("status", "payload", "said"),
    [
        (
            422,
            {"message": "x", "errors": {"password": ["Неверный пароль"]}},
            "wrong login or password",
        ),
        (422, {"message": "x", "errors": {"captcha": ["required"]}}, "captcha required"),
        (419, {"message": "Too many sessions"}, "too many sessions"),
        (429, {"message": "Too many sessions"}, "too many sessions"),
    ],
)
async def test_refused_logins_are_unauthorized_and_say_which(
    mock: aioresponses,
    make_client: Callable[..., VmsClient],
    status: int,
    payload: dict[str, Any],
    said: str,
) -> None:
    mock.post(TOKEN_URL, status=status, payload=payload, repeat=True)
    client = make_client(**login_target())
    with pytest.raises(Unauthorized, match=said) as info:
        await client.fetch_window(window())
    await client.close()
    assert "pw" not in str(info.value)
    assert requests_to(mock) == []


async def test_rate_cap_spaces_requests(
    mock: aioresponses, make_client: Callable[..., VmsClient], sleeps: list[float]
) -> None:
    mock.get(
        LIST, callback=pages_of([item(i, created=T0 - i) for i in range(1, 7)], 1), repeat=True
    )
    client = make_client(max_rps=2, concurrency=4)
    result = await client.fetch_window(window())
    await client.close()
    assert len(result.downloads) == 6
    # six requests at most two per second: the limiter had to wait at least twice
    assert sum(1 for s in sleeps if s > 0.3) >= 2


def test_client_repr_has_no_secret() -> None:
    client = VmsClient("main", target(token=SecretStr("very-secret")))
    assert "very-secret" not in repr(client)
    assert "very-secret" not in repr(vars(client))


async def test_a_body_over_max_response_size_is_limit_exceeded(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    big = page([item(i, created=T0 - i) for i in range(1, 40)], per_page=100)
    mock.get(LIST, payload=big)
    client = make_client(max_response_size="4KiB", per_page=100)
    with pytest.raises(LimitExceeded, match="max_response_size=4096"):
        await client.fetch_window(window())
    mock.get(LIST, payload=big)
    assert len((await make_client(per_page=100).fetch_window(window())).downloads) == 39


@pytest.mark.parametrize(
    ("header", "outcome"),
    [
        ("0", [0.0]),
        (" 12 ", [12.0]),
        ("9" * 5000, "for ages"),
        ("31", "31s"),
        ("Fri, 31 Dec 9999 23:59:59 GMT", "rate limited"),
        ("Thu, 01 Jan 1970 00:00:00 GMT", [0.0]),
        ("-5", "backoff"),
        ("soon", "backoff"),
        ("1e9", "backoff"),
        ("\u00b2", "backoff"),
        ("Fri, 99 Foo 99999999999 99:99:99 GMT", "backoff"),
    ],
)
async def test_retry_after_of_any_size_or_form(
    mock: aioresponses,
    make_client: Callable[..., VmsClient],
    sleeps: list[float],
    header: str,
    outcome: list[float] | str,
) -> None:
    mock.get(LIST, status=429, headers={"Retry-After": header})
    mock.get(LIST, payload=page([item(1)]))
    client = make_client()
    if isinstance(outcome, str) and outcome != "backoff":
        with pytest.raises(LimitExceeded, match=outcome):
            await client.fetch_window(window())
        return
    await client.fetch_window(window())
    if outcome == "backoff":  # unusable: the ordinary jittered backoff
        assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.5
    else:
        assert sleeps == outcome


async def test_more_downloads_than_max_downloads_is_limit_exceeded(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    items = [item(i, created=T0 - i) for i in range(1, 8)]
    mock.get(LIST, callback=pages_of(items, 3), repeat=True)
    with pytest.raises(LimitExceeded, match="more than max_downloads=6"):
        await make_client(max_downloads=6).fetch_window(window())
    assert len((await make_client(max_downloads=7).fetch_window(window())).downloads) == 7


class LivingList:
    """A list newest first whose ``meta.total`` grows when :meth:`insert` is called."""

    def __init__(self, count: int, per_page: int) -> None:
        self.ids = list(range(1000 + count, 1000, -1))
        self.per_page = per_page
        self.asked: list[int] = []

    def insert(self) -> None:
        self.ids.insert(0, self.ids[0] + 1)

    def render(self, number: int) -> CallbackResult:
        self.asked.append(number)
        size = self.per_page
        chunk = self.ids[(number - 1) * size : number * size]
        return CallbackResult(
            payload=page(
                [item(i, created=T0 - 10) for i in chunk],
                page_no=number,
                last_page=-(-len(self.ids) // size),
                per_page=size,
                total=len(self.ids),
            )
        )


async def test_items_pushed_past_a_page_already_read_are_read_again(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    """Page 3 answers, then a download is created, then page 2 answers: the item that
    moved from page 2 to page 3 was in neither answer; page 3 (and 1) are read again."""
    living = LivingList(50, 10)
    served_3 = asyncio.Event()

    async def serve(_: URL, **kwargs: Any) -> CallbackResult:
        number = int(kwargs["params"]["page"])
        if number == 2 and not served_3.is_set():
            await asyncio.wait_for(served_3.wait(), 2)
        answer = living.render(number)
        if number == 3 and not served_3.is_set():
            living.insert()
            served_3.set()
        return answer

    mock.get(LIST, callback=serve, repeat=True)
    result = await make_client(per_page=10, concurrency=4).fetch_window(window())
    assert sorted(int(d.id) for d in result.downloads) == sorted(living.ids)
    assert sorted(living.asked) == [1, 1, 2, 3, 3, 4, 5, 6]


async def test_a_static_list_costs_exactly_one_request_per_page(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    living = LivingList(95, 10)
    mock.get(LIST, callback=lambda _, **kw: living.render(int(kw["params"]["page"])), repeat=True)
    result = await make_client(per_page=10, concurrency=4).fetch_window(window())
    assert len(result.downloads) == 95
    assert sorted(living.asked) == list(range(1, 11))


async def test_rereads_are_bounded_when_the_list_never_settles(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    living = LivingList(40, 10)

    def serve(_: URL, **kwargs: Any) -> CallbackResult:
        answer = living.render(int(kwargs["params"]["page"]))
        living.insert()  # a download created after every answer
        return answer

    mock.get(LIST, callback=serve, repeat=True)
    result = await make_client(per_page=10, concurrency=4).fetch_window(window())
    assert len(result.downloads) >= 40
    assert len(living.asked) <= 4 + 4 * 5  # page 1, the rest, three bounded re-read rounds


@pytest.fixture
async def hostile() -> AsyncIterator[Callable[[web.StreamResponse | Callable[..., Any]], str]]:
    """A small hostile VMS on loopback: ``serve(handler)`` returns its base URL."""
    runners: list[web.AppRunner] = []

    async def serve(handler: Any) -> str:
        app = web.Application()
        app.router.add_get("/api/v1/users/downloads", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield serve  # type: ignore[misc]
    for runner in runners:
        await runner.cleanup()


def gzip_bomb(size: int) -> bytes:
    """A valid page start followed by ``size`` bytes of whitespace, gzipped (~1000:1)."""
    stream = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [stream.compress(b'{"data":[')]
    spaces = b" " * 2**20
    for _ in range(size // len(spaces)):
        parts.append(stream.compress(spaces))
    parts.append(stream.compress(b'],"meta":{"last_page":1,"total":0}}'))
    parts.append(stream.flush())
    return b"".join(parts)


async def endless(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await response.write(b'{"data":[')
    with contextlib.suppress(ConnectionError, RuntimeError):
        for _ in range(100_000):  # 6.4 GB at most, far beyond any cap
            await response.write(b" " * 65536)
    return response


@pytest.mark.parametrize("kind", ["gzip bomb", "endless chunked", "declared too long"])
async def test_hostile_bodies_stop_at_the_cap_without_buffering_more(
    hostile: Callable[[Any], Any], kind: str
) -> None:
    bomb = gzip_bomb(64 * 2**20) if kind == "gzip bomb" else b""
    too_long = b" " * (3 * 2**20)  # made before measuring: the server shares this process

    async def handler(request: web.Request) -> web.StreamResponse:
        if kind == "gzip bomb":
            return web.Response(
                body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
            )
        if kind == "endless chunked":
            return await endless(request)
        return web.Response(body=too_long, content_type="application/json")

    url = await hostile(handler)
    cap = 2 * 2**20
    client = VmsClient("main", target(url=url, max_response_size=cap, request_timeout=30))
    tracemalloc.start()
    try:
        with pytest.raises(LimitExceeded, match=f"max_response_size={cap}") as info:
            await client.fetch_window(window())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await client.close()
    assert peak < cap + 2 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    print(f"{kind}: peak traced memory {peak / 2**20:.2f} MiB with a cap of 2 MiB")
    if kind == "gzip bomb":
        assert len(bomb) < 2**20
        assert "once decompressed" in str(info.value)


async def test_a_broken_gzip_body_is_invalid_response_not_a_network_fault(
    hostile: Callable[[Any], Any],
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=b"\x1f\x8b\x08\x00 not gzip at all" * 10,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    client = VmsClient("main", target(url=await hostile(handler)))
    with pytest.raises(InvalidResponse, match="cannot be decoded"):
        await client.fetch_window(window())
    await client.close()


async def test_a_gzipped_page_within_the_cap_is_read(hostile: Callable[[Any], Any]) -> None:
    body = json.dumps(page([item(i, created=T0 - i) for i in range(1, 4)])).encode()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=gzip.compress(body),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    client = VmsClient("main", target(url=await hostile(handler), max_response_size=len(body)))
    result = await client.fetch_window(window())
    await client.close()
    assert sorted(d.id for d in result.downloads) == ["1", "2", "3"]


async def test_an_unchanged_item_comes_back_as_the_record_already_held(
    mock: aioresponses, make_client: Callable[..., VmsClient]
) -> None:
    """So that a poll never holds two copies of every remembered record."""
    mock.get(LIST, payload=page([item(1, created=T0 - 5), item(2, created=T0 - 6)]), repeat=True)
    first = await make_client().fetch_window(window())
    known = {d.id: d for d in first.downloads}
    changed = await make_client().fetch_window(window(), known)
    assert all(d is known[d.id] for d in changed.downloads)
    known["2"] = rec(2, "completed", created=T0 - 6)
    again = await make_client().fetch_window(window(), known)
    by_id = {d.id: d for d in again.downloads}
    assert by_id["1"] is known["1"]
    assert by_id["2"] is not known["2"]
    assert by_id["2"].status == "in_progress"
