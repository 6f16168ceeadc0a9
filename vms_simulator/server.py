"""Running the simulator on a socket, for tests, benchmarks, ``simulate`` and ``--demo``."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from types import TracebackType

from aiohttp import web

from vms_simulator.app import create_app
from vms_simulator.clock import Clock
from vms_simulator.config import SimulatorConfig

_SHUTDOWN_TIMEOUT = 1.0  # seconds granted to requests in flight (a latency fault) on close


def client_url(host: str, port: int, scheme: str = "http") -> str:
    """A URL that reaches a server listening on ``host``: wildcards become loopback."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"{scheme}://{host}:{port}"
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"{scheme}://{shown}:{port}"


@dataclass
class RunningSimulator:
    app: web.Application
    url: str
    """Where it really listens, e.g. ``http://127.0.0.1:40123``."""
    port: int
    _runner: web.AppRunner

    async def close(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> RunningSimulator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


async def start_simulator(
    config: SimulatorConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Clock | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> RunningSimulator:
    """Generate the dataset and listen on ``host:port`` (port 0: any free port).

    With ``ssl_context`` it speaks HTTPS (tests of the exporter's TLS toward the VMS).
    """
    app = create_app(config, clock)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = int(runner.addresses[0][1])
    return RunningSimulator(
        app=app,
        url=client_url(host, bound_port, "https" if ssl_context else "http"),
        port=bound_port,
        _runner=runner,
    )
