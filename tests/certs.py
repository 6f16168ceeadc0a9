"""Certificates made at test time (trustme), written as PEM files, and clients that use them."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import bcrypt
import trustme

HOSTS = ("localhost", "127.0.0.1", "::1")
REFUSED = "refused"


@dataclass(frozen=True)
class Pki:
    """One CA with a server certificate and a client certificate, as files in ``directory``."""

    ca: trustme.CA
    directory: Path
    ca_file: Path
    cert_file: Path
    key_file: Path
    client_cert_file: Path
    client_key_file: Path

    def client_context(
        self,
        *,
        trust: Pki | None = None,
        client: Pki | None = None,
        max_version: ssl.TLSVersion | None = None,
    ) -> ssl.SSLContext:
        """A client trusting ``trust`` (default: this CA), presenting ``client``'s certificate."""
        context = ssl.create_default_context(cafile=str((trust or self).ca_file))
        if client is not None:
            context.load_cert_chain(client.client_cert_file, client.client_key_file)
        if max_version is not None:
            context.maximum_version = max_version
        return context


def make_pki(directory: Path, name: str = "ca") -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name=f"test {name}")
    server = ca.issue_cert(*HOSTS)
    client = ca.issue_cert("prometheus@example.com", common_name="prometheus")
    paths = {
        "ca_file": directory / f"{name}.pem",
        "cert_file": directory / f"{name}-server.pem",
        "key_file": directory / f"{name}-server.key",
        "client_cert_file": directory / f"{name}-client.pem",
        "client_key_file": directory / f"{name}-client.key",
    }
    ca.cert_pem.write_to_path(str(paths["ca_file"]))
    server.private_key_pem.write_to_path(str(paths["key_file"]))
    client.private_key_pem.write_to_path(str(paths["client_key_file"]))
    server.cert_chain_pems[0].write_to_path(str(paths["cert_file"]))
    client.cert_chain_pems[0].write_to_path(str(paths["client_cert_file"]))
    return Pki(ca=ca, directory=directory, **paths)


def bcrypt_hash(password: str, rounds: int = 4) -> str:
    """What ``htpasswd -nBC 4`` would write (cost 4: fast tests), as $2y$ like htpasswd."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()
    return "$2y$" + hashed[4:]


async def outcome(
    url: str,
    context: ssl.SSLContext | None = None,
    auth: tuple[str, str] | None = None,
) -> int | str:
    """The HTTP status of a GET, or ``REFUSED`` when the TLS handshake or connection fails."""
    headers = {"Authorization": aiohttp.encode_basic_auth(*auth)} if auth else {}
    connector = aiohttp.TCPConnector(ssl=context if context is not None else False)
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            async with session.get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
            ) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientConnectionError, ssl.SSLError):
            return REFUSED
