"""Our /metrics renderer against prometheus-client, the reference: the same bytes, off the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import BucketSpan, Exemplar, NativeHistogram, Timestamp

from exporter.exposition import INLINE_RENDER, Renderer, metrics_handler
from exporter.metrics import ExporterMetrics
from exporter.web import create_app, start_server
from tests.builders import busy_metrics

ODD = ['say "hi"', "back\\slash", "new\nline", "Камера №1", "", "tab\tand } { , ="]
"""Label values that need escaping, or look like syntax, or are not ASCII."""
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
ACCEPTS = [
    "",
    "text/plain",
    "text/plain; version=0.0.4",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=1.0.0;escaping=dots",
    "text/plain;version=1.0.0;escaping=values",
    "application/openmetrics-text",
    OPENMETRICS,
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0;escaping=dots",
    "application/openmetrics-text;version=1.0.0;escaping=values",
    "application/openmetrics-text;version=1.0.0;escaping=nonsense",
    "application/openmetrics-text;version=2.0.0",
    "application/openmetrics-text;version=0.0.1",
    # What Prometheus 2.42 sends.
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
]


class Families:
    """A collector of given families."""

    def __init__(self, *families: Metric) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def assert_same(renderer: Renderer, registry: Families | CollectorRegistry, accept: str) -> str:
    """Our answer to ``accept`` equals prometheus-client's: content type, and bytes or error."""
    reference, reference_type = choose_encoder(accept)
    ours, content_type = renderer.choose(accept)
    assert content_type == reference_type
    try:
        expected = reference(registry)
    except Exception as error:  # e.g. a native histogram in the text format
        with pytest.raises(type(error)):
            ours(registry)
        return ""
    assert ours(registry) == expected
    return expected.decode()


@pytest.mark.parametrize("per_camera", [False, True])
def test_our_exporter_registry_renders_exactly_as_prometheus_client_does(per_camera: bool) -> None:
    m = busy_metrics(
        len(ODD) + 12, 300, per_camera=per_camera, names=ODD + [f"t{i}" for i in range(12)]
    )
    m.add_target("never-polled", 3600, 60)  # its window gauges are absent
    renderer = Renderer()
    for accept in ACCEPTS:
        for _ in range(2):  # the second render comes from the memo
            text = assert_same(renderer, m.registry, accept)
        assert 'target="Камера №1"' in text or 'target="_' in text  # (dots/values escape names)
        assert r'target="new\nline"' in text and 'target="never-polled"' in text
        assert ("camera gauge\n" in text) is per_camera  # the TYPE of vms_downloads_by_camera
    exemplars = [line for line in text.splitlines() if ' # {camera_id="' in line]
    for family in ("vms_downloads_finished_total", "vms_downloads_export_duration_seconds_bucket"):
        assert any(line.startswith(family + "{") for line in exemplars)


def test_stale_windows_render_exactly_as_prometheus_client_does() -> None:
    m = busy_metrics(20, 100, per_camera=True)
    m.max_staleness = 10  # every poll ended 30 s before the metrics' clock
    text = assert_same(Renderer(), m.registry, OPENMETRICS)
    assert "vms_downloads{" not in text and "# TYPE vms_downloads gauge" in text


def exotic_families() -> list[Metric]:
    """Every family type and sample feature prometheus-client renders, with hostile names."""
    summary = Metric("rpc_seconds", 'a summary\\ with "quotes"\nand lines', "summary")
    summary.add_sample("rpc_seconds", {"quantile": "0.5", "a": "x"}, 0.25)
    summary.add_sample("rpc_seconds_count", {"a": "x"}, 3.0)
    summary.add_sample("rpc_seconds_sum", {"a": "x"}, 1.5)
    summary.add_sample("rpc_seconds_created", {"a": "x"}, 1700000000.0)
    dotted = Metric("my.dotted:name", "utf-8 names", "gauge")
    dotted.add_sample("my.dotted:name", {"läbel": "v", "__reserved": "r", "ok": "y"}, 1.0)
    dotted.add_sample("my.dotted:name", {}, 2.0, timestamp=1700000000.5)
    colon = Metric("job:rate5m", "a recording-rule style name", "gauge")
    colon.add_sample("job:rate5m", {"job": "a"}, -0.0, timestamp=Timestamp(1700000000, 5))
    sized = Metric("payload", "with a unit", "counter", unit="bytes")
    sized.add_sample(
        "payload_bytes_total",
        {"k": "v"},
        2.0**60,
        exemplar=Exemplar({"trace_id": 'a"b\\c'}, 1.5, 1700000000.25),
    )
    sized.add_sample("payload_bytes_created", {"k": "v"}, 1700000000.0)
    gauge_histogram = Metric("queue", "a gauge histogram", "gaugehistogram")
    gauge_histogram.add_sample("queue_bucket", {"le": "+Inf"}, 4.0, exemplar=Exemplar({}, 3.0))
    gauge_histogram.add_sample("queue_gcount", {}, 4.0)
    gauge_histogram.add_sample("queue_gsum", {}, 7.0)
    info = Metric("build", "info", "info")
    info.add_sample("build_info", {"version": "1.0"}, 1.0)
    stateset = Metric("state", "stateset", "stateset")
    stateset.add_sample("state", {"state": "a"}, 1.0)
    unknown = Metric("mystery", "unknown", "unknown")
    unknown.add_sample("mystery", {}, float("nan"))
    native = Metric("latency", "a native histogram", "histogram")
    native.add_sample(
        "latency",
        {"path": "/"},
        None,  # type: ignore[arg-type]
        native_histogram=NativeHistogram(
            4, 9.5, 0, 0.001, 1, pos_spans=(BucketSpan(0, 2),), pos_deltas=(1, 1)
        ),
    )
    native.add_sample("latency_count", {"path": "/"}, 4.0)
    return [summary, dotted, colon, sized, gauge_histogram, info, stateset, unknown, native]


@pytest.mark.parametrize("accept", ACCEPTS)
def test_every_family_type_and_odd_names_render_as_prometheus_client_does(accept: str) -> None:
    renderer = Renderer()
    for _ in range(2):
        assert_same(renderer, Families(*exotic_families()[:-1]), accept)
        assert_same(renderer, Families(*exotic_families()), accept)


def test_a_family_prometheus_client_cannot_render_fails_the_same_way() -> None:
    bad = Metric("up", "a gauge with an exemplar", "gauge")
    bad.add_sample("up", {}, 1.0, exemplar=Exemplar({"a": "b"}, 1.0))
    with pytest.raises(ValueError, match="has exemplars"):
        Renderer().openmetrics(Families(bad))


labels = st.text(st.characters(codec="utf-8"), max_size=12)
values = st.floats() | st.integers(-(2**70), 2**70) | st.sampled_from([-0.0, 0.0, 1e22, 1e-7])
shared = Renderer(max_prefixes=5)
"""One renderer for every example, with a tiny memo: hits, misses and start-overs all happen."""


@settings(max_examples=300, deadline=None)
@given(
    samples=st.lists(st.tuples(labels, labels, values), min_size=1, max_size=8),
    exemplar_value=values,
)
def test_any_label_values_and_values_render_as_prometheus_client_does(
    samples: list[tuple[str, str, float]], exemplar_value: float
) -> None:
    gauge = Metric("g", "a gauge", "gauge")
    counter = Metric("c", "a counter", "counter")
    for a, b, value in samples:
        gauge.add_sample("g", {"a": a, "b": b}, value)
        counter.add_sample("c_total", {"b": b}, value, exemplar=Exemplar({"id": a}, exemplar_value))
    for accept in ("", OPENMETRICS, "text/plain;version=1.0.0;escaping=values"):
        assert_same(shared, Families(gauge, counter), accept)
    assert shared.prefixes <= 5


def test_the_memo_stays_within_its_cap_while_label_values_keep_changing() -> None:
    renderer = Renderer(max_prefixes=100)
    for generation in range(20):
        gauge = Metric("g", "a gauge", "gauge")
        for i in range(30):
            gauge.add_sample("g", {"id": f"{generation}-{i}"}, i)
        assert_same(renderer, Families(gauge), "")
        assert renderer.prefixes <= 100


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner, addresses = await start_server(app, "127.0.0.1", 0)
    return runner, f"http://{addresses[0]}/metrics"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_scrapes_are_answered_as_prometheus_client_answers_them(
    session: aiohttp.ClientSession,
) -> None:
    m = busy_metrics(4, 100, per_camera=True, names=["a", 'b"', "в"])
    reference_app = web.Application()
    reference_app.router.add_get("/metrics", make_aiohttp_handler(m.registry))
    ours, reference = await serve(create_app(m, [])), await serve(reference_app)
    try:
        for accept in ACCEPTS:
            for query in ("", "?name[]=vms_up&name[]=vms_downloads", "?name[]="):
                answers = []
                for url in (ours[1], reference[1]):
                    headers = {"Accept": accept} if accept else {}
                    async with session.get(url + query, headers=headers) as response:
                        answers.append(
                            (response.status, response.content_type, await response.read())
                        )
                assert answers[0] == answers[1]
        async with session.get(ours[1] + "?name[]=vms_up") as response:
            assert (await response.text()).startswith("# HELP vms_up ")
    finally:
        await ours[0].cleanup()
        await reference[0].cleanup()


class Blocking:
    """A family whose collection waits until the test says so (at most ``timeout``)."""

    def __init__(self, timeout: float) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.released_in_time = False
        self._timeout = timeout

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        self.started.set()
        self.released_in_time = self.release.wait(self._timeout)
        family = Metric("slow_family", "collected slowly", "gauge")
        family.add_sample("slow_family", {}, 1.0)
        yield family


async def test_the_loop_answers_health_while_a_scrape_renders(
    session: aiohttp.ClientSession,
) -> None:
    m = ExporterMetrics(process_metrics=False)
    blocking = Blocking(timeout=10)
    m.registry.register(blocking)
    runner, url = await serve(create_app(m, []))
    try:

        async def scrape(headers: dict[str, str]) -> str:
            async with session.get(url, headers=headers) as response:
                assert response.status == 200
                return await response.text()

        scraping = asyncio.create_task(scrape({"Accept-Encoding": "gzip"}))
        assert await asyncio.to_thread(blocking.started.wait, 10)
        async with session.get(url.replace("/metrics", "/-/healthy")) as response:
            assert response.status == 200
        assert not scraping.done()  # health was answered while the render still ran
        blocking.release.set()
        assert "slow_family 1.0" in await scraping
        assert blocking.released_in_time  # a render on the loop would have held health back
    finally:
        blocking.release.set()
        await runner.cleanup()


class WhereCollected:
    """A family that notes which thread collected it, taking ``seconds`` to do so."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.seconds = 0.0

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        self.threads.append(threading.current_thread())
        time.sleep(self.seconds)
        family = Metric("where", "collected", "gauge")
        family.add_sample("where", {}, 1.0)
        yield family


async def test_small_renders_run_on_the_loop_and_slow_ones_in_a_thread() -> None:
    registry = CollectorRegistry()
    where = WhereCollected()
    registry.register(where)
    handler = metrics_handler(registry)

    async def render() -> threading.Thread:
        response = await handler(make_mocked_request("GET", "/metrics"))
        assert isinstance(response, web.Response)
        assert isinstance(response.body, bytes) and b"where 1.0" in response.body
        return where.threads[-1]

    loop_thread = threading.current_thread()
    assert await render() is not loop_thread  # the first: its cost is not known yet
    assert await render() is loop_thread  # the last one took far less than INLINE_RENDER
    where.seconds = 2 * INLINE_RENDER
    assert await render() is loop_thread  # it could not be known to be slow
    assert await render() is not loop_thread  # now it is
    assert await render() is not loop_thread
    where.seconds = 0.0
    assert await render() is not loop_thread  # the slow one before it was in the thread
    assert await render() is loop_thread
