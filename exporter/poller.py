"""Per target: the poll schedule, the deadline, the window, and hand-off to metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from exporter import slices
from exporter.config import Settings, TargetSettings
from exporter.core import (
    Memory,
    Reconciled,
    Snapshot,
    aggregate_steps,
    reconcile_steps,
    run_steps_pausing,
)
from exporter.metrics import ExporterMetrics
from exporter.records_store import RecordStore
from exporter.state import StateDirectory
from exporter.vms.client import VmsClient, Window, WindowResult
from exporter.vms.errors import InvalidResponse, LimitExceeded, PollError, PollTimeout
from exporter.vms.models import Download

log = logging.getLogger(__name__)

TIMEZONE_TOLERANCE = 60.0


class WindowSource(Protocol):
    """What polling needs of the VMS: every page of one window (or of one slice of it)."""

    async def fetch_window(
        self,
        window: Window,
        known: Mapping[str, Download] | None = None,
        *,
        new_poll: bool = True,
    ) -> WindowResult: ...


@dataclass(frozen=True, slots=True)
class _Fetched:
    result: WindowResult
    mode: str
    """``full`` or ``incremental``."""
    slices: slices.SliceMemory | None


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """What the landing page, ``check`` and ``/-/ready`` show of the last poll."""

    result: str
    finished_at: float
    duration: float
    error: str | None = None
    downloads: int = 0
    pages: int = 0
    status_counts: dict[str, int] | None = None
    mode: str = "full"


class TargetPoller:
    """Polls one target on its schedule; polls of one target never overlap."""

    def __init__(
        self,
        name: str,
        target: TargetSettings,
        settings: Settings,
        metrics: ExporterMetrics,
        *,
        clock: Callable[[], float] = time.time,
        state: StateDirectory | None = None,
        source: WindowSource | None = None,
        store: RecordStore | None = None,
    ) -> None:
        self.name = name
        self._store = store
        self._restore = store is not None
        self._save_failed = False
        self.target = target
        self._poll = settings.poll
        self._per_camera = settings.metrics.per_camera
        self._max_cameras = settings.metrics.max_cameras
        self._metrics = metrics
        self._clock = clock
        self._state = state
        self._memory: Memory | None = None
        self._slices: slices.SliceMemory | None = None
        self._requests = 0
        self._last_result: str | None = None
        self._reported_reasons: set[str] = set()
        self._reported_bugs: set[type[BaseException]] = set()
        self._newest_created: float | None = None
        self.last: PollOutcome | None = None
        self.last_success: PollOutcome | None = None
        self._details = settings.web.show_details
        self.client = VmsClient(
            name,
            target,
            on_response=self._count_request,
            details=self._details,
            state=state,
        )
        self._injected = source
        self._source: WindowSource = self.client if source is None else source
        metrics.add_target(name, self._poll.lookback, self._poll.interval)

    def _count_request(self, code: str) -> None:
        self._requests += 1
        self._metrics.api_response(self.name, code)

    @property
    def records(self) -> Mapping[str, Download]:
        """What is remembered of the window as of the last successful poll (empty before)."""
        return {} if self._memory is None else self._memory.records

    @property
    def lookback(self) -> float:
        return self._poll.lookback

    async def poll_once(self) -> PollOutcome:
        """One whole poll within ``poll.timeout``; only cancellation escapes it."""
        if self._restore and self._store is not None:  # diff against what was saved
            self._restore = False
            self._memory = await asyncio.to_thread(self._store.load, self._clock())
        started = self._clock()
        began = time.monotonic()
        self._requests = 0
        try:
            window = Window.at(
                datetime.fromtimestamp(started, UTC), self._poll.lookback, self.target.timezone
            )
            async with asyncio.timeout(self._poll.timeout):
                fetched = await self._fetch(window, started)
                result = fetched.result
                finished = self._clock()
                reconciled = await run_steps_pausing(
                    reconcile_steps(
                        self._memory,
                        result.downloads,
                        poll_started=started,
                        window_start=window.keep_from,
                        seen_at=finished,
                    )
                )
                snapshot = await run_steps_pausing(
                    aggregate_steps(
                        reconciled.current,
                        per_camera=self._per_camera,
                        max_cameras=self._max_cameras,
                    )
                )
            # Decoding and reconciling hold the loop between awaits: a poll that
            # overran its deadline there is still a timeout, never a success.
            if time.monotonic() - began > self._poll.timeout:
                raise TimeoutError
            if len(reconciled.memory.records) > self.target.max_downloads:
                raise LimitExceeded(
                    f"remembering this window would take {len(reconciled.memory.records)} "
                    f"records, more than max_downloads={self.target.max_downloads}; "
                    "raise max_downloads or shorten lookback"
                )
            return await self._saved(
                self._succeeded(fetched, reconciled, snapshot, finished, began)
            )
        except TimeoutError:
            return self._failed(
                PollTimeout(f"the poll did not finish within poll.timeout={self._poll.timeout:g}s"),
                began,
            )
        except PollError as exc:
            return self._failed(exc, began)
        except Exception as exc:  # a bug of ours or an answer nobody foresaw: keep polling
            error = InvalidResponse(
                f"unexpected error in the exporter (please report it): {type(exc).__name__}: {exc}"
            )
            first_time = type(exc) not in self._reported_bugs
            self._reported_bugs.add(type(exc))
            return self._failed(error, began, traceback=exc if first_time else None)

    async def _fetch(self, window: Window, started: float) -> _Fetched:
        """The whole window, or with ``poll.full_resync`` only the slices that can have changed."""
        known = self._memory.records if self._memory is not None else None
        if not self._poll.full_resync:
            return _Fetched(await self._source.fetch_window(window, known), "full", None)
        chosen = await run_steps_pausing(
            slices.plan_steps(
                window,
                started=started,
                timezone=self.target.timezone,
                memory=self._slices,
                records=known or {},
                full_resync=self._poll.full_resync,
                interval=self._poll.interval,
            )
        )
        # One query after the other: each reads its pages ``concurrency`` at a time already, and
        # queued requests would eat into their request_timeout. A VMS that is down costs one
        # query's retries, as a full poll does.
        results = []
        for number, piece in enumerate(chosen.queries()):
            results.append(
                await self._source.fetch_window(piece.window(window), known, new_poll=number == 0)
            )
        merged = await run_steps_pausing(
            slices.merge_steps(
                chosen,
                window,
                started=started,
                timezone=self.target.timezone,
                memory=self._slices,
                records=known or {},
                results=results,
            )
        )
        result = WindowResult(merged.downloads, merged.reported_total, merged.pages, merged.invalid)
        return _Fetched(result, "full" if chosen.full else "incremental", merged.memory)

    def _succeeded(
        self,
        fetched: _Fetched,
        reconciled: Reconciled,
        snapshot: Snapshot,
        finished: float,
        began: float,
    ) -> PollOutcome:
        result = fetched.result
        duration = time.monotonic() - began
        self._memory = reconciled.memory
        self._slices = fetched.slices
        self._newest_created = snapshot.newest_created
        self._metrics.poll_succeeded(
            self.name,
            snapshot=snapshot,
            events=reconciled.events,
            duration=duration,
            finished_at=finished,
            reported_total=result.reported_total,
            invalid=dict(result.invalid),
            mode=fetched.mode,
            requests=self._requests,
        )
        new_reasons = set(result.invalid) - self._reported_reasons
        if new_reasons:  # once per reason: the counter tells how often since
            self._reported_reasons |= new_reasons
            log.warning(
                "skipped unusable items (see vms_exporter_items_invalid_total)",
                extra={"target": self.name, "reasons": dict(result.invalid)},
            )
        if self._last_result not in (None, "success"):
            log.info("poll succeeded again", extra={"target": self.name})
        self._last_result = "success"
        status_counts: dict[str, int] = {}
        for (status, _, _), count in snapshot.counts.items():
            status_counts[status] = status_counts.get(status, 0) + count
        log.debug(
            "poll succeeded",
            extra={
                "target": self.name,
                "downloads": snapshot.size,
                "pages": result.pages,
                "mode": fetched.mode,
                "requests": self._requests,
                "duration_seconds": round(duration, 3),
            },
        )
        self.last = self.last_success = PollOutcome(
            "success",
            finished,
            duration,
            None,
            snapshot.size,
            result.pages,
            status_counts,
            fetched.mode,
        )
        return self.last

    async def _saved(self, outcome: PollOutcome) -> PollOutcome:
        """Save the records of a successful poll in a thread: scrapes go on meanwhile."""
        if self._store is None or self._memory is None:
            return outcome
        try:
            await asyncio.to_thread(self._store.save, self._memory, self._clock())
        except OSError as exc:
            if not self._save_failed:
                log.warning(
                    "cannot save the remembered records; a restart will start a new baseline",
                    extra={"target": self.name, "path": str(self._store.path), "error": str(exc)},
                )
            self._save_failed = True
        else:
            if self._save_failed:
                log.info("remembered records saved again", extra={"target": self.name})
            self._save_failed = False
        return outcome

    def _failed(
        self, error: PollError, began: float, traceback: BaseException | None = None
    ) -> PollOutcome:
        """Count and log (one line; with the traceback of a bug the first time) a failed poll."""
        duration = time.monotonic() - began
        self._metrics.poll_failed(self.name, result=error.result, duration=duration)
        log.log(
            logging.ERROR if traceback else logging.WARNING,
            "poll failed",
            exc_info=traceback,
            extra={"target": self.name, "result": error.result, "reason": str(error)},
        )
        self._last_result = error.result
        self.last = PollOutcome(error.result, self._clock(), duration, str(error))
        return self.last

    async def timezone_warning(self) -> str | None:
        """A warning when the server's from/to filter seems to use another time zone."""
        newest = self._newest_created
        if newest is None:
            return None
        try:
            answered = await self.client.newest_created_until(newest)
        except PollError as exc:
            return f"could not probe the server's time zone: {exc}"
        if answered is not None and answered >= newest - TIMEZONE_TOLERANCE:
            return None
        gap = "more than a day" if answered is None else f"{(newest - answered) / 3600:.1f} h"
        return (
            f"the VMS left out downloads of the last {gap} for a query ending now in "
            f"{self.target.timezone!r}: its from/to filter seems to use a time zone ahead of "
            f"that; set targets.{self.name}.timezone to the server's zone"
        )

    async def run(self, stop: asyncio.Event, first_delay: float = 0.0) -> None:
        """Poll every ``poll.interval`` (start to start) until ``stop`` is set."""
        if await _wait(stop, first_delay):
            return
        while not stop.is_set():
            began = time.monotonic()
            await self.poll_once()
            if await _wait(stop, self._poll.interval - (time.monotonic() - began)):
                return

    def identity(self) -> tuple[str, str, str]:
        """What must stay the same for a reload to keep this target's records and counters."""
        return identity(self.name, self.target)

    async def reconfigure(self, target: TargetSettings, settings: Settings) -> None:
        """New settings for the same target (a reload); call only while no poll runs.

        The remembered records and counters stay; a changed target gets a new
        client (the old one closes its login session first).
        """
        assert identity(self.name, target) == self.identity()
        self._poll = settings.poll
        self._per_camera = settings.metrics.per_camera
        self._max_cameras = settings.metrics.max_cameras
        self._metrics.set_poll_settings(self.name, self._poll.lookback, self._poll.interval)
        self._slices = None  # the next poll is a full re-scan under the new settings
        if target != self.target:
            await self.close()
            self.target = target
            self.client = VmsClient(
                self.name,
                target,
                on_response=self._count_request,
                details=self._details,  # [web] changes need a restart
                state=self._state,
            )
            self._source = self.client if self._injected is None else self._injected

    async def close(self) -> None:
        """Close the login session this process opened (bounded in time), then the client."""
        try:
            await self.client.log_out()
        finally:
            await self.client.close()


def identity(name: str, target: TargetSettings) -> tuple[str, str, str]:
    """A target is the same one across a reload when its name, URL and path are."""
    return (name, target.url, target.path)


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True if ``stop`` was set meanwhile."""
    if seconds <= 0:
        return stop.is_set()
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        return False
    return True
