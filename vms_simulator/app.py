"""The simulator's HTTP face: the VMS routes, plus its own control and stats endpoints."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from zoneinfo import ZoneInfo

from aiohttp import web

from vms_simulator.auth import BadCredentials, SessionLimit, TokenStore
from vms_simulator.clock import Clock, WallClock
from vms_simulator.config import LOGIN_PATH, SESSIONS_PATH, Faults, SimulatorConfig
from vms_simulator.dataset import Dataset
from vms_simulator.faults import FaultState
from vms_simulator.render import Renderer, php_json, user_object
from vms_simulator.stats import Stats
from vms_simulator.validation import (
    INVALID_MESSAGE,
    Errors,
    integer_message,
    parse_integer,
    parse_list_query,
    required_message,
)

FAULTS_PATH = "/-/sim/faults"
STATS_PATH = "/-/sim/stats"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _laravel_json(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, text=php_json(body), content_type="application/json", headers=headers
    )


def _invalid(errors: Errors) -> web.Response:
    return _laravel_json(422, {"message": INVALID_MESSAGE, "errors": errors})


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    return header[len("Bearer ") :] if header.startswith("Bearer ") else None


@web.middleware
async def _laravel_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Unknown routes and wrong methods answered in JSON, as a Laravel API does."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = (
            f"The {request.method} method is not supported for this route. "
            f"Supported methods: {allowed}."
        )
        return _laravel_json(405, {"message": message}, {"Allow": allowed})
    except web.HTTPNotFound:
        message = f"The route {request.path.lstrip('/')} could not be found."
        return _laravel_json(404, {"message": message})


class Simulator:
    """The state behind one simulated VMS and its request handlers."""

    def __init__(self, config: SimulatorConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        start = clock()
        self.zone = ZoneInfo(config.server_timezone)
        self.dataset = Dataset(config, start)
        self.renderer = Renderer(self.dataset, config)
        self.tokens = TokenStore(
            config.token, config.accounts, config.max_sessions, config.token_ttl, start
        )
        self.faults = FaultState(config.faults, config.seed)
        self.stats = Stats()

    async def list_downloads(self, request: web.Request) -> web.StreamResponse:
        response = await self._list_downloads(request)
        self.stats.count_list(response.status, request.headers, request.query)
        if response.status == 200 and self.faults.current.endless_body:
            return await _endless(request, response)
        return response

    async def _list_downloads(self, request: web.Request) -> web.Response:
        delay = self.faults.current.latency + self.faults.jitter()
        if delay:
            await asyncio.sleep(delay)
        faults = self.faults.current
        now = self.clock()
        if faults.unauthorized or not self.tokens.is_valid(_bearer(request), now):
            return _laravel_json(401, {"message": "Unauthenticated."})
        if self.faults.hits(faults.rate_limit_rate):
            return _laravel_json(
                429,
                {"message": "Too Many Attempts."},
                {
                    "Retry-After": str(faults.retry_after),
                    "X-RateLimit-Limit": "60",
                    "X-RateLimit-Remaining": "0",
                },
            )
        if self.faults.hits(faults.error_rate):
            return _laravel_json(500, {"message": "Server Error"})
        query = parse_list_query(request.query, self.zone)
        if isinstance(query, dict):
            return _invalid(query)
        self.dataset.advance(now)
        per_page = query.per_page
        if self.config.per_page_cap is not None:
            per_page = min(per_page, self.config.per_page_cap)
        window = self.dataset.window(query.start, query.end)
        rate = faults.odd_items_rate
        body = self.renderer.page(
            window, query.page, per_page, now, odd=lambda: self.faults.hits(rate)
        )
        if faults.arrivals_between_pages:
            self.dataset.arrive(1, now)
            left = faults.arrivals_between_pages - 1
            self.faults.current = dataclasses.replace(faults, arrivals_between_pages=left)
        if self.faults.hits(faults.truncate_rate):
            body = body[: self.faults.cut_point(len(body))]
        if faults.oversized_body:
            body = body[:-1] + b" " * faults.oversized_body + b"}"
        return web.Response(body=body, content_type="application/json")

    async def token(self, request: web.Request) -> web.Response:
        response = await self._token(request)
        self.stats.token_codes[response.status] += 1
        return response

    async def _token(self, request: web.Request) -> web.Response:
        body = await _input(request)
        errors: Errors = {}
        strings: dict[str, str] = {}
        for field in ("login", "password"):
            value = body.get(field)
            if value is None:
                errors[field] = [required_message(field)]
            elif not isinstance(value, str):
                errors[field] = [f"The {field} must be a string."]
            else:
                strings[field] = value
        drop = body.get("session_id")
        session_id = None if drop is None else parse_integer(drop)
        if drop is not None and session_id is None:
            errors["session_id"] = [integer_message("session_id")]
        if self.config.captcha:
            for field in ("captcha", "key"):
                if body.get(field) is None:
                    errors[field] = [required_message(field)]
            errors.setdefault("captcha", ["Invalid captcha."])
        if errors:
            return _invalid(errors)
        now = self.clock()
        try:
            session = self.tokens.login(strings["login"], strings["password"], session_id, now)
        except BadCredentials:
            return _invalid({"login": ["These credentials do not match our records."]})
        except SessionLimit as exc:
            return _laravel_json(
                419,
                {
                    "message": "The maximum number of active sessions has been reached. "
                    "Send the session_id of a session to end it.",
                    "session_id": exc.oldest,
                },
            )
        self.stats.logins += 1
        user = user_object(self.tokens.users[session.account], access_token_id=session.id)
        return _laravel_json(200, {"user": user, "access_token": f"Bearer {session.token}"})

    async def close_session(self, request: web.Request) -> web.Response:
        """``POST /api/v1/sessions/{id}``: log the session's device out."""
        response = await self._close_session(request)
        self.stats.close_codes[response.status] += 1
        return response

    async def _close_session(self, request: web.Request) -> web.Response:
        now = self.clock()
        caller = _bearer(request)
        if caller is None or not self.tokens.is_valid(caller, now):
            return _laravel_json(401, {"message": "Unauthenticated."})
        session_id = parse_integer(request.match_info["session"])
        if session_id is None or not self.tokens.close(caller, session_id, now):
            return _laravel_json(404, {"message": "No query results for model [Session]."})
        return _laravel_json(200, {"status": "ok"})

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self._faults_json())

    async def post_faults(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            merged = self.faults.merged(changes)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError too
            return web.json_response({"error": str(exc)}, status=400)
        self._apply(merged)
        return web.json_response(self._faults_json())

    def _apply(self, faults: Faults) -> None:
        now = self.clock()
        if faults.fail_new_exports != self.faults.current.fail_new_exports:
            self.dataset.set_fail_new(faults.fail_new_exports, now)
        if faults.unauthorized and not self.faults.current.unauthorized:
            self.tokens.revoke_all()
        self.faults.current = faults

    def _faults_json(self) -> dict[str, object]:
        faults = self.faults.current
        return {name: getattr(faults, name) for name in Faults.field_names()}

    async def get_stats(self, request: web.Request) -> web.Response:
        now = self.clock()
        self.dataset.advance(now)
        return web.json_response(self.stats.as_json(self.tokens.sessions(now), len(self.dataset)))


ENDLESS_LIMIT = 2**31
"""Bytes after which an endless body ends after all (every loop is bounded)."""


async def _endless(request: web.Request, page: web.Response) -> web.StreamResponse:
    """The start of ``page``, then JSON whitespace for as long as the client reads."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    body = page.body if isinstance(page.body, bytes) else b"{"
    await response.write(body[: len(body) // 2])
    chunk = b" " * 65536
    sent = 0
    try:
        while sent < ENDLESS_LIMIT:
            await response.write(chunk)
            sent += len(chunk)
    except (ConnectionError, RuntimeError):  # the client hung up, as it should
        pass
    return response


async def _input(request: web.Request) -> dict[str, object]:
    """The request's input as Laravel sees it: a JSON or form body, empty strings as None."""
    data: dict[str, object] = {}
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        data = dict(await request.post())
    elif request.can_read_body:
        try:
            parsed = json.loads(await request.text())
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            data = parsed
    return {key: None if value == "" else value for key, value in data.items()}


def create_app(config: SimulatorConfig, clock: Clock | None = None) -> web.Application:
    """The simulated VMS as an aiohttp application; its dataset is generated here."""
    simulator = Simulator(config, clock or WallClock())
    app = web.Application(middlewares=[_laravel_errors])
    app.router.add_get(config.path, simulator.list_downloads)
    app.router.add_post(LOGIN_PATH, simulator.token)
    app.router.add_post(SESSIONS_PATH + "{session}", simulator.close_session)
    app.router.add_get(FAULTS_PATH, simulator.get_faults)
    app.router.add_post(FAULTS_PATH, simulator.post_faults)
    app.router.add_get(STATS_PATH, simulator.get_stats)
    return app
