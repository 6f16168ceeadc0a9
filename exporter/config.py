"""Configuration: TOML file + ``VMS_EXPORTER_*`` environment, validated up front.

Every problem is reported as one line that names its key (``poll.timeout: …``);
the CLI prints them and exits 2 before anything listens or polls.
"""

from __future__ import annotations

import math
import os
import re
import ssl
import tomllib
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from exporter.state import check_directory
from exporter.webconfig import WebConfigError, load_web_config

ENV_PREFIX = "VMS_EXPORTER_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
DEFAULT_CONFIG_FILE = Path("config.toml")
SHORTHAND_KEYS = {
    "URL": "url",
    "TOKEN": "token",
    "TOKEN_FILE": "token_file",
    "LOGIN": "login",
    "PASSWORD": "password",
    "PASSWORD_FILE": "password_file",
    "PATH": "path",
    "CLIENT": "client",
    "TIMEZONE": "timezone",
}
SHORTHAND_TARGET = "default"
_SECTIONS = ("WEB", "POLL", "STATE", "METRICS", "TARGETS")

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
MAX_DURATION = 366 * 86400.0
# C0 and C1 controls and the Unicode line and paragraph separators: a secret holding
# one was cut or mangled somewhere, and str.splitlines would silently shorten it.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_BEARER = re.compile(r"bearer(\s+|$)", re.IGNORECASE)
_TARGET_NAME = re.compile(r"[a-z0-9_]+")
_HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_*]([A-Za-z0-9_.-]*[A-Za-z0-9])?")
_FILE_DATA: ContextVar[dict[str, Any] | None] = ContextVar("_FILE_DATA", default=None)


class ConfigError(Exception):
    """Invalid configuration; ``problems`` holds one line per problem, each naming its key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def parse_duration(value: object) -> float:
    """Seconds from ``"500ms"``, ``"30s"``, ``"1h30m"``, ``"2w"`` or a plain number."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '30s', not a boolean")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError("duration must not exceed 1 year") from None
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(
                    f"invalid duration {value!r}: use e.g. '500ms', '30s', '5m', '1h30m', '7d'"
                ) from None
    else:
        raise ValueError(f"expected a duration such as '30s', got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    if seconds > MAX_DURATION:
        raise ValueError(f"duration must not exceed 1 year, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """Short human form used in messages (``90`` → ``"1m30s"``)."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    parts = []
    rest = seconds
    for unit in ("w", "d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if rest >= size:
            count = int(rest // size)
            parts.append(f"{count}{unit}")
            rest -= count * size
    if rest or not parts:
        parts.append(f"{rest:g}s")
    return "".join(parts)


def parse_duration_or_zero(value: object) -> float:
    """A duration where ``0``/``"0s"`` is allowed and means "off"."""
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        text = str(value).strip()
        if text in ("0", "0.0") or re.fullmatch(r"0+(?:\.0+)?(ms|s|m|h|d|w)", text):
            return 0.0
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(parse_duration)]
DurationOrZero = Annotated[float, BeforeValidator(parse_duration_or_zero)]

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?")
_UNIT_BYTES = {
    None: 1,
    "B": 1,
    "KB": 10**3,
    "KiB": 2**10,
    "MB": 10**6,
    "MiB": 2**20,
    "GB": 10**9,
    "GiB": 2**30,
}
MIN_SIZE = 1024
MAX_SIZE = 2**30


def parse_size(value: object) -> int:
    """Bytes from ``"512KiB"``, ``"16MiB"``, ``"1GB"`` or a plain number of bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as '16MiB', not a boolean")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())):
        number = float(match.group(1)) * _UNIT_BYTES[match.group(2)]
        if not math.isfinite(number):
            raise ValueError(f"size too large: {value!r}")
        size = int(number)
    else:
        raise ValueError(f"invalid size {value!r}: use e.g. '512KiB', '16MiB', or bytes")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be between 1KiB and 1GiB, got {value!r}")
    return size


Size = Annotated[int, BeforeValidator(parse_size)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebSettings(_Section):
    listen_address: str = ":9877"
    config_file: Path | None = None
    show_details: bool = False
    """/problems shows names and logins; only with basic auth, else a configuration error."""
    external_url: str | None = None
    """How people reach this exporter (behind a proxy, say): the base the alert links use."""

    @field_validator("external_url")
    @classmethod
    def _check_external_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL with a host")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("must not carry a query, a fragment or credentials")
        return value.rstrip("/")

    @field_validator("listen_address")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen_address(value)
        return value


class PollSettings(_Section):
    interval: Duration = 60.0
    lookback: Duration = 86400.0
    timeout: Duration = 45.0
    max_staleness: Duration = 600.0
    full_resync: DurationOrZero = 600.0
    """Incremental polling: a full re-scan at least this often; 0 = every poll is full."""


class StateSettings(_Section):
    directory: Path | None = None
    """Where the remembered records and the login session id survive restarts; off when unset."""


class MetricsSettings(_Section):
    per_camera: bool = False
    max_cameras: int = Field(default=500, ge=1, le=100_000)


class TargetSettings(_Section):
    """One VMS. Secrets are ``SecretStr`` so that no repr or log shows them."""

    url: str
    path: str = "/api/v1/users/downloads"
    token: SecretStr | None = None
    token_file: Path | None = None
    login: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    client: Literal["ios-cctv", "android-cctv", "thick-legal", "web"] = "web"
    device_uuid: uuid.UUID | None = None
    timezone: str = "UTC"
    per_page: int = Field(default=100, ge=1, le=10_000)
    concurrency: int = Field(default=4, ge=1, le=64)
    request_timeout: Duration = 10.0
    max_rps: float = Field(default=0.0, ge=0, le=10_000, allow_inf_nan=False)
    max_pages: int = Field(default=1000, ge=1, le=10_000_000)
    max_response_size: Size = 16 * 2**20
    max_downloads: int = Field(default=1_000_000, ge=1, le=100_000_000)
    tls_verify: bool = True
    ca_file: Path | None = None
    cert_file: Path | None = None
    """Client certificate (PEM, may hold the chain) for a VMS behind mutual TLS."""
    key_file: Path | None = None
    server_name: str | None = None
    """The name to verify the VMS certificate against (and to send as SNI) instead of the URL's."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", value):
            raise ValueError("expected an http(s) base URL such as https://vms.local")
        if "@" in value.split("/")[2]:
            raise ValueError("credentials in the URL are not allowed: use token_file or login")
        return value.rstrip("/")

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/") or "?" in value or "#" in value:
            raise ValueError(f"expected an absolute path such as /api/v1/downloads, got {value!r}")
        return value

    @field_validator("token", "password")
    @classmethod
    def _check_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value()
        if info.field_name == "token":
            text = strip_bearer(text)
        if not text or _CONTROL.search(text):
            raise ValueError(
                "must be non-empty, without line breaks, line separators or control characters"
            )
        return SecretStr(text)

    @field_validator("server_name")
    @classmethod
    def _check_server_name(cls, value: str | None) -> str | None:
        if value is not None and not _HOST_NAME.fullmatch(value):
            raise ValueError(f"expected a host name such as vms.local, got {value!r}")
        return value

    @model_validator(mode="after")
    def _client_certificate_pair(self) -> TargetSettings:
        if (self.cert_file is None) != (self.key_file is None):
            have, lack = (
                ("cert_file", "key_file") if self.key_file is None else ("key_file", "cert_file")
            )
            raise ValueError(f"{have} needs {lack} (a client certificate and its key)")
        return self

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> TargetSettings:
        token_ways = [k for k in ("token", "token_file") if getattr(self, k) is not None]
        password_ways = [k for k in ("password", "password_file") if getattr(self, k) is not None]
        if len(token_ways) > 1 or len(password_ways) > 1:
            both = token_ways if len(token_ways) > 1 else password_ways
            raise ValueError(f"set only one of {' and '.join(both)}")
        if self.login is not None:
            if token_ways:
                raise ValueError(f"set either login or {token_ways[0]}, not both")
            if not password_ways:
                raise ValueError("login needs password or password_file")
        elif password_ways:
            raise ValueError(f"{password_ways[0]} needs login")
        elif not token_ways:
            raise ValueError("no way to authenticate: set token_file (or token), or login")
        return self

    def device_id(self, name: str) -> str:
        """X-UUID: the configured one, else stable across restarts and hosts."""
        if self.device_uuid is not None:
            return str(self.device_uuid)
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{name}|{self.url}"))


class _FileSource(PydanticBaseSettingsSource):
    """The parsed TOML file that :func:`load_settings` is loading (lowest priority)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_FILE_DATA.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_DATA.get() or {})


class Settings(BaseSettings):
    """The whole configuration. Built by :func:`load_settings`, not directly."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    web: WebSettings = WebSettings()
    poll: PollSettings = PollSettings()
    state: StateSettings = StateSettings()
    metrics: MetricsSettings = MetricsSettings()
    targets: dict[str, TargetSettings] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags (passed as init data) override the environment, which overrides the file.
        return (init_settings, env_settings, _FileSource(settings_cls))

    @field_validator("targets")
    @classmethod
    def _check_targets(cls, value: dict[str, TargetSettings]) -> dict[str, TargetSettings]:
        if not value:
            raise ValueError(
                "no target configured: add a [targets.NAME] table, or set VMS_EXPORTER_URL"
            )
        for name in value:
            if not _TARGET_NAME.fullmatch(name):
                raise ValueError(f"target name {name!r} must match [a-z0-9_]+")
        return value

    @model_validator(mode="after")
    def _check_durations(self) -> Settings:
        poll = self.poll
        problems = []
        for name, target in self.targets.items():
            if not target.request_timeout < poll.timeout:
                problems.append(
                    f"targets.{name}.request_timeout: must be less than poll.timeout "
                    f"({format_duration(target.request_timeout)} >= "
                    f"{format_duration(poll.timeout)})"
                )
        if not poll.timeout < poll.interval:
            problems.append(
                f"poll.timeout: must be less than poll.interval "
                f"({format_duration(poll.timeout)} >= {format_duration(poll.interval)})"
            )
        if not poll.interval <= poll.lookback:
            problems.append(
                f"poll.interval: must not exceed poll.lookback "
                f"({format_duration(poll.interval)} > {format_duration(poll.lookback)})"
            )
        if poll.full_resync and poll.full_resync < poll.interval:
            problems.append(
                f"poll.full_resync: must be 0s (every poll full) or at least poll.interval "
                f"({format_duration(poll.full_resync)} < {format_duration(poll.interval)})"
            )
        if problems:
            raise ConfigError(problems)
        return self


def parse_listen_address(value: str) -> tuple[str | None, int]:
    """``":9877"`` → (None, 9877) meaning all interfaces; ``"[::1]:9877"`` → ("::1", 9877)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"expected HOST:PORT or :PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets, e.g. [::1]:9877, got {value!r}")
    return (host or None), int(port_text)


def strip_bearer(token: str) -> str:
    """A token as a login answer spells it (``"Bearer …"``) works as the bare token."""
    token = token.strip()
    match = _BEARER.match(token)
    return token[match.end() :] if match else token


def read_secret_file(path: Path, *, token: bool = False) -> str:
    """The first line of a secret file, stripped (and ``Bearer `` with ``token``).

    Only ``\\n`` ends a line: a Unicode line separator inside the secret is an
    error, not a silently shortened secret. Errors never include the content.
    """
    text = path.read_text(encoding="utf-8").strip()
    first = text.split("\n", 1)[0].strip()
    if token:
        first = strip_bearer(first)
    if not first or _CONTROL.search(first):
        raise ValueError(f"{path} is empty or has control characters or line separators")
    return first


def _locate_file(explicit: Path | None, environ: Mapping[str, str]) -> Path | None:
    if explicit is not None:
        return explicit
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    if DEFAULT_CONFIG_FILE.is_file():
        return DEFAULT_CONFIG_FILE
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError([f"--config.file: {path}: no such file"]) from None
    except OSError as exc:
        raise ConfigError([f"--config.file: {path}: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"--config.file: {path}: not valid TOML: {exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"--config.file: {path}: not UTF-8 text"]) from None
    except (RecursionError, ValueError, MemoryError) as exc:
        # tomllib's own limits: nesting deeper than Python recurses, integers of
        # more than 4300 digits.
        reason = "nested too deeply" if isinstance(exc, RecursionError) else "a value too large"
        raise ConfigError([f"--config.file: {path}: cannot be read: {reason}"]) from None


def _environment_problems(environ: Mapping[str, str]) -> list[str]:
    """Unknown top-level ``VMS_EXPORTER_*`` variables (nested ones pydantic reports itself)."""
    problems = []
    for key in sorted(environ):
        if not key.upper().startswith(ENV_PREFIX):
            continue
        rest = key[len(ENV_PREFIX) :].upper()
        if rest == "CONFIG" or rest in SHORTHAND_KEYS:
            continue
        section = rest.split("__", 1)[0]
        if section not in _SECTIONS or "__" not in rest:
            problems.append(f"{key}: unknown variable (not a configuration key)")
    return problems


def _shorthand_target(environ: Mapping[str, str]) -> dict[str, str]:
    """The single-target shorthand, matched case-insensitively like every other variable."""
    upper = {key.upper(): value for key, value in environ.items()}
    return {
        field: upper[ENV_PREFIX + var]
        for var, field in SHORTHAND_KEYS.items()
        if upper.get(ENV_PREFIX + var)
    }


def _format_validation_error(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        message = error["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "required key is missing"
        # Never echo the input: it may be a secret.
        problems.append(f"{location}: {message}" if location else message)
    return problems


def load_settings(
    config_file: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build the settings from file, ``VMS_EXPORTER_*`` environment and flag overrides.

    ``overrides`` maps section to keys, e.g. ``{"web": {"listen_address": ":9100"}}``.
    Raises :class:`ConfigError` with one line per problem.
    """
    env = os.environ
    problems = _environment_problems(env)
    path = _locate_file(config_file, env)
    data: dict[str, Any] = _read_toml(path) if path is not None else {}
    shorthand = _shorthand_target(env)
    if shorthand:
        if data.get("targets") or any(k.upper().startswith(ENV_PREFIX + "TARGETS__") for k in env):
            problems.append(
                "VMS_EXPORTER_URL: the single-target shorthand (VMS_EXPORTER_URL, _TOKEN, …) "
                "cannot be mixed with [targets.*] from a file or VMS_EXPORTER_TARGETS__*"
            )
        else:
            data["targets"] = {SHORTHAND_TARGET: shorthand}
    if problems:
        raise ConfigError(problems)
    token = _FILE_DATA.set(data)
    try:
        settings = Settings.model_validate({k: dict(v) for k, v in (overrides or {}).items()})
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None
    except (RecursionError, OverflowError, ValueError, TypeError, SettingsError) as exc:
        # What pydantic(-settings) raises outside a ValidationError: a variable's JSON
        # that does not parse or nests too deeply. Never echo the input (a secret?).
        raise ConfigError([f"configuration cannot be read: {_cause(exc)}"]) from None
    finally:
        _FILE_DATA.reset(token)
    _check_files(settings)
    return settings


def _cause(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "values nested too deeply"
    if isinstance(exc, SettingsError):
        return str(exc).split(" from source ")[0]  # names the field, not the value
    return f"{type(exc).__name__} (a value out of range?)"


def _check_files(settings: Settings) -> None:
    problems: list[str] = []
    if settings.state.directory is not None:
        why = check_directory(settings.state.directory)
        if why is not None:
            problems.append(f"state.directory: {why}")
    users: int | None = 0  # None: the web config is broken (its problems say why)
    if settings.web.config_file is not None:
        try:
            users = len(load_web_config(settings.web.config_file)[0].users)
        except WebConfigError as exc:
            users = None
            problems.extend(f"web.config_file: {problem}" for problem in exc.problems)
    if settings.web.show_details and users == 0:
        problems.append(
            "web.show_details: names and logins are shown only behind basic auth: "
            "set basic_auth_users in web.config_file (or show_details = false)"
        )
    for name, target in settings.targets.items():
        if target.cert_file is not None and target.key_file is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(
                    target.cert_file, target.key_file, password=lambda: b""
                )
            except OSError as exc:
                problems.append(
                    f"targets.{name}.cert_file: {target.cert_file} and key_file "
                    f"{target.key_file} do not load as a matching PEM certificate and "
                    f"unencrypted key ({getattr(exc, 'reason', None) or exc.strerror or exc})"
                )
        for key in ("token_file", "password_file", "ca_file"):
            path: Path | None = getattr(target, key)
            if path is None:
                continue
            try:
                if key == "ca_file":
                    ssl.create_default_context(cafile=str(path))
                else:
                    read_secret_file(path, token=key == "token_file")
            except ssl.SSLError:
                problems.append(f"targets.{name}.{key}: {path} holds no PEM certificate")
            except OSError as exc:
                problems.append(f"targets.{name}.{key}: cannot read {path}: {exc.strerror}")
            except (ValueError, UnicodeDecodeError):
                problems.append(
                    f"targets.{name}.{key}: {path} is empty, not text, or has control characters"
                )
    if problems:
        raise ConfigError(problems)
