"""Settings of the simulated VMS: what it serves, how it behaves, which faults it injects."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_PATH = "/api/v1/users/downloads"
MAX_LATENCY = 600.0
LOGIN_PATH = "/api/v1/token"
SESSIONS_PATH = "/api/v1/sessions/"


def _check(ok: bool, name: str, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{name}: must be {rule}, got {value!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Faults:
    """Fault switches; the running simulator's copy can be changed at /-/sim/faults."""

    latency: float = 0.0
    """Seconds added to every list request."""
    jitter: float = 0.0
    """Up to this many more seconds, at random, per list request: answers overtake each other."""
    error_rate: float = 0.0
    """Fraction of list requests answered 500."""
    unauthorized: bool = False
    """Every list request is answered 401; switching it on revokes all login sessions."""
    rate_limit_rate: float = 0.0
    """Fraction of list requests answered 429 with ``Retry-After: retry_after``."""
    retry_after: int = 1
    truncate_rate: float = 0.0
    """Fraction of 200 list bodies cut off mid-JSON."""
    odd_items_rate: float = 0.0
    """Fraction of listed items sent oddly, by ``id % 5``: an unknown status, no id, a
    created_at that is not a date, no stream and a null file flag, an id as a string."""
    fail_new_exports: bool = False
    """Every download created while this is on fails within seconds."""
    oversized_body: int = 0
    """Bytes of JSON whitespace added to every 200 list body (a body over a client's cap)."""
    endless_body: bool = False
    """Every 200 list answer is a chunked body that never ends (until the client gives up)."""
    arrivals_between_pages: int = 0
    """The next this-many 200 list pages each create a download right after being
    rendered: inserts timed between a client's page reads, pushing items to later pages."""

    def __post_init__(self) -> None:
        _check(
            _is_number(self.latency) and 0 <= self.latency <= MAX_LATENCY,
            "latency",
            f"between 0 and {MAX_LATENCY:g} seconds",
            self.latency,
        )
        _check(
            _is_number(self.jitter) and 0 <= self.jitter <= MAX_LATENCY,
            "jitter",
            f"between 0 and {MAX_LATENCY:g} seconds",
            self.jitter,
        )
        for name in ("error_rate", "rate_limit_rate", "truncate_rate", "odd_items_rate"):
            value = getattr(self, name)
            _check(_is_number(value) and 0 <= value <= 1, name, "between 0 and 1", value)
        _check(
            isinstance(self.retry_after, int)
            and not isinstance(self.retry_after, bool)
            and self.retry_after >= 0,
            "retry_after",
            "a whole number of seconds >= 0",
            self.retry_after,
        )
        for name in ("oversized_body", "arrivals_between_pages"):
            value = getattr(self, name)
            _check(
                isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**30,
                name,
                "a whole number between 0 and 2**30",
                value,
            )
        for name in ("unauthorized", "fail_new_exports", "endless_body"):
            _check(
                isinstance(getattr(self, name), bool), name, "true or false", getattr(self, name)
            )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class Account:
    """A user that can obtain a token at ``POST /api/v1/token``."""

    login: str
    password: str

    def __post_init__(self) -> None:
        _check(bool(self.login), "accounts", "logins that are not empty", self.login)
        _check(bool(self.password), "accounts", "passwords that are not empty", "")


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything the simulator can be told. Durations are in seconds."""

    downloads: int = 1000
    """Downloads present at start-up, created over the last ``history`` seconds."""
    seed: int = 1
    token: str | None = "demo"  # noqa: S105 (the documented demo token)
    """A static token accepted besides login tokens; None: only login tokens."""
    server_timezone: str = "Europe/Moscow"
    """Zone in which the server reads the ``from``/``to`` filter and writes video spans."""
    public_url: str = "http://127.0.0.1:8080"
    """Base of the URLs in ``links`` and ``meta`` (the server's configured URL)."""
    path: str = DEFAULT_PATH
    omit_status: bool = False
    """Leave ``status`` out of items, like the 24.03 documentation sample."""
    per_page_cap: int | None = None
    accounts: tuple[Account, ...] = (Account("exporter@example.com", "demo"),)
    max_sessions: int = 3
    """Concurrent login sessions per account; one more login is answered 419 naming the
    oldest session, which that login may send as ``session_id`` to end it first."""
    token_ttl: float | None = None
    """Seconds a login session lasts; None: until closed (``POST /api/v1/sessions/{id}``),
    replaced by a login's ``session_id``, or revoked by the ``unauthorized`` fault."""
    captcha: bool = False
    """Logins demand a captcha, which an unattended client can never solve."""
    history: float = 2 * 86400.0
    arrival_interval: float = 2.5
    """Mean seconds between new downloads (Poisson); 0 = none arrive."""
    export_time: tuple[float, float] = (5.0, 600.0)
    """Range (log-uniform) of the time an ordinary export takes to finish."""
    fail_ratio: float = 0.1
    stuck_ratio: float = 0.01
    """Share of exports that take hours; a quarter of them never finish."""
    vanish_ratio: float = 0.2
    """Share of completed exports whose file is removed later."""
    cameras: int = 40
    faults: Faults = Faults()

    def __post_init__(self) -> None:
        def whole(value: object, low: int) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= low

        _check(whole(self.downloads, 0), "downloads", "a whole number >= 0", self.downloads)
        _check(whole(self.seed, -(2**63)), "seed", "a whole number", self.seed)
        _check(self.token is None or bool(self.token), "token", "non-empty or None", self.token)
        try:
            ZoneInfo(self.server_timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"server_timezone: unknown IANA time zone {self.server_timezone!r}"
            ) from exc
        _check(
            self.public_url.startswith(("http://", "https://")),
            "public_url",
            "an http:// or https:// URL",
            self.public_url,
        )
        _check(
            self.path.startswith("/") and self.path != LOGIN_PATH and "?" not in self.path,
            "path",
            f"an absolute path without query, other than {LOGIN_PATH}",
            self.path,
        )
        _check(
            self.per_page_cap is None or whole(self.per_page_cap, 1),
            "per_page_cap",
            "a whole number >= 1 or None",
            self.per_page_cap,
        )
        _check(len(self.accounts) > 0, "accounts", "at least one account", self.accounts)
        logins = [a.login for a in self.accounts]
        _check(len(set(logins)) == len(logins), "accounts", "distinct logins", logins)
        _check(whole(self.max_sessions, 1), "max_sessions", ">= 1", self.max_sessions)
        _check(
            self.token_ttl is None or (_is_number(self.token_ttl) and self.token_ttl > 0),
            "token_ttl",
            "> 0 or None",
            self.token_ttl,
        )
        _check(_is_number(self.history) and self.history > 0, "history", "> 0", self.history)
        _check(
            _is_number(self.arrival_interval) and self.arrival_interval >= 0,
            "arrival_interval",
            ">= 0",
            self.arrival_interval,
        )
        low, high = self.export_time
        _check(
            _is_number(low) and _is_number(high) and 0 < low <= high,
            "export_time",
            "(low, high) with 0 < low <= high",
            self.export_time,
        )
        for name in ("fail_ratio", "stuck_ratio", "vanish_ratio"):
            value = getattr(self, name)
            _check(_is_number(value) and 0 <= value <= 1, name, "between 0 and 1", value)
        _check(
            whole(self.cameras, 1) and self.cameras <= 65535, "cameras", "1..65535", self.cameras
        )
