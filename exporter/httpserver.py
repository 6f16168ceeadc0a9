"""The exporter's own HTTP server, held against any client on the network.

- A request's head must arrive within ``HEADER_TIMEOUT`` of the connection
  opening (or of its first byte after an idle keep-alive): slow or half-sent
  requests are cut off. Idle keep-alive connections close after
  ``KEEPALIVE_TIMEOUT``.
- Open client connections are capped below the file-descriptor limit
  (:func:`connection_cap`); at the cap a new connection evicts the oldest one
  that is not being answered, so an attacker holding many connections can
  neither keep ``/-/healthy`` or ``/metrics`` from answering nor exhaust the
  descriptors that polls need.
- At most ``MAX_ACTIVE_REQUESTS`` requests are handled at once (``/-/healthy``
  is never held back), and ``/metrics`` is rendered (and compressed) at most
  once per ``CACHE_MAX_AGE`` per kind of answer (:class:`ExpositionCache`), in a
  worker thread: a storm of scrapes costs the event loop next to nothing, so polls go on.
- Malformed requests and dropped clients are logged at debug; an unexpected
  handler error with its traceback at most once a minute.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import logging
import resource
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from typing import Any, NamedTuple

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("exporter.http")

HEADER_TIMEOUT = 10.0
KEEPALIVE_TIMEOUT = 75.0
MAX_CONNECTIONS = 256
FD_RESERVE = 64
"""Descriptors left for everything but clients: VMS connections, state files, logs."""
MAX_ACTIVE_REQUESTS = 4
ERROR_LOG_INTERVAL = 60.0
ALWAYS_ANSWERED = frozenset({"/-/healthy"})
CACHE_MAX_AGE = 1.0
CACHE_MAX_KINDS = 16
"""Distinct (Accept, encoding, query) answers kept; more (a client varying them) start over."""
CACHED_PATHS = frozenset({"/metrics"})
INLINE_GZIP = 256 * 1024
"""Bytes: a smaller answer is compressed on the loop (~2 ms at most), a larger in a thread."""
EXPOSITION_VERSION: web.AppKey[Callable[[], object]] = web.AppKey("exposition_version")
"""Set by the app: a number that changes whenever the data behind /metrics does (a poll
ended); a cached answer is used only while it is unchanged. Without it nothing is cached."""


def connection_cap(fd_limit: int | None = None) -> int:
    """Client connections allowed at once: at most MAX_CONNECTIONS, and well below the
    process's file-descriptor limit (half of what FD_RESERVE leaves)."""
    if fd_limit is None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        fd_limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
    return max(4, min(MAX_CONNECTIONS, (fd_limit - FD_RESERVE) // 2))


class _QuietLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server log: a client's fault at debug, our own errors rate-limited."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})
        self._last_error = -ERROR_LOG_INTERVAL

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        client_fault = isinstance(exc, HttpProcessingError | ConnectionError)
        if level > logging.DEBUG and not client_fault:
            now = time.monotonic()
            if now - self._last_error < ERROR_LOG_INTERVAL:
                level = logging.DEBUG
            else:
                self._last_error = now
        else:
            level = logging.DEBUG
            if not self.logger.isEnabledFor(logging.DEBUG):
                return
            kwargs["exc_info"] = None  # one line, not a traceback, even at debug
            msg = f"{msg}: {exc}" if exc is not None else msg
        self.logger.log(level, msg, *args, **kwargs)


class _Guarded(asyncio.Protocol):
    """One client connection: aiohttp's handler, plus the head deadline and the cap."""

    def __init__(self, inner: RequestHandler, guard: ConnectionGuard) -> None:
        self.inner = inner
        self._guard = guard
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._forwarding = False
        self.busy = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if not self._guard.admit(self):
            transport.abort()
            return
        self._forwarding = True
        self._arm()
        self.inner.connection_made(transport)

    def _arm(self) -> None:
        if self._deadline is None:
            loop = asyncio.get_running_loop()
            self._deadline = loop.call_later(self._guard.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.busy:
            log.debug("closing a connection whose request head did not arrive in time")
            self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def request_started(self) -> None:
        self.busy += 1
        self._disarm()

    def request_finished(self) -> None:
        self.busy -= 1

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            self._arm()  # the first byte of a new request starts its deadline
        self.inner.data_received(data)

    def eof_received(self) -> None:
        self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._guard.release(self)
        if self._forwarding:
            self.inner.connection_lost(exc)


class ConnectionGuard:
    """Counts open connections, evicts the oldest idle one at the cap, paces handlers."""

    def __init__(
        self,
        *,
        max_connections: int | None = None,
        header_timeout: float = HEADER_TIMEOUT,
        max_active: int = MAX_ACTIVE_REQUESTS,
    ) -> None:
        self.server: web.Server | None = None
        """aiohttp's protocol factory, set once the runner is set up."""
        self.max_connections = max_connections or connection_cap()
        self.header_timeout = header_timeout
        self._open: OrderedDict[_Guarded, None] = OrderedDict()
        self._by_handler: MutableMapping[RequestHandler, _Guarded] = {}
        self._active = asyncio.Semaphore(max_active)
        self._last_warning = -ERROR_LOG_INTERVAL
        self.evicted = 0
        self.refused = 0

    def __call__(self) -> _Guarded:
        """The protocol factory given to ``loop.create_server``."""
        assert self.server is not None
        inner = self.server()
        guarded = _Guarded(inner, self)
        self._by_handler[inner] = guarded
        return guarded

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def admit(self, connection: _Guarded) -> bool:
        if len(self._open) >= self.max_connections:
            idle = next((c for c in self._open if not c.busy), None)
            self._warn_at_cap()
            if idle is None:
                self.refused += 1
                self._forget(connection)
                return False
            self.evicted += 1
            self._open.pop(idle)
            idle.abort()
        self._open[connection] = None
        return True

    def release(self, connection: _Guarded) -> None:
        self._open.pop(connection, None)
        self._forget(connection)

    def _forget(self, connection: _Guarded) -> None:
        self._by_handler.pop(connection.inner, None)

    def _warn_at_cap(self) -> None:
        now = time.monotonic()
        if now - self._last_warning >= ERROR_LOG_INTERVAL:
            self._last_warning = now
            log.warning(
                "client connection limit reached: closing the oldest idle connections",
                extra={"max_connections": self.max_connections},
            )

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        connection = self._by_handler.get(request.protocol)
        if connection is not None:
            connection.request_started()
        try:
            if request.path in ALWAYS_ANSWERED:
                return await handler(request)
            async with self._active:
                return await handler(request)
        finally:
            if connection is not None:
                connection.request_finished()


class _Rendered(NamedTuple):
    at: float
    """time.monotonic() when the render started."""
    ticket: int
    """The render's place in the order of arrivals and render starts."""
    version: object
    body: bytes
    headers: dict[str, str]


class ExpositionCache:
    """Scrapes within ``max_age`` of one another share one rendered, compressed answer.

    The data changes only when a poll ends, so an answer up to ``max_age`` old
    is as good as a fresh one; concurrent scrapes of one kind wait for a single
    render instead of each rendering, and a scrape that waited takes any render
    that started after it arrived, even if a poll ended meanwhile (with many
    targets polls end every fraction of a second: re-rendering for each queued
    scrape would stack renders). Compression runs in a worker thread. Innermost
    middleware: authentication (added by ``create_app``) runs before it.
    """

    def __init__(self, max_age: float = CACHE_MAX_AGE) -> None:
        self._max_age = max_age
        self._entries: dict[tuple[str, str, str, bool], _Rendered] = {}
        self._locks: dict[tuple[str, str, str, bool], asyncio.Lock] = {}
        self._tickets = itertools.count()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        version = request.app.get(EXPOSITION_VERSION)
        if request.method != "GET" or request.path not in CACHED_PATHS or version is None:
            return await handler(request)
        arrived = next(self._tickets)
        gzip_ok = "gzip" in request.headers.get("Accept-Encoding", "").lower()
        key = (request.path, request.query_string, request.headers.get("Accept", ""), gzip_ok)
        if key not in self._locks and len(self._locks) >= CACHE_MAX_KINDS:
            self._locks.clear()
            self._entries.clear()
        async with self._locks.setdefault(key, asyncio.Lock()):
            entry = self._entries.get(key)
            now, current = time.monotonic(), version()
            if entry is None or (
                entry.ticket < arrived
                and (now - entry.at > self._max_age or entry.version != current)
            ):
                ticket = next(self._tickets)
                response = await handler(request)
                if not isinstance(response, web.Response) or response.status != 200:
                    return response
                body = response.body if isinstance(response.body, bytes) else b""
                headers = {"Content-Type": response.headers.get("Content-Type", "text/plain")}
                if gzip_ok:
                    body = (
                        gzip.compress(body, compresslevel=6)
                        if len(body) < INLINE_GZIP
                        else await asyncio.to_thread(gzip.compress, body, compresslevel=6)
                    )
                    headers["Content-Encoding"] = "gzip"
                entry = _Rendered(now, ticket, current, body, headers)
                self._entries[key] = entry
        return web.Response(body=entry.body, headers={**entry.headers, "Vary": "Accept-Encoding"})


class GuardedSite(web.TCPSite):
    """A TCPSite whose connections go through a :class:`ConnectionGuard`."""

    def __init__(
        self,
        runner: web.AppRunner,
        guard: ConnectionGuard,
        host: str | None,
        port: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        # asyncio accepts up to ``backlog`` connections in one go before the evicted
        # ones are closed (on the next loop iteration): a quarter of the cap keeps
        # the descriptors in use below 1.5 x the cap, well under the fd limit.
        backlog = max(8, guard.max_connections // 4)
        super().__init__(runner, host, port, ssl_context=ssl_context, backlog=backlog)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard,
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self._guard.header_timeout if self._ssl_context else None,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )


async def start_guarded(
    app: web.Application,
    host: str | None,
    port: int,
    *,
    shutdown_timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    max_connections: int | None = None,
    header_timeout: float = HEADER_TIMEOUT,
) -> tuple[web.AppRunner, ConnectionGuard]:
    """Serve ``app`` on ``host:port`` behind a guard; the runner to clean up, and the guard."""
    runner = web.AppRunner(
        app,
        shutdown_timeout=shutdown_timeout,
        access_log=None,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        logger=_QuietLog(logging.getLogger("exporter.http.server")),
        max_line_size=8190,
        max_field_size=8190,
    )
    guard = ConnectionGuard(max_connections=max_connections, header_timeout=header_timeout)
    app.middlewares.insert(0, guard.middleware)  # outermost: it sees every request
    app.middlewares.append(ExpositionCache().middleware)  # innermost: after authentication
    await runner.setup()
    guard.server = runner.server
    site = GuardedSite(runner, guard, host, port, ssl_context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, guard
