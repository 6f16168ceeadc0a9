"""HTTP client for one VMS: headers, TLS, login, paging, retries, typed errors.

Pages are requested by number against the configured URL, never by following
``links.*`` from a response (Laravel builds those from its own host and drops
the query string), so the token only ever goes to the configured server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from exporter import __version__
from exporter.config import TargetSettings, strip_bearer
from exporter.core import run_steps_pausing
from exporter.state import StateDirectory
from exporter.vms.auth import (
    Credentials,
    LoginAnswer,
    ServiceAccount,
    SessionMemory,
    StaleSessionId,
    StaticToken,
)
from exporter.vms.decode import Page, as_count, decode_page_steps
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
from exporter.vms.models import Download
from exporter.vms.ratelimit import RateLimiter

log = logging.getLogger(__name__)

TOKEN_PATH = "/api/v1/token"  # noqa: S105 (a path, not a secret)
SESSIONS_PATH = "/api/v1/sessions/"
LOGOUT_TIMEOUT = 1.0
"""Seconds a stop may spend closing the login session (the stop budget is 2 s)."""
QUERY_MARGIN = timedelta(hours=1)
QUERY_PADDING = timedelta(days=1)
MAX_ATTEMPTS = 3
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
MAX_RETRY_AFTER = 30.0
_QUERY_FORMAT = "%Y-%m-%d %H:%M:%S"
_DIGITS = re.compile(r"[0-9]+")
_READ_CHUNK = 64 * 1024
MAX_REREAD_ROUNDS = 3


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


class _Collector:
    """The usable items of one window's pages: de-duplicated, in the window, bounded."""

    def __init__(self, window: Window, max_downloads: int, known: Mapping[str, Download]) -> None:
        self._window = window
        self._max = max_downloads
        self._known = known
        self.kept: dict[str, Download] = {}
        self.invalid: Counter[str] = Counter()

    def add(self, page: Page) -> None:
        self.invalid.update(page.invalid)
        low, high = self._window.keep_from, self._window.keep_to
        kept, known = self.kept, self._known
        for download in page.downloads:
            if not low <= download.created_at <= high:
                continue
            same = known.get(download.id)
            if same == download:  # unchanged: keep the one record in memory, free the copy
                download = same
            held = kept.get(download.id)
            if held is None:
                if len(kept) >= self._max:
                    raise LimitExceeded(
                        f"the window holds more than max_downloads={self._max} downloads; "
                        "raise max_downloads or shorten lookback"
                    )
                kept[download.id] = download
            elif (download.updated_at or 0.0) >= (held.updated_at or 0.0):
                kept[download.id] = download


class _Coverage:
    """Which positions of the list, newest first, the pages read so far have shown.

    New downloads are listed first, so when ``meta.total`` grew by ``d`` after a page
    was read, what that page showed now sits ``d`` positions further down. Positions
    no read covers (an item pushed past a page boundary after its new page was read,
    or pages not read yet) are the pages to read (again).
    """

    def __init__(self, per_page: int) -> None:
        self.per_page = per_page
        self.reads: dict[int, int] = {}
        """page number → ``meta.total`` of its latest answer."""

    def read(self, number: int, total: int) -> None:
        self.reads[number] = total

    @property
    def total(self) -> int:
        return max(self.reads.values(), default=0)

    def missing_pages(self) -> list[int]:
        total, size = self.total, self.per_page
        spans = sorted(
            ((number - 1) * size + total - seen, min(number * size, seen) + total - seen)
            for number, seen in self.reads.items()
        )
        pages: set[int] = set()
        covered = 0
        for low, high in [*spans, (total, total)]:
            if low > covered:
                pages.update(range(covered // size + 1, (min(low, total) - 1) // size + 2))
            covered = max(covered, high)
        return sorted(pages)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` of seconds or an HTTP date; None if unusable."""
    text = (value or "").strip()
    if _DIGITS.fullmatch(text):
        return float(text) if len(text) <= 15 else math.inf
    try:
        when = parsedate_to_datetime(text)
        return max(0.0, (when - datetime.now(when.tzinfo)).total_seconds())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _validation_reasons(body: bytes | bytearray) -> str:
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


def _login_answer(body: bytes | bytearray) -> LoginAnswer:
    try:
        decoded = json.loads(body)
        token = decoded["access_token"]
    except (ValueError, KeyError, TypeError):
        raise InvalidResponse("login answer has no access_token") from None
    if not isinstance(token, str) or not strip_bearer(token):
        raise InvalidResponse("login answer has no access_token")
    user = decoded.get("user")
    session = as_count(user.get("access_token_id")) if isinstance(user, dict) else None
    return LoginAnswer(strip_bearer(token), session)


def _offered_session(body: bytes | bytearray) -> int | None:
    """The session a 419 names for a new login to end (shape undocumented: a few tried)."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return None
    if not isinstance(decoded, dict):
        return None
    for key in ("session_id", "access_token_id"):
        found = as_count(decoded.get(key))
        if found is not None:
            return found
    return None


def _names_field(body: bytes | bytearray, name: str) -> bool:
    """Whether a 422 body's ``errors`` name ``name``."""
    try:
        errors = json.loads(body).get("errors")
    except (ValueError, AttributeError):
        return False
    return isinstance(errors, dict) and name in errors


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
        state: StateDirectory | None = None,
        details: bool = False,
    ) -> None:
        """``state``: where the login session id survives a restart (none: only in memory)."""
        self.name = name
        self._target = target
        self._details = details
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
                target.login,
                target.password,
                target.password_file,
                self._log_in,
                SessionMemory(state, name, target.url, target.login),
            )
        else:
            self._credentials = StaticToken(target.token, target.token_file)

    def __repr__(self) -> str:
        return f"VmsClient(name={self.name!r}, url={self._target.url!r})"

    def _ssl(self) -> ssl.SSLContext | bool:
        """The TLS settings of an https target; aiohttp's default for http, which never uses
        them (redirects are not followed) and costs no certificate loading (~50 ms)."""
        return _ssl_context(self._target) if self._target.url.startswith("https:") else True

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self._target.request_timeout),
                connector=aiohttp.TCPConnector(limit=self._target.concurrency, ssl=self._ssl()),
                trust_env=False,
            )
        return self._session

    async def log_out(self) -> None:
        """Close the login session this process opened, within LOGOUT_TIMEOUT; never raises.

        If it cannot be closed, its id stays remembered and the next login replaces it.
        """
        try:
            async with asyncio.timeout(LOGOUT_TIMEOUT):
                await self._credentials.log_out(self._close_session)
        except (PollError, TimeoutError) as exc:
            log.warning(
                "could not close the login session on the VMS; the next start replaces it",
                extra={"target": self.name, "reason": str(exc) or "timed out"},
            )

    async def _close_session(self, token: str, session_id: int) -> None:
        status, _ = await self._send(
            "POST", f"{self._target.url}{SESSIONS_PATH}{session_id}", token=token, attempts=1
        )
        if status in (200, 204):
            log.info("closed the login session", extra={"target": self.name})
        elif status in (401, 404):
            log.info("the login session had ended already", extra={"target": self.name})
        else:
            raise HttpError(f"closing the session: the VMS answered HTTP {status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch_window(
        self,
        window: Window,
        known: Mapping[str, Download] | None = None,
        *,
        new_poll: bool = True,
    ) -> WindowResult:
        """Every page of ``window``: page 1 first, then the rest by ``concurrency`` workers.

        ``new_poll=False`` for the further slices of one poll, which still logs in at most once.

        ``known`` are the records remembered from earlier polls: an unchanged item
        comes back as that very record, so a poll does not hold two copies of each.

        Downloads created meanwhile push items to later pages; when ``meta.total``
        grew during the poll, the pages whose items may have slipped past a read
        are read again (at most :data:`MAX_REREAD_ROUNDS` times), so that one
        poll's counts are complete.
        """
        if new_poll:
            self._credentials.begin_poll()
        collector = _Collector(window, self._target.max_downloads, known or {})
        first = await self._read_page(1, window)
        collector.add(first)
        reported_total = first.total
        coverage = _Coverage(first.per_page or self._target.per_page)
        coverage.read(1, first.total)
        last_page = first.last_page
        rereads = 0

        async def read(number: int) -> None:
            nonlocal last_page
            page = await self._read_page(number, window)
            collector.add(page)  # at once, so that each decoded page is freed as soon as read
            coverage.read(number, page.total)
            last_page = max(last_page, page.last_page)

        while True:
            if last_page > self._target.max_pages:
                raise LimitExceeded(
                    f"the window has {last_page} pages, more than max_pages="
                    f"{self._target.max_pages}; raise max_pages or per_page, or shorten lookback"
                )
            unread = range(max(coverage.reads) + 1, last_page + 1)
            numbers = sorted(set(unread) | set(coverage.missing_pages()))
            numbers = [n for n in numbers if n <= last_page]
            if any(n in coverage.reads for n in numbers):
                if rereads == MAX_REREAD_ROUNDS:
                    numbers = list(unread)
                else:
                    rereads += 1
            if not numbers:
                break
            await self._in_pool(numbers, read)
        return WindowResult(
            list(collector.kept.values()), reported_total, max(coverage.reads), collector.invalid
        )

    async def _in_pool(self, numbers: list[int], read: Callable[[int], Awaitable[None]]) -> None:
        """``read`` every page number with at most ``concurrency`` in flight (one task each)."""
        queue = iter(numbers)

        async def worker() -> None:
            for number in queue:  # shared: each worker takes the next number
                await read(number)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self._target.concurrency, len(numbers))):
                    group.create_task(worker())
        except BaseExceptionGroup as exc:
            raise _first_error(exc) from None

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
        page = await self._get_page(params)
        return max((d.created_at for d in page.downloads), default=None)

    async def _read_page(self, number: int, window: Window) -> Page:
        params = {
            "per_page": str(self._target.per_page),
            "page": str(number),
            "from": window.query_from,
            "to": window.query_to,
        }
        return await self._get_page(params)

    async def _get_page(self, params: dict[str, str]) -> Page:
        body = await self._authorized_get(params)
        try:
            return await run_steps_pausing(decode_page_steps(body, details=self._details))
        except InvalidResponse as exc:
            raise InvalidResponse(f"page {params['page']}: {exc}") from None

    async def _authorized_get(self, params: dict[str, str]) -> bytes | bytearray:
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

    async def _log_in(self, login: str, password: str, replace: int | None) -> LoginAnswer:
        """Log in; ``replace`` is the id of the session this exporter opened last, if any."""
        payload = {"login": login, "password": password, "session_id": replace}
        # Never retried: a login the VMS accepted but answered slowly would open a
        # second session, and a 429 here means too many sessions, not a rate limit.
        status, body = await self._send(
            "POST", self._target.url + TOKEN_PATH, json_body=payload, attempts=1
        )
        if status == 200:
            answer = _login_answer(body)
            log.info(
                "logged in to the VMS",
                extra={
                    "target": self.name,
                    "session_id": answer.session_id,
                    "replaced_session_id": replace,
                },
            )
            if answer.session_id is None:
                log.warning(
                    "the login answer names no session (user.access_token_id): "
                    "the session cannot be closed on stop",
                    extra={"target": self.name},
                )
            return answer
        if status in (419, 429):
            offered = _offered_session(body)
            hint = (
                f"; the VMS offers to end session {offered}, which this exporter did not "
                "open, so it leaves it alone"
                if offered is not None and offered != replace
                else ""
            )
            raise Unauthorized(
                f"login refused ({status}): too many sessions for this account on the VMS; "
                f"close old sessions or raise the limit{hint}"
            )
        if status == 422:
            reasons = _validation_reasons(body)
            if replace is not None and _names_field(body, "session_id"):
                raise StaleSessionId(f"login refused the remembered session_id: {reasons}")
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
    ) -> tuple[int, bytes | bytearray]:
        """One request with up to ``attempts`` tries on connection errors, timeouts, 5xx, 429."""
        session = self._open()
        headers = {"Authorization": f"Bearer {token}"} if token is not None else None
        for attempt in range(1, attempts + 1):
            await self._limiter.acquire()
            delay: float | None = None
            answered = False  # an answer is counted once, by its status code
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
                    self._on_response(str(response.status))
                    answered = True
                    body = await self._read_body(response)
                    status = response.status
                    if status == 429 and attempts > 1:
                        delay = _retry_after(response.headers.get("Retry-After"))
                        if delay is not None and delay > MAX_RETRY_AFTER:
                            wait = f"{delay:.0f}s" if delay < 1e9 else "for ages"
                            raise LimitExceeded(f"rate limited (429), asked to wait {wait}")
                        if attempt == attempts:
                            raise LimitExceeded(
                                f"still rate limited (429) after {attempt} attempts"
                            )
                    elif status >= 500 and attempt < attempts:
                        pass
                    else:
                        return status, body
            except TimeoutError:
                if not answered:
                    self._on_response("error")
                if attempt == attempts:
                    raise PollTimeout(
                        f"no answer within request_timeout={self._target.request_timeout:g}s "
                        f"({attempt} attempts)"
                    ) from None
            except aiohttp.ClientPayloadError as exc:
                if not answered:
                    self._on_response("error")
                if _undecodable_encoding(exc):  # a broken gzip or deflate body: not a network fault
                    raise InvalidResponse(
                        f"the VMS sent a body that cannot be decoded: {exc}"
                    ) from None
                if attempt == attempts:
                    raise ConnectionFailed(
                        f"the answer was cut off: {exc} ({attempt} attempts)"
                    ) from None
            except (aiohttp.ClientError, OSError) as exc:
                if not answered:
                    self._on_response("error")
                if attempt == attempts:
                    raise ConnectionFailed(
                        f"cannot reach the VMS: {type(exc).__name__}: {exc} ({attempt} attempts)"
                    ) from None
            if delay is None:
                delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)))  # noqa: S311
            await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read_body(self, response: aiohttp.ClientResponse) -> bytes | bytearray:
        """The (decompressed) body, read in chunks; LimitExceeded past ``max_response_size``.

        aiohttp inflates gzip and deflate bodies piece by piece as they are read, so
        counting what arrives here bounds the decompressed size too: a decompression
        bomb or an endless chunked body stops at the cap, never buffered beyond it.
        """
        cap = self._target.max_response_size
        declared = response.content_length
        if declared is not None and declared > cap:
            raise LimitExceeded(
                f"the VMS announced a body of {declared} bytes, over max_response_size={cap}; "
                "lower per_page or raise max_response_size"
            )
        headers = response.headers
        if declared is not None and not (
            "Content-Encoding" in headers or "Transfer-Encoding" in headers
        ):
            return await response.read()  # exactly the length declared: it cannot pass the cap
        body = bytearray()
        async for chunk in response.content.iter_chunked(_READ_CHUNK):
            if len(body) + len(chunk) > cap:
                raise LimitExceeded(
                    f"the VMS sent a body over max_response_size={cap} bytes"
                    f"{' once decompressed' if response.headers.get('Content-Encoding') else ''}; "
                    "lower per_page or raise max_response_size"
                )
            body += chunk
        return body  # not copied to bytes: a body near the cap is held once, not twice


def _undecodable_encoding(exc: aiohttp.ClientPayloadError) -> bool:
    return "content-encoding" in str(exc).lower() or isinstance(
        exc.__cause__, aiohttp.http_exceptions.ContentEncodingError
    )


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first PollError of a TaskGroup failure, else its first exception."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if isinstance(exc, PollError):
            return exc
    return group.exceptions[0]
