"""``python -m vms_simulator`` (and ``vms-downloads-exporter simulate``): the simulator alone."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from vms_simulator.cli import add_arguments, config_from_args, serve


def build_parser(prog: str = "python -m vms_simulator") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the built-in fake VMS (for trying the exporter, compose stacks, tests).",
    )
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "python -m vms_simulator") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        config, host, port = config_from_args(args)
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await serve(config, host, port, stop)
        except OSError as exc:
            print(f"simulate: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
            return 1
        return 0

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
