"""PromQL of the Grafana dashboard and the Prometheus rules, and the metric names in it.

Used by tests/test_dashboard.py and tests/test_alert_rules.py, and meant for an
end-to-end test that runs the exporter and a real Prometheus:

- :func:`panel_queries` lists every panel query of the dashboard with the
  Grafana variables (``$target``, ``${datasource}``, ``$__rate_interval``,
  ``$__range`` ...) substituted, ready for Prometheus' query API;
- :func:`used_metric_names` gives every metric name the dashboard and the
  rules use, and :func:`unknown_metric_names` checks them against
  ``CONTRACT.md`` or, with :func:`exposition_metric_names`, against a real
  ``/metrics`` page.

"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DASHBOARD_PATH = REPO / "grafana" / "dashboards" / "vms-downloads.json"
PROMETHEUS_DIR = REPO / "prometheus"
ALERTS_PATH = PROMETHEUS_DIR / "alerts.yml"
RULE_TESTS_DIR = REPO / "tests" / "rules"
RUNBOOK_PATH = REPO / "docs" / "runbook.md"
# The metrics the project promises: the tables under "## Metrics" of its own README.
CONTRACT_PATH = Path(__file__).parents[1] / "README.md"

#: Names a query may use besides the exporter's own metrics: series Prometheus
#: itself creates.
PROMETHEUS_METRICS = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})

#: Grafana variables with values that make a panel query a valid PromQL query
#: against a Prometheus scraping the exporter every 30 s. ``target`` and
#: ``job`` are multi-value variables used as ``=~"$target"``: ``.+`` = All.
DEFAULT_VARIABLES: Mapping[str, str] = {
    "datasource": "prometheus",
    "target": ".+",
    "job": ".+",
    "__rate_interval": "2m",
    "__rate_interval_ms": "120000",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_NAME = r"[A-Za-z_:][A-Za-z0-9_:]*"


# --------------------------------------------------------------------------
# PromQL: metric names and selectors


@dataclass(frozen=True)
class Selector:
    """One vector selector in a PromQL expression."""

    metric: str
    matchers: str  # the text between the braces, "" if none
    start: int  # offset of the metric name in the expression
    end: int  # offset just after the selector (after "}" if any)

    def equality_labels(self) -> frozenset[str]:
        """Labels fixed to one value by an ``=`` matcher (not ``=~``, ``!=`` or ``!~``)."""
        found = re.findall(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"', self.matchers)
        return frozenset(name for name, op in found if op == "=")


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "atan2",
        "inf",
        "nan",
    }
)
_GRAFANA_VARIABLE = re.compile(
    r"\$\{(?P<braced>\w+)(?::[^}]*)?\}|\$(?P<plain>\w+)|\[\[(?P<old>\w+)(?::[^\]]*)?\]\]"
)


def _blank(match: re.Match[str]) -> str:
    return " " * len(match.group(0))


def _mask(expr: str) -> str:
    """The expression with string literals and comments blanked out, same length."""
    masked = _STRING.sub(
        lambda m: m.group(0)[0] + " " * (len(m.group(0)) - 2) + m.group(0)[-1], expr
    )
    return re.sub(r"#[^\n]*", _blank, masked)


def selectors(expr: str) -> list[Selector]:
    """Every vector selector of an expression (also inside Grafana's ``label_values``)."""
    masked = _mask(expr)
    masked = _GROUPING.sub(_blank, masked)
    out: list[Selector] = []
    pattern = re.compile(rf"(?<![\w:.$])({_NAME})")
    position = 0
    while True:
        match = pattern.search(masked, position)
        if match is None:
            return out
        name, start, end = match.group(1), match.start(1), match.end(1)
        position = end
        rest = masked[end:]
        stripped = rest.lstrip()
        if stripped.startswith("(") or name.lower() in _KEYWORDS:
            continue  # a function, an aggregation or a keyword
        if _inside(masked, start, "{", "}") or _inside(masked, start, "[", "]"):
            continue  # a label name, or a duration / variable in a range
        matchers = ""
        if stripped.startswith("{"):
            open_at = end + (len(rest) - len(stripped))
            close_at = masked.index("}", open_at)
            matchers = expr[open_at + 1 : close_at]
            end = close_at + 1
            position = end
        out.append(Selector(name, matchers, start, end))


def _inside(text: str, position: int, opening: str, closing: str) -> bool:
    before = text[:position]
    return before.rfind(opening) > before.rfind(closing)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression (PromQL or a Grafana variable query) reads."""
    masked = _mask(expr)
    # Grafana's label_values(metric, label): only the first argument is a series.
    masked = re.sub(
        r"\blabel_values\s*\(([^(),]*(?:\{[^}]*\})?)\s*,\s*\w+\s*\)",
        lambda m: f" {m.group(1)} ",
        masked,
    )
    masked = re.sub(r"\blabel_values\s*\(\s*\w+\s*\)", _blank, masked)
    return {s.metric for s in selectors(masked)}


def substitute(expr: str, variables: Mapping[str, str] | None = None) -> str:
    """Replace Grafana variables (``$x``, ``${x}``, ``${x:format}``, ``[[x]]``) by values.

    Names missing from ``variables`` (default :data:`DEFAULT_VARIABLES`) raise
    ``KeyError``; ``$1``-style regex references are left alone.
    """
    values = DEFAULT_VARIABLES if variables is None else variables

    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain") or match.group("old")
        if name.isdigit():
            return match.group(0)
        if name not in values:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return _GRAFANA_VARIABLE.sub(replace, expr)


def variables_used(expr: str) -> set[str]:
    """Names of the Grafana variables an expression refers to."""
    names = set()
    for match in _GRAFANA_VARIABLE.finditer(expr):
        name = match.group("braced") or match.group("plain") or match.group("old")
        if not name.isdigit():
            names.add(name)
    return names


# --------------------------------------------------------------------------
# The contract and real exposition output


@dataclass(frozen=True)
class ContractMetric:
    name: str
    type: str  # gauge, counter, histogram, ...
    labels: frozenset[str]


def contract_metrics(path: Path = CONTRACT_PATH) -> dict[str, ContractMetric]:
    """The metrics the tables under ``## Metrics`` of ``path`` (the README) define."""
    metrics: dict[str, ContractMetric] = {}
    in_metrics = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            in_metrics = line.strip() == "## Metrics"
            continue
        if not in_metrics:
            continue
        row = re.match(rf"^\|\s*`({_NAME})`\s*\|\s*(\w+)\s*\|([^|]*)\|", line)
        if row:
            labels = frozenset(re.findall(r"[a-z_]+", re.sub(r"\([^)]*\)", "", row.group(3))))
            metrics[row.group(1)] = ContractMetric(row.group(1), row.group(2), labels)
    return metrics


def series_labels(name: str, known: Mapping[str, ContractMetric]) -> frozenset[str] | None:
    """Labels of the series ``name`` (``_bucket`` adds ``le``), None if not in ``known``."""
    if name in known and known[name].type != "histogram":
        return known[name].labels
    for suffix in _HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and base in known and known[base].type == "histogram":
            extra = {"le"} if suffix == "_bucket" else set()
            return known[base].labels | extra
    return None


def unknown_metric_names(
    names: Iterable[str],
    known: Mapping[str, ContractMetric] | Iterable[str],
    allowed: Iterable[str] = PROMETHEUS_METRICS,
) -> set[str]:
    """The names that are neither in ``known`` nor ``allowed``.

    With a contract (a mapping), a histogram counts only with its
    ``_bucket``/``_sum``/``_count`` suffix; with a plain set of names (for
    instance :func:`exposition_metric_names` of a real ``/metrics`` page) the
    name must be there as it is.
    """
    allowed_set = set(allowed)
    if isinstance(known, Mapping):
        return {n for n in names if n not in allowed_set and series_labels(n, known) is None}
    known_set = set(known)
    return {n for n in names if n not in allowed_set and n not in known_set}


def exposition_metric_names(text: str) -> set[str]:
    """Sample names in a Prometheus or OpenMetrics text exposition."""
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = re.match(_NAME, line)
            if match:
                names.add(match.group(0))
    return names


# --------------------------------------------------------------------------
# The dashboard


@dataclass(frozen=True)
class PanelQuery:
    """One query of a dashboard panel (or annotation, or variable)."""

    panel: str  # panel title, "annotation: <name>" or "variable: <name>"
    ref_id: str
    expr: str
    instant: bool = False


def load_dashboard(path: Path = DASHBOARD_PATH) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, with the panels inside collapsed rows."""

    def walk(panels: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    return walk(dashboard.get("panels", []))


def dashboard_queries(dashboard: Mapping[str, Any] | None = None) -> list[PanelQuery]:
    """Raw expressions of every panel target, annotation and query variable."""
    board = load_dashboard() if dashboard is None else dashboard
    out: list[PanelQuery] = []
    for panel in iter_panels(board):
        for target in panel.get("targets", []):
            if target.get("expr"):
                out.append(
                    PanelQuery(
                        panel.get("title", ""),
                        target.get("refId", ""),
                        target["expr"],
                        bool(target.get("instant")) and not target.get("range", False),
                    )
                )
    for annotation in board.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            out.append(
                PanelQuery(f"annotation: {annotation.get('name', '')}", "", annotation["expr"])
            )
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            text = query.get("query", "") if isinstance(query, dict) else query
            if text:
                out.append(PanelQuery(f"variable: {variable['name']}", "", text))
    return out


def panel_queries(
    dashboard: Mapping[str, Any] | None = None,
    variables: Mapping[str, str] | None = None,
) -> list[PanelQuery]:
    """Every panel's PromQL with the Grafana variables substituted.

    ``variables`` overrides :data:`DEFAULT_VARIABLES`, e.g.
    ``{"target": "demo"}``. Annotations are included (they are PromQL too);
    variable queries (``label_values(...)``) are not: they are Grafana's.
    """
    values = {**DEFAULT_VARIABLES, **(variables or {})}
    return [
        PanelQuery(q.panel, q.ref_id, substitute(q.expr, values), q.instant)
        for q in dashboard_queries(dashboard)
        if not q.panel.startswith("variable: ")
    ]


# --------------------------------------------------------------------------
# The rules


@dataclass(frozen=True)
class Rule:
    group: str
    name: str  # alert or record name
    kind: str  # "alert" or "record"
    expr: str
    duration: str = ""  # `for`, "" when absent
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    path: Path = ALERTS_PATH


def rule_files(directory: Path = PROMETHEUS_DIR) -> list[Path]:
    """Prometheus rule files in ``directory``: YAML files with top-level ``groups:``."""
    return sorted(
        p
        for p in directory.glob("*.y*ml")
        if re.search(r"^groups\s*:", p.read_text(encoding="utf-8"), re.MULTILINE)
    )


def load_rules(paths: Iterable[Path] | None = None) -> list[Rule]:
    out: list[Rule] = []
    for path in rule_files() if paths is None else paths:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in document["groups"]:
            for rule in group["rules"]:
                kind = "alert" if "alert" in rule else "record"
                out.append(
                    Rule(
                        group["name"],
                        str(rule[kind]),
                        kind,
                        str(rule["expr"]),
                        str(rule.get("for", "")),
                        dict(rule.get("labels") or {}),
                        dict(rule.get("annotations") or {}),
                        path,
                    )
                )
    return out


def used_metric_names(
    dashboard: Mapping[str, Any] | None = None, rules: Iterable[Rule] | None = None
) -> dict[str, list[str]]:
    """Every metric name the dashboard and the rules use, with where it is used."""
    used: dict[str, list[str]] = {}
    for query in dashboard_queries(dashboard):
        for name in metric_names(query.expr):
            used.setdefault(name, []).append(f"dashboard {query.panel} {query.ref_id}".strip())
    for rule in load_rules() if rules is None else rules:
        for name in metric_names(rule.expr):
            used.setdefault(name, []).append(f"rule {rule.name}")
    return used
