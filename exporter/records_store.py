"""One target's remembered records on disk, so the first poll after a restart is not a baseline.

The file ``<target>.records.jsonl`` holds JSON lines: a header (format number,
the target's URL, when the saved poll began), the compact records in chunks
of :data:`CHUNK` (never a name, a login or a secret), and a trailer with their
count. Writing and reading go chunk by chunk in a worker thread, so a
scrape waits at most for one chunk, never for the whole file.

Saved state that is unreadable (corrupt, truncated, a newer format), for
another URL, or older than the lookback is ignored with one log line: the
next poll is then a clean baseline, never a double count.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from exporter.config import TargetSettings
from exporter.core import Memory
from exporter.state import remove_leftovers, write_atomically
from exporter.vms.models import (
    DOCUMENTED_STATUSES,
    FILE_EXISTS,
    MAX_ID_LENGTH,
    OTHER,
    STREAM_TYPES,
    Download,
)

log = logging.getLogger(__name__)

FORMAT = 1
KIND = "records"
CHUNK = 1000
_STATUSES = frozenset((*DOCUMENTED_STATUSES, OTHER))
_CANONICAL = {label: label for label in (*_STATUSES, *STREAM_TYPES, *FILE_EXISTS)}
"""Loaded label values map to the constants, so 100,000 records share three strings, not 300,000."""


def store_for(
    directory: Path | None, name: str, target: TargetSettings, lookback: float
) -> RecordStore | None:
    """The store of target ``name`` under ``[state] directory``; None when that is unset."""
    if directory is None:
        return None
    return RecordStore(directory, name, target.url + target.path, lookback)


class Unusable(Exception):
    """Why saved state cannot be used; the message is the log line's reason."""


class RecordStore:
    """Saves and loads one target's :class:`Memory` under the state directory."""

    def __init__(self, directory: Path, target: str, url: str, lookback: float) -> None:
        self.path = directory / f"{target}.{KIND}.jsonl"
        self._target = target
        self._url = url
        self._lookback = lookback

    def save(self, memory: Memory, saved_at: float) -> None:
        """Replace the saved records atomically (blocking: run it in a thread)."""
        write_atomically(self.path, self._encode(memory, saved_at))

    def _encode(self, memory: Memory, saved_at: float) -> Iterator[bytes]:
        records = list(memory.records.values())
        header = {
            "format": FORMAT,
            "kind": KIND,
            "url": self._url,
            "saved_at": saved_at,
            "poll_started": memory.poll_started,
            "records": len(records),
        }
        yield _line(header)
        for start in range(0, len(records), CHUNK):
            rows = ",".join(map(_row, records[start : start + CHUNK]))
            yield f"[{rows}]\n".encode()
        yield _line({"end": len(records)})

    def load(self, now: float) -> Memory | None:
        """The saved memory, or None (a baseline) with one log line if it cannot be used."""
        remove_leftovers(self.path)
        try:
            with self.path.open("rb") as handle:
                return self._decode(handle, now)
        except FileNotFoundError:
            return None
        except (OSError, Unusable) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            log.warning(
                "saved state ignored: the first poll is a new baseline",
                extra={"target": self._target, "path": str(self.path), "reason": reason},
            )
            return None

    def _decode(self, lines: IO[bytes], now: float) -> Memory:
        header = _object(_read_line(lines))
        version = header.get("format")
        if not isinstance(version, int) or header.get("kind") != KIND:
            raise Unusable("not a records file of this exporter")
        if version != FORMAT:
            raise Unusable(f"format {version}, this exporter reads format {FORMAT}")
        if header.get("url") != self._url:
            raise Unusable("saved for another URL")
        started = _float(header.get("poll_started"))
        count = header.get("records")
        if started is None or not isinstance(count, int) or count < 0:
            raise Unusable("corrupt header")
        if now - started > self._lookback:
            raise Unusable("older than the lookback")
        records: dict[str, Download] = {}
        cameras: dict[str, str] = {}  # one string per camera, not one per record
        for _ in range(math.ceil(count / CHUNK)):
            chunk = _json(_read_line(lines))
            if not isinstance(chunk, list):
                raise Unusable("truncated or corrupt: a chunk of records is missing")
            for fields in chunk:
                record = _record(fields, cameras)
                records[record.id] = record
        if _object(_read_line(lines)) != {"end": count} or len(records) != count:
            raise Unusable("truncated or corrupt: the number of records does not match")
        return Memory(records, started)


def _row(r: Download) -> str:
    """One record as a JSON array, built from strings only: no containers for the GC to chase."""
    updated = "null" if r.updated_at is None else repr(r.updated_at)
    camera = "null" if r.camera_id is None else _string(r.camera_id)
    return (
        f'[{_string(r.id)},"{r.status}","{r.stream_type}","{r.file_exists}",'
        f"{r.created_at!r},{updated},{camera}]"
    )


def _string(text: str) -> str:
    return f'"{text}"' if text.isalnum() and text.isascii() else json.dumps(text)


def _line(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def _read_line(lines: IO[bytes]) -> bytes:
    line = lines.readline()
    if not line.endswith(b"\n"):
        raise Unusable("truncated")
    return line


def _json(line: bytes) -> object:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        raise Unusable("not valid JSON (corrupt)") from None


def _object(line: bytes) -> dict[str, Any]:
    value = _json(line)
    if not isinstance(value, dict):
        raise Unusable("corrupt: expected an object")
    return value


def _float(value: object) -> float | None:
    """A finite number as float, else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _record(fields: object, cameras: dict[str, str]) -> Download:
    """One saved record, checked field by field; label values become the shared constants."""
    if type(fields) is not list or len(fields) != 7:
        raise Unusable("corrupt record")
    ident, status, stream_type, exists, created, updated, camera = fields
    status = _CANONICAL.get(status) if type(status) is str else None
    stream_type = _CANONICAL.get(stream_type) if type(stream_type) is str else None
    exists = _CANONICAL.get(exists) if type(exists) is str else None
    if (
        type(ident) is str
        and 0 < len(ident) <= MAX_ID_LENGTH
        and status in _STATUSES
        and stream_type in STREAM_TYPES
        and exists in FILE_EXISTS
        and type(created) is float
        and math.isfinite(created)
        and (updated is None or (type(updated) is float and math.isfinite(updated)))
        and (camera is None or (type(camera) is str and 0 < len(camera) <= MAX_ID_LENGTH))
    ):
        if camera is not None:
            camera = cameras.setdefault(camera, camera)
        return Download(ident, status, stream_type, exists, created, updated, camera)
    raise Unusable("corrupt record")
