"""TLS toward the VMS: the client against the simulator speaking HTTPS with trustme certificates.

A private CA (``ca_file``), a wrong CA, ``tls_verify = false``, a client
certificate for a VMS behind mutual TLS, and ``server_name`` for a URL that
is an IP address: each over a real loopback socket, through a whole poll.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest

from exporter.config import ConfigError, load_settings
from tests.certs import Pki, make_pki
from tests.exporter_harness import exporter_on_simulator


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "vms")


@pytest.fixture
def other(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "other", "other")


def vms_context(pki: Pki, *, require_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=pki.ca_file)
    return context


async def test_the_private_ca_in_ca_file_is_trusted(pki: Pki) -> None:
    async with exporter_on_simulator(sim_ssl=vms_context(pki), ca_file=pki.ca_file) as h:
        assert h.simulator.url.startswith("https://127.0.0.1:")
        outcome = await h.poller.poll_once()
        assert outcome.result == "success", outcome.error
        assert outcome.downloads > 0


async def test_a_wrong_ca_fails_the_poll_as_connection_error_naming_the_certificate(
    pki: Pki, other: Pki
) -> None:
    async with exporter_on_simulator(sim_ssl=vms_context(pki), ca_file=other.ca_file) as h:
        outcome = await h.poller.poll_once()
        assert outcome.result == "connection_error"
        assert outcome.error is not None and "certificate" in outcome.error.lower()


async def test_the_system_cas_do_not_trust_a_private_ca(pki: Pki) -> None:
    async with exporter_on_simulator(sim_ssl=vms_context(pki)) as h:
        outcome = await h.poller.poll_once()
        assert outcome.result == "connection_error"
        assert outcome.error is not None and "certificate" in outcome.error.lower()


async def test_tls_verify_false_polls_and_warns_naming_the_target(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        async with exporter_on_simulator(sim_ssl=vms_context(pki), tls_verify=False) as h:
            outcome = await h.poller.poll_once()
    assert outcome.result == "success", outcome.error
    warnings = [r for r in caplog.records if "tls_verify = false" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert warnings[0].__dict__["target"] == "main"


async def test_a_client_certificate_is_presented_when_configured(pki: Pki) -> None:
    required = vms_context(pki, require_client_cert=True)
    async with exporter_on_simulator(sim_ssl=required, ca_file=pki.ca_file) as h:
        refused = await h.poller.poll_once()
    assert refused.result == "connection_error"
    async with exporter_on_simulator(
        sim_ssl=required,
        ca_file=pki.ca_file,
        cert_file=pki.client_cert_file,
        key_file=pki.client_key_file,
    ) as h:
        outcome = await h.poller.poll_once()
    assert outcome.result == "success", outcome.error


async def test_server_name_verifies_a_host_name_certificate_behind_an_ip_url(
    pki: Pki, tmp_path: Path
) -> None:
    named = pki.ca.issue_cert("vms.example.internal")
    named.cert_chain_pems[0].write_to_path(str(tmp_path / "named.pem"))
    named.private_key_pem.write_to_path(str(tmp_path / "named.key"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "named.pem", tmp_path / "named.key")
    async with exporter_on_simulator(sim_ssl=context, ca_file=pki.ca_file) as h:
        mismatch = await h.poller.poll_once()
    assert mismatch.result == "connection_error"
    assert mismatch.error is not None and "certificate" in mismatch.error.lower()
    async with exporter_on_simulator(
        sim_ssl=context, ca_file=pki.ca_file, server_name="vms.example.internal"
    ) as h:
        outcome = await h.poller.poll_once()
    assert outcome.result == "success", outcome.error


def _load(tmp_path: Path, lines: str) -> list[str]:
    config = tmp_path / "config.toml"
    config.write_text(f'[targets.main]\nurl = "https://vms.local"\ntoken = "t"\n{lines}')
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    return caught.value.problems


def test_a_client_certificate_needs_its_key_and_must_load(pki: Pki, tmp_path: Path) -> None:
    problems = _load(tmp_path, f'cert_file = "{pki.client_cert_file}"\n')
    assert problems == ["targets.main: cert_file needs key_file (a client certificate and its key)"]
    problems = _load(
        tmp_path, f'cert_file = "{pki.client_cert_file}"\nkey_file = "{pki.key_file}"\n'
    )
    assert len(problems) == 1
    assert problems[0].startswith("targets.main.cert_file: ")
    assert "do not load as a matching" in problems[0]


def test_server_name_must_be_a_host_name(tmp_path: Path) -> None:
    problems = _load(tmp_path, 'server_name = "https://vms.local/"\n')
    assert problems == [
        "targets.main.server_name: expected a host name such as vms.local, got 'https://vms.local/'"
    ]
