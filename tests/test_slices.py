"""Incremental polling: the slice plan, and a poller using it against a VMS whose history we write.

``FakeVms`` is the list endpoint's filter in memory (``from``/``to`` read in the
server's zone, both ends inclusive, as the simulator and Laravel's ``between``
do); the same history is polled by an incremental poller and by one with
``full_resync = 0`` and their metrics are compared. The simulator over loopback
is in test_integration.py.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from itertools import pairwise
from zoneinfo import ZoneInfo

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from exporter.config import PollSettings, Settings, TargetSettings
from exporter.core import run_steps
from exporter.metrics import ExporterMetrics
from exporter.poller import PollOutcome, TargetPoller
from exporter.slices import Merged, merge_steps, plan_steps, tile
from exporter.vms.client import Window, WindowResult
from exporter.vms.models import Download
from tests.builders import T0, rec

LOOKBACK = 7200.0
EVENT_FAMILIES = (
    "vms_downloads_created",
    "vms_downloads_finished",
    "vms_downloads_aged_out_in_progress",
    "vms_downloads_export_duration_seconds",
)
WINDOW_FAMILIES = (
    "vms_downloads",
    "vms_downloads_oldest_in_progress_created_timestamp_seconds",
    "vms_downloads_newest_created_timestamp_seconds",
)


class FakeVms:
    """Answers one window (or slice) query from ``items``, as the real filter would."""

    def __init__(self, zone: str = "UTC") -> None:
        self.items: dict[str, Download] = {}
        self.zone = ZoneInfo(zone)
        self.queries: list[tuple[str, str]] = []

    def add(self, *downloads: Download) -> None:
        self.items.update((d.id, d) for d in downloads)

    def change(self, ident: str, **fields: object) -> None:
        self.items[ident] = msgspec.structs.replace(self.items[ident], **fields)

    def local(self, created: float) -> str:
        return datetime.fromtimestamp(created, self.zone).strftime("%Y-%m-%d %H:%M:%S")

    def queried(self, created: float) -> bool:
        """Whether a query since ``queries`` was cleared covered this creation time."""
        return any(low <= self.local(created) <= high for low, high in self.queries)

    async def fetch_window(
        self,
        window: Window,
        known: Mapping[str, Download] | None = None,
        *,
        new_poll: bool = True,
    ) -> WindowResult:
        self.queries.append((window.query_from, window.query_to))
        matched = [
            d
            for d in self.items.values()
            if window.query_from <= self.local(d.created_at) <= window.query_to
        ]
        kept = [d for d in matched if window.keep_from <= d.created_at <= window.keep_to]
        return WindowResult(kept, len(matched), max(1, math.ceil(len(matched) / 100)))


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def poller_on(
    vms: FakeVms, clock: Clock, *, full_resync: float = 300, timezone: str = "UTC"
) -> tuple[TargetPoller, ExporterMetrics]:
    settings = Settings(
        poll=PollSettings(interval=60, timeout=10, lookback=LOOKBACK, full_resync=full_resync),
        targets={
            "t": TargetSettings(
                url="http://127.0.0.1:9", token=SecretStr("x"), request_timeout=5, timezone=timezone
            )
        },
    )
    metrics = ExporterMetrics(process_metrics=False, clock=clock)
    poller = TargetPoller("t", settings.targets["t"], settings, metrics, clock=clock, source=vms)
    return poller, metrics


def samples(metrics: ExporterMetrics, families: tuple[str, ...]) -> dict[tuple[str, str], float]:
    found = {}
    for family in metrics.registry.collect():
        if family.name in families:
            for s in family.samples:
                found[(s.name, str(sorted(s.labels.items())))] = s.value
    return found


def counted(metrics: ExporterMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"target": "t", **labels})


def in_window(metrics: ExporterMetrics, status: str, exists: str = "true") -> float | None:
    labels = {"status": status, "stream_type": "high", "file_exists": exists}
    return counted(metrics, "vms_downloads", **labels)


async def poll(poller: TargetPoller) -> PollOutcome:
    outcome = await poller.poll_once()
    assert outcome.result == "success", outcome.error
    return outcome


def test_slices_tile_the_padded_window_contiguously() -> None:
    window = Window.at(datetime.fromtimestamp(T0 + 125, UTC), LOOKBACK, "Europe/Moscow")
    tiles = tile(window, started=T0 + 125, timezone="Europe/Moscow")
    assert tiles[0].lower == window.query_from
    assert tiles[-1].upper == window.query_to
    assert all(a.upper == b.lower for a, b in pairwise(tiles))
    inner = [t.upper for t in tiles[:-1]]
    assert all(u.endswith(":00") for u in inner)  # whole minutes
    assert inner[-1] == "2026-11-20 15:02:00"  # the last cut at or before now (15:02:05 MSK)
    assert inner[0] == "2026-11-19 13:03:00"  # the first after query_from (13:02:05)
    assert len(inner) == 26 * 60  # cuts from 13:03 on one day to 15:02 the next


def test_slice_bounds_keep_increasing_across_a_dst_change() -> None:
    started = datetime(2026, 10, 25, 2, 30, tzinfo=UTC).timestamp()  # Berlin went 03:00 → 02:00
    window = Window.at(datetime.fromtimestamp(started, UTC), LOOKBACK, "Europe/Berlin")
    tiles = tile(window, started=started, timezone="Europe/Berlin")
    bounds = [tiles[0].lower] + [t.upper for t in tiles]
    assert bounds == sorted(set(bounds))
    assert [t.upper_at for t in tiles] == sorted(t.upper_at for t in tiles)


async def test_a_status_change_inside_a_refetched_slice_is_counted_at_once() -> None:
    vms, clock = FakeVms(), Clock()
    vms.add(rec(1, created=T0 - 3005), rec(2, "completed", created=T0 - 3000, updated=T0 - 2900))
    vms.add(*(rec(10 + n, "completed", created=T0 - 600 * n - 30) for n in range(1, 10)))
    poller, metrics = poller_on(vms, clock)
    assert (await poll(poller)).mode == "full"
    clock.now += 60
    vms.change("1", status="completed", updated_at=T0 + 30)
    vms.queries.clear()
    assert (await poll(poller)).mode == "incremental"
    assert counted(metrics, "vms_downloads_finished_total", status="completed") == 1
    assert counted(metrics, "vms_downloads_export_duration_seconds_count", status="completed") == 1
    assert in_window(metrics, "in_progress") == 0
    assert in_window(metrics, "completed") == 11
    assert vms.queried(T0 - 3005)
    assert not vms.queried(T0 - 2400)
    assert len(vms.queries) == 2  # that slice, and the newest with the one just closed


async def test_a_stuck_export_does_not_force_refetching_the_slices_after_it() -> None:
    vms, clock = FakeVms(), Clock()
    stuck = T0 - 6010
    vms.add(rec("stuck", created=stuck))
    vms.add(*(rec(n, "completed", created=stuck + 300 * n) for n in range(1, 19)))
    poller, _ = poller_on(vms, clock)
    await poll(poller)
    full_queries = len(vms.queries)
    for _ in range(3):
        clock.now += 60
        vms.queries.clear()
        await poll(poller)
        assert vms.queried(stuck)
        assert not any(vms.queried(stuck + 300 * n) for n in range(1, 19))
        assert len(vms.queries) == 2  # the stuck export's slice, and the newest ones
    assert full_queries == 1  # the baseline asks for the whole window at once


async def test_items_leaving_the_window_age_out_as_in_a_full_poll() -> None:
    vms, clock = FakeVms(), Clock()
    vms.add(rec("stuck", created=T0 - LOOKBACK + 90))
    vms.add(rec("old", "completed", created=T0 - LOOKBACK + 150))
    vms.add(rec("young", "completed", created=T0 - 600))
    cheap, cheap_metrics = poller_on(vms, clock)
    full, full_metrics = poller_on(vms, clock, full_resync=0)
    await poll(cheap)
    await poll(full)
    modes = []
    for _ in range(4):
        clock.now += 60
        modes.append((await poll(cheap)).mode)
        await poll(full)
        assert samples(cheap_metrics, WINDOW_FAMILIES) == samples(full_metrics, WINDOW_FAMILIES)
        assert samples(cheap_metrics, EVENT_FAMILIES) == samples(full_metrics, EVENT_FAMILIES)
    assert modes == ["incremental"] * 4
    assert counted(cheap_metrics, "vms_downloads_aged_out_in_progress_total") == 1
    assert in_window(cheap_metrics, "completed") == 1
    assert in_window(cheap_metrics, "in_progress") == 0


async def test_a_full_rescan_repairs_a_file_removed_from_an_old_finished_export() -> None:
    vms, clock = FakeVms(), Clock()
    vms.add(rec(1, "completed", created=T0 - 3600, updated=T0 - 3500))
    poller, metrics = poller_on(vms, clock, full_resync=300)
    await poll(poller)
    vms.change("1", file_exists="false", updated_at=T0 + 10)
    modes = []
    for _ in range(5):
        clock.now += 60
        modes.append((await poll(poller)).mode)
        if modes[-1] == "incremental":  # nothing looked at that slice: the old state stays
            assert counted(metrics, "vms_downloads_file_removed_total") == 0
            assert in_window(metrics, "completed") == 1
    assert modes == ["incremental"] * 4 + ["full"]
    assert counted(metrics, "vms_downloads_file_removed_total") == 1
    assert in_window(metrics, "completed", exists="false") == 1
    assert in_window(metrics, "completed") == 0


async def test_full_rescans_are_never_further_apart_than_full_resync() -> None:
    vms, clock = FakeVms(), Clock()
    vms.add(rec(1, "completed", created=T0 - 3600))
    poller, _ = poller_on(vms, clock, full_resync=150)  # polls every 60 s
    modes = []
    for _ in range(6):
        modes.append((await poll(poller)).mode)
        clock.now += 60 + 0.2  # a schedule that runs a little late
    assert modes == ["full", "incremental"] * 3


async def test_a_download_deleted_from_a_refetched_slice_leaves_the_window_gauges() -> None:
    vms, clock = FakeVms(), Clock()
    vms.add(rec(1, created=T0 - 3000), rec(2, created=T0 - 2990))
    poller, metrics = poller_on(vms, clock)
    await poll(poller)
    del vms.items["2"]
    clock.now += 60
    assert (await poll(poller)).mode == "incremental"
    assert in_window(metrics, "in_progress") == 1
    vms.add(rec(2, created=T0 - 2990))  # back again, in a slice no longer watched
    clock.now += 60
    assert (await poll(poller)).mode == "incremental"
    assert in_window(metrics, "in_progress") == 1
    clock.now += 180
    assert (await poll(poller)).mode == "full"  # the re-scan finds it, and it is not new
    assert in_window(metrics, "in_progress") == 2
    assert counted(metrics, "vms_downloads_created_total", stream_type="high") == 0


async def test_a_download_on_a_slice_boundary_is_counted_once() -> None:
    vms, clock = FakeVms(), Clock()
    boundary = datetime(2026, 11, 20, 11, 0, tzinfo=UTC).timestamp()
    vms.add(rec(1, created=boundary))
    poller, metrics = poller_on(vms, clock)
    await poll(poller)
    clock.now += 60
    vms.add(rec(2, "failed", created=T0 + 30))
    vms.change("1", status="completed", updated_at=T0 + 40)
    await poll(poller)
    assert in_window(metrics, "completed") == 1
    assert counted(metrics, "vms_downloads_finished_total", status="completed") == 1
    assert counted(metrics, "vms_downloads_finished_total", status="failed") == 1
    assert counted(metrics, "vms_downloads_created_total", stream_type="high") == 1


# --- the property: over any history, the same events as polling the whole window every time ---

STATUSES = ("in_progress", "completed", "failed", "other")
initial_items = st.lists(
    st.tuples(
        st.floats(0, LOOKBACK + 1800), st.sampled_from(STATUSES), st.booleans(), st.booleans()
    ),
    max_size=40,
)
actions = st.lists(
    st.tuples(
        st.sampled_from(("create", "finish", "remove_file", "delete")),
        st.integers(0, 10_000),
        st.sampled_from(STATUSES),
    ),
    max_size=6,
)
steps = st.lists(st.tuples(st.integers(1, 150), actions), min_size=1, max_size=25)


def apply(
    vms: FakeVms, now: float, gap: int, action: tuple[str, int, str], serial: int, stays: float
) -> None:
    """One change on the VMS; files are removed only from downloads created after ``stays``."""
    kind, pick, status = action
    items = sorted(vms.items.values(), key=lambda d: d.id)
    if kind == "create":  # arrives after the previous poll, as the VMS stamps it
        created = now - pick % gap
        vms.add(rec(f"n{serial}", status, created=created, updated=created))
        return
    candidates = {
        "finish": [d for d in items if d.status in ("in_progress", "other")],
        # A file removed from a download that leaves the window before the next full re-scan
        # is never seen by incremental polls (README): not part of the property either.
        "remove_file": [
            d
            for d in items
            if d.status == "completed" and d.file_exists == "true" and d.created_at > stays
        ],
        # A removed file whose download is deleted before the next full re-scan is never
        # seen by incremental polls (README): not part of the property.
        "delete": [d for d in items if d.status != "completed" or d.file_exists == "true"],
    }[kind]
    if not candidates:
        return
    chosen = candidates[pick % len(candidates)]
    if kind == "finish":
        final = "failed" if status == "failed" else "completed"
        vms.change(chosen.id, status=final, updated_at=now - pick % gap)
    elif kind == "remove_file":
        vms.change(chosen.id, file_exists="false", updated_at=now)
    else:
        del vms.items[chosen.id]


def history(
    start: list[tuple[float, str, bool, bool]], moves: list[tuple[int, list[tuple[str, int, str]]]]
) -> Iterator[tuple[FakeVms, float, int, list[tuple[str, int, str]]]]:
    """Per poll: the VMS (one, changed in place), the poll time, the gap since the last poll,
    and what happens on the VMS before it."""
    vms = FakeVms("Europe/Moscow")
    for n, (age, status, exists, low) in enumerate(start):
        created = T0 - age
        vms.add(
            rec(
                f"i{n}",
                status,
                created=created,
                updated=created + 1,
                exists="true" if exists else "false",
                stream="low" if low else "high",
            )
        )
    now = T0
    yield vms, now, 0, []
    for gap, todo in moves:
        now += gap
        yield vms, now, gap, todo


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=initial_items, moves=steps, full_resync=st.sampled_from([60, 300, 900]))
def test_incremental_polls_count_the_same_events_as_full_polls(
    start: list[tuple[float, str, bool, bool]],
    moves: list[tuple[int, list[tuple[str, int, str]]]],
    full_resync: int,
) -> None:
    """Never a double count; finishes, creations and ageing out at the same poll; the rest
    (files removed, deletions in finished slices) caught up by every full re-scan."""

    async def run() -> None:
        clock = Clock()
        pollers: dict[str, tuple[TargetPoller, ExporterMetrics]] = {}
        serial = 0
        for vms, now, gap, todo in history(start, moves):
            for action in todo:
                serial += 1
                stays = now - LOOKBACK + full_resync + 150
                apply(vms, now - 1, max(gap - 1, 1), action, serial, stays)
            clock.now = now
            if not pollers:
                pollers["cheap"] = poller_on(
                    vms, clock, full_resync=full_resync, timezone=vms.zone.key
                )
                pollers["full"] = poller_on(vms, clock, full_resync=0, timezone=vms.zone.key)
            cheap, cheap_metrics = pollers["cheap"]
            full, full_metrics = pollers["full"]
            mode = (await poll(cheap)).mode
            await poll(full)
            assert samples(cheap_metrics, EVENT_FAMILIES) == samples(full_metrics, EVENT_FAMILIES)
            removed = [
                counted(m, "vms_downloads_file_removed_total")
                for m in (cheap_metrics, full_metrics)
            ]
            assert removed[0] is not None and removed[1] is not None
            assert removed[0] <= removed[1]
            if mode == "full":
                assert removed[0] == removed[1]
                assert samples(cheap_metrics, WINDOW_FAMILIES) == samples(
                    full_metrics, WINDOW_FAMILIES
                )

    asyncio.run(run())


def test_planning_and_merging_pause_for_the_loop_on_a_large_window() -> None:
    """Scrapes are served between steps: 12,000 remembered downloads take several pauses."""
    window = Window.at(datetime.fromtimestamp(T0, UTC), LOOKBACK, "UTC")
    records = {
        str(n): rec(n, "completed", created=window.keep_from + n * 0.5) for n in range(12_000)
    }
    chosen = run_steps(
        plan_steps(
            window,
            started=T0,
            timezone="UTC",
            memory=None,
            records=records,
            full_resync=600,
            interval=60,
        )
    )
    everything = WindowResult(list(records.values()), len(records), 120)
    steps = merge_steps(
        chosen,
        window,
        started=T0,
        timezone="UTC",
        memory=None,
        records=records,
        results=[everything],
    )
    pauses = 0
    while True:
        try:
            next(steps)
            pauses += 1
        except StopIteration as done:
            merged: Merged = done.value
            break
    assert pauses >= 2
    assert len(merged.downloads) == 12_000
    later = plan_steps(
        window,
        started=T0 + 60,
        timezone="UTC",
        memory=merged.memory,
        records=records,
        full_resync=600,
        interval=60,
    )
    assert sum(1 for _ in later) >= 2
