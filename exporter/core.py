"""Pure functions from polled downloads to a window snapshot and to events.

Nothing here does I/O or reads a clock: callers pass every time in. The work
over a whole window comes in two forms: ``aggregate``/``reconcile`` run at once,
and ``*_steps`` generators that pause every :data:`STEP` items, so that an
event loop can serve scrapes in between (``run_steps`` drives them at once,
``run_steps_pausing`` with the loop served at every pause).
The rules are the contract's ("How events are derived"):

- the first successful poll of a target is its baseline and counts nothing;
- one record per id is remembered and forgotten only when its ``created_at``
  falls before the window start, never because one poll missed it;
- an item whose ``updated_at`` is older than the record held is ignored;
- a poll that did not finish is never passed here, so it changes nothing.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from operator import attrgetter
from typing import TypeVar

from exporter.vms.models import (
    COMPLETED,
    DOCUMENTED_STATUSES,
    FILE_EXISTS,
    IN_PROGRESS,
    STREAM_TYPES,
    TERMINAL_STATUSES,
    Download,
)

OTHER_CAMERAS = "other"
NO_CAMERA = "unknown"
STEP = 5000
"""Items handled between two pauses of the stepwise functions (a few milliseconds)."""

T = TypeVar("T")
_labels = attrgetter("status", "stream_type", "file_exists")
_created = attrgetter("created_at")
_ident = attrgetter("id")
Steps = Generator[None, None, T]


async def run_steps_pausing(steps: Steps[T]) -> T:
    """Run stepwise work in a task, letting the loop serve others at every pause."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        await asyncio.sleep(0)


def run_steps(steps: Steps[T]) -> T:
    """Run stepwise work to its end without pausing; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state of one target's window as of one successful poll."""

    counts: Mapping[tuple[str, str, str], int]
    """(status, stream_type, file_exists) → number of downloads; every documented combination."""
    oldest_in_progress_created: float | None
    newest_created: float | None
    by_camera: Mapping[tuple[str, str], int] | None
    """(camera_id, status) → number, or None when per-camera metrics are off."""
    size: int


@dataclass(slots=True)
class Events:
    """What happened between the previous successful poll and this one."""

    created: Counter[str] = field(default_factory=Counter)
    """stream_type → downloads first seen."""
    finished: Counter[str] = field(default_factory=Counter)
    """terminal status → downloads seen entering it."""
    durations: list[tuple[str, float, Download]] = field(default_factory=list)
    """(terminal status, seconds, the download) for each finish seen live."""
    latest_finished: dict[str, Download] = field(default_factory=dict)
    """terminal status → the download of its latest finish (by ``updated_at``), for exemplars."""
    file_removed_ages: list[float] = field(default_factory=list)
    """For each file seen going from existing to missing: seconds since its ``created_at``."""
    aged_out_in_progress: int = 0

    @property
    def file_removed(self) -> int:
        return len(self.file_removed_ages)


@dataclass(frozen=True, slots=True)
class Memory:
    """What the exporter remembers of one target between polls."""

    records: Mapping[str, Download]
    poll_started: float
    """When the poll that produced ``records`` began (for durations of new terminal items)."""


@dataclass(frozen=True, slots=True)
class Reconciled:
    memory: Memory
    events: Events
    current: list[Download]
    """The downloads of this poll, with stale items replaced by the newer record held."""


def _camera_sort_key(camera: str) -> tuple[int, int, str]:
    return (0, int(camera), "") if camera.isdigit() else (1, 0, camera)


def aggregate(
    downloads: Iterable[Download], *, per_camera: bool = False, max_cameras: int = 500
) -> Snapshot:
    """Count downloads by label set; cameras beyond ``max_cameras`` (by id) go to ``other``."""
    return run_steps(aggregate_steps(downloads, per_camera=per_camera, max_cameras=max_cameras))


def aggregate_steps(
    downloads: Iterable[Download], *, per_camera: bool = False, max_cameras: int = 500
) -> Steps[Snapshot]:
    """:func:`aggregate`, pausing every :data:`STEP` downloads (counted in C, chunk by chunk)."""
    counts: Counter[tuple[str, str, str]] = Counter()
    cameras: Counter[tuple[str, str]] = Counter()
    oldest_in_progress = math.inf
    newest = -math.inf
    size = 0
    items = iter(downloads)
    while chunk := list(islice(items, STEP)):
        size += len(chunk)
        counts.update(map(_labels, chunk))
        newest = max(newest, *map(_created, chunk))
        oldest_in_progress = min(
            oldest_in_progress,
            min((i.created_at for i in chunk if i.status == IN_PROGRESS), default=math.inf),
        )
        if per_camera:
            cameras.update((i.camera_id or NO_CAMERA, i.status) for i in chunk)
        yield
    for status in DOCUMENTED_STATUSES:
        for stream_type in STREAM_TYPES[:2]:
            for exists in FILE_EXISTS[:2]:
                counts.setdefault((status, stream_type, exists), 0)
    return Snapshot(
        counts=dict(counts),
        oldest_in_progress_created=None if oldest_in_progress == math.inf else oldest_in_progress,
        newest_created=None if newest == -math.inf else newest,
        by_camera=_cap_cameras(cameras, max_cameras) if per_camera else None,
        size=size,
    )


def _cap_cameras(cameras: Counter[tuple[str, str]], max_cameras: int) -> dict[tuple[str, str], int]:
    ids = sorted({camera for camera, _ in cameras}, key=_camera_sort_key)
    kept = set(ids[:max_cameras])
    result: dict[tuple[str, str], int] = {}
    for camera in kept:
        for status in DOCUMENTED_STATUSES:
            result[(camera, status)] = 0
    for (camera, status), count in cameras.items():
        key = (camera if camera in kept else OTHER_CAMERAS, status)
        result[key] = result.get(key, 0) + count
    return result


def _duration(item: Download, seen_at: float) -> float:
    end = seen_at if item.updated_at is None else min(item.updated_at, seen_at)
    return max(0.0, end - item.created_at)


def finish_order(item: Download) -> tuple[float, str]:
    """Sort key of finishes, latest last: ``updated_at`` (else ``created_at``), then id."""
    return (item.created_at if item.updated_at is None else item.updated_at, item.id)


def _finished(events: Events, item: Download) -> None:
    """Count one finish and keep it if it is the latest of its status."""
    events.finished[item.status] += 1
    latest = events.latest_finished.get(item.status)
    if latest is None or finish_order(item) > finish_order(latest):
        events.latest_finished[item.status] = item


def reconcile(
    memory: Memory | None,
    downloads: Iterable[Download],
    *,
    poll_started: float,
    window_start: float,
    seen_at: float,
) -> Reconciled:
    """Merge one finished poll into what is remembered and derive its events.

    ``downloads`` must already be limited to the window and free of duplicate ids.
    ``memory`` is None for the baseline poll.
    """
    return run_steps(
        reconcile_steps(
            memory,
            downloads,
            poll_started=poll_started,
            window_start=window_start,
            seen_at=seen_at,
        )
    )


def reconcile_steps(
    memory: Memory | None,
    downloads: Iterable[Download],
    *,
    poll_started: float,
    window_start: float,
    seen_at: float,
) -> Steps[Reconciled]:
    """:func:`reconcile`, pausing every :data:`STEP` downloads."""
    events = Events()
    if memory is None:
        current: list[Download] = []
        records: dict[str, Download] = {}
        items = iter(downloads)
        while chunk := list(islice(items, STEP)):
            current += chunk
            records.update(zip(map(_ident, chunk), chunk, strict=True))
            yield
        return Reconciled(Memory(records, poll_started), events, current)

    old = memory.records
    records = {}
    current = []
    for item in downloads:
        if not len(current) % STEP:
            yield
        held = old.get(item.id)
        if held == item:  # unchanged since the last poll: most of a window
            records[item.id] = item
            current.append(item)
            continue
        if held is None:
            events.created[item.stream_type] += 1
            if item.status in TERMINAL_STATUSES:
                _finished(events, item)
                if item.created_at >= memory.poll_started:
                    events.durations.append((item.status, _duration(item, seen_at), item))
        elif (
            item.updated_at is not None
            and held.updated_at is not None
            and item.updated_at < held.updated_at
        ):
            item = held
        else:
            if item.status != held.status and item.status in TERMINAL_STATUSES:
                _finished(events, item)
                events.durations.append((item.status, _duration(item, seen_at), item))
            if (
                item.status == COMPLETED
                and held.file_exists == "true"
                and item.file_exists == "false"
            ):
                events.file_removed_ages.append(max(0.0, seen_at - item.created_at))
        records[item.id] = item
        current.append(item)

    yield
    # Held, but not in this poll: a scan in steps (a set difference of two whole windows
    # would hold the loop for tens of milliseconds).
    held_ids = iter(old)
    while chunk_ids := list(islice(held_ids, STEP)):
        for ident in chunk_ids:
            if ident in records:
                continue
            held = old[ident]
            if held.created_at < window_start:
                if held.status == IN_PROGRESS:
                    events.aged_out_in_progress += 1
                continue
            records[ident] = held
        yield
    return Reconciled(Memory(records, poll_started), events, current)
