"""exporter-toolkit's web configuration file (TLS, headers, basic auth), read and validated.

The subset that Prometheus 2.42's exporter-toolkit knows and Python's ``ssl``
can honour exactly; everything else is refused with a line naming the key,
never approximated (silently dropping a TLS setting is a security bug).
Relative paths are relative to the file's directory, as in exporter-toolkit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WATCH_INTERVAL = 1.0

TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
INSECURE_VERSIONS = ("TLS10", "TLS11")
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
REFUSED_CLIENT_AUTH = {
    "RequestClientCert": "asks for a client certificate and accepts it unverified; Python's ssl "
    "verifies every certificate it asks for. Use NoClientCert (same access: everyone), or "
    "VerifyClientCertIfGiven with client_ca_file",
    "RequireAnyClientCert": "accepts any client certificate without verifying it (a self-made "
    "one gets in), which Python's ssl cannot do; use RequireAndVerifyClientCert with "
    "client_ca_file",
}
REFUSED_CLIENT_AUTH["RequireClientCert"] = REFUSED_CLIENT_AUTH["RequireAnyClientCert"]

# Go's tls.CipherSuites() (the secure TLS 1.0-1.2 suites) → OpenSSL's names for the same suite.
CIPHER_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")

# exporter-toolkit's extraHTTPHeaders: the headers that may be set, and the allowed values if fixed.
HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}
# What htpasswd -B, mkpasswd and Python's bcrypt write: $2a$, $2b$ or $2y$, cost 04-31.
_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users"}
_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
}
_HTTP_KEYS = {"http2", "headers"}
REFUSED_KEYS = {
    "rate_limit": "not supported: rate limiting is not implemented by this exporter",
    "tls_server_config.curve_preferences": "not supported: Python's ssl can set one curve, "
    "not a preference list; remove it (the defaults are X25519 and the NIST curves)",
    "tls_server_config.cert": "inline certificates are not supported: use cert_file",
    "tls_server_config.key": "inline keys are not supported: use key_file",
    "tls_server_config.client_ca": "inline CAs are not supported: use client_ca_file",
    "tls_server_config.client_allowed_sans": "not supported: Python's ssl cannot check a "
    "client certificate's SAN during the handshake",
}


class WebConfigError(Exception):
    """The file cannot be used; ``problems`` holds one line per problem, each naming its key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class TlsServerConfig:
    cert_file: Path
    key_file: Path
    verify_mode: ssl.VerifyMode
    client_ca_file: Path | None
    min_version: ssl.TLSVersion
    max_version: ssl.TLSVersion
    ciphers: tuple[str, ...]
    """OpenSSL names of the TLS 1.2 suites allowed; empty: OpenSSL's defaults."""


@dataclass(frozen=True, slots=True)
class WebConfig:
    path: Path
    tls: TlsServerConfig | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    users: Mapping[str, bytes] = field(default_factory=dict)
    """user → bcrypt hash. Hashes are not secrets, but still never logged."""

    def __repr__(self) -> str:
        tls = self.tls is not None
        return f"WebConfig(path={str(self.path)!r}, tls={tls}, users={len(self.users)})"

    def files(self) -> tuple[Path, ...]:
        """Every file this configuration reads, the YAML file first."""
        if self.tls is None:
            return (self.path,)
        extra = (self.tls.client_ca_file,) if self.tls.client_ca_file else ()
        return (self.path, self.tls.cert_file, self.tls.key_file, *extra)


@functools.cache
def _strict_loader() -> type[Any]:
    """YAML 1.1 like Go's yaml.v2, but a key given twice is an error (as in UnmarshalStrict).

    PyYAML is imported here, when a web configuration is read: most runs have none (~25 ms).
    """
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def _section(data: Mapping[str, Any], key: str, problems: list[str]) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{key}: expected a mapping")
        return {}
    return value


def _check_keys(
    section: Mapping[Any, Any], prefix: str, known: set[str], problems: list[str]
) -> None:
    for key in section:
        name = f"{prefix}{key}"
        if name in REFUSED_KEYS:
            problems.append(f"{name}: {REFUSED_KEYS[name]}")
        elif key not in known:
            problems.append(f"{name}: unknown key")


def _string(section: Mapping[str, Any], key: str, where: str, problems: list[str]) -> str | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        problems.append(f"{where}.{key}: expected a string")
        return None
    return value


def _version(
    value: str | None, key: str, default: ssl.TLSVersion, problems: list[str]
) -> ssl.TLSVersion:
    if value is None:
        return default
    if value in TLS_VERSIONS:
        return TLS_VERSIONS[value]
    if value in INSECURE_VERSIONS:
        problems.append(
            f"tls_server_config.{key}: {value} is refused: TLS 1.0 and 1.1 are insecure; "
            "use TLS12 or TLS13"
        )
    else:
        problems.append(
            f"tls_server_config.{key}: unknown TLS version {value!r} (known: TLS12, TLS13)"
        )
    return default


def _ciphers(value: Any, problems: list[str]) -> tuple[str, ...]:
    key = "tls_server_config.cipher_suites"
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{key}: expected a list of cipher suite names")
        return ()
    names = []
    for suite in value:
        if suite in TLS13_SUITES:
            problems.append(
                f"{key}: {suite} is a TLS 1.3 suite; TLS 1.3 suites are not configurable "
                "(in Go either): list only TLS 1.2 suites"
            )
        elif suite not in CIPHER_SUITES:
            problems.append(f"{key}: unknown cipher {suite!r}")
        else:
            names.append(CIPHER_SUITES[suite])
    return tuple(names)


def _file(base: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base / path


def _tls(section: Mapping[str, Any], base: Path, problems: list[str]) -> TlsServerConfig | None:
    where = "tls_server_config"
    _check_keys(section, f"{where}.", _TLS_KEYS, problems)
    cert = _string(section, "cert_file", where, problems)
    key = _string(section, "key_file", where, problems)
    auth = _string(section, "client_auth_type", where, problems) or "NoClientCert"
    ca = _string(section, "client_ca_file", where, problems)
    if not isinstance(section.get("prefer_server_cipher_suites", False), bool):
        problems.append(f"{where}.prefer_server_cipher_suites: expected true or false")
    min_version = _version(
        _string(section, "min_version", where, problems),
        "min_version",
        ssl.TLSVersion.TLSv1_2,
        problems,
    )
    max_version = _version(
        _string(section, "max_version", where, problems),
        "max_version",
        ssl.TLSVersion.TLSv1_3,
        problems,
    )
    ciphers = _ciphers(section.get("cipher_suites"), problems)
    if not any(section.get(k) not in (None, "") for k in section):
        return None
    if cert is None:
        problems.append(
            f"{where}.cert_file: required when {where} sets anything (else TLS would be off)"
        )
    if key is None:
        problems.append(
            f"{where}.key_file: required when {where} sets anything (cert_file without key_file)"
        )
    verify_mode = CLIENT_AUTH.get(auth)
    if auth in REFUSED_CLIENT_AUTH:
        problems.append(f"{where}.client_auth_type: {auth} is refused: {REFUSED_CLIENT_AUTH[auth]}")
    elif verify_mode is None:
        problems.append(
            f"{where}.client_auth_type: invalid ClientAuth {auth!r} "
            f"(known: {', '.join(CLIENT_AUTH)}; refused: {', '.join(REFUSED_CLIENT_AUTH)})"
        )
    elif verify_mode == ssl.CERT_NONE and ca is not None:
        problems.append(
            f"{where}.client_ca_file: client CAs are configured without a client_auth_type "
            "that verifies them"
        )
    elif verify_mode != ssl.CERT_NONE and ca is None:
        problems.append(
            f"{where}.client_ca_file: required with {auth}: without it any certificate from a "
            "public CA would get in"
        )
    if min_version > max_version:
        problems.append(
            f"{where}.min_version: {section.get('min_version')} is above max_version "
            f"{section.get('max_version')}"
        )
    if cert is None or key is None or verify_mode is None:
        return None
    return TlsServerConfig(
        cert_file=_file(base, cert),
        key_file=_file(base, key),
        verify_mode=verify_mode,
        client_ca_file=_file(base, ca) if ca else None,
        min_version=min_version,
        max_version=max_version,
        ciphers=ciphers,
    )


def _headers(section: Mapping[str, Any], problems: list[str]) -> dict[str, str]:
    where = "http_server_config"
    _check_keys(section, f"{where}.", _HTTP_KEYS, problems)
    if not isinstance(section.get("http2", True), bool):
        problems.append(f"{where}.http2: expected true or false")
    headers = section.get("headers") or {}
    if not isinstance(headers, dict):
        problems.append(f"{where}.headers: expected a mapping of header to value")
        return {}
    result = {}
    for name, value in headers.items():
        key = f"{where}.headers.{name}"
        if name not in HEADERS:
            problems.append(
                f"{key}: HTTP header {name!r} can not be configured (allowed: {', '.join(HEADERS)})"
            )
        elif not isinstance(value, str) or _CONTROL.search(value):
            problems.append(f"{key}: expected a one-line string")
        elif HEADERS[name] and value not in HEADERS[name]:
            problems.append(
                f"{key}: invalid value {value!r}, expected one of: {', '.join(HEADERS[name])}"
            )
        else:
            result[name] = value
    return result


def _users(data: Mapping[str, Any], problems: list[str]) -> dict[str, bytes]:
    section = _section(data, "basic_auth_users", problems)
    users = {}
    for user, hashed in section.items():
        key = f"basic_auth_users.{user}"
        if not isinstance(user, str) or not user:
            problems.append(f"basic_auth_users: user names must be non-empty strings, got {user!r}")
        elif not isinstance(hashed, str) or not _BCRYPT.fullmatch(hashed):
            # Never echo the value: it is a password hash, or a password pasted by mistake.
            problems.append(
                f"{key}: not a bcrypt hash ($2a$, $2b$ or $2y$, cost 04-31; "
                f"make one with: htpasswd -nBC 10 {user})"
            )
        else:
            users[user] = hashed.encode("ascii")
    return users


def parse_web_config(path: Path) -> WebConfig:
    """Read and validate the YAML (not the files it names); WebConfigError lists every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WebConfigError([f"{path}: no such file"]) from None
    except OSError as exc:
        raise WebConfigError([f"{path}: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise WebConfigError([f"{path}: not UTF-8 text"]) from None
    import yaml

    try:
        data = yaml.load(text, Loader=_strict_loader())  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise WebConfigError([f"{path}: not valid YAML: {str(exc).splitlines()[0]}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WebConfigError([f"{path}: expected a mapping at the top level"])
    problems: list[str] = []
    _check_keys(data, "", _TOP_KEYS, problems)
    tls = _tls(_section(data, "tls_server_config", problems), path.parent, problems)
    headers = _headers(_section(data, "http_server_config", problems), problems)
    users = _users(data, problems)
    if problems:
        raise WebConfigError(problems)
    return WebConfig(path=path, tls=tls, headers=headers, users=users)


def _default_ciphers() -> str:
    fresh = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).get_ciphers()
    return ":".join(c["name"] for c in fresh if c["protocol"] != "TLSv1.3")


def _apply_handshake_settings(context: ssl.SSLContext, tls: TlsServerConfig) -> None:
    """What OpenSSL copies from the listening context into each new connection."""
    context.minimum_version = tls.min_version
    context.maximum_version = tls.max_version
    context.verify_mode = tls.verify_mode
    with contextlib.suppress(ssl.SSLError):  # none of them available: server_context says so
        context.set_ciphers(":".join(tls.ciphers) if tls.ciphers else _default_ciphers())


def server_context(tls: TlsServerConfig) -> ssl.SSLContext:
    """A server context for ``tls``, loading its files now; WebConfigError if one does not load."""
    where = "tls_server_config"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _apply_handshake_settings(context, tls)
    # No resumption: every connection is verified against the configuration in force.
    context.options |= ssl.OP_NO_TICKET
    context.num_tickets = 0
    for key, path in (("cert_file", tls.cert_file), ("key_file", tls.key_file)):
        if not path.is_file():
            raise WebConfigError([f"{where}.{key}: {path}: no such file"])
    try:
        # A password callback, so that an encrypted key fails instead of prompting on a terminal.
        context.load_cert_chain(tls.cert_file, tls.key_file, password=lambda: b"")
    except OSError as exc:  # ssl.SSLError is an OSError
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise WebConfigError(
            [
                f"{where}.cert_file: {tls.cert_file} and key_file {tls.key_file} do not load as "
                f"a matching PEM certificate and unencrypted key ({reason})"
            ]
        ) from None
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except FileNotFoundError:
            raise WebConfigError(
                [f"{where}.client_ca_file: {tls.client_ca_file}: no such file"]
            ) from None
        except OSError:
            raise WebConfigError(
                [f"{where}.client_ca_file: {tls.client_ca_file} holds no PEM certificate"]
            ) from None
    if tls.ciphers:
        have = {c["name"] for c in context.get_ciphers() if c["protocol"] != "TLSv1.3"}
        unavailable = sorted(set(tls.ciphers) - have)
        if unavailable:
            raise WebConfigError(
                [
                    f"{where}.cipher_suites: not available in this Python's OpenSSL: "
                    + ", ".join(unavailable)
                ]
            )
    return context


def load_web_config(path: Path) -> tuple[WebConfig, ssl.SSLContext | None]:
    """Parse ``path`` and load the files it names: what the exporter validates at start."""
    config = parse_web_config(path)
    return config, server_context(config.tls) if config.tls else None


def _stamp(path: Path) -> tuple[int, int, int, int] | None:
    try:
        stat = path.stat()  # follows symlinks: Kubernetes swaps a ..data link on rotation
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


class LiveWebConfig:
    """The web configuration in force: re-read when its files change, kept when a new one is broken.

    The listening socket keeps one SSLContext for its whole life; every handshake
    switches (in the SNI callback, which OpenSSL calls for every ClientHello)
    to the context built from the files as they are now, so a renewed
    certificate or CA is served without a restart and without dropping scrapes.
    What OpenSSL copies from the listening context into a new connection
    (versions, client-certificate mode, ciphers) is updated on it in place.
    """

    def __init__(self, config: WebConfig, context: ssl.SSLContext | None) -> None:
        self.config = config
        self.ssl_context = context
        """The listening context (None: plain HTTP); stays the same object across reloads."""
        self._current = context
        if context is not None:
            context.sni_callback = self._select
        self._stamps = self._look()

    @classmethod
    def load(cls, path: Path) -> LiveWebConfig:
        return cls(*load_web_config(path))

    def _select(
        self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> None:
        if self._current is not None and self._current is not context:
            connection.context = self._current

    def _look(self) -> list[tuple[int, int, int, int] | None]:
        return [_stamp(path) for path in self.config.files()]

    def reload(self, path: Path | None = None) -> None:
        """Read the file (or ``path``) now; WebConfigError leaves the configuration in force."""
        config, context = load_web_config(path or self.config.path)
        if (context is None) != (self.ssl_context is None):
            raise WebConfigError(
                ["tls_server_config: turning TLS on or off needs a restart of the exporter"]
            )
        if context is not None and self.ssl_context is not None and config.tls is not None:
            _apply_handshake_settings(self.ssl_context, config.tls)
            self._current = context
        self.config = config
        self._stamps = self._look()

    def reload_if_changed(self) -> bool:
        """Reload if a file changed since the last look; True when the new one took effect."""
        stamps = self._look()
        if stamps == self._stamps:
            return False
        self._stamps = stamps  # a broken file is reported once, then retried on its next change
        try:
            self.reload()
        except WebConfigError as exc:
            log.error(
                "web configuration changed on disk but cannot be used: keeping the last good one",
                extra={"file": str(self.config.path), "problems": exc.problems},
            )
            return False
        log.info("web configuration reloaded", extra={"file": str(self.config.path)})
        return True

    async def watch(self, interval: float = WATCH_INTERVAL) -> None:
        """Look for changed files every ``interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.reload_if_changed()
