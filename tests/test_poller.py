"""The poll loop: schedule, no overlap, deadline, and surviving the unforeseen."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import pytest
from aioresponses import CallbackResult, aioresponses
from pydantic import SecretStr

from exporter.config import PollSettings, Settings, TargetSettings
from exporter.metrics import ExporterMetrics
from exporter.poller import TargetPoller
from exporter.vms.client import Window, WindowResult
from exporter.vms.models import Download
from tests.builders import T0, item, page, rec


class FakeClient:
    """Stands in for VmsClient: answers after ``delay`` seconds, or raises ``error`` once.

    ``busy`` seconds are spent without yielding to the loop (as decoding does); each
    answer holds ``fresh`` downloads never seen before, or one steady download.
    """

    def __init__(
        self,
        delay: float = 0.0,
        error: BaseException | None = None,
        busy: float = 0.0,
        fresh: int = 0,
    ) -> None:
        self.delay = delay
        self.error = error
        self.busy = busy
        self.fresh = fresh
        self.running = 0
        self.most_running = 0
        self.calls = 0

    async def fetch_window(
        self,
        window: Window,
        known: Mapping[str, Download] | None = None,
        *,
        new_poll: bool = True,
    ) -> WindowResult:
        self.calls += 1
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.delay)
            time.sleep(self.busy)  # noqa: ASYNC251 (the point: a callback that holds the loop)
            if self.error is not None:
                error, self.error = self.error, None
                raise error
            created = window.keep_to - 7200
            if self.fresh:
                first = self.calls * self.fresh
                fresh = [rec(i, created=created) for i in range(first, first + self.fresh)]
                return WindowResult(fresh, self.fresh, 1)
            return WindowResult([rec(1, created=created)], 1, 1)
        finally:
            self.running -= 1

    async def close(self) -> None:
        return None


def make_poller(
    fake: FakeClient | None, max_downloads: int = 1000, **poll: float
) -> tuple[TargetPoller, ExporterMetrics]:
    """A poller of target ``t`` reading from ``fake``, or with None from its own VmsClient."""
    settings = Settings(
        poll=PollSettings(**{"interval": 60, "timeout": 10, **poll}),
        targets={
            "t": TargetSettings(
                url="http://127.0.0.1:9",
                token=SecretStr("x"),
                request_timeout=poll.get("timeout", 10) / 2,
                max_downloads=max_downloads,
            )
        },
    )
    metrics = ExporterMetrics(process_metrics=False)
    poller = TargetPoller(
        "t", settings.targets["t"], settings, metrics, clock=lambda: T0, source=fake
    )
    return poller, metrics


def polls(metrics: ExporterMetrics, result: str) -> float | None:
    return metrics.registry.get_sample_value(
        "vms_exporter_polls_total", {"target": "t", "result": result}
    )


async def test_unexpected_error_is_one_failed_poll_and_polling_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeClient(error=KeyError("stream"))
    poller, metrics = make_poller(fake)
    with caplog.at_level(logging.WARNING):
        first = await poller.poll_once()
        fake.error = KeyError("again")
        await poller.poll_once()
    assert first.result == "invalid_response"
    assert "KeyError" in (first.error or "")
    assert len(caplog.records) == 2  # one line per failed poll
    assert [bool(r.exc_info) for r in caplog.records] == [True, False]  # traceback once
    second = await poller.poll_once()
    assert second.result == "success"
    assert polls(metrics, "invalid_response") == 2
    assert polls(metrics, "success") == 1


async def test_a_poll_that_fails_midway_changes_nothing() -> None:
    """Page 1 read, page 2 refused: no event, no memory change; the next success counts once."""
    pattern = re.compile(r"^http://127\.0\.0\.1:9/api/v1/users/downloads\?.*$")
    poller, metrics = make_poller(None, full_resync=0)
    created = T0 - 600
    first = [item(1, created=created), item(2, created=created)]
    done = [item(1, "completed", created=created, updated=T0 - 1), item(2, created=created)]

    def pages(items: list[dict[str, Any]], fail_page_2: bool) -> Any:
        def serve(_: Any, **kwargs: Any) -> CallbackResult:
            number = int(kwargs["params"]["page"])
            if number == 2 and fail_page_2:
                return CallbackResult(status=422, payload={"errors": {"page": ["too far"]}})
            return CallbackResult(
                payload=page(items[number - 1 : number], page_no=number, last_page=2, per_page=1)
            )

        return serve

    def finished() -> float | None:
        return metrics.registry.get_sample_value(
            "vms_downloads_finished_total", {"target": "t", "status": "completed"}
        )

    with aioresponses() as mock:
        mock.get(pattern, callback=pages(first, False), repeat=True)
        assert (await poller.poll_once()).result == "success"  # baseline
        mock.clear()
        mock.get(pattern, callback=pages(done, True), repeat=True)
        assert (await poller.poll_once()).result == "validation_error"
        assert finished() == 0
        mock.clear()
        mock.get(pattern, callback=pages(done, False), repeat=True)
        assert (await poller.poll_once()).result == "success"
        assert finished() == 1
        await poller.close()


async def test_poll_deadline_is_a_timeout() -> None:
    poller, metrics = make_poller(FakeClient(delay=5), interval=1, timeout=0.2)
    began = time.monotonic()
    outcome = await poller.poll_once()
    assert outcome.result == "timeout"
    assert time.monotonic() - began < 1.0
    assert polls(metrics, "timeout") == 1


async def test_a_poll_that_overran_its_deadline_while_busy_is_a_timeout() -> None:
    """Decoding never yields, so asyncio.timeout cannot fire inside it: still a timeout."""
    poller, metrics = make_poller(FakeClient(busy=0.4), interval=1, timeout=0.2)
    outcome = await poller.poll_once()
    assert outcome.result == "timeout"
    assert polls(metrics, "success") == 0
    assert metrics.registry.get_sample_value("vms_up", {"target": "t"}) == 0


async def test_remembered_records_never_exceed_max_downloads() -> None:
    """A VMS inventing new ids every poll: records held grow, up to max_downloads, no more."""
    poller, metrics = make_poller(FakeClient(fresh=40), max_downloads=100, full_resync=0)
    results = [(await poller.poll_once()) for _ in range(4)]
    assert [r.result for r in results] == ["success", "success", "limit_exceeded", "limit_exceeded"]
    assert "more than max_downloads=100" in (results[2].error or "")
    assert polls(metrics, "limit_exceeded") == 2


async def test_polls_never_overlap_and_stop_promptly() -> None:
    fake = FakeClient(delay=0.05)
    poller, _ = make_poller(fake, interval=0.1, timeout=0.09, lookback=3600, full_resync=0)
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    await asyncio.sleep(0.5)
    stop.set()
    began = time.monotonic()
    await asyncio.wait_for(task, 2)
    assert time.monotonic() - began < 0.2
    assert fake.most_running == 1
    assert 3 <= fake.calls <= 6  # start to start every 0.1 s


async def test_first_delay_staggers_the_start() -> None:
    fake = FakeClient()
    poller, _ = make_poller(fake, full_resync=0)
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop, first_delay=0.3))
    await asyncio.sleep(0.1)
    assert fake.calls == 0
    await asyncio.sleep(0.35)
    assert fake.calls == 1
    stop.set()
    await asyncio.wait_for(task, 2)
