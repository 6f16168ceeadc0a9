"""Small files that survive a restart, under ``[state] directory``.

Each file is one JSON object ``{"format": N, "kind": ..., ...}`` written
atomically (temp file, fsync, rename, fsync of the directory), so a crash
leaves either the old or the new content, never half of one. A file that is
missing, unreadable, of another format or another kind reads as None: saved
state is a hint, never a reason not to start. Secrets are never stored here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FORMAT = 1
_NAME = re.compile(r"[a-z0-9_]+")
MAX_STATE_FILE = 64 * 1024 * 1024


class StateDirectory:
    """Files named ``<target>.<kind>.json`` in one directory that must exist and be writable."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, target: str, kind: str) -> Path:
        if not (_NAME.fullmatch(target) and _NAME.fullmatch(kind)):
            raise ValueError(f"state names must match [a-z0-9_]+: {target!r}, {kind!r}")
        return self.directory / f"{target}.{kind}.json"

    def read(self, target: str, kind: str) -> dict[str, Any] | None:
        """The saved object, or None when there is none usable."""
        path = self.path(target, kind)
        try:
            with path.open("rb") as handle:
                raw = handle.read(MAX_STATE_FILE + 1)
            data = json.loads(raw) if len(raw) <= MAX_STATE_FILE else None
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return None
        if data.get("kind") != kind:
            return None
        return data

    def write(self, target: str, kind: str, data: dict[str, Any]) -> None:
        """Replace the file atomically; OSError when the disk refuses."""
        path = self.path(target, kind)
        body = json.dumps({"format": FORMAT, "kind": kind, **data}, separators=(",", ":"))
        write_atomically(path, [body.encode()])

    def remove(self, target: str, kind: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(target, kind).unlink()
        _fsync_directory(self.directory)


def check_directory(directory: Path) -> str | None:
    """Why ``directory`` cannot hold state (missing, not a directory, read-only), or None."""
    if not directory.is_dir():
        return f"{directory} is not an existing directory"
    try:
        fd, temp = tempfile.mkstemp(prefix=".write-test.", dir=directory)
    except OSError as exc:
        return f"cannot write in {directory}: {exc.strerror}"
    os.close(fd)
    os.unlink(temp)
    return None


def write_atomically(path: Path, chunks: Iterable[bytes]) -> None:
    """Replace ``path`` with the concatenated ``chunks`` (temp file, fsync, rename, fsync of
    the directory); OSError when the disk refuses. Chunks are written as they come, so a
    large file is never held whole and a thread writing it lets the event loop run."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_directory(path.parent)


def remove_leftovers(path: Path) -> None:
    """Delete the temporary files a killed writer of ``path`` left behind."""
    for leftover in path.parent.glob(f".{path.name}.*"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
