"""The console script's entry: signals are handled before the heavy imports.

Importing aiohttp, pydantic and prometheus-client takes a noticeable part of a
second; a SIGTERM in that time must still end the process with exit 0.
"""

from __future__ import annotations

import signal


def _early_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)  # nothing to clean up yet: imports, reading the configuration


def install_early_signal_handlers() -> None:
    """Until the event loop takes over, SIGTERM/SIGINT end the process at once with
    exit 0, and SIGHUP is ignored (the configuration is being read anyway)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _early_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def main() -> int:
    install_early_signal_handlers()
    from exporter.cli import main as cli_main

    return cli_main()
