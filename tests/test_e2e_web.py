"""The web config file end to end, against Debian's Prometheus as the reference.

One Prometheus reads the same web config file as the exporter
(``prometheus --web.config.file``, i.e. exporter-toolkit) and scrapes the
exporter over HTTPS with its own ``tls_config`` and ``basic_auth``. The same
requests then go to both servers and must get the same outcome: accepted,
401, or the handshake refused.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.certs import REFUSED, Pki, bcrypt_hash, make_pki, outcome
from tests.processes import binary, eventually, free_port, stop_all

pytestmark = pytest.mark.e2e

USER, PASSWORD = "prometheus", "correct horse battery staple"
JOB, WRONG_JOB = "vms-downloads-exporter", "wrong-password"


@dataclass
class Servers:
    pki: Pki
    other: Pki
    web_config: Path
    prometheus: str
    exporter: str

    def api(self, path: str, **params: str) -> Any:
        """Prometheus' HTTP API, itself behind the web config (client cert + basic auth)."""
        url = f"{self.prometheus}{path}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(  # noqa: S310 (loopback)
            url, headers={"Authorization": aiohttp.encode_basic_auth(USER, PASSWORD)}
        )
        context = self.pki.client_context(client=self.pki)
        with urllib.request.urlopen(request, timeout=5, context=context) as response:  # noqa: S310
            return json.loads(response.read())


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT)


WEB_CONFIG = """\
tls_server_config:
  cert_file: ca-server.pem
  key_file: ca-server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.pem
  min_version: TLS13
http_server_config:
  headers:
    X-Frame-Options: deny
    X-Content-Type-Options: nosniff
basic_auth_users:
  {user}: '{hash}'
"""


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def _pair(
    work: Path, web_config: Path, scrape: Callable[[int], str] = lambda port: ""
) -> Iterator[tuple[str, str]]:
    """The exporter and Prometheus, both reading ``web_config``; yields (prometheus, exporter).

    ``scrape`` gives Prometheus' scrape_configs for the exporter's port.
    """
    exporter_port, prom_port = free_port(), free_port()
    config = work / "exporter.toml"
    # Nothing listens on port 1: the exporter serves its own metrics (vms_up 0) all the same.
    config.write_text('[targets.main]\nurl = "http://127.0.0.1:1"\ntoken = "t"\n')
    prom_config = work / "prometheus.yml"
    prom_config.write_text("global:\n  scrape_interval: 1s\n" + scrape(exporter_port))
    processes = [
        _spawn(
            [
                sys.executable,
                "-m",
                "exporter",
                "--config.file",
                str(config),
                "--web.config.file",
                str(web_config),
                "--web.listen-address",
                f"127.0.0.1:{exporter_port}",
            ],
            work / "exporter.log",
        ),
        _spawn(
            [
                binary("prometheus"),
                f"--config.file={prom_config}",
                f"--web.config.file={web_config}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            work / "prometheus.log",
        ),
    ]
    try:
        eventually("both listening", lambda: _listening(exporter_port) and _listening(prom_port))
        yield f"https://127.0.0.1:{prom_port}", f"https://127.0.0.1:{exporter_port}"
    finally:
        stop_all(processes)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    work = tmp_path_factory.mktemp("e2e-web")
    pki, other = make_pki(work), make_pki(work, "other")
    web_config = work / "web.yml"
    web_config.write_text(WEB_CONFIG.format(user=USER, hash=bcrypt_hash(PASSWORD, rounds=10)))
    tls_config = (
        f"    tls_config:\n      ca_file: {pki.ca_file}\n"
        f"      cert_file: {pki.client_cert_file}\n      key_file: {pki.client_key_file}\n"
    )

    def scrape(exporter_port: int) -> str:
        return "scrape_configs:\n" + "".join(
            f"  - job_name: {job}\n    scheme: https\n"
            f"    basic_auth:\n      username: {USER}\n      password: '{password}'\n"
            + tls_config
            + f"    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n"
            for job, password in ((JOB, PASSWORD), (WRONG_JOB, "not the password"))
        )

    with _pair(work, web_config, scrape) as (prometheus, exporter):
        servers = Servers(pki, other, web_config, prometheus, exporter)
        eventually("Prometheus ready", lambda: servers.api("/api/v1/status/buildinfo"))
        yield servers


def test_promtool_accepts_the_web_config(servers: Servers) -> None:
    checked = subprocess.run(
        [binary("promtool"), "check", "web-config", str(servers.web_config)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_prometheus_scrapes_the_exporter_over_https_with_basic_auth(servers: Servers) -> None:
    def targets() -> dict[str, dict[str, Any]] | None:
        active = servers.api("/api/v1/targets")["data"]["activeTargets"]
        by_job = {t["labels"]["job"]: t for t in active}
        done = len(by_job) == 2 and all(t["health"] != "unknown" for t in by_job.values())
        return by_job if done else None

    by_job = eventually("both jobs scraped", targets)
    assert by_job[JOB]["health"] == "up", by_job[JOB]["lastError"]
    assert by_job[WRONG_JOB]["health"] == "down"
    assert "401" in by_job[WRONG_JOB]["lastError"]
    result = servers.api("/api/v1/query", query=f'vms_up{{job="{JOB}", target="main"}}')
    assert len(result["data"]["result"]) == 1


def _requests(servers: Servers) -> dict[str, tuple[ssl.SSLContext, tuple[str, str] | None]]:
    pki, other = servers.pki, servers.other
    good = pki.client_context(client=pki)
    return {
        "right user": (good, (USER, PASSWORD)),
        "wrong password": (good, (USER, PASSWORD + "!")),
        "unknown user": (good, ("someone", PASSWORD)),
        "no credentials": (good, None),
        "no client certificate": (pki.client_context(), (USER, PASSWORD)),
        "client certificate from another CA": (pki.client_context(client=other), (USER, PASSWORD)),
        "TLS 1.2 against min_version TLS13": (
            pki.client_context(client=pki, max_version=ssl.TLSVersion.TLSv1_2),
            (USER, PASSWORD),
        ),
        "client that does not trust the server's CA": (
            pki.client_context(trust=other, client=pki),
            (USER, PASSWORD),
        ),
    }


EXPECTED: dict[str, int | str] = {
    "right user": 200,
    "wrong password": 401,
    "unknown user": 401,
    "no credentials": 401,
    "no client certificate": REFUSED,
    "client certificate from another CA": REFUSED,
    "TLS 1.2 against min_version TLS13": REFUSED,
    "client that does not trust the server's CA": REFUSED,
}


async def _headers(url: str, context: ssl.SSLContext) -> dict[str, str]:
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.get(url) as response,
    ):
        return {k: response.headers.get(k, "") for k in ("X-Frame-Options", "WWW-Authenticate")}


def test_same_requests_same_outcomes_as_prometheus(servers: Servers) -> None:
    async def both() -> dict[str, tuple[int | str, int | str]]:
        results = {}
        for name, (context, auth) in _requests(servers).items():
            results[name] = (
                await outcome(servers.prometheus + "/metrics", context, auth),
                await outcome(servers.exporter + "/metrics", context, auth),
            )
        return results

    results = asyncio.run(both())
    assert {name: ours for name, (_, ours) in results.items()} == EXPECTED
    assert {name: reference for name, (reference, _) in results.items()} == EXPECTED

    good = servers.pki.client_context(client=servers.pki)
    reference = asyncio.run(_headers(servers.prometheus + "/metrics", good))
    ours = asyncio.run(_headers(servers.exporter + "/metrics", good))
    assert ours == reference == {"X-Frame-Options": "deny", "WWW-Authenticate": "Basic"}


def test_healthy_stays_open_over_tls_for_probes(servers: Servers) -> None:
    """The one deliberate difference: Prometheus puts /-/healthy behind basic auth, we do not."""
    good = servers.pki.client_context(client=servers.pki)
    assert asyncio.run(outcome(servers.exporter + "/-/healthy", good)) == 200
    assert asyncio.run(outcome(servers.prometheus + "/-/healthy", good)) == 401


def test_a_user_added_to_the_file_works_on_both_without_restart(servers: Servers) -> None:
    """Runs last: it changes the shared file. The exporter process sees it within seconds."""
    good = servers.pki.client_context(client=servers.pki)
    added = ("grafana", "another secret")
    assert asyncio.run(outcome(servers.exporter + "/metrics", good, added)) == 401
    text = servers.web_config.read_text()
    servers.web_config.write_text(text + f"  {added[0]}: '{bcrypt_hash(added[1])}'\n")

    def accepted() -> bool:
        return asyncio.run(outcome(servers.exporter + "/metrics", good, added)) == 200

    eventually("the new user accepted by the exporter", accepted, deadline=10)
    assert asyncio.run(outcome(servers.prometheus + "/metrics", good, added)) == 200
    assert asyncio.run(outcome(servers.exporter + "/metrics", good, (USER, PASSWORD))) == 200


OTHER_CONFIGS = {
    "VerifyClientCertIfGiven, no basic auth": (
        "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n",
        {"no certificate": 200, "own CA": 200, "other CA": REFUSED, "TLS 1.2 only": 200},
    ),
    # http2 off: with it, Go refuses to start without an AES-128-GCM suite in the list.
    "cipher_suites, TLS 1.2 only": (
        "  max_version: TLS12\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n"
        "http_server_config:\n  http2: false\n",
        {"AES128 only": REFUSED, "AES256 only": 200, "no certificate": 200},
    ),
}


@pytest.mark.parametrize("name", list(OTHER_CONFIGS))
def test_same_outcomes_as_prometheus_for_other_settings(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tls, expected = OTHER_CONFIGS[name]
    work = tmp_path_factory.mktemp("e2e-web-other")
    pki, other = make_pki(work), make_pki(work, "other")
    web_config = work / "web.yml"
    web_config.write_text(
        "tls_server_config:\n  cert_file: ca-server.pem\n  key_file: ca-server.key\n" + tls
    )

    def client(ciphers: str | None = None, **kwargs: Any) -> ssl.SSLContext:
        context = pki.client_context(**kwargs)
        if ciphers is not None:
            context.maximum_version = ssl.TLSVersion.TLSv1_2
            context.set_ciphers(ciphers)
        return context

    contexts = {
        "no certificate": client(),
        "own CA": client(client=pki),
        "other CA": client(client=other),
        "TLS 1.2 only": client(max_version=ssl.TLSVersion.TLSv1_2),
        "AES128 only": client("ECDHE-ECDSA-AES128-GCM-SHA256"),
        "AES256 only": client("ECDHE-ECDSA-AES256-GCM-SHA384"),
    }

    async def both(url: str) -> dict[str, int | str]:
        return {case: await outcome(url + "/metrics", contexts[case]) for case in expected}

    with _pair(work, web_config) as (prometheus, exporter):
        reference, ours = asyncio.run(both(prometheus)), asyncio.run(both(exporter))
    assert reference == expected
    assert ours == expected
