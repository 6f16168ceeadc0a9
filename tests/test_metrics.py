"""The exposition itself, parsed back with prometheus_client's parser."""

from __future__ import annotations

import json
import logging
import platform
import threading

from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from exporter import __version__
from exporter.core import Events, aggregate
from exporter.exposition import Renderer
from exporter.logs import JsonFormatter, LogfmtFormatter
from exporter.metrics import ExporterMetrics
from exporter.vms.errors import POLL_RESULTS
from tests.builders import T0, rec
from tests.exporter_harness import parse_exemplars, parse_metrics, value
from tests.promql_names import contract_metrics


def metrics_at(now: list[float], **kwargs: object) -> ExporterMetrics:
    m = ExporterMetrics(clock=lambda: now[0], process_metrics=False, **kwargs)  # type: ignore[arg-type]
    m.add_target("a", 86400, 60)
    return m


def test_every_label_set_exists_from_the_start() -> None:
    samples = parse_metrics(generate_latest(metrics_at([T0]).registry).decode())
    for result in POLL_RESULTS:
        assert value(samples, "vms_exporter_polls_total", target="a", result=result) == 0
    for reason in ("no_id", "bad_created_at", "not_an_object"):
        assert value(samples, "vms_exporter_items_invalid_total", target="a", reason=reason) == 0
    for status in ("completed", "failed"):
        assert value(samples, "vms_downloads_finished_total", target="a", status=status) == 0
        assert (
            value(samples, "vms_downloads_export_duration_seconds_count", target="a", status=status)
            == 0
        )
    for stream in ("high", "low", "unknown"):
        assert value(samples, "vms_downloads_created_total", target="a", stream_type=stream) == 0
    assert value(samples, "vms_downloads_file_removed_total", target="a") == 0
    assert value(samples, "vms_downloads_file_removed_age_seconds_count", target="a") == 0
    assert value(samples, "vms_downloads_aged_out_in_progress_total", target="a") == 0
    assert value(samples, "vms_up", target="a") == 0
    assert value(samples, "vms_exporter_poll_interval_seconds", target="a") == 60
    for code in ("200", "401", "429", "500", "error"):
        assert value(samples, "vms_exporter_api_requests_total", target="a", code=code) == 0
    for mode in ("full", "incremental"):
        assert value(samples, "vms_exporter_poll_api_requests_count", target="a", mode=mode) == 0
    assert (
        value(
            samples,
            "vms_exporter_build_info",
            version=__version__,
            python_version=platform.python_version(),
        )
        == 1
    )
    # nothing of the window before the first successful poll
    assert not [
        k
        for k in samples
        if k[0].startswith("vms_downloads") and k[0].endswith("_seconds") and "duration" not in k[0]
    ]
    assert not [k for k in samples if k[0] == "vms_downloads"]
    assert not [k for k in samples if k[0].endswith("_created")]


def report_events(m: ExporterMetrics, events: Events) -> None:
    """A poll of target ``a`` that ended at T0 with an empty window and ``events``."""
    m.poll_succeeded(
        "a",
        snapshot=aggregate([]),
        events=events,
        duration=0.3,
        finished_at=T0,
        reported_total=0,
        invalid={},
    )


def test_histogram_buckets_are_the_contracts() -> None:
    m = metrics_at([T0])
    events = Events(
        durations=[("completed", 45.0, rec(1, "completed")), ("failed", 90000.0, rec(2, "failed"))]
    )
    report_events(m, events)
    samples = parse_metrics(generate_latest(m.registry).decode())
    buckets = sorted(
        float(dict(labels)["le"])
        for (name, labels) in samples
        if name == "vms_downloads_export_duration_seconds_bucket"
        and ("status", "completed") in labels
    )
    assert buckets[:-1] == [10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400]
    assert (
        value(
            samples,
            "vms_downloads_export_duration_seconds_bucket",
            target="a",
            status="completed",
            le="60.0",
        )
        == 1
    )
    assert (
        value(
            samples,
            "vms_downloads_export_duration_seconds_bucket",
            target="a",
            status="failed",
            le="86400.0",
        )
        == 0
    )
    poll_buckets = [
        float(dict(labels)["le"])
        for (name, labels) in samples
        if name == "vms_exporter_poll_duration_seconds_bucket"
    ]
    assert min(poll_buckets) == 0.05 and max(b for b in poll_buckets if b != float("inf")) == 120


def test_finishes_carry_exemplars_in_openmetrics_only() -> None:
    m = metrics_at([T0])
    first = rec(7, "failed", created=T0 - 100, updated=T0 - 50, camera="3")
    latest = rec(8, "failed", created=T0 - 100, updated=T0 - 40, camera=None)
    events = Events(
        durations=[("failed", 60.0, latest), ("failed", 50.0, first)],
        latest_finished={"failed": latest},
    )
    events.finished["failed"] += 2
    report_events(m, events)
    exposition = generate_openmetrics(m.registry).decode()  # type: ignore[no-untyped-call]
    assert parse_exemplars(exposition) == {
        ("vms_downloads_finished_total", frozenset({("target", "a"), ("status", "failed")})): {
            "download_id": "8"
        },
        # both fall into the 60 s bucket: the latest finish is its exemplar
        (
            "vms_downloads_export_duration_seconds_bucket",
            frozenset({("target", "a"), ("status", "failed"), ("le", "60.0")}),
        ): {"download_id": "8"},
    }
    text = generate_latest(m.registry).decode()
    assert "download_id" not in text and " # {" not in text
    assert (
        value(parse_metrics(text), "vms_downloads_finished_total", target="a", status="failed") == 2
    )


def test_window_is_dropped_after_max_staleness_but_counters_stay() -> None:
    now = [T0]
    m = metrics_at(now, max_staleness=600.0)
    m.poll_succeeded(
        "a",
        snapshot=aggregate([rec(1, created=T0 - 5)]),
        events=Events(file_removed_ages=[1800.0, 5 * 86400.0]),
        duration=1,
        finished_at=T0,
        reported_total=1,
        invalid={"no_id": 3},
    )
    m.poll_failed("a", result="timeout", duration=45)
    now[0] = T0 + 599
    samples = parse_metrics(generate_latest(m.registry).decode())
    assert (
        value(
            samples,
            "vms_downloads",
            target="a",
            status="in_progress",
            stream_type="high",
            file_exists="true",
        )
        == 1
    )
    assert value(samples, "vms_up", target="a") == 0
    now[0] = T0 + 601
    samples = parse_metrics(generate_latest(m.registry).decode())
    assert not [k for k in samples if k[0] == "vms_downloads"]
    assert value(samples, "vms_downloads_file_removed_total", target="a") == 2
    age = "vms_downloads_file_removed_age_seconds_bucket"
    assert value(samples, age, target="a", le="3600.0") == 1
    assert value(samples, age, target="a", le="259200.0") == 1  # 5 d is above 3 d
    assert value(samples, age, target="a", le="604800.0") == 2
    assert value(samples, age, target="a", le="+Inf") == 2
    assert value(samples, "vms_exporter_items_invalid_total", target="a", reason="no_id") == 3
    assert value(samples, "vms_exporter_last_poll_success_timestamp_seconds", target="a") == T0


def test_per_camera_family_only_when_enabled() -> None:
    plain = generate_latest(metrics_at([T0]).registry).decode()
    assert "vms_downloads_by_camera" not in plain
    m = metrics_at([T0], per_camera=True)
    m.poll_succeeded(
        "a",
        snapshot=aggregate([rec(1)], per_camera=True),
        events=Events(),
        duration=1,
        finished_at=T0,
        reported_total=1,
        invalid={},
    )
    samples = parse_metrics(generate_latest(m.registry).decode())
    assert (
        value(samples, "vms_downloads_by_camera", target="a", camera_id="1", status="in_progress")
        == 1
    )


def test_exposition_matches_the_readme_tables() -> None:
    """Every vms_* family exposed is documented in the README with its type and labels, and
    every documented one is exposed (after a successful poll, with per-camera on)."""
    m = metrics_at([T0], per_camera=True)
    m.poll_succeeded(
        "a",
        snapshot=aggregate([rec(1), rec(2, status="completed")], per_camera=True),
        events=Events(),
        duration=1,
        finished_at=T0,
        reported_total=2,
        invalid={},
    )
    exposed: dict[str, tuple[str, frozenset[str]]] = {}
    for family in text_string_to_metric_families(generate_latest(m.registry).decode()):
        if family.name.startswith("vms_"):
            labels = {k for s in family.samples for k in s.labels} - {"le"}
            name = family.name + ("_total" if family.type == "counter" else "")
            exposed[name] = (family.type, frozenset(labels))
    documented = {name: (metric.type, metric.labels) for name, metric in contract_metrics().items()}
    assert exposed == documented


def test_process_collectors_are_registered() -> None:
    m = ExporterMetrics()
    text = generate_latest(m.registry).decode()
    assert "process_cpu_seconds_total" in text and "python_info" in text


def _record(**extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {
            "name": "exporter.poller",
            "levelno": logging.WARNING,
            "levelname": "WARNING",
            "msg": "poll failed",
        }
    )
    for key, val in extra.items():
        setattr(record, key, val)
    return record


def test_logfmt_and_json_lines() -> None:
    line = LogfmtFormatter().format(_record(target="main", reason='the VMS said "no"'))
    assert 'level=warn logger=exporter.poller msg="poll failed" target=main' in line
    assert 'reason="the VMS said \\"no\\""' in line
    parsed = json.loads(JsonFormatter().format(_record(target="main", result="timeout")))
    assert parsed["level"] == "warn" and parsed["target"] == "main"
    assert parsed["result"] == "timeout" and parsed["msg"] == "poll failed"


def test_renders_in_a_thread_while_polls_end_and_targets_come_and_go() -> None:
    """/metrics renders in a worker thread while the loop changes the metrics."""
    m = ExporterMetrics(per_camera=True, clock=lambda: T0 + 60, process_metrics=False)
    snapshot = aggregate([rec(i, camera=str(i)) for i in range(50)], per_camera=True)
    stop, renderer = threading.Event(), Renderer()
    errors: list[Exception] = []
    renders = 0

    def render() -> None:
        nonlocal renders
        while not stop.is_set():
            try:
                text = renderer.text(m.registry).decode()
                assert list(text_string_to_metric_families(text))
                renders += 1
            except Exception as error:
                errors.append(error)
                return

    worker = threading.Thread(target=render)
    worker.start()
    try:
        for cycle in range(300):
            name = f"t{cycle % 7}"
            m.add_target(name, 3600, 60)
            m.poll_succeeded(
                name,
                snapshot=snapshot,
                events=Events(),
                duration=1,
                finished_at=T0 + 30,
                reported_total=50,
                invalid={},
            )
            if cycle % 3 == 0:
                m.remove_target(name)
    finally:
        stop.set()
        worker.join(30)
    assert not errors
    assert renders > 0
