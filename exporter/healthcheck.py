"""Container health check: ``python -m exporter.healthcheck [URL]``; exit 0 when healthy, else 1.

The image's ``HEALTHCHECK`` runs it, so it needs no curl or wget: the standard library
only. Without a URL it asks ``/-/healthy`` on the loopback at the port of
``$VMS_EXPORTER_WEB__LISTEN_ADDRESS`` (default 9877). When the exporter serves TLS
(``web.config_file``), the plain-HTTP request fails at the protocol level and the
check asks again over HTTPS without verifying the certificate: it only checks that
the process on this host answers, and ``/-/healthy`` is never behind basic auth.
"""

from __future__ import annotations

import http.client
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

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


def _get(url: str, timeout: float) -> str | None:
    """None when ``url`` answers 200, else the reason."""
    context = None
    if url.startswith("https://"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # liveness on this host, not an identity check
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310
            return None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        if exc.code == 400 and url.startswith("http://"):
            raise _NotPlainHttp from None  # e.g. "client sent an HTTP request to an HTTPS server"
        return f"HTTP {exc.code}"
    except (http.client.BadStatusLine, ConnectionResetError) as exc:
        if url.startswith("http://"):
            raise _NotPlainHttp from None
        return f"bad answer: {exc!r}"
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ConnectionResetError | http.client.BadStatusLine) and url.startswith(
            "http://"
        ):
            raise _NotPlainHttp from None
        return str(reason.strerror if isinstance(reason, OSError) and reason.strerror else reason)
    except (TimeoutError, OSError) as exc:
        return str(exc) or type(exc).__name__


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
