"""Builders shared by the tests: downloads as the API sends them and as the core keeps them."""

from __future__ import annotations

from collections.abc import Generator
from datetime import UTC, datetime
from typing import Any, TypeVar

from exporter.vms.models import Download

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp()


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rec(
    ident: str | int,
    status: str = "in_progress",
    *,
    created: float = T0,
    updated: float | None = None,
    stream: str = "high",
    exists: str = "true",
    camera: str | None = "1",
) -> Download:
    return Download(
        id=str(ident),
        status=status,
        stream_type=stream,
        file_exists=exists,
        created_at=created,
        updated_at=created if updated is None else updated,
        camera_id=camera,
    )


def item(
    ident: Any,
    status: Any = "in progress",
    *,
    created: float = T0,
    updated: float | None = None,
    stream_type: Any = "high",
    exists: Any = True,
    camera: Any = 1,
) -> dict[str, Any]:
    """One element of ``data`` shaped like the vendor's sample."""
    return {
        "id": ident,
        "attributes": [],
        "name": "г. Город, ул. Улица 1, file.20190924-130316-131213.mp4",
        "type": "mp4",
        "url": "http://127.0.0.1:8080/storage/",
        "from": "2019-09-24 13:03:16",
        "to": "2019-09-24 13:12:13",
        "created_at": iso(created),
        "updated_at": iso(created if updated is None else updated),
        "status": status,
        "is_file_exists": exists,
        "stream": {"id": 2, "type": stream_type, "camera_id": camera, "status": None},
        "user_id": 5,
        "user": {"id": 5, "login": "user@mail.com"},
    }


def page(
    items: list[dict[str, Any]],
    *,
    page_no: int = 1,
    last_page: int = 1,
    per_page: int = 100,
    total: int | None = None,
    host: str = "http://127.0.0.1:8080",
) -> dict[str, Any]:
    """A Laravel-style page; links point at ``host`` and carry only ?page=N, like the sample."""
    path = f"{host}/api/v1/users/downloads"
    return {
        "data": items,
        "links": {
            "first": f"{path}?page=1",
            "last": f"{path}?page={last_page}",
            "prev": f"{path}?page={page_no - 1}" if page_no > 1 else None,
            "next": f"{path}?page={page_no + 1}" if page_no < last_page else None,
        },
        "meta": {
            "current_page": page_no,
            "from": 1,
            "last_page": last_page,
            "links": [],
            "path": path,
            "per_page": per_page,
            "to": len(items),
            "total": len(items) if total is None else total,
        },
    }


R = TypeVar("R")


def run_counting_pauses(steps: Generator[object, None, R]) -> tuple[R, int]:
    """Drive a stepwise form to its end: its result and how often it paused."""
    pauses = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value, pauses
        pauses += 1
