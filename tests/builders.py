"""Builders shared by the tests: downloads as the API sends them and as the core keeps them."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from exporter.core import Events, aggregate
from exporter.metrics import ExporterMetrics
from exporter.vms.models import FILE_EXISTS, STREAM_TYPES, TERMINAL_STATUSES, Download

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


def busy_metrics(
    targets: int,
    downloads: int = 2000,
    *,
    per_camera: bool = False,
    names: Sequence[str] | None = None,
    cameras: Sequence[str | None] = ("1", "2", "3", None),
) -> ExporterMetrics:
    """Metrics after one successful poll of each target: window gauges, events with exemplars.

    ``names`` (default ``t000``...) and ``cameras`` let a test put odd label values in.
    """
    metrics = ExporterMetrics(per_camera=per_camera, clock=lambda: T0 + 60, process_metrics=False)
    statuses = ("in_progress", "completed", "failed", "completed")
    for number, name in enumerate(names or [f"t{i:03d}" for i in range(targets)]):
        metrics.add_target(name, 86400, 60)
        records = [
            rec(
                f"{number}-{i}",
                statuses[i % len(statuses)],
                created=T0 - 10 * i,
                updated=T0 - 10 * i + 7 * (i % 5000),
                stream=STREAM_TYPES[i % len(STREAM_TYPES)],
                exists=FILE_EXISTS[i % len(FILE_EXISTS)],
                camera=cameras[i % len(cameras)],
            )
            for i in range(downloads)
        ]
        events = Events()
        for record in records:
            events.created[record.stream_type] += 1
            if record.status in TERMINAL_STATUSES:
                events.finished[record.status] += 1
                events.latest_finished[record.status] = record
                seconds = (record.updated_at or T0) - record.created_at
                events.durations.append((record.status, seconds, record))
        events.file_removed_ages.extend([3600.0, 90000.0])
        metrics.poll_succeeded(
            name,
            snapshot=aggregate(records, per_camera=per_camera),
            events=events,
            duration=0.25 + number % 7,
            finished_at=T0 + 30,
            reported_total=downloads,
            invalid={"no_id": number % 3},
            requests=1 + downloads // 100,
        )
    return metrics
