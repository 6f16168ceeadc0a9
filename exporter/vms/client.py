"""HTTP client for one VMS: headers, TLS, login, paging, retries, typed errors.

Pages are requested by number against the configured URL, never by following
``links.*`` from a response (Laravel builds those from its own host and drops
the query string), so the token only ever goes to the configured server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import re
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from exporter import __version__
from exporter.config import TargetSettings
from exporter.vms.auth import Credentials, ServiceAccount, StaticToken
from exporter.vms.errors import (
    ConnectionFailed,
    HttpError,
    InvalidResponse,
    LimitExceeded,
    PollError,
    PollTimeout,
    Unauthorized,
    ValidationFailed,
)
from exporter.vms.models import Download, InvalidItem, parse_download
from exporter.vms.ratelimit import RateLimiter

log = logging.getLogger(__name__)

TOKEN_PATH = "/api/v1/token"  # noqa: S105 (a path, not a secret)
QUERY_MARGIN = timedelta(hours=1)
QUERY_PADDING = timedelta(days=1)
MAX_ATTEMPTS = 3
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
MAX_RETRY_AFTER = 30.0
_QUERY_FORMAT = "%Y-%m-%d %H:%M:%S"
_COUNT = re.compile(r"[0-9]{1,15}")


@dataclass(frozen=True, slots=True)
class Window:
    """One poll's window, fixed when the poll starts.

    The query is padded and written in the server's time zone; items are then
    kept only when their ``created_at`` (UTC) is within ``[keep_from, keep_to]``.
    """

    query_from: str
    query_to: str
    keep_from: float
    keep_to: float

    @classmethod
    def at(cls, start: datetime, lookback: float, timezone: str) -> Window:
        zone = ZoneInfo(timezone)
        to = start + QUERY_MARGIN
        keep_from = start - timedelta(seconds=lookback)
        return cls(
            query_from=(keep_from - QUERY_PADDING).astimezone(zone).strftime(_QUERY_FORMAT),
            query_to=to.astimezone(zone).strftime(_QUERY_FORMAT),
            keep_from=keep_from.timestamp(),
            keep_to=to.timestamp(),
        )


@dataclass(slots=True)
class WindowResult:
    downloads: list[Download]
    """De-duplicated by id, limited to the window."""
    reported_total: int
    """``meta.total`` of the first page: what the API says matched the query."""
    pages: int
    invalid: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class _PageMeta:
    last_page: int
    total: int


def _as_count(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and _COUNT.fullmatch(value):
        return int(value)
    return None


def read_page(body: object) -> tuple[list[Any], _PageMeta]:
    """The items and paging facts of one decoded page; InvalidResponse if the envelope is broken."""
    if not isinstance(body, dict):
        raise InvalidResponse(f"page is a JSON {type(body).__name__}, not an object")
    data = body.get("data")
    if not isinstance(data, list):
        raise InvalidResponse("page has no 'data' list")
    meta = body.get("meta")
    if not isinstance(meta, dict):
        raise InvalidResponse("page has no 'meta' object")
    last_page = _as_count(meta.get("last_page"))
    total = _as_count(meta.get("total"))
    if last_page is None or total is None:
        raise InvalidResponse("page meta lacks a valid 'last_page' or 'total'")
    return data, _PageMeta(last_page=last_page, total=total)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if _COUNT.fullmatch(value.strip()):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(when.tzinfo)).total_seconds())


def _validation_reasons(body: bytes) -> str:
    """The field reasons of a 422 (its ``message`` is not informative)."""
    try:
        errors = json.loads(body).get("errors")
    except (ValueError, AttributeError):
        return "no readable reasons"
    if not isinstance(errors, dict) or not errors:
        return "no readable reasons"
    parts = []
    for key, reasons in errors.items():
        text = "; ".join(str(r) for r in reasons) if isinstance(reasons, list) else str(reasons)
        parts.append(f"{key}: {text}")
    return ", ".join(parts)[:500]


def _ssl_context(target: TargetSettings) -> ssl.SSLContext:
    """Verify the VMS against the system CAs or ``ca_file``; present ``cert_file`` if set."""
    context = ssl.create_default_context(
        cafile=str(target.ca_file) if target.ca_file is not None else None
    )
    if not target.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if target.cert_file is not None and target.key_file is not None:
        context.load_cert_chain(target.cert_file, target.key_file, password=lambda: b"")
    return context


class VmsClient:
    """One aiohttp session per target; :meth:`fetch_window` reads every page of one window."""

    def __init__(
        self,
        name: str,
        target: TargetSettings,
        *,
        on_response: Callable[[str], None] = lambda code: None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._target = target
        self._on_response = on_response
        self._sleep = sleep
        self._limiter = RateLimiter(target.max_rps, clock=monotonic, sleep=sleep)
        self._session: aiohttp.ClientSession | None = None
        self._list_url = target.url + target.path
        self._headers = {
            "Accept": "application/json",
            "X-Client": target.client,
            "X-UUID": target.device_id(name),
            "User-Agent": f"vms-downloads-exporter/{__version__}",
        }
        if not target.tls_verify and target.url.startswith("https:"):
            log.warning(
                "TLS certificate verification of the VMS is off (tls_verify = false): "
                "anyone between the exporter and the VMS can read the token",
                extra={"target": name},
            )
        self._credentials: Credentials
        if target.login is not None:
            self._credentials = ServiceAccount(
                target.login, target.password, target.password_file, self._log_in
            )
        else:
            self._credentials = StaticToken(target.token, target.token_file)

    def __repr__(self) -> str:
        return f"VmsClient(name={self.name!r}, url={self._target.url!r})"

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self._target.request_timeout),
                connector=aiohttp.TCPConnector(
                    limit=self._target.concurrency, ssl=_ssl_context(self._target)
                ),
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch_window(self, window: Window) -> WindowResult:
        """Every page of ``window``: page 1 first, then the rest ``concurrency`` at a time."""
        self._credentials.begin_poll()
        kept: dict[str, Download] = {}
        invalid: Counter[str] = Counter()

        def take(items: list[Any]) -> None:
            for item in items:
                try:
                    download = parse_download(item)
                except InvalidItem as exc:
                    invalid[exc.reason] += 1
                    continue
                if not window.keep_from <= download.created_at <= window.keep_to:
                    continue
                held = kept.get(download.id)
                if held is None or (download.updated_at or 0.0) >= (held.updated_at or 0.0):
                    kept[download.id] = download

        items, meta = read_page(await self._get_page(1, window))
        take(items)
        reported_total, last_page, fetched = meta.total, meta.last_page, 1
        semaphore = asyncio.Semaphore(self._target.concurrency)

        async def page(number: int) -> _PageMeta:
            async with semaphore:
                items, meta = read_page(await self._get_page(number, window))
            take(items)  # at once, so that each decoded page is freed as soon as it is read
            return meta

        # Items created while paging push others to later pages: if a later page
        # reports more pages than page 1 did, fetch those too.
        while fetched < last_page:
            if last_page > self._target.max_pages:
                raise LimitExceeded(
                    f"the window has {last_page} pages, more than max_pages="
                    f"{self._target.max_pages}; raise max_pages or per_page, or shorten lookback"
                )
            numbers = range(fetched + 1, last_page + 1)
            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(page(n)) for n in numbers]
            except BaseExceptionGroup as exc:
                raise _first_error(exc) from None
            for task in tasks:
                last_page = max(last_page, task.result().last_page)
            fetched = numbers[-1]
        return WindowResult(list(kept.values()), reported_total, fetched, invalid)

    async def newest_created_until(self, until: float) -> float | None:
        """Newest ``created_at`` the VMS returns for a query ending at ``until`` (our zone).

        Used by ``check``: if the server's filter uses a zone ahead of the
        configured one, the newest download is missing from that answer.
        """
        zone = ZoneInfo(self._target.timezone)
        end = datetime.fromtimestamp(math.ceil(until), UTC)
        params = {
            "per_page": str(self._target.per_page),
            "page": "1",
            "from": (end - QUERY_PADDING).astimezone(zone).strftime(_QUERY_FORMAT),
            "to": end.astimezone(zone).strftime(_QUERY_FORMAT),
        }
        items, _ = read_page(await self._get_json(params))
        created = []
        for item in items:
            with contextlib.suppress(InvalidItem):
                created.append(parse_download(item).created_at)
        return max(created, default=None)

    async def _get_page(self, number: int, window: Window) -> Any:
        params = {
            "per_page": str(self._target.per_page),
            "page": str(number),
            "from": window.query_from,
            "to": window.query_to,
        }
        return await self._get_json(params)

    async def _get_json(self, params: dict[str, str]) -> Any:
        body = await self._authorized_get(params)
        try:
            return json.loads(body)
        except ValueError:
            raise InvalidResponse(f"page {params['page']} is not valid JSON (truncated?)") from None

    async def _authorized_get(self, params: dict[str, str]) -> bytes:
        """GET the list with a Bearer token; on a 401 renew the credentials and retry once."""
        token = await self._credentials.token()
        status, body = await self._send("GET", self._list_url, params=params, token=token)
        if status == 401 and await self._credentials.renew_after_401(token):
            token = await self._credentials.token()
            status, body = await self._send("GET", self._list_url, params=params, token=token)
        if status == 401:
            raise Unauthorized("the VMS answered 401: the token is missing, invalid or expired")
        if status == 422:
            raise ValidationFailed(f"the VMS rejected the query (422): {_validation_reasons(body)}")
        if status != 200:
            raise HttpError(f"the VMS answered HTTP {status}")
        return body

    async def _log_in(self, login: str, password: str) -> str:
        payload = {"login": login, "password": password, "session_id": None}
        # Never retried: a login the VMS accepted but answered slowly would open a
        # second session, and a 429 here means too many sessions, not a rate limit.
        status, body = await self._send(
            "POST", self._target.url + TOKEN_PATH, json_body=payload, attempts=1
        )
        if status == 200:
            try:
                token = json.loads(body)["access_token"]
            except (ValueError, KeyError, TypeError):
                raise InvalidResponse("login answer has no access_token") from None
            if not isinstance(token, str) or not token.strip():
                raise InvalidResponse("login answer has no access_token")
            log.info("logged in to the VMS", extra={"target": self.name})
            return token.strip().removeprefix("Bearer ").strip()
        if status in (419, 429):
            raise Unauthorized(
                f"login refused ({status}): too many sessions for this account on the VMS; "
                "close old sessions or raise the limit"
            )
        if status == 422:
            reasons = _validation_reasons(body)
            what = "captcha required" if "captcha" in reasons.lower() else "wrong login or password"
            raise Unauthorized(f"login refused (422, {what}): {reasons}")
        if status in (401, 403):
            raise Unauthorized(f"login refused ({status}): wrong login or password")
        raise HttpError(f"login failed: the VMS answered HTTP {status}")

    async def _send(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
        token: str | None = None,
        attempts: int = MAX_ATTEMPTS,
    ) -> tuple[int, bytes]:
        """One request with up to ``attempts`` tries on connection errors, timeouts, 5xx, 429."""
        session = self._open()
        headers = {"Authorization": f"Bearer {token}"} if token is not None else None
        for attempt in range(1, attempts + 1):
            await self._limiter.acquire()
            delay: float | None = None
            try:
                async with session.request(
                    method,
                    url,
                    params=params,
                    json=json_body,
                    headers=headers,
                    allow_redirects=False,
                    server_hostname=self._target.server_name,
                ) as response:
                    body = await response.read()
                    self._on_response(str(response.status))
                    status = response.status
                    if status == 429 and attempts > 1:
                        delay = _retry_after(response.headers.get("Retry-After"))
                        if delay is not None and delay > MAX_RETRY_AFTER:
                            raise LimitExceeded(f"rate limited (429), asked to wait {delay:.0f}s")
                        if attempt == attempts:
                            raise LimitExceeded(
                                f"still rate limited (429) after {attempt} attempts"
                            )
                    elif status >= 500 and attempt < attempts:
                        pass
                    else:
                        return status, body
            except TimeoutError:
                self._on_response("error")
                if attempt == attempts:
                    raise PollTimeout(
                        f"no answer within request_timeout={self._target.request_timeout:g}s "
                        f"({attempt} attempts)"
                    ) from None
            except (aiohttp.ClientError, OSError) as exc:
                self._on_response("error")
                if attempt == attempts:
                    raise ConnectionFailed(
                        f"cannot reach the VMS: {type(exc).__name__}: {exc} ({attempt} attempts)"
                    ) from None
            if delay is None:
                delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)))  # noqa: S311
            await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first PollError of a TaskGroup failure, else its first exception."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if isinstance(exc, PollError):
            return exc
    return group.exceptions[0]
