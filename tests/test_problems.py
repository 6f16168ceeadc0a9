"""Choosing the downloads that need a person, as plain function calls."""

from __future__ import annotations

import re

import pytest

from exporter.problems import LIMIT, entry, find_problems, stuck_after
from exporter.vms.models import Download, with_details
from tests.builders import T0, rec
from tests.promql_names import load_rules

HOUR = 3600.0


def ids(records: list[Download]) -> list[str]:
    return [r.id for r in records]


def test_each_kind_newest_first() -> None:
    records = [
        rec(1, "failed", created=T0 - 3 * HOUR),
        rec(2, "failed", created=T0 - 1 * HOUR),
        rec(3, "in_progress", created=T0 - 3 * HOUR),  # stuck
        rec(4, "in_progress", created=T0 - 1 * HOUR),  # not yet
        rec(5, "completed", exists="false", created=T0 - 2 * HOUR),
        rec(6, "completed", exists="true", created=T0 - 2 * HOUR),
        rec(7, "completed", exists="unknown", created=T0 - 2 * HOUR),
        rec(8, "other", created=T0 - 9 * HOUR),
    ]
    found = find_problems(records, now=T0, lookback=24 * HOUR)
    assert {k: ids(v) for k, v in found.shown.items()} == {
        "failed": ["2", "1"],
        "stuck": ["3"],
        "file_missing": ["5"],
    }
    assert found.total == {"failed": 2, "stuck": 1, "file_missing": 1}


@pytest.mark.parametrize(("lookback", "threshold"), [(24 * HOUR, 2 * HOUR), (HOUR, 1800.0)])
def test_stuck_threshold_is_the_alerts(lookback: float, threshold: float) -> None:
    assert stuck_after(lookback) == threshold
    just_under = rec(1, created=T0 - threshold + 1)
    just_over = rec(2, created=T0 - threshold - 1)
    found = find_problems([just_under, just_over], now=T0, lookback=lookback)
    assert ids(found.shown["stuck"]) == ["2"]


def test_the_threshold_matches_the_stuck_alert() -> None:
    (stuck,) = [r for r in load_rules() if r.name == "VmsDownloadsExportStuck"]
    expr = re.sub(r"\s+", " ", stuck.expr)
    assert re.search(r"clamp_max\(.*vms_exporter_lookback_seconds.*\) / 2, 7200\)", expr), expr


def test_bounded_per_kind_keeping_the_newest() -> None:
    records = [rec(i, "failed", created=T0 - i) for i in range(LIMIT + 50)]
    found = find_problems(records, now=T0, lookback=24 * HOUR)
    assert ids(found.shown["failed"]) == [str(i) for i in range(LIMIT)]
    assert found.total["failed"] == LIMIT + 50


def test_entry_in_rfc3339_with_age_and_details_only_when_kept() -> None:
    plain = rec(6414, "failed", created=T0 - 90, updated=None, camera=None)
    assert entry(plain, T0) == {
        "id": "6414",
        "status": "failed",
        "camera_id": None,
        "stream_type": "high",
        "file_exists": "true",
        "created_at": "2026-11-20T11:58:30Z",
        "updated_at": "2026-11-20T11:58:30Z",
        "age_seconds": 90,
    }
    base = rec(6415, "failed", created=T0 - 90, updated=T0 - 30)
    detailed = with_details(base, "ул. Улица 1", "user@mail.com")
    shown = entry(detailed, T0)
    assert shown["updated_at"] == "2026-11-20T11:59:30Z"
    assert (shown["name"], shown["login"]) == ("ул. Улица 1", "user@mail.com")
