"""Basic auth and the configured response headers, as exporter-toolkit applies them.

Every path but ``/-/healthy`` needs the credentials once ``basic_auth_users``
is set; the headers of ``http_server_config`` go on every response, 401s and
404s included. The configuration is read at each request from a
:class:`~exporter.webconfig.LiveWebConfig`, so a user added to the file works
as soon as the file has been re-read.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Mapping

import bcrypt
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from exporter.webconfig import LiveWebConfig

OPEN_PATHS = frozenset({"/-/healthy"})
CACHE_SIZE = 256
# bcrypt looks at the first 72 bytes only; Go's CompareHashAndPassword ignores the rest,
# the Python library refuses longer passwords: cut them as Go does.
BCRYPT_MAX_PASSWORD = 72


@functools.cache
def _decoy_hash() -> bytes:
    """Checked when the user is unknown, so that the answer takes as long as for a known one."""
    return bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(10))


def parse_basic(header: str | None) -> tuple[bytes, bytes] | None:
    """(user, password) of an ``Authorization: Basic …`` header, like Go's ``Request.BasicAuth``."""
    if header is None or len(header) < 6 or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


def _compare(password: bytes, hashed: bytes | None) -> bool:
    """bcrypt's constant-time check; an unknown user (None) is checked against the decoy."""
    return bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], hashed or _decoy_hash())


class BasicAuthChecker:
    """bcrypt checks, one at a time in a worker thread, with a bounded cache of the outcomes.

    The cache key is an HMAC (random per process) of user, stored hash and
    password together: a changed hash or another password never meets a
    cached answer, and no password is kept in memory.
    """

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._key = secrets.token_bytes(32)
        self._lock = asyncio.Lock()

    def _cache_key(self, user: bytes, hashed: bytes, password: bytes) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (user, hashed, password):
            mac.update(len(part).to_bytes(8, "big"))
            mac.update(part)
        return mac.digest()

    async def check(self, users: Mapping[str, bytes], header: str | None) -> bool:
        credentials = parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        name = user.decode("utf-8", "surrogateescape")
        hashed = users.get(name)
        known = hashed is not None
        key = self._cache_key(user, hashed or b"", password)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached and known
        async with self._lock:  # bcrypt is CPU-bound by design: never several at once
            matches = await asyncio.to_thread(_compare, password, hashed)
        result = matches and known
        self._cache[key] = result
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return result

    def __len__(self) -> int:
        return len(self._cache)


def security_middleware(live: LiveWebConfig, checker: BasicAuthChecker | None = None) -> Middleware:
    """An aiohttp middleware enforcing ``live``'s basic auth and adding its headers."""
    auth = checker if checker is not None else BasicAuthChecker()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        config = live.config
        try:
            if (
                config.users
                and request.path not in OPEN_PATHS
                and not await auth.check(config.users, request.headers.get("Authorization"))
            ):
                raise web.HTTPUnauthorized(
                    text="Unauthorized\n", headers={"WWW-Authenticate": "Basic"}
                )
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(config.headers)
            raise
        response.headers.update(config.headers)
        return response

    return middleware
