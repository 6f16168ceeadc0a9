"""The exporter's own registry: window gauges from the latest snapshots, events, self-metrics.

Values are produced by the background poller; a scrape only reads memory.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.core import Events, Snapshot, finish_order
from exporter.exemplars import exemplar
from exporter.vms.errors import POLL_RESULTS
from exporter.vms.models import INVALID_REASONS, STREAM_TYPES, TERMINAL_STATUSES

BACKGROUND = " (from the exporter's background poll of the VMS, not fetched at scrape time)"
EXPORT_DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
COMMON_CODES = ("200", "401", "422", "429", "500", "502", "503", "504", "error")
"""Codes whose request counters exist from the start, so rate() sees their first request."""
FILE_REMOVED_AGE_BUCKETS = tuple(hours * 3600 for hours in (1, 2, 6, 12, 24, 48, 72, 168, 336, 720))
"""1 h to 30 d: the retention periods a VMS is likely to use for exported files."""
POLL_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
POLL_REQUESTS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
POLL_MODES = ("full", "incremental")


@dataclass(frozen=True, slots=True)
class _TargetWindow:
    snapshot: Snapshot | None = None
    last_success: float | None = None
    """Wall-clock end of the last successful poll (for staleness)."""


class _WindowCollector(Collector):
    """Yields the window gauges from the latest snapshot of each target, unless stale."""

    def __init__(self, owner: ExporterMetrics) -> None:
        self._owner = owner

    def describe(self) -> list[Metric]:
        return list(self._families(include_data=False))

    def collect(self) -> Iterator[Metric]:
        return self._families(include_data=True)

    def _families(self, *, include_data: bool) -> Iterator[Metric]:
        downloads = GaugeMetricFamily(
            "vms_downloads",
            "Downloads created within the lookback window, by status, stream type and "
            "whether the file exists" + BACKGROUND,
            labels=["target", "status", "stream_type", "file_exists"],
        )
        oldest = GaugeMetricFamily(
            "vms_downloads_oldest_in_progress_created_timestamp_seconds",
            "created_at of the oldest download still in progress; absent when none" + BACKGROUND,
            labels=["target"],
        )
        newest = GaugeMetricFamily(
            "vms_downloads_newest_created_timestamp_seconds",
            "created_at of the newest download in the window; absent when empty" + BACKGROUND,
            labels=["target"],
        )
        cameras = GaugeMetricFamily(
            "vms_downloads_by_camera",
            "Downloads in the window by camera and status; cameras beyond "
            'metrics.max_cameras are summed under camera_id="other"' + BACKGROUND,
            labels=["target", "camera_id", "status"],
        )
        if include_data:
            for target, snap in self._owner.fresh_snapshots():
                for (status, stream_type, exists), count in sorted(snap.counts.items()):
                    downloads.add_metric([target, status, stream_type, exists], count)
                if snap.oldest_in_progress_created is not None:
                    oldest.add_metric([target], snap.oldest_in_progress_created)
                if snap.newest_created is not None:
                    newest.add_metric([target], snap.newest_created)
                for (camera, status), count in sorted((snap.by_camera or {}).items()):
                    cameras.add_metric([target, camera, status], count)
        yield downloads
        yield oldest
        yield newest
        if self._owner.per_camera:
            yield cameras


class ExporterMetrics:
    """Owns the registry and every metric; the poller reports into it."""

    def __init__(
        self,
        *,
        per_camera: bool = False,
        max_staleness: float = 600.0,
        clock: Callable[[], float] = time.time,
        process_metrics: bool = True,
    ) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series: they double the count for no use here
        self.per_camera = per_camera
        self.max_staleness = max_staleness
        self._clock = clock
        self._windows: dict[str, _TargetWindow] = {}
        self._windows_lock = threading.Lock()
        """/metrics renders in a worker thread: it copies ``_windows`` under this lock, and the
        loop replaces a target's window whole, so a render sees each window consistent."""
        self.version = 0
        """Changes whenever a poll ends or targets change (what /metrics caching keys on)."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        if process_metrics:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        r.register(_WindowCollector(self))
        self.created = Counter(
            "vms_downloads_created_total",
            "Downloads first seen after the baseline poll" + BACKGROUND,
            ["target", "stream_type"],
            registry=r,
        )
        self.finished = Counter(
            "vms_downloads_finished_total",
            "Downloads seen entering a terminal status" + BACKGROUND,
            ["target", "status"],
            registry=r,
        )
        self.file_removed = Counter(
            "vms_downloads_file_removed_total",
            "Completed downloads whose file was seen going from existing to missing" + BACKGROUND,
            ["target"],
            registry=r,
        )
        self.file_removed_age = Histogram(
            "vms_downloads_file_removed_age_seconds",
            "For each file removal counted: seconds from the download's created_at to when "
            "its file was seen missing (retention clean-up vs. a lost file)" + BACKGROUND,
            ["target"],
            buckets=FILE_REMOVED_AGE_BUCKETS,
            registry=r,
        )
        self.aged_out = Counter(
            "vms_downloads_aged_out_in_progress_total",
            "Downloads that left the lookback window while still in progress" + BACKGROUND,
            ["target"],
            registry=r,
        )
        self.export_duration = Histogram(
            "vms_downloads_export_duration_seconds",
            "Time from creation to finish of downloads seen finishing: "
            "min(updated_at, seen_at) - created_at" + BACKGROUND,
            ["target", "status"],
            buckets=EXPORT_DURATION_BUCKETS,
            registry=r,
        )
        self.up = Gauge(
            "vms_up", "1 if the last poll of the VMS succeeded, else 0", ["target"], registry=r
        )
        self.last_success = Gauge(
            "vms_exporter_last_poll_success_timestamp_seconds",
            "End of the last successful poll of the VMS",
            ["target"],
            registry=r,
        )
        self.poll_duration = Histogram(
            "vms_exporter_poll_duration_seconds",
            "Duration of whole background polls (all pages) of the VMS",
            ["target"],
            buckets=POLL_DURATION_BUCKETS,
            registry=r,
        )
        self.polls = Counter(
            "vms_exporter_polls_total",
            "Background polls of the VMS by result",
            ["target", "result"],
            registry=r,
        )
        self.api_requests = Counter(
            "vms_exporter_api_requests_total",
            "HTTP requests to the VMS by status code (error when no response)",
            ["target", "code"],
            registry=r,
        )
        self.poll_requests = Histogram(
            "vms_exporter_poll_api_requests",
            "HTTP requests to the VMS made by each successful poll, by mode: full (the whole "
            "window) or incremental (only the slices that can have changed)",
            ["target", "mode"],
            buckets=POLL_REQUESTS_BUCKETS,
            registry=r,
        )
        self.reported_items = Gauge(
            "vms_exporter_api_reported_items",
            "meta.total the VMS reported for the last poll's query (paging cross-check)",
            ["target"],
            registry=r,
        )
        self.items_invalid = Counter(
            "vms_exporter_items_invalid_total",
            "Items of the VMS answer skipped because they could not be used, by reason",
            ["target", "reason"],
            registry=r,
        )
        self.lookback = Gauge(
            "vms_exporter_lookback_seconds",
            "The configured lookback window (poll.lookback)",
            ["target"],
            registry=r,
        )
        self.interval = Gauge(
            "vms_exporter_poll_interval_seconds",
            "The configured period of polls (poll.interval), so rules can scale staleness",
            ["target"],
            registry=r,
        )
        build = Gauge(
            "vms_exporter_build_info",
            "Build information of the exporter; always 1",
            ["version", "python_version"],
            registry=r,
        )
        build.labels(__version__, platform.python_version()).set(1)

    def add_target(self, target: str, lookback: float, interval: float) -> None:
        """Create every label set of the target at 0, so increase() sees the first event."""
        self.version += 1
        with self._windows_lock:
            self._windows[target] = _TargetWindow()
        for stream_type in STREAM_TYPES:
            self.created.labels(target, stream_type)
        for status in TERMINAL_STATUSES:
            self.finished.labels(target, status)
            self.export_duration.labels(target, status)
        self.file_removed.labels(target)
        self.file_removed_age.labels(target)
        self.aged_out.labels(target)
        self.up.labels(target).set(0)
        self.poll_duration.labels(target)
        for mode in POLL_MODES:
            self.poll_requests.labels(target, mode)
        for result in POLL_RESULTS:
            self.polls.labels(target, result)
        for code in COMMON_CODES:
            self.api_requests.labels(target, code)
        for reason in INVALID_REASONS:
            self.items_invalid.labels(target, reason)
        self.set_poll_settings(target, lookback, interval)

    def remove_target(self, target: str) -> None:
        """Drop every series of a target that left the configuration (a reload)."""
        self.version += 1
        with self._windows_lock:
            self._windows.pop(target, None)
        for metric in vars(self).values():
            if isinstance(metric, Counter | Gauge | Histogram) and "target" in metric._labelnames:
                metric.remove_by_labels({"target": target})

    def set_poll_settings(self, target: str, lookback: float, interval: float) -> None:
        self.lookback.labels(target).set(lookback)
        self.interval.labels(target).set(interval)

    def exposition_version(self) -> tuple[int, tuple[str, ...]]:
        """Equal while /metrics would show the same data: no poll ended, nothing went stale."""
        return self.version, tuple(name for name, _ in self.fresh_snapshots())

    def fresh_snapshots(self) -> Iterator[tuple[str, Snapshot]]:
        """Snapshots whose last successful poll is within ``max_staleness``."""
        now = self._clock()
        with self._windows_lock:
            windows = list(self._windows.items())
        for target, window in sorted(windows):
            if window.snapshot is None or window.last_success is None:
                continue
            if now - window.last_success > self.max_staleness:
                continue
            yield target, window.snapshot

    def api_response(self, target: str, code: str) -> None:
        self.api_requests.labels(target, code).inc()

    def poll_succeeded(
        self,
        target: str,
        *,
        snapshot: Snapshot,
        events: Events,
        duration: float,
        finished_at: float,
        reported_total: int,
        invalid: dict[str, int],
        mode: str = "full",
        requests: int = 0,
    ) -> None:
        self.version += 1
        with self._windows_lock:
            if target not in self._windows:  # removed meanwhile (a reload): it stays removed
                raise KeyError(target)
            self._windows[target] = _TargetWindow(snapshot, finished_at)
        for stream_type, count in events.created.items():
            self.created.labels(target, stream_type).inc(count)
        for status, count in events.finished.items():
            latest = events.latest_finished.get(status)
            self.finished.labels(target, status).inc(
                count, exemplar=exemplar(latest) if latest else None
            )
        # Oldest first, so that each bucket's exemplar is its latest finish.
        for status, seconds, item in sorted(events.durations, key=lambda d: finish_order(d[2])):
            self.export_duration.labels(target, status).observe(seconds, exemplar(item))
        if events.file_removed:
            self.file_removed.labels(target).inc(events.file_removed)
        for age in events.file_removed_ages:
            self.file_removed_age.labels(target).observe(age)
        if events.aged_out_in_progress:
            self.aged_out.labels(target).inc(events.aged_out_in_progress)
        for reason, count in invalid.items():
            self.items_invalid.labels(target, reason).inc(count)
        self.reported_items.labels(target).set(reported_total)
        self.up.labels(target).set(1)
        self.last_success.labels(target).set(finished_at)
        self.polls.labels(target, "success").inc()
        self.poll_duration.labels(target).observe(duration)
        self.poll_requests.labels(target, mode).observe(requests)

    def poll_failed(self, target: str, *, result: str, duration: float) -> None:
        """Window gauges keep their last values until they go stale."""
        self.version += 1
        self.up.labels(target).set(0)
        self.polls.labels(target, result).inc()
        self.poll_duration.labels(target).observe(duration)
