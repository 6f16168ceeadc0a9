"""The downloads that need a person, chosen from one target's remembered records.

Pure: the records and the time are passed in. Three kinds, each newest first
(by ``created_at``) and capped at ``limit``:

- ``failed``: status failed;
- ``stuck``: in progress for longer than the stuck alert's threshold
  (:func:`stuck_after`);
- ``file_missing``: completed, but the VMS says the file does not exist.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from exporter.vms.models import COMPLETED, FAILED, IN_PROGRESS, DetailedDownload, Download

KINDS = ("failed", "stuck", "file_missing")
_NEWEST = attrgetter("created_at", "id")
LIMIT = 100
STUCK_AFTER = 7200.0
"""``VmsDownloadsExportStuck``'s threshold: 2 h, or half the lookback if that is shorter."""


def stuck_after(lookback: float) -> float:
    return min(STUCK_AFTER, lookback / 2)


@dataclass(frozen=True, slots=True)
class Problems:
    """One target's problems: per kind the newest ``limit`` downloads, and how many there are."""

    shown: dict[str, list[Download]]
    total: dict[str, int]


def find_problems(
    records: Iterable[Download], *, now: float, lookback: float, limit: int = LIMIT
) -> Problems:
    stuck_before = now - stuck_after(lookback)
    failed: list[Download] = []
    stuck: list[Download] = []
    missing: list[Download] = []
    for record in records:  # one pass, no call per record
        status = record.status
        if status == FAILED:
            failed.append(record)
        elif status == IN_PROGRESS:
            if record.created_at < stuck_before:
                stuck.append(record)
        elif status == COMPLETED and record.file_exists == "false":
            missing.append(record)
    found = {"failed": failed, "stuck": stuck, "file_missing": missing}
    return Problems(
        shown={kind: heapq.nlargest(limit, items, key=_NEWEST) for kind, items in found.items()},
        total={kind: len(items) for kind, items in found.items()},
    )


def rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def entry(record: Download, now: float) -> dict[str, Any]:
    """One download as JSON; ``name`` and ``login`` only if they were kept (show_details)."""
    shown: dict[str, Any] = {
        "id": record.id,
        "status": record.status,
        "camera_id": record.camera_id,
        "stream_type": record.stream_type,
        "file_exists": record.file_exists,
        "created_at": rfc3339(record.created_at),
        "updated_at": rfc3339(record.updated_at),
        "age_seconds": max(0, round(now - record.created_at)),
    }
    if isinstance(record, DetailedDownload):
        shown["name"] = record.name
        shown["login"] = record.login
    return shown
