"""The exporter polling the simulator over real loopback sockets, scraped number by number."""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from prometheus_client import generate_latest
from pydantic import SecretStr

from exporter.cli import serve
from exporter.config import PollSettings, Settings, TargetSettings, WebSettings
from exporter.metrics import ExporterMetrics
from exporter.poller import TargetPoller
from exporter.vms.client import Window
from tests.exporter_harness import (
    Samples,
    exporter_on_simulator,
    parse_exemplars,
    parse_metrics,
    value,
)
from tests.promql_names import exposition_metric_names, unknown_metric_names, used_metric_names
from vms_simulator import SimulatorConfig, start_simulator

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
STATUS = {"in progress": "in_progress", "completed": "completed", "failed": "failed"}


def expected_counts(items: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    counts: Counter[tuple[str, str, str]] = Counter()
    for i in items:
        exists = {True: "true", False: "false"}.get(i["is_file_exists"], "unknown")
        status = STATUS.get(i.get("status") or "", "other")
        counts[(status, i["stream"]["type"], exists)] += 1
    return counts


def window_counts(samples: Samples) -> Counter[tuple[str, str, str]]:
    counts: Counter[tuple[str, str, str]] = Counter()
    for (name, labels), number in samples.items():
        if name == "vms_downloads" and number:
            d = dict(labels)
            counts[(d["status"], d["stream_type"], d["file_exists"])] = int(number)
    return counts


def created_at(item: dict[str, Any]) -> float:
    return datetime.fromisoformat(item["created_at"]).timestamp()


async def test_window_gauges_match_the_simulator_number_by_number() -> None:
    async with exporter_on_simulator() as h:
        outcome = await h.poller.poll_once()
        assert outcome.result == "success", outcome.error
        samples = await h.scrape()
        truth = await h.simulator_items()
        assert window_counts(samples) == expected_counts(truth)
        assert len(truth) > 50
        # every documented combination is present, zeros included
        present = [k for k in samples if k[0] == "vms_downloads"]
        assert len(present) >= 12
        assert value(
            samples, "vms_downloads_newest_created_timestamp_seconds", target="main"
        ) == max(created_at(i) for i in truth)
        in_progress = [created_at(i) for i in truth if i["status"] == "in progress"]
        assert value(
            samples, "vms_downloads_oldest_in_progress_created_timestamp_seconds", target="main"
        ) == min(in_progress)
        assert value(samples, "vms_up", target="main") == 1
        assert value(samples, "vms_exporter_polls_total", target="main", result="success") == 1
        assert value(samples, "vms_exporter_lookback_seconds", target="main") == 86400
        assert (
            value(samples, "vms_exporter_api_requests_total", target="main", code="200")
            == outcome.pages
        )
        # the baseline counts nothing
        assert value(samples, "vms_downloads_created_total", target="main", stream_type="high") == 0


async def test_a_utc_window_against_a_moscow_server_loses_the_newest_hours() -> None:
    sim = SimulatorConfig(
        downloads=400, seed=3, arrival_interval=0, server_timezone="Europe/Moscow"
    )
    async with exporter_on_simulator(sim, timezone="Europe/Moscow") as right:
        await right.poller.poll_once()
        good = sum(window_counts(await right.scrape()).values())
        truth = await right.simulator_items()
    async with exporter_on_simulator(sim, timezone="UTC") as wrong:
        await wrong.poller.poll_once()
        bad = sum(window_counts(await wrong.scrape()).values())
        warning = await wrong.poller.timezone_warning()
    assert good == len(truth)
    assert bad < good  # what a naive UTC window silently loses
    assert warning is not None and "time zone ahead" in warning


async def test_events_between_polls_reach_the_counters() -> None:
    sim = SimulatorConfig(downloads=200, seed=5, arrival_interval=20)
    async with exporter_on_simulator(sim) as h:
        await h.poller.poll_once()
        before = {i["id"]: i for i in await h.simulator_items()}
        h.clock.advance(900)
        await h.poller.poll_once()
        after = {i["id"]: i for i in await h.simulator_items()}
        samples = await h.scrape()
    new = [i for k, i in after.items() if k not in before]
    finished = Counter(
        i["status"]
        for k, i in after.items()
        if i["status"] in ("completed", "failed")
        and (k not in before or before[k]["status"] != i["status"])
    )
    removed = sum(
        1
        for k, i in after.items()
        if k in before
        and i["status"] == "completed"
        and before[k]["is_file_exists"] is True
        and i["is_file_exists"] is False
    )
    assert new, "the simulator should have created downloads in 15 minutes"
    created = sum(
        value(samples, "vms_downloads_created_total", target="main", stream_type=s) or 0
        for s in ("high", "low", "unknown")
    )
    assert created == len(new)
    for status in ("completed", "failed"):
        assert (
            value(samples, "vms_downloads_finished_total", target="main", status=status)
            == finished[status]
        )
    assert value(samples, "vms_downloads_file_removed_total", target="main") == removed
    observed = sum(
        value(samples, "vms_downloads_export_duration_seconds_count", target="main", status=s) or 0
        for s in ("completed", "failed")
    )
    assert 0 < observed <= sum(finished.values())


async def test_openmetrics_scrape_names_the_latest_failed_export() -> None:
    sim = SimulatorConfig(downloads=100, seed=3, arrival_interval=30, fail_ratio=0)
    async with exporter_on_simulator(sim) as h:
        await h.poller.poll_once()
        await h.sim_faults(fail_new_exports=True)
        h.clock.advance(600)
        await h.poller.poll_once()
        failed = [i for i in await h.simulator_items() if i["status"] == "failed"]
        _, text, headers = await h.get("/metrics", Accept=OPENMETRICS)
        _, plain, _ = await h.get("/metrics")
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert failed, "the simulator should have failed the new exports"
    latest = max(failed, key=lambda i: (i["updated_at"], i["id"]))
    exemplars = parse_exemplars(text)
    counter = frozenset({("target", "main"), ("status", "failed")})
    assert exemplars[("vms_downloads_finished_total", counter)] == {
        "download_id": str(latest["id"]),
        "camera_id": str(latest["stream"]["camera_id"]),
    }
    failed_ids = {str(i["id"]) for i in failed}
    durations = [e for (name, _), e in exemplars.items() if name.endswith("_bucket")]
    assert durations and {e["download_id"] for e in durations} <= failed_ids
    assert "download_id" not in plain


async def test_failed_poll_keeps_last_window_then_drops_it_when_stale() -> None:
    async with exporter_on_simulator(poll={"max_staleness": 300}) as h:
        await h.poller.poll_once()
        good = window_counts(await h.scrape())
        await h.sim_faults(error_rate=1.0)
        h.clock.advance(60)
        outcome = await h.poller.poll_once()
        assert outcome.result == "http_error"
        samples = await h.scrape()
        assert value(samples, "vms_up", target="main") == 0
        assert window_counts(samples) == good
        assert value(samples, "vms_exporter_polls_total", target="main", result="http_error") == 1
        assert value(samples, "vms_exporter_api_requests_total", target="main", code="500") == 3
        h.clock.advance(300)
        samples = await h.scrape()
        assert not [k for k in samples if k[0] == "vms_downloads"]
        assert (
            value(samples, "vms_downloads_newest_created_timestamp_seconds", target="main") is None
        )
        await h.sim_faults(error_rate=0.0)
        await h.poller.poll_once()
        assert window_counts(await h.scrape())


@pytest.mark.parametrize(
    ("faults", "result"),
    [
        ({"unauthorized": True}, "unauthorized"),
        ({"truncate_rate": 1.0}, "invalid_response"),
        ({"rate_limit_rate": 1.0, "retry_after": 0}, "limit_exceeded"),
        ({"oversized_body": 64 * 1024}, "limit_exceeded"),
        ({"endless_body": True}, "limit_exceeded"),
    ],
)
async def test_faults_map_to_one_result_each(faults: dict[str, Any], result: str) -> None:
    async with exporter_on_simulator(max_response_size="64KiB") as h:
        await h.sim_faults(**faults)
        outcome = await h.poller.poll_once()
        samples = await h.scrape()
    assert outcome.result == result
    if "body" in "".join(faults):
        assert "max_response_size=65536" in (outcome.error or "")
    assert value(samples, "vms_exporter_polls_total", target="main", result=result) == 1
    assert value(samples, "vms_exporter_polls_total", target="main", result="success") == 0


async def test_downloads_arriving_between_page_reads_never_hide_others() -> None:
    """Downloads created between page reads push items to later pages while four
    pages are in flight and answers overtake each other: every download that
    existed when the poll began is seen."""
    sim = SimulatorConfig(downloads=400, seed=3, arrival_interval=0)
    async with exporter_on_simulator(sim, per_page=20, concurrency=4) as h:
        for _ in range(5):
            before = {str(i["id"]) for i in await h.simulator_items()}
            await h.sim_faults(arrivals_between_pages=12, jitter=0.02)
            start = datetime.fromtimestamp(h.clock(), UTC)
            window = Window.at(start, 86400, sim.server_timezone)
            result = await h.poller.client.fetch_window(window)
            await h.sim_faults(arrivals_between_pages=0)
            assert before <= {d.id for d in result.downloads}
            h.clock.advance(60)


async def test_slow_vms_is_a_timeout_within_the_poll_deadline() -> None:
    async with exporter_on_simulator(poll={"timeout": 1.0}, request_timeout=0.5) as h:
        await h.sim_faults(latency=3.0)
        outcome = await h.poller.poll_once()
    assert outcome.result == "timeout"
    assert outcome.duration < 2.0


async def test_login_mode_logs_in_once_across_polls() -> None:
    async with exporter_on_simulator(
        token=None, login="exporter@example.com", password="demo"
    ) as h:
        for _ in range(4):
            outcome = await h.poller.poll_once()
            assert outcome.result == "success", outcome.error
            h.clock.advance(60)
        stats = await h.sim_stats()
    assert stats["logins"] == 1
    assert stats["requests"]["total"] >= 4


async def test_newer_release_path_without_status() -> None:
    sim = SimulatorConfig(
        downloads=100, seed=2, arrival_interval=0, path="/api/v1/downloads", omit_status=True
    )
    async with exporter_on_simulator(sim, path="/api/v1/downloads") as h:
        outcome = await h.poller.poll_once()
        samples = await h.scrape()
    assert outcome.result == "success"
    other = sum(
        n
        for (name, labels), n in samples.items()
        if name == "vms_downloads" and ("status", "other") in labels
    )
    assert other == outcome.downloads > 0


async def test_per_camera_metric_with_its_cardinality_guard() -> None:
    async with exporter_on_simulator(metrics={"per_camera": True, "max_cameras": 5}) as h:
        await h.poller.poll_once()
        samples = await h.scrape()
    cameras = {
        dict(labels)["camera_id"] for (name, labels) in samples if name == "vms_downloads_by_camera"
    }
    assert len(cameras) == 6 and "other" in cameras
    total = sum(n for (name, _), n in samples.items() if name == "vms_downloads_by_camera")
    assert total == sum(window_counts(samples).values())


async def test_endpoints_ready_healthy_landing_and_negotiation() -> None:
    async with exporter_on_simulator() as h:
        status, text, _ = await h.get("/-/ready")
        assert status == 503
        assert (await h.get("/-/healthy"))[0] == 200
        await h.poller.poll_once()
        assert (await h.get("/-/ready"))[0] == 200
        status, page, headers = await h.get("/")
        assert status == 200 and "text/html" in headers["Content-Type"]
        assert "main" in page and "success" in page and 'href="metrics"' in page
        status, text, headers = await h.get("/metrics")
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert not [line for line in text.splitlines() if line.split("{")[0].endswith("_created")]
        assert "background poll" in text  # HELP says where values come from
        status, text, headers = await h.get(
            "/metrics", Accept="application/openmetrics-text; version=1.0.0"
        )
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert text.rstrip().endswith("# EOF")
        async with h.session.get(
            h.url + "/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
        ) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            assert b"vms_up" in gzip.decompress(await response.read())


async def test_ready_after_a_failed_first_poll_too() -> None:
    async with exporter_on_simulator() as h:
        await h.sim_faults(unauthorized=True)
        assert (await h.poller.poll_once()).result == "unauthorized"
        status, _, _ = await h.get("/-/ready")
        _, page, _ = await h.get("/")
    assert status == 200
    assert "unauthorized" in page and "401" in page


async def test_token_never_in_logs_metrics_or_pages(caplog: pytest.LogCaptureFixture) -> None:
    secret = "demo"  # the simulator's token; any log line with "Bearer demo" is a leak
    caplog.set_level(logging.DEBUG)
    async with exporter_on_simulator() as h:
        await h.poller.poll_once()
        await h.sim_faults(unauthorized=True)
        await h.poller.poll_once()
        _, metrics_text, _ = await h.get("/metrics")
        _, page, _ = await h.get("/")
    logged = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    for text in (logged, metrics_text, page):
        assert f"Bearer {secret}" not in text
        assert "'demo'" not in text


async def test_every_metric_of_the_dashboard_and_rules_exists_in_the_output() -> None:
    """A rename in the exporter must not silently break a panel or an alert."""
    async with exporter_on_simulator(metrics={"per_camera": True}) as h:
        await h.poller.poll_once()
        _, text, _ = await h.get("/metrics")
    used = used_metric_names()
    assert len(used) >= 15
    missing = unknown_metric_names(used, exposition_metric_names(text))
    assert not missing, {name: used[name] for name in missing}


async def test_odd_items_are_counted_and_never_lose_the_rest_of_the_page() -> None:
    async with exporter_on_simulator() as h:
        truth = await h.simulator_items()
        await h.sim_faults(odd_items_rate=1.0)  # every item odd, the way id % 5 picks
        outcome = await h.poller.poll_once()
        samples = await h.scrape()
    assert outcome.result == "success", outcome.error
    by_kind = Counter(int(i["id"]) % 5 for i in truth)
    counts = window_counts(samples)
    # 0: unknown status → other; 3: no stream, null file flag → unknown labels;
    # 4: id as a string → kept as is; 1 and 2 are skipped, counted by reason.
    assert sum(n for (status, _, _), n in counts.items() if status == "other") == by_kind[0]
    unknown = sum(n for (_, s, f), n in counts.items() if s == "unknown" and f == "unknown")
    assert unknown == by_kind[3]
    assert sum(counts.values()) == by_kind[0] + by_kind[3] + by_kind[4]
    invalid = {
        reason: value(samples, "vms_exporter_items_invalid_total", target="main", reason=reason)
        for reason in ("no_id", "bad_created_at")
    }
    # counted over the whole padded query, so at least the window's share
    assert invalid["no_id"] is not None and invalid["no_id"] >= by_kind[1] > 0
    assert invalid["bad_created_at"] is not None and invalid["bad_created_at"] >= by_kind[2] > 0


async def test_serve_polls_several_targets_staggered() -> None:
    sim = await start_simulator(SimulatorConfig(downloads=100, seed=9, arrival_interval=0))
    targets = {
        name: TargetSettings(
            url=sim.url, token=SecretStr("demo"), timezone="Europe/Moscow", request_timeout=1
        )
        for name in ("north", "south")
    }
    settings = Settings(
        web=WebSettings(listen_address="127.0.0.1:0"),
        poll=PollSettings(interval=2, timeout=1.5),
        targets=targets,
    )
    stop = asyncio.Event()
    bound: list[str] = []
    task = asyncio.create_task(serve(settings, stop, announce=bound.extend))
    try:
        url = f"http://{(await _eventually(lambda: bound))[0]}"
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                async with session.get(url + "/-/ready") as response:
                    return response.status == 200

            await _eventually(ready)
            async with session.get(url + "/metrics") as response:
                samples = parse_metrics(await response.text())
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 5) == 0
        await sim.close()
    for name in targets:
        assert value(samples, "vms_up", target=name) == 1
    north = value(samples, "vms_exporter_last_poll_success_timestamp_seconds", target="north")
    south = value(samples, "vms_exporter_last_poll_success_timestamp_seconds", target="south")
    assert north is not None and south is not None
    assert south - north >= 0.5  # the second target starts interval / 2 = 1 s later


async def _eventually(probe: Callable[[], Any], deadline: float = 10.0) -> Any:
    """Await/call ``probe`` until truthy; fail after ``deadline`` seconds."""
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        result = probe()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {deadline}s")


async def test_incremental_polls_of_a_living_simulator_match_full_polls_at_fewer_requests() -> None:
    """Same simulator, same clock: an incremental poller and one that always polls in full."""
    sim = SimulatorConfig(downloads=1500, seed=11, arrival_interval=20, stuck_ratio=0.004)
    async with exporter_on_simulator(sim, poll={"full_resync": 300}) as h:
        settings = Settings(
            poll=PollSettings(interval=60, timeout=10, full_resync=0),
            targets={"main": h.poller.target},
        )
        full_metrics = ExporterMetrics(clock=h.clock, process_metrics=False)
        full = TargetPoller("main", h.poller.target, settings, full_metrics, clock=h.clock)

        def events(m: ExporterMetrics) -> Samples:
            text = generate_latest(m.registry).decode()
            return {
                k: v
                for k, v in parse_metrics(text).items()
                if k[0].startswith("vms_downloads_") and "file_removed" not in k[0]
            }

        requests: dict[str, list[int]] = {"full": [], "incremental": []}
        try:
            for _ in range(12):
                cheap_outcome = await h.poller.poll_once()
                full_outcome = await full.poll_once()
                assert cheap_outcome.result == full_outcome.result == "success"
                samples = await h.scrape()
                assert events(h.metrics) == events(full_metrics)
                reported = [
                    m.registry.get_sample_value(
                        "vms_exporter_api_reported_items", {"target": "main"}
                    )
                    or 0
                    for m in (h.metrics, full_metrics)
                ]  # the padded query's total, but for downloads on a slice boundary
                assert abs(reported[0] - reported[1]) <= reported[1] / 100
                if cheap_outcome.mode == "full":
                    assert window_counts(samples) == expected_counts(await h.simulator_items())
                else:  # exports in progress are always looked at
                    truth = expected_counts(await h.simulator_items())
                    assert {
                        k: v for k, v in window_counts(samples).items() if k[0] == "in_progress"
                    } == {k: v for k, v in truth.items() if k[0] == "in_progress"}
                h.clock.advance(60)
            cheap_samples = await h.scrape()
            for mode in requests:
                polls = value(
                    cheap_samples, "vms_exporter_poll_api_requests_count", target="main", mode=mode
                )
                total = value(
                    cheap_samples, "vms_exporter_poll_api_requests_sum", target="main", mode=mode
                )
                assert polls and total is not None
                requests[mode] = [int(polls), int(total)]
            full_requests = full_metrics.registry.get_sample_value(
                "vms_exporter_api_requests_total", {"target": "main", "code": "200"}
            )
        finally:
            await full.close()
        assert requests["full"][0] == 3  # the baseline and a re-scan every 5 min
        assert requests["incremental"][0] == 9
        cheap_per_poll = requests["incremental"][1] / requests["incremental"][0]
        assert full_requests is not None
        assert cheap_per_poll * 5 < full_requests / 12


async def test_a_reload_that_changes_the_target_polls_in_full_through_the_new_client() -> None:
    async with exporter_on_simulator(poll={"full_resync": 600}) as h:
        assert (await h.poller.poll_once()).mode == "full"
        h.clock.advance(60)
        assert (await h.poller.poll_once()).mode == "incremental"
        target = h.poller.target.model_copy(update={"per_page": 20})
        settings = Settings(poll=PollSettings(interval=60, timeout=10), targets={"main": target})
        await h.poller.reconfigure(target, settings)
        h.clock.advance(60)
        outcome = await h.poller.poll_once()
        assert (outcome.result, outcome.mode) == ("success", "full")
        assert outcome.pages >= 300 / 20  # pages of 20: the new client asked


async def test_landing_page_names_the_base_of_alert_links() -> None:
    async with exporter_on_simulator() as h:
        _, default_page, _ = await h.get("/")
    async with exporter_on_simulator(web={"external_url": "https://vms-exporter.example/"}) as h:
        _, page, _ = await h.get("/")
    assert "at the address Prometheus scrapes" in default_page
    assert "<code>https://vms-exporter.example/runbook</code>" in page
