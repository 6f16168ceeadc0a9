"""``python -m exporter.simulator``: the simulator alone, without the exporter's CLI."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from exporter.simulator.cli import add_arguments, config_from_args, serve


async def _run(args: argparse.Namespace) -> None:
    config, host, port = config_from_args(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await serve(config, host, port, stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.simulator", description="A fake VMS Client API on loopback."
    )
    add_arguments(parser)
    try:
        asyncio.run(_run(parser.parse_args(argv)))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
