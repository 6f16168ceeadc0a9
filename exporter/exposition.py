"""/metrics: our registry rendered byte for byte as prometheus-client renders it, faster.

prometheus-client spends most of an exposition on each sample's ``name{labels}``
part (name checks, escaping, formatting), which repeats scrape after scrape.
:class:`Renderer` keeps that part per (sample name, labels) in a bounded memo, so
a sample costs its value only. The Prometheus text format 0.0.4 and OpenMetrics
1.0.0 (exemplars, ``# UNIT``, ``# EOF``) are rendered here; anything else
(native histograms, OpenMetrics 2, a family that fails) goes to prometheus-client
itself, family by family, so the output is always its output. Content
negotiation and ``name[]`` filtering are prometheus-client's own
(``choose_encoder``, ``restricted_registry``), and :func:`metrics_handler`
renders in a worker thread, so the event loop keeps serving polls and
``/-/healthy`` meanwhile.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.exposition import generate_latest as reference_text
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as om
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString, parse_version
from prometheus_client.validation import _is_valid_legacy_metric_name

INLINE_RENDER: Final = 0.005
"""Seconds: a /metrics render that took less last time runs on the loop (one target's
takes ~1 ms); a larger one (many targets) runs in a worker thread."""
MAX_PREFIXES: Final = 50_000
"""Memoized ``name{labels} `` parts (~500 bytes each with its key; 200 targets need ~28,000);
past it the memo starts over, so a growing label set costs speed, never unbounded memory."""

Encoder = Callable[[Collector], bytes]
_Key = tuple[str, tuple[tuple[str, str], ...]]

_go: Callable[[float], str] = floatToGoString
_reference_om: Callable[..., bytes] = om.generate_latest
_exemplar: Callable[[Metric, Sample, object], str] = om._compose_exemplar_string
_PLAIN_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*").fullmatch
"""Names that every format and escaping used here leaves exactly as they are."""
_PLAIN_ESCAPINGS = frozenset({om.UNDERSCORES, om.ALLOWUTF8})
_TEXT_OM_SUFFIXES = ("_created", "_gsum", "_gcount")
_TEXT_TYPES = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram"}
_EOF = "# EOF\n"


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _plain_prefix(name: str, items: Iterable[tuple[str, str]]) -> str | None:
    """``name{a="x",b="y"} ``, or None when a name needs the format's own escaping."""
    if not _PLAIN_NAME(name):
        return None
    parts = []
    for label, value in sorted(items):
        if not _PLAIN_NAME(label) or label.startswith("__"):
            return None
        parts.append(f'{label}="{_escape_value(value)}"')
    return f"{name}{{{','.join(parts)}}} " if parts else f"{name} "


def _text_prefix(name: str, items: Iterable[tuple[str, str]], escaping: str) -> str:
    """prometheus-client's text format ``sample_line`` up to the value, for any names."""
    labels = ",".join(
        f'{om.escape_label_name(k, escaping)}="{_escape_value(v)}"' for k, v in sorted(items)
    )
    escaped = om.escape_metric_name(name, escaping)
    if escaping != om.ALLOWUTF8 or _is_valid_legacy_metric_name(name):
        return f"{escaped}{{{labels}}} " if labels else f"{escaped} "
    return f"{{{escaped}{',' if labels else ''}{labels}}} "


def _om_prefix(name: str, items: Iterable[tuple[str, str]], escaping: str) -> str:
    """prometheus-client's OpenMetrics sample line up to the value, for any names."""
    legacy = escaping != om.ALLOWUTF8 or _is_valid_legacy_metric_name(name)
    labels = "" if legacy else om.escape_metric_name(name, escaping)
    pairs = ",".join(
        f'{om.escape_label_name(k, escaping)}="{_escape_value(v)}"' for k, v in sorted(items)
    )
    if pairs:
        labels = f"{labels},{pairs}" if labels else pairs
    if labels:
        labels = "{" + labels + "}"
    if legacy:
        return f"{om._escape(name, escaping, om._is_legacy_labelname_rune)}{labels} "
    return f"{labels} "


def _prefix(sample: Sample, memo: dict[_Key, str], miss: Callable[[_Key], str]) -> str:
    """The sample's ``name{labels} `` part, from the memo or computed; native histograms
    are prometheus-client's to render."""
    if sample.native_histogram is not None:
        raise _Fallback
    key = (sample.name, tuple(sample.labels.items()))
    return memo.get(key) or miss(key)


class _Fallback(Exception):
    """This family is prometheus-client's to render (native histograms)."""


class _One:
    """A collector of one family, to hand a family to prometheus-client's renderers."""

    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> Iterator[Metric]:
        yield self._metric


class Renderer:
    """Renders any registry in both formats; one instance keeps one memo of sample prefixes.

    Safe to use from several threads at once: a hit is one ``dict.get`` (atomic under
    the GIL); misses, rare once the memo is warm, change the memos under a lock.
    """

    def __init__(self, max_prefixes: int = MAX_PREFIXES) -> None:
        self._max = max_prefixes
        self._plain: dict[_Key, str] = {}
        """Prefixes of plain names: the same in both formats under underscores/allow-utf-8."""
        self._dialects: dict[tuple[str, str], dict[_Key, str]] = {}
        """(format, escaping) → prefixes of every other case."""
        self._lock = threading.Lock()

    @property
    def prefixes(self) -> int:
        """Prefixes kept now: at most ``max_prefixes``."""
        return len(self._plain) + sum(len(memo) for memo in self._dialects.values())

    def choose(self, accept_header: str) -> tuple[Encoder, str]:
        """prometheus-client's negotiation, with its encoder replaced by ours where we
        render the same format; the content type is always prometheus-client's."""
        encoder, content_type = choose_encoder(accept_header)
        if encoder is reference_text:
            return self.text, content_type
        if isinstance(encoder, partial) and not encoder.args:
            kwargs = encoder.keywords
            if encoder.func is reference_text and kwargs.keys() == {"escaping"}:
                return partial(self.text, escaping=kwargs["escaping"]), content_type
            if (
                encoder.func is _reference_om
                and kwargs.keys() == {"escaping", "version"}
                and parse_version(kwargs["version"]) < (2, 0, 0)
            ):
                return partial(self.openmetrics, escaping=kwargs["escaping"]), content_type
        return encoder, content_type

    def text(self, registry: Collector, escaping: str = om.UNDERSCORES) -> bytes:
        """``prometheus_client.generate_latest(registry, escaping)``, byte for byte."""
        output: list[str] = []
        for metric in registry.collect():
            try:
                output.extend(self._text_family(metric, escaping))
            except Exception:  # prometheus-client renders it, or raises its own error
                output.append(reference_text(_One(metric), escaping).decode())
        return "".join(output).encode()

    def openmetrics(self, registry: Collector, escaping: str = om.UNDERSCORES) -> bytes:
        """``openmetrics.exposition.generate_latest(registry, escaping)`` (1.0.0), byte for byte."""
        output: list[str] = []
        for metric in registry.collect():
            try:
                output.extend(self._om_family(metric, escaping))
            except Exception:
                whole = _reference_om(_One(metric), escaping=escaping, version="1.0.0").decode()
                output.append(whole.removesuffix(_EOF))
        output.append(_EOF)
        return "".join(output).encode()

    def _text_family(self, metric: Metric, escaping: str) -> list[str]:
        name, kind = metric.name, metric.type
        if kind == "counter":
            name += "_total"
        elif kind == "info":
            name += "_info"
        kind = _TEXT_TYPES.get(kind, "untyped" if kind == "unknown" else kind)
        help_text = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        escaped = om.escape_metric_name(name, escaping)
        lines = [f"# HELP {escaped} {help_text}\n", f"# TYPE {escaped} {kind}\n"]
        aside: dict[str, list[str]] = {}
        suffixes = {metric.name + suffix: suffix for suffix in _TEXT_OM_SUFFIXES}
        memo, miss = self._memo("text", escaping)
        for sample in metric.samples:
            line = _prefix(sample, memo, miss) + _go(sample.value)
            if sample.timestamp is not None:
                line += f" {int(float(sample.timestamp) * 1000):d}"
            line += "\n"
            suffix = suffixes.get(sample.name)
            if suffix is None:
                lines.append(line)
            else:
                aside.setdefault(suffix, []).append(line)
        for suffix, more in sorted(aside.items()):
            escaped = om.escape_metric_name(metric.name + suffix, escaping)
            lines.append(f"# HELP {escaped} {help_text}\n")
            lines.append(f"# TYPE {escaped} gauge\n")
            lines.extend(more)
        return lines

    def _om_family(self, metric: Metric, escaping: str) -> list[str]:
        escaped = om.escape_metric_name(metric.name, escaping)
        lines = [
            f"# HELP {escaped} {_escape_value(metric.documentation)}\n",
            f"# TYPE {escaped} {metric.type}\n",
        ]
        if metric.unit:
            lines.append(f"# UNIT {escaped} {metric.unit}\n")
        memo, miss = self._memo("om", escaping)
        for sample in metric.samples:
            line = _prefix(sample, memo, miss)
            if sample.value is not None:
                line += _go(sample.value)
            if sample.timestamp is not None:
                line += f" {sample.timestamp}"
            if sample.exemplar:
                line += _exemplar(metric, sample, sample.exemplar)
            lines.append(line + "\n")
        return lines

    def _memo(self, form: str, escaping: str) -> tuple[dict[_Key, str], Callable[[_Key], str]]:
        """The memo to look a sample's prefix up in, and what computes (and keeps) a miss."""
        plain_ok = escaping in _PLAIN_ESCAPINGS
        with self._lock:
            dialect = self._dialects.setdefault((form, escaping), {})
        slow = _text_prefix if form == "text" else _om_prefix
        limit = self._max

        def miss(key: _Key) -> str:
            found = dialect.get(key)
            if found is not None:
                return found
            if plain_ok and (found := _plain_prefix(*key)) is not None:
                memo = self._plain
            else:
                found, memo = slow(*key, escaping), dialect
            with self._lock:
                if self.prefixes >= limit:
                    self._plain.clear()
                    for each in self._dialects.values():
                        each.clear()
                memo[key] = found
            return found

        return (self._plain if plain_ok else dialect), miss


def metrics_handler(registry: CollectorRegistry, renderer: Renderer | None = None) -> Handler:
    """``/metrics`` as prometheus-client's aiohttp handler answers it (negotiation,
    ``name[]``, aiohttp's compression), rendered in a worker thread unless the last
    render took under :data:`INLINE_RENDER` (handing a small render to a thread costs
    a scrape more waiting for the GIL, under a busy loop, than the render itself)."""
    render = renderer or Renderer()
    last_took = math.inf  # the first render goes to a thread: its size is not known yet

    def timed(encode: Encoder, source: Collector) -> bytes:
        nonlocal last_took
        began = time.perf_counter()
        try:
            return encode(source)
        finally:
            last_took = time.perf_counter() - began

    async def metrics(request: web.Request) -> web.Response:
        encode, content_type = render.choose(",".join(request.headers.getall(hdrs.ACCEPT, [])))
        names = request.query.getall("name[]", [])
        source: Collector = registry.restricted_registry(names) if names else registry
        if last_took < INLINE_RENDER:
            body = timed(encode, source)
        else:
            body = await asyncio.to_thread(timed, encode, source)
        response = web.Response(body=body, headers={"Content-Type": content_type})
        response.enable_compression()
        return response

    return metrics
