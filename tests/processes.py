"""Running ``python -m exporter …`` as a real process, bounded in time, never left behind."""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import aiohttp
import pytest

DEADLINE = 20.0


def binary(name: str) -> str:
    """Path of a Debian prometheus package binary; skipped when absent, failed in CI."""
    path = shutil.which(name)
    if path is None:
        message = (
            f"{name} not found: install Debian's prometheus package (apt-get install prometheus)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for(url: str, status: int = 200, deadline: float = DEADLINE) -> str:
    """Poll ``url`` until it answers ``status``; fail after ``deadline`` seconds."""
    until = time.monotonic() + deadline
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < until:
            try:
                async with session.get(url) as response:
                    if response.status == status:
                        return await response.text()
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not answer {status} within {deadline}s")


@asynccontextmanager
async def exporter_process(
    *args: str, fd_limit: int | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m exporter *args`` with stdout/stderr piped; killed if still running at exit.

    ``fd_limit``: the process's limit of open file descriptors (RLIMIT_NOFILE).
    """

    def limit() -> None:
        if fd_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=limit if fd_limit is not None else None,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def stop(
    proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM
) -> tuple[int, float, str, str]:
    """Send ``sig``; return the exit code, seconds until exit, stdout and stderr."""
    started = time.monotonic()
    proc.send_signal(sig)
    out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    elapsed = time.monotonic() - started
    assert proc.returncode is not None
    return proc.returncode, elapsed, out.decode(), err.decode()


T = TypeVar("T")


def eventually(what: str, probe: Callable[[], T | None], deadline: float = 60.0) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``deadline`` seconds."""
    until = time.monotonic() + deadline
    last: Exception | None = None
    while time.monotonic() < until:
        try:
            result = probe()
            if result:
                return result
        except OSError as exc:  # not listening yet
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {deadline:.0f}s (last error: {last})")


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process, then wait for each (SIGKILL after 10 s)."""
    for proc in processes:
        proc.terminate()
    for proc in processes:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
