"""The web configuration file: what is accepted and refused, checked against promtool.

``promtool check web-config`` runs exporter-toolkit's own validation, so where
both read a file they must agree; where we refuse what exporter-toolkit
accepts, the case says why (a setting Python's ssl cannot honour exactly).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest

from exporter.webconfig import WebConfigError, load_web_config
from tests.certs import Pki, bcrypt_hash, make_pki
from tests.processes import binary, exporter_process

HASH = bcrypt_hash("pw")
TLS = "tls_server_config:\n  cert_file: ca-server.pem\n  key_file: ca-server.key\n"


@dataclass(frozen=True)
class Case:
    text: str
    problem: str | None
    """A part of our error line (None: accepted)."""
    promtool_accepts: bool
    """exporter-toolkit's verdict; differs from ours only for deliberate refusals."""


CASES = {
    "empty file": Case("", None, True),
    "basic auth only, htpasswd's $2y$": Case(f"basic_auth_users:\n  u: '{HASH}'\n", None, True),
    "$2a$ and $2b$ hashes": Case(
        f"basic_auth_users:\n  a: '$2a${HASH[4:]}'\n  b: '$2b${HASH[4:]}'\n", None, True
    ),
    "everything supported": Case(
        TLS + "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n"
        "  min_version: TLS12\n  max_version: TLS13\n  prefer_server_cipher_suites: true\n"
        "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, "
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256]\n"
        "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: sameorigin\n"
        "    X-Content-Type-Options: nosniff\n    X-XSS-Protection: '1; mode=block'\n"
        "    Content-Security-Policy: default-src 'self'\n"
        "    Strict-Transport-Security: max-age=63072000\n"
        f"basic_auth_users:\n  u: '{HASH}'\n",
        None,
        True,
    ),
    "unknown top-level key": Case("tls_config: {}\n", "tls_config: unknown key", False),
    "unknown TLS key": Case(
        TLS + "  cert_files: x\n", "tls_server_config.cert_files: unknown key", False
    ),
    "key given twice": Case(
        f"basic_auth_users:\n  u: '{HASH}'\n  u: '{HASH}'\n", "given twice", False
    ),
    "header not allowed": Case(
        "http_server_config:\n  headers:\n    X-Powered-By: me\n",
        "http_server_config.headers.X-Powered-By: HTTP header",
        False,
    ),
    "X-Frame-Options value": Case(
        "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
        "headers.X-Frame-Options: invalid value 'allow'",
        False,
    ),
    "X-Content-Type-Options value": Case(
        "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
        "headers.X-Content-Type-Options: invalid value",
        False,
    ),
    "http2 not a boolean": Case(
        "http_server_config:\n  http2: maybe\n", "http_server_config.http2", False
    ),
    "not a bcrypt hash": Case(
        "basic_auth_users:\n  u: plaintext-password\n", "basic_auth_users.u: not a bcrypt", False
    ),
    "cert_file without key_file": Case(
        "tls_server_config:\n  cert_file: ca-server.pem\n", "tls_server_config.key_file", False
    ),
    "key_file without cert_file": Case(
        "tls_server_config:\n  key_file: ca-server.key\n", "tls_server_config.cert_file", False
    ),
    "missing certificate file": Case(
        "tls_server_config:\n  cert_file: nope.pem\n  key_file: ca-server.key\n",
        "tls_server_config.cert_file: ",
        False,
    ),
    "key of another certificate": Case(
        "tls_server_config:\n  cert_file: ca-server.pem\n  key_file: ca-client.key\n",
        "do not load as a matching",
        False,
    ),
    "unknown client_auth_type": Case(
        TLS + "  client_auth_type: Sometimes\n", "invalid ClientAuth 'Sometimes'", False
    ),
    "unknown TLS version": Case(
        TLS + "  min_version: TLS14\n", "min_version: unknown TLS version 'TLS14'", False
    ),
    "client CA without client auth": Case(
        TLS + "  client_ca_file: ca.pem\n",
        "client_ca_file: client CAs are configured without",
        False,
    ),
    "unknown cipher suite": Case(
        TLS + "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n", "unknown cipher", False
    ),
    "missing client CA file": Case(
        TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: nope.pem\n",
        "client_ca_file: ",
        False,
    ),
    # Deliberate refusals: exporter-toolkit accepts these, Python's ssl cannot honour them.
    "RequestClientCert (unverified certificate)": Case(
        TLS + "  client_auth_type: RequestClientCert\n", "RequestClientCert is refused", True
    ),
    "RequireAnyClientCert (unverified certificate)": Case(
        TLS + "  client_auth_type: RequireAnyClientCert\n",
        "RequireAnyClientCert is refused",
        True,
    ),
    "TLS 1.0 (insecure)": Case(
        TLS + "  min_version: TLS10\n", "min_version: TLS10 is refused", True
    ),
    "curve_preferences (not settable as a list)": Case(
        TLS + "  curve_preferences: [X25519]\n", "curve_preferences: not supported", True
    ),
    "TLS 1.3 cipher suite (not configurable)": Case(
        TLS + "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "TLS 1.3 suite", True
    ),
    "min_version above max_version": Case(
        TLS + "  min_version: TLS13\n  max_version: TLS12\n", "is above max_version", True
    ),
    "verification without client_ca_file (system CAs)": Case(
        TLS + "  client_auth_type: RequireAndVerifyClientCert\n",
        "client_ca_file: required with RequireAndVerifyClientCert",
        True,
    ),
    "TLS settings without a certificate (TLS would be off)": Case(
        "tls_server_config:\n  min_version: TLS13\n", "tls_server_config.cert_file", True
    ),
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize("name", list(CASES))
def test_accepted_and_refused_like_exporter_toolkit(pki: Pki, name: str) -> None:
    case = CASES[name]
    path = pki.directory / "web.yml"
    path.write_text(case.text)
    if case.problem is None:
        _, context = load_web_config(path)
        assert (context is not None) == ("tls_server_config" in case.text)
    else:
        with pytest.raises(WebConfigError) as caught:
            load_web_config(path)
        assert any(case.problem in line for line in caught.value.problems), caught.value.problems
    checked = subprocess.run(
        [binary("promtool"), "check", "web-config", str(path)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert (checked.returncode == 0) == case.promtool_accepts, checked.stdout + checked.stderr


def test_a_password_pasted_instead_of_a_hash_is_not_echoed(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("basic_auth_users:\n  admin: hunter2-secret\n")
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    assert "hunter2" not in str(caught.value)
    assert "basic_auth_users.admin" in str(caught.value)


def test_relative_paths_are_relative_to_the_file(pki: Pki, tmp_path: Path) -> None:
    path = pki.directory / "web.yml"
    path.write_text(TLS)
    config, _ = load_web_config(path)
    assert config.tls is not None
    assert config.tls.cert_file == pki.directory / "ca-server.pem"
    assert path.parent != tmp_path


async def test_an_unsupported_key_exits_2_naming_it(pki: Pki) -> None:
    path = pki.directory / "bad-web.yml"
    path.write_text(TLS + "  client_allowed_sans: [prometheus]\n")
    config = pki.directory / "exporter.toml"
    config.write_text('[targets.main]\nurl = "http://127.0.0.1:1"\ntoken = "t"\n')
    async with exporter_process(
        "--config.file", str(config), "--web.config.file", str(path)
    ) as proc:
        _, err = await proc.communicate()
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert (
        "configuration error: web.config_file: tls_server_config.client_allowed_sans: "
        "not supported" in lines[-1]
    )
    assert "Traceback" not in err.decode()


def _readme_blocks() -> list[str]:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Security", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)


def test_the_readme_example_is_valid_here_and_for_promtool(pki: Pki, tmp_path: Path) -> None:
    web, scrape = _readme_blocks()
    for name, source in (
        ("exporter.pem", pki.cert_file),
        ("exporter.key", pki.key_file),
        ("clients-ca.pem", pki.ca_file),
    ):
        (tmp_path / name).write_bytes(source.read_bytes())
    path = tmp_path / "web-config.yml"
    path.write_text(web)
    config, context = load_web_config(path)
    assert context is not None and config.users
    assert bcrypt.checkpw(b"changeme", config.users["prometheus"])
    checked = subprocess.run(
        [binary("promtool"), "check", "web-config", str(path)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    prometheus_dir = tmp_path / "prometheus"
    prometheus_dir.mkdir()
    for name in ("vms-exporter.password", "exporter-ca.pem", "prometheus.pem", "prometheus.key"):
        (prometheus_dir / name).write_text("x\n")
    prom_config = tmp_path / "prometheus.yml"
    prom_config.write_text(scrape.replace("/etc/prometheus/", f"{prometheus_dir}/"))
    checked = subprocess.run(
        [binary("promtool"), "check", "config", str(prom_config)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
