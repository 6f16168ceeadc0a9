"""What the exporter keeps of one download, and the tolerant parsing of API items.

A :class:`Download` is a compact record of a few scalars with label values
already normalised; the parsed JSON is dropped as soon as a page is read.
Records are msgspec structs without garbage-collector tracking: a million of
them add nothing to the cost of a full collection (they hold no containers).
"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

IN_PROGRESS: Final = "in_progress"
COMPLETED: Final = "completed"
FAILED: Final = "failed"
OTHER: Final = "other"
DOCUMENTED_STATUSES: Final = (IN_PROGRESS, COMPLETED, FAILED)
TERMINAL_STATUSES: Final = (COMPLETED, FAILED)
STREAM_TYPES: Final = ("high", "low", "unknown")
FILE_EXISTS: Final = ("true", "false", "unknown")
INVALID_REASONS: Final = ("not_an_object", "no_id", "bad_created_at", "undecodable")

MAX_ID_LENGTH = 64
MAX_DETAIL_LENGTH = 256
_DECIMAL = re.compile(r"[0-9]+")
_STATUS_BY_API = {"in progress": IN_PROGRESS, "in_progress": IN_PROGRESS}
_STATUS_BY_API.update({s: s for s in TERMINAL_STATUSES})


class Download(msgspec.Struct, frozen=True, gc=False):
    """One download as remembered between polls."""

    id: str
    status: str
    stream_type: str
    file_exists: str
    created_at: float
    updated_at: float | None
    camera_id: str | None


class DetailedDownload(Download, frozen=True, gc=False):
    """A download with what it is called and who asked for it (``name``: often a street
    address; the requester's login). Built only with ``web.show_details``: otherwise
    these are never kept in memory."""

    name: str | None
    login: str | None


class InvalidItem(Exception):
    """An item that cannot be used; ``reason`` is the metric label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def normalize_id(value: object) -> str | None:
    """``6414``, ``"6414"`` and ``" 6414 "`` are the same id; bools and blanks are none."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value) if -(10**MAX_ID_LENGTH) < value < 10**MAX_ID_LENGTH else None
    if isinstance(value, float):
        return normalize_id(int(value)) if value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        if not text or len(text) > MAX_ID_LENGTH:
            return None
        if _DECIMAL.fullmatch(text):
            return text.lstrip("0") or "0"
        return text
    return None


def parse_timestamp(value: object) -> float | None:
    """Epoch seconds from the API's ISO 8601 (``2019-09-24T13:54:44.000000Z``); naive means UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    except (ValueError, OverflowError):
        return None


def status_label(value: object) -> str:
    if isinstance(value, str):
        return _STATUS_BY_API.get(value.strip().lower(), OTHER)
    return OTHER


def stream_type_label(stream: object) -> str:
    if isinstance(stream, dict):
        kind = stream.get("type")
        if isinstance(kind, str) and kind.lower() in ("high", "low"):
            return kind.lower()
    return "unknown"


def file_exists_label(value: object) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return "unknown"


def camera_label(stream: object) -> str | None:
    if isinstance(stream, dict):
        return normalize_id(stream.get("camera_id"))
    return None


def _detail(value: object) -> str | None:
    """A name or login to show, capped in length (a hostile answer cannot bloat memory)."""
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:MAX_DETAIL_LENGTH]


def _login(value: object) -> str | None:
    login = _detail(value)
    return None if login is None else sys.intern(login)  # a few users, many downloads


def parse_download(item: Any) -> Download:
    """A :class:`Download` from one item of ``data`` (any JSON value); else :class:`InvalidItem`."""
    if not isinstance(item, dict):
        raise InvalidItem("not_an_object")
    ident = normalize_id(item.get("id"))
    if ident is None:
        raise InvalidItem("no_id")
    created = parse_timestamp(item.get("created_at"))
    if created is None:
        raise InvalidItem("bad_created_at")
    stream = item.get("stream")
    return Download(
        id=ident,
        status=status_label(item.get("status")),
        stream_type=stream_type_label(stream),
        file_exists=file_exists_label(item.get("is_file_exists")),
        created_at=created,
        updated_at=parse_timestamp(item.get("updated_at")),
        camera_id=camera_label(stream),
    )


def with_details(record: Download, name: object, login: object) -> DetailedDownload:
    """``record`` with the item's ``name`` and its user's ``login`` (checked and capped)."""
    return DetailedDownload(
        record.id,
        record.status,
        record.stream_type,
        record.file_exists,
        record.created_at,
        record.updated_at,
        record.camera_id,
        _detail(name),
        _login(login),
    )
