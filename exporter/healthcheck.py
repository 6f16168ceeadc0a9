"""Container health check: ``python -m exporter.healthcheck [URL]``; exit 0 when healthy, else 1.

The image's ``HEALTHCHECK`` runs it, so it needs no curl or wget: the standard library
only. Without a URL it asks ``/-/healthy`` on the loopback at the port of
``$VMS_EXPORTER_WEB__LISTEN_ADDRESS`` (default 9877). When the exporter serves TLS
(``web.config_file``), the plain-HTTP request fails at the protocol level and the
check asks again over HTTPS without verifying the certificate: it only checks that
the process on this host answers, and ``/-/healthy`` is never behind basic auth. A TLS 1.3
server that completes the handshake and then hangs up (it demands a client certificate the
check does not have) counts as alive too.
"""

from __future__ import annotations

import http.client
import os
import ssl
import sys
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

DEFAULT_PORT = 9877
LISTEN_ENV = "VMS_EXPORTER_WEB__LISTEN_ADDRESS"
TIMEOUT = 2.0  # per attempt; HTTP then HTTPS stays within the image's --timeout=5s


class _NotPlainHttp(Exception):
    """The server answered an HTTP request with something else (e.g. a TLS handshake)."""


def default_url(environ: Mapping[str, str]) -> str:
    listen = environ.get(LISTEN_ENV)
    if not listen:
        return f"http://127.0.0.1:{DEFAULT_PORT}/-/healthy"
    from exporter.config import parse_listen_address

    host, port = parse_listen_address(listen)
    if host in (None, "", "0.0.0.0"):  # noqa: S104 (all interfaces: ask the loopback)
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/-/healthy"


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # liveness on this host, not an identity check
    return context


def _get(url: str, timeout: float) -> str | None:
    """None when ``url`` answers 200, else the reason."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"not an http(s) URL: {url}"
    conn: http.client.HTTPConnection
    if https:
        conn = http.client.HTTPSConnection(
            parts.hostname, parts.port or 443, timeout=timeout, context=_unverified()
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        try:
            conn.connect()  # TCP, and over HTTPS the TLS handshake
        except ssl.SSLError as exc:
            return f"TLS handshake failed: {exc.reason or exc}"
        except OSError as exc:
            return exc.strerror or str(exc) or type(exc).__name__
        try:
            conn.request("GET", parts.path or "/", headers={"Connection": "close"})
            response = conn.getresponse()
            response.read()
        except (http.client.BadStatusLine, ConnectionResetError):
            if not https:
                raise _NotPlainHttp from None  # a TLS server hung up on plain HTTP
            # The handshake succeeded, then the server hung up without an answer: TLS 1.3's
            # way of refusing a client without a certificate (client_auth_type Require*).
            # The exporter's TLS layer answered, which is all liveness asks.
            return None
        except (OSError, http.client.HTTPException) as exc:
            return str(exc) or type(exc).__name__
    finally:
        conn.close()
    if response.status == 400 and not https:
        raise _NotPlainHttp  # e.g. "client sent an HTTP request to an HTTPS server"
    return None if response.status == 200 else f"HTTP {response.status}"


def check(url: str, timeout: float = TIMEOUT) -> str | None:
    """None when the exporter at ``url`` is healthy (over HTTP or, failing that, HTTPS)."""
    try:
        return _get(url, timeout)
    except _NotPlainHttp:
        return _get("https://" + url.removeprefix("http://"), timeout)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or (args and args[0].startswith("-")):
        print("usage: python -m exporter.healthcheck [URL]", file=sys.stderr)
        return 1
    try:
        url = args[0] if args else default_url(os.environ if environ is None else environ)
    except ValueError as exc:
        print(f"unhealthy: {LISTEN_ENV}: {exc}", file=sys.stderr)
        return 1
    problem = check(url)
    if problem is not None:
        print(f"unhealthy: {url}: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
