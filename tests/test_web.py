"""The exporter's HTTP side behind a web config file: HTTPS, client certificates, basic auth,
headers, and files re-read on change, all over real loopback sockets with trustme certificates."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.certs import REFUSED, Pki, bcrypt_hash, make_pki, outcome
from tests.exporter_harness import Harness, exporter_on_simulator

USER, PASSWORD = "prometheus", "s3cret pass"
WAIT = 10.0


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def other(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "other", "other")


def write_config(pki: Pki, tls: str = "", extra: str = "", users: bool = True) -> Path:
    """A web config in the PKI directory, naming its files relative to it (as users do)."""
    text = (
        "tls_server_config:\n"
        f"  cert_file: {pki.cert_file.name}\n"
        f"  key_file: {pki.key_file.name}\n"
        + "".join(f"  {line}\n" for line in tls.splitlines())
        + extra
    )
    if users:
        text += f"basic_auth_users:\n  {USER}: '{bcrypt_hash(PASSWORD)}'\n"
    path = pki.directory / "web.yml"
    path.write_text(text)
    return path


@asynccontextmanager
async def served(path: Path) -> AsyncIterator[Harness]:
    async with exporter_on_simulator(web_config=path) as harness:
        yield harness


async def eventually(what: str, probe: Callable[[], object]) -> None:
    until = time.monotonic() + WAIT
    while time.monotonic() < until:
        if await probe():  # type: ignore[misc]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {WAIT}s")


async def served_certificate(url: str, context: ssl.SSLContext) -> bytes:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    _, writer = await asyncio.open_connection(host, int(port), ssl=context)
    try:
        sslobj = writer.get_extra_info("ssl_object")
        der: bytes = sslobj.getpeercert(binary_form=True)
        return der
    finally:
        writer.close()


async def test_https_metrics_for_a_client_that_trusts_the_ca_only(pki: Pki, other: Pki) -> None:
    async with served(write_config(pki)) as h:
        auth = (USER, PASSWORD)
        assert await outcome(h.url + "/metrics", pki.client_context(), auth) == 200
        assert await outcome(h.url + "/metrics", pki.client_context(trust=other), auth) == REFUSED
        plain = h.url.replace("https://", "http://") + "/metrics"
        assert await outcome(plain, None, auth) == REFUSED


async def test_min_version_tls13_refuses_a_tls12_client(pki: Pki) -> None:
    async with served(write_config(pki, "min_version: TLS13")) as h:
        tls12 = pki.client_context(max_version=ssl.TLSVersion.TLSv1_2)
        assert await outcome(h.url + "/-/healthy", tls12) == REFUSED
        assert await outcome(h.url + "/-/healthy", pki.client_context()) == 200


async def test_max_version_tls12_still_serves_a_tls13_capable_client(pki: Pki) -> None:
    async with served(write_config(pki, "max_version: TLS12")) as h:
        host, port = h.url.removeprefix("https://").rsplit(":", 1)
        _, writer = await asyncio.open_connection(host, int(port), ssl=pki.client_context())
        assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
        writer.close()


async def test_cipher_suites_limit_tls12_to_the_listed_suites(pki: Pki) -> None:
    """trustme makes ECDSA keys, hence ECDSA suites."""
    tls = "max_version: TLS12\ncipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n"
    async with served(write_config(pki, tls, users=False)) as h:
        listed = pki.client_context(max_version=ssl.TLSVersion.TLSv1_2)
        listed.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384")
        unlisted = pki.client_context(max_version=ssl.TLSVersion.TLSv1_2)
        unlisted.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305")
        assert await outcome(h.url + "/metrics", listed) == 200
        assert await outcome(h.url + "/metrics", unlisted) == REFUSED


@pytest.mark.parametrize(
    ("client_auth", "without", "own_ca", "other_ca"),
    [
        ("NoClientCert", 200, 200, 200),
        ("VerifyClientCertIfGiven", 200, 200, REFUSED),
        ("RequireAndVerifyClientCert", REFUSED, 200, REFUSED),
    ],
)
async def test_client_auth_types(
    pki: Pki, other: Pki, client_auth: str, without: object, own_ca: object, other_ca: object
) -> None:
    tls = f"client_auth_type: {client_auth}\n"
    if client_auth != "NoClientCert":
        tls += f"client_ca_file: {pki.ca_file.name}\n"
    async with served(write_config(pki, tls, users=False)) as h:
        url = h.url + "/metrics"
        assert await outcome(url, pki.client_context()) == without
        assert await outcome(url, pki.client_context(client=pki)) == own_ca
        assert await outcome(url, pki.client_context(client=other)) == other_ca


async def test_basic_auth_and_what_stays_open(pki: Pki) -> None:
    headers = (
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        "    Strict-Transport-Security: max-age=31536000\n"
    )
    async with served(write_config(pki, extra=headers)) as h:
        context = pki.client_context()
        assert await outcome(h.url + "/metrics", context, (USER, PASSWORD)) == 200
        assert await outcome(h.url + "/metrics", context, (USER, "wrong")) == 401
        assert await outcome(h.url + "/metrics", context, ("nobody", PASSWORD)) == 401
        assert await outcome(h.url + "/metrics", context) == 401
        # Everything but /-/healthy is behind basic auth, the landing page and 404s too.
        for path in ("/", "/-/ready", "/no-such-page"):
            assert await outcome(h.url + path, context) == 401, path
        assert await outcome(h.url + "/-/healthy", context) == 200
        assert await outcome(h.url + "/no-such-page", context, (USER, PASSWORD)) == 404
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
            session.get(h.url + "/metrics") as refused,
        ):
            assert refused.headers["WWW-Authenticate"] == "Basic"
            assert refused.headers["X-Frame-Options"] == "deny"
            assert refused.headers["Strict-Transport-Security"] == "max-age=31536000"
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
            session.get(h.url + "/-/healthy") as healthy,
        ):
            assert healthy.headers["X-Frame-Options"] == "deny"


async def test_basic_auth_without_tls(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  {USER}: '{bcrypt_hash(PASSWORD)}'\n")
    async with served(path) as h:
        assert h.url.startswith("http://")
        assert await outcome(h.url + "/metrics", None, (USER, PASSWORD)) == 200
        assert await outcome(h.url + "/metrics", None, (USER, PASSWORD + "x")) == 401


async def test_a_rotated_certificate_is_served_without_restart_or_dropped_scrapes(
    pki: Pki,
) -> None:
    async with served(write_config(pki)) as h:
        assert h.web_config is not None
        watch = asyncio.create_task(h.web_config.watch(interval=0.1))
        context = pki.client_context()
        before = await served_certificate(h.url, context)
        statuses: list[object] = []
        stop = asyncio.Event()

        async def scrape_continuously() -> None:
            while not stop.is_set():
                statuses.append(await outcome(h.url + "/metrics", context, (USER, PASSWORD)))

        scraper = asyncio.create_task(scrape_continuously())
        await asyncio.sleep(0.3)
        renewed = pki.ca.issue_cert("localhost", "127.0.0.1")
        renewed.private_key_pem.write_to_path(str(pki.key_file))
        renewed.cert_chain_pems[0].write_to_path(str(pki.cert_file))

        async def rotated() -> bool:
            return await served_certificate(h.url, context) != before

        await eventually("renewed certificate served", rotated)
        await asyncio.sleep(0.3)
        stop.set()
        await scraper
        watch.cancel()
        assert len(statuses) > 3
        assert set(statuses) == {200}


async def test_a_rotated_client_ca_stops_trusting_the_old_one(pki: Pki, other: Pki) -> None:
    clients = pki.directory / "clients-ca.pem"
    clients.write_bytes(pki.ca_file.read_bytes())
    tls = f"client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: {clients.name}\n"
    async with served(write_config(pki, tls, users=False)) as h:
        assert h.web_config is not None
        url = h.url + "/metrics"
        assert await outcome(url, pki.client_context(client=pki)) == 200
        clients.write_bytes(other.ca_file.read_bytes())
        assert h.web_config.reload_if_changed()
        assert await outcome(url, pki.client_context(client=pki)) == REFUSED
        assert await outcome(url, pki.client_context(client=other)) == 200


async def test_users_and_versions_change_with_the_file(pki: Pki) -> None:
    path = write_config(pki)
    async with served(path) as h:
        assert h.web_config is not None
        context = pki.client_context()
        tls12 = pki.client_context(max_version=ssl.TLSVersion.TLSv1_2)
        assert await outcome(h.url + "/metrics", context, ("second", "pw")) == 401
        assert await outcome(h.url + "/-/healthy", tls12) == 200
        text = path.read_text().replace("cert_file:", "min_version: TLS13\n  cert_file:")
        path.write_text(text + f"  second: '{bcrypt_hash('pw')}'\n")
        assert h.web_config.reload_if_changed()
        assert await outcome(h.url + "/metrics", context, ("second", "pw")) == 200
        assert await outcome(h.url + "/metrics", context, (USER, PASSWORD)) == 200
        assert await outcome(h.url + "/-/healthy", tls12) == REFUSED


async def test_client_auth_type_changes_with_the_file(pki: Pki) -> None:
    path = write_config(pki, users=False)
    async with served(path) as h:
        assert h.web_config is not None
        url = h.url + "/metrics"
        assert await outcome(url, pki.client_context()) == 200
        tls = f"client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: {pki.ca_file.name}\n"
        write_config(pki, tls, users=False)
        assert h.web_config.reload_if_changed()
        assert await outcome(url, pki.client_context()) == REFUSED
        assert await outcome(url, pki.client_context(client=pki)) == 200
        write_config(pki, users=False)
        assert h.web_config.reload_if_changed()
        assert await outcome(url, pki.client_context()) == 200


async def test_a_broken_file_on_disk_keeps_the_last_good_configuration(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_config(pki)
    async with served(path) as h:
        assert h.web_config is not None
        context = pki.client_context()
        path.write_text(path.read_text() + "unknown_key: 1\n")
        with caplog.at_level(logging.ERROR):
            assert not h.web_config.reload_if_changed()
            assert not h.web_config.reload_if_changed()  # reported once per change
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert "unknown_key: unknown key" in str(errors[0].__dict__["problems"])
        assert await outcome(h.url + "/metrics", context, (USER, PASSWORD)) == 200
        assert await outcome(h.url + "/metrics", context) == 401
        # A key that does not match the certificate: the old pair stays in use.
        path.write_text(path.read_text().replace("unknown_key: 1\n", ""))
        other_key = pki.ca.issue_cert("localhost").private_key_pem
        other_key.write_to_path(str(pki.key_file))
        assert not h.web_config.reload_if_changed()
        assert await outcome(h.url + "/metrics", context, (USER, PASSWORD)) == 200
