"""Measures what TLS and basic auth cost a scrape of /metrics, on loopback.

    .venv/bin/python benchmarks/web_bench.py [--requests 50] [--cost 10]

Prints the median / max time of one GET /metrics for: plain HTTP; HTTPS over a
kept-alive connection with basic auth (bcrypt answer cached, the normal case
of a Prometheus scraping every few seconds); the same with the cache off
(bcrypt paid each time); and HTTPS with a new TLS connection per request.
Certificates are made by trustme (a test dependency) in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import bcrypt
import trustme

from exporter.metrics import ExporterMetrics
from exporter.web import create_app, start_server
from exporter.webauth import BasicAuthChecker, security_middleware
from exporter.webconfig import LiveWebConfig

USER, PASSWORD = "prometheus", "benchmark password"


async def measure(
    live: LiveWebConfig | None,
    checker: BasicAuthChecker | None,
    client: ssl.SSLContext | bool,
    requests: int,
    keep_alive: bool = True,
) -> list[float]:
    app = create_app(ExporterMetrics(process_metrics=False), [])
    if live is not None:
        app.middlewares.append(security_middleware(live, checker))
    context = live.ssl_context if live is not None else None
    runner, addresses = await start_server(app, "127.0.0.1", 0, context)
    scheme = "https" if context is not None else "http"
    url = f"{scheme}://{addresses[0]}/metrics"
    headers = {"Authorization": aiohttp.encode_basic_auth(USER, PASSWORD)}
    times = []
    try:
        connector = aiohttp.TCPConnector(ssl=client, force_close=not keep_alive)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(requests + 1):
                began = time.perf_counter()
                async with session.get(url, headers=headers) as response:
                    await response.read()
                    assert response.status == 200, response.status
                times.append(time.perf_counter() - began)
    finally:
        await runner.cleanup()
    return times[1:]  # the first request opens the connection (and fills the cache)


def show(name: str, times: list[float]) -> None:
    print(
        f"{name:<56} median {statistics.median(times) * 1000:7.2f} ms   "
        f"max {max(times) * 1000:7.2f} ms"
    )


async def bench(requests: int, cost: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1")
        server.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
        server.private_key_pem.write_to_path(str(directory / "server.key"))
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(cost)).decode()
        config = directory / "web.yml"
        config.write_text(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
            f"basic_auth_users:\n  {USER}: '{hashed}'\n"
        )
        client = ssl.create_default_context()
        ca.configure_trust(client)
        print(f"{requests} requests each, bcrypt cost {cost}, shared machine, loopback")
        show("plain HTTP, no auth", await measure(None, None, False, requests))
        live = LiveWebConfig.load(config)
        show(
            "HTTPS keep-alive + basic auth (cached)",
            await measure(live, BasicAuthChecker(), client, requests),
        )
        show(
            "HTTPS keep-alive + basic auth (cache off: bcrypt each)",
            await measure(live, BasicAuthChecker(size=0), client, requests),
        )
        show(
            "HTTPS new connection each + basic auth (cached)",
            await measure(live, BasicAuthChecker(), client, requests, keep_alive=False),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--cost", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(bench(args.requests, args.cost))


if __name__ == "__main__":
    main()
