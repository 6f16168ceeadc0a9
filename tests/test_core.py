"""The pure core: window snapshots and events, as plain function calls."""

from __future__ import annotations

from exporter.core import (
    STEP,
    Memory,
    aggregate,
    aggregate_steps,
    reconcile,
    reconcile_steps,
    run_steps,
)
from exporter.vms.models import Download
from tests.builders import T0, rec, run_counting_pauses

HOUR = 3600.0
LOOKBACK = 24 * HOUR


def poll(
    memory: Memory | None, items: list[Download], at: float
) -> tuple[Memory, dict[str, object]]:
    """Reconcile a poll that started at ``at`` and finished 5 s later."""
    out = reconcile(memory, items, poll_started=at, window_start=at - LOOKBACK, seen_at=at + 5)
    e = out.events
    summary: dict[str, object] = {
        "created": dict(e.created),
        "finished": dict(e.finished),
        "durations": [(status, seconds) for status, seconds, _ in e.durations],
        "removed": e.file_removed,
        "aged_out": e.aged_out_in_progress,
    }
    return out.memory, summary


QUIET = {"created": {}, "finished": {}, "durations": [], "removed": 0, "aged_out": 0}


def test_aggregate_counts_every_documented_combination() -> None:
    snap = aggregate(
        [
            rec(1, "in_progress", created=T0 - 50),
            rec(2, "completed", stream="low", created=T0 - 10),
            rec(3, "failed", exists="false", created=T0 - 100),
            rec(4, "other", stream="unknown", exists="unknown", created=T0 - 1),
        ]
    )
    assert len([k for k in snap.counts if k[0] != "other"]) == 12
    assert snap.counts[("in_progress", "high", "true")] == 1
    assert snap.counts[("completed", "low", "true")] == 1
    assert snap.counts[("failed", "high", "false")] == 1
    assert snap.counts[("other", "unknown", "unknown")] == 1
    assert snap.counts[("completed", "high", "false")] == 0
    assert snap.oldest_in_progress_created == T0 - 50
    assert snap.newest_created == T0 - 1
    assert snap.size == 4
    assert snap.by_camera is None


def test_aggregate_of_an_empty_window() -> None:
    snap = aggregate([])
    assert sum(snap.counts.values()) == 0 and len(snap.counts) == 12
    assert snap.oldest_in_progress_created is None
    assert snap.newest_created is None


def test_per_camera_keeps_lowest_ids_and_sums_the_rest() -> None:
    items = [rec(i, camera=str(c)) for i, c in enumerate([10, 2, 33, 2, 100, 7])]
    items.append(rec(99, "failed", camera=None))
    snap = aggregate(items, per_camera=True, max_cameras=3)
    assert snap.by_camera is not None
    kept = {camera for camera, _ in snap.by_camera}
    assert kept == {"2", "7", "10", "other"}  # numeric order, not rank
    assert snap.by_camera[("2", "in_progress")] == 2
    assert snap.by_camera[("2", "failed")] == 0
    assert snap.by_camera[("other", "in_progress")] == 2  # cameras 33 and 100
    assert snap.by_camera[("other", "failed")] == 1  # no camera id


def test_baseline_counts_nothing() -> None:
    memory, events = poll(None, [rec(1), rec(2, "completed"), rec(3, "failed")], T0)
    assert events == QUIET
    assert set(memory.records) == {"1", "2", "3"}


def test_new_downloads_count_as_created_and_finished() -> None:
    memory, _ = poll(None, [rec(1)], T0)
    later = T0 + 60
    items = [
        rec(1),
        rec(2, created=later - 30, stream="low"),
        rec(3, "completed", created=later - 20, updated=later - 5),
        rec(4, "failed", created=T0 - 600),
    ]  # created before the previous poll began
    _, events = poll(memory, items, later)
    assert events["created"] == {"low": 1, "high": 2}
    assert events["finished"] == {"completed": 1, "failed": 1}
    # a duration only for the one created after the previous poll began
    assert events["durations"] == [("completed", 15.0)]


def test_the_latest_finish_of_each_status_is_kept_with_each_duration() -> None:
    memory, _ = poll(None, [rec(1, created=T0 - 100), rec(2, created=T0 - 100)], T0)
    items = [
        rec(1, "failed", created=T0 - 100, updated=T0 + 30, camera="7"),
        rec(2, "failed", created=T0 - 100, updated=T0 + 20, camera="8"),
        rec(3, "completed", created=T0 + 10, updated=T0 + 40),
    ]
    out = reconcile(
        memory, items, poll_started=T0 + 60, window_start=T0 - LOOKBACK, seen_at=T0 + 65
    )
    latest = out.events.latest_finished
    assert (latest["failed"].id, latest["failed"].camera_id) == ("1", "7")
    assert latest["completed"].id == "3"
    assert sorted((s, d.id) for s, _, d in out.events.durations) == [
        ("completed", "3"),
        ("failed", "1"),
        ("failed", "2"),
    ]


def test_transition_to_terminal_counts_once_with_duration() -> None:
    memory, _ = poll(None, [rec(1, created=T0 - 100)], T0)
    done = rec(1, "completed", created=T0 - 100, updated=T0 + 20)
    memory, events = poll(memory, [done], T0 + 60)
    assert events["finished"] == {"completed": 1}
    assert events["durations"] == [("completed", 120.0)]
    _, events = poll(memory, [done], T0 + 120)
    assert events == QUIET


def test_duration_uses_seen_time_when_updated_at_is_later_or_missing() -> None:
    memory, _ = poll(None, [rec(1, created=T0 - 100)], T0)
    future = rec(1, "failed", created=T0 - 100, updated=T0 + 10_000)
    _, events = poll(memory, [future], T0 + 60)
    assert events["durations"] == [("failed", 165.0)]  # seen at T0 + 65
    memory, _ = poll(None, [rec(2, created=T0 + 100)], T0)
    skewed = Download("2", "completed", "high", "true", T0 + 100, None, None)
    _, events = poll(memory, [skewed], T0 + 60)
    assert events["durations"] == [("completed", 0.0)]  # floored at 0


def test_missing_from_one_poll_then_back_is_not_new() -> None:
    memory, _ = poll(None, [rec(1), rec(2)], T0)
    memory, events = poll(memory, [rec(1)], T0 + 60)
    assert events == QUIET
    assert "2" in memory.records
    _, events = poll(memory, [rec(1), rec(2)], T0 + 120)
    assert events == QUIET


def test_stale_updated_at_is_ignored() -> None:
    memory, _ = poll(None, [rec(1, "completed", updated=T0 + 50)], T0)
    stale = rec(1, "in_progress", updated=T0 + 10)
    memory, events = poll(memory, [stale], T0 + 60)
    assert events == QUIET
    assert memory.records["1"].status == "completed"
    # and the window shows the newer record, not the stale one
    out = reconcile(
        memory, [stale], poll_started=T0 + 120, window_start=T0 - LOOKBACK, seen_at=T0 + 125
    )
    assert aggregate(out.current).counts[("completed", "high", "true")] == 1


def test_reentry_into_a_terminal_status_counts_again() -> None:
    memory, _ = poll(None, [rec(1, "failed", updated=T0)], T0)
    memory, events = poll(memory, [rec(1, "in_progress", updated=T0 + 10)], T0 + 60)
    assert events == QUIET
    _, events = poll(memory, [rec(1, "completed", updated=T0 + 70)], T0 + 120)
    assert events["finished"] == {"completed": 1}


def test_terminal_to_other_terminal_counts() -> None:
    memory, _ = poll(None, [rec(1, "completed", updated=T0)], T0)
    _, events = poll(memory, [rec(1, "failed", updated=T0 + 30)], T0 + 60)
    assert events["finished"] == {"failed": 1}


def test_forgotten_only_by_age_and_aged_out_in_progress_counted() -> None:
    memory, _ = poll(
        None,
        [
            rec(1, "in_progress", created=T0 - LOOKBACK + 30),
            rec(2, "completed", created=T0 - LOOKBACK + 30),
            rec(3, "in_progress", created=T0 - 60),
        ],
        T0,
    )
    memory, events = poll(memory, [rec(3, created=T0 - 60)], T0 + 60)
    assert set(memory.records) == {"3"}
    assert events["aged_out"] == 1
    assert events["created"] == {}


def test_file_removal_of_completed_download() -> None:
    memory, _ = poll(None, [rec(1, "completed"), rec(2, "failed"), rec(3, "completed")], T0)
    _, events = poll(
        memory,
        [
            rec(1, "completed", exists="false", updated=T0 + 30),
            rec(2, "failed", exists="false", updated=T0 + 30),  # not completed: not counted
            rec(3, "completed", exists="unknown", updated=T0 + 30),  # unknown is not missing
        ],
        T0 + 60,
    )
    assert events["removed"] == 1


def test_file_removal_records_how_old_the_download_was() -> None:
    """The age tells retention clean-up (old files) from a lost file (a young one)."""
    items = [rec(1, "completed", created=T0 - 2 * HOUR), rec(2, "completed", created=T0 - 60)]
    memory, _ = poll(None, items, T0)
    out = reconcile(
        memory,
        [
            rec(1, "completed", exists="false", created=T0 - 2 * HOUR, updated=T0 + 30),
            rec(2, "completed", exists="false", created=T0 - 60, updated=T0 + 30),
        ],
        poll_started=T0 + 60,
        window_start=T0 + 60 - LOOKBACK,
        seen_at=T0 + 65,
    )
    assert sorted(out.events.file_removed_ages) == [125.0, 2 * HOUR + 65]
    assert out.events.file_removed == 2


def test_stepwise_forms_pause_and_agree_with_the_one_shot_forms() -> None:
    """A loop can serve scrapes between the pauses; the result is the same either way."""
    first = [rec(i, created=T0 - i) for i in range(3 * STEP)]
    later = [rec(i, "completed", created=T0 - i, updated=T0 + 1) for i in range(0, 3 * STEP, 2)]
    memory, _ = poll(None, first, T0)
    kwargs = {"poll_started": T0 + 60, "window_start": T0 - LOOKBACK, "seen_at": T0 + 65}
    steps = reconcile_steps(memory, later, **kwargs)
    stepped, pauses = run_counting_pauses(steps)
    assert pauses >= 3
    once = reconcile(memory, later, **kwargs)
    assert (stepped.events, stepped.memory, stepped.current) == (
        once.events,
        once.memory,
        once.current,
    )
    assert stepped.events.finished["completed"] == len(later)
    assert run_steps(aggregate_steps(first)) == aggregate(first)
