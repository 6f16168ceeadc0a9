"""The image's health check against real servers on loopback: plain HTTP, TLS, down, unhealthy."""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from exporter import healthcheck
from tests.certs import make_pki
from tests.processes import free_port


def server_tls(directory: Path, require_client_cert: bool = False) -> ssl.SSLContext:
    """A server context with a certificate from a throw-away CA the health check does not know."""
    pki = make_pki(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki.ca_file)
    return context


@asynccontextmanager
async def server(
    status: int = 200, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[int]:
    """/-/healthy answering ``status``; every other path demands basic auth (as with TLS on)."""

    async def healthy(request: web.Request) -> web.Response:
        return web.Response(status=status, text="Healthy.\n")

    async def other(request: web.Request) -> web.Response:
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="x"'})

    app = web.Application()
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/{tail:.*}", other)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, host, port, ssl_context=tls).start()
    try:
        yield port
    finally:
        await runner.cleanup()


async def check(url: str) -> str | None:
    return await asyncio.to_thread(healthcheck.check, url, 2.0)


async def test_healthy_over_plain_http() -> None:
    async with server() as port:
        assert await check(f"http://127.0.0.1:{port}/-/healthy") is None


async def test_healthy_over_tls_with_an_unknown_certificate(tmp_path: Path) -> None:
    async with server(tls=server_tls(tmp_path)) as port:
        # The http:// URL the image uses by default still works once TLS is on.
        assert await check(f"http://127.0.0.1:{port}/-/healthy") is None
        assert await check(f"https://127.0.0.1:{port}/-/healthy") is None


async def test_a_server_demanding_a_client_certificate_is_alive(tmp_path: Path) -> None:
    """RequireAndVerifyClientCert: the check has no certificate, but the TLS layer answered."""
    async with server(tls=server_tls(tmp_path, require_client_cert=True)) as port:
        assert await check(f"http://127.0.0.1:{port}/-/healthy") is None


async def test_a_plain_server_that_is_not_the_exporter_fails_over_tls() -> None:
    async with server() as port:
        problem = await check(f"https://127.0.0.1:{port}/-/healthy")
        assert problem is not None


async def test_an_unhealthy_answer_fails_with_its_status() -> None:
    async with server(status=503) as port:
        assert await check(f"http://127.0.0.1:{port}/-/healthy") == "HTTP 503"


async def test_a_path_behind_basic_auth_fails() -> None:
    async with server() as port:
        assert await check(f"http://127.0.0.1:{port}/metrics") == "HTTP 401"


async def test_nothing_listening_fails() -> None:
    problem = await check(f"http://127.0.0.1:{free_port()}/-/healthy")
    assert problem is not None and "refused" in problem.lower()


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        (None, "http://127.0.0.1:9877/-/healthy"),
        (":9100", "http://127.0.0.1:9100/-/healthy"),
        ("0.0.0.0:9100", "http://127.0.0.1:9100/-/healthy"),
        ("[::]:9100", "http://[::1]:9100/-/healthy"),
        ("[::1]:9100", "http://[::1]:9100/-/healthy"),
        ("10.1.2.3:9100", "http://10.1.2.3:9100/-/healthy"),
    ],
)
def test_default_url_follows_the_listen_address_variable(listen: str | None, url: str) -> None:
    environ = {} if listen is None else {healthcheck.LISTEN_ENV: listen}
    assert healthcheck.default_url(environ) == url


def test_a_bad_listen_address_is_unhealthy_with_a_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert healthcheck.main([], {healthcheck.LISTEN_ENV: "nonsense"}) == 1
    assert healthcheck.LISTEN_ENV in capsys.readouterr().err


async def test_command_exit_codes() -> None:
    """As Docker runs it: a process whose exit code is the verdict, its reason on stderr."""

    async def run(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "exporter.healthcheck",
            *args,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, healthcheck.LISTEN_ENV: f"127.0.0.1:{port}"},
        )
        _, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode is not None
        return proc.returncode, err.decode()

    async with server() as port:
        assert await run() == (0, "")
        code, err = await run(f"http://127.0.0.1:{port}/missing")
        assert code == 1 and "HTTP 401" in err
    code, err = await run()
    assert code == 1 and f"127.0.0.1:{port}" in err
