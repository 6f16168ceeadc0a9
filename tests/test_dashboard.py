"""Static checks of the Grafana dashboard, and of the metric names it and the rules use."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.promql_names import (
    CONTRACT_PATH,
    DASHBOARD_PATH,
    DEFAULT_VARIABLES,
    REPO,
    ContractMetric,
    Selector,
    contract_metrics,
    dashboard_queries,
    iter_panels,
    load_dashboard,
    load_rules,
    metric_names,
    panel_queries,
    selectors,
    series_labels,
    substitute,
    unknown_metric_names,
    used_metric_names,
    variables_used,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Contract metrics deliberately left off the dashboard: the poll interval
# only scales VmsExporterPollsStale.
NOT_ON_DASHBOARD: frozenset[str] = frozenset({"vms_exporter_poll_interval_seconds"})

# Aggregations that de-duplicate exporter replicas (same `target`, another
# `instance`): a gauge selector sits directly in `max by (target, ...)`, or in
# a `<aggregation>_over_time()`/`changes()` directly inside it; a counter or
# histogram selector in `rate()`/`increase()` directly inside it.
_MAX_BY = r"max\s+by\s*\((?P<labels>[^()]*)\)\s*\(\s*"
_GAUGE_WRAP = re.compile(_MAX_BY + r"(?:(?:[a-z]+_over_time|changes)\s*\(\s*)?$")
_COUNTER_WRAP = re.compile(_MAX_BY + r"(?:rate|increase|irate)\s*\(\s*$")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


@pytest.fixture(scope="module")
def contract() -> dict[str, ContractMetric]:
    return contract_metrics(CONTRACT_PATH)


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data (rows excluded)."""
    return [p for p in iter_panels(dashboard) if p.get("type") != "row"]


# --------------------------------------------------------------------------
# The JSON itself


def test_json_is_valid_and_portable() -> None:
    text = DASHBOARD_PATH.read_text(encoding="utf-8")
    board = json.loads(text)
    assert board["id"] is None
    assert board["uid"] == "vms-downloads"
    assert board["title"]
    assert board["schemaVersion"] >= 36
    # grafana.com export placeholders break file provisioning.
    assert "__inputs" not in board
    assert "__requires" not in board
    assert "${DS_" not in text


def test_datasource_variable(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"


def test_target_variable_is_multi_with_all(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    target = variables["target"]
    assert target["type"] == "query"
    assert target["datasource"] == DATASOURCE
    query = target["query"]["query"] if isinstance(target["query"], dict) else target["query"]
    assert re.fullmatch(r"label_values\(\s*vms_up\s*,\s*target\s*\)", query)
    assert target["multi"] is True
    assert target["includeAll"] is True


def test_every_panel_and_query_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        assert panel.get("datasource") == DATASOURCE, panel["title"]
        assert panel.get("targets"), f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target.get("datasource") == DATASOURCE, f"{panel['title']} {target.get('refId')}"
    for annotation in dashboard["annotations"]["list"]:
        if annotation.get("expr"):
            assert annotation["datasource"] == DATASOURCE, annotation["name"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]


def test_every_panel_has_a_description_a_unit_and_thresholds(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        title = panel["title"]
        assert len(panel.get("description", "")) >= 20, f"{title}: describe the panel"
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults.get("unit"), f"{title}: no unit"
        steps = defaults.get("thresholds", {}).get("steps", [])
        assert steps and steps[0]["value"] is None, f"{title}: thresholds need a base step"


def test_panel_ids_are_unique_and_the_grid_fits(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in iter_panels(dashboard)]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in iter_panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        covered = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered


def test_unique_titles(dashboard: dict[str, Any]) -> None:
    titles = [p["title"] for p in panels(dashboard)]
    assert len(titles) == len(set(titles))


# --------------------------------------------------------------------------
# The queries


def test_only_defined_variables_are_used(dashboard: dict[str, Any]) -> None:
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    builtin = {name for name in DEFAULT_VARIABLES if name.startswith("__")}
    for query in dashboard_queries(dashboard):
        unknown = variables_used(query.expr) - defined - builtin
        assert not unknown, f"{query.panel}: undefined variables {unknown}"
        substitute(query.expr)  # must not raise


def test_every_target_selector_filters_on_the_target_variable(
    dashboard: dict[str, Any], contract: dict[str, ContractMetric]
) -> None:
    for query in dashboard_queries(dashboard):
        if query.panel.startswith("variable: target"):
            continue
        for selector in selectors(query.expr):
            labels = series_labels(selector.metric, contract)
            if labels is not None and "target" in labels:
                assert re.search(r'target\s*=~\s*"\$target"', selector.matchers), (
                    f"{query.panel}: {selector.metric} does not filter on $target"
                )


def _dedup_problem(
    expr: str, selector: Selector, contract: dict[str, ContractMetric]
) -> str | None:
    """Why ``selector`` in ``expr`` is not de-duplicated across replicas, or None."""
    labels = series_labels(selector.metric, contract)
    if labels is None or "target" not in labels:
        return None  # not a per-target series (up, build info)
    prefix = expr[: selector.start]
    kind = contract[selector.metric].type if selector.metric in contract else "histogram"
    wrap = _GAUGE_WRAP if kind == "gauge" else _COUNTER_WRAP
    match = wrap.search(prefix)
    if match is None and kind == "gauge" and _in_a_per_series_filter(expr, selector.start):
        return None
    if match is None:
        shape = "max by (target, ...) (" + ("" if kind == "gauge" else "rate|increase(")
        return f"{selector.metric} is not directly inside {shape}"
    grouped = {label.strip() for label in match.group("labels").split(",") if label.strip()}
    missing = labels - selector.equality_labels() - grouped
    if missing:
        return (
            f"max by ({', '.join(sorted(grouped))}) over {selector.metric} merges {sorted(missing)}"
        )
    return None


def _in_a_per_series_filter(expr: str, position: int) -> bool:
    """Whether ``position`` is in an `and` filter inside ``max by (target, ...) (...)``:
    the filter joins each replica's own series before the max (as the freshness
    filter of VmsDownloadsExportStuck does)."""
    for found in re.finditer(r"\bmax\s+by\s*\(\s*target\b[^)]*\)\s*\(", expr):
        depth, end = 1, found.end()
        while depth and end < len(expr):
            depth += {"(": 1, ")": -1}.get(expr[end], 0)
            end += 1
        if found.end() <= position < end and re.search(r"\band\b", expr[found.end() : position]):
            return True
    return False


def _dedup_problems(
    named_exprs: list[tuple[str, str]], contract: dict[str, ContractMetric]
) -> list[str]:
    """``_dedup_problem`` for every selector of every (name, expression)."""
    return [
        f"{name}: {problem}"
        for name, expr in named_exprs
        for selector in selectors(expr)
        if (problem := _dedup_problem(expr, selector, contract))
    ]


def test_window_gauges_use_max_not_sum(
    dashboard: dict[str, Any], contract: dict[str, ContractMetric]
) -> None:
    """Two exporter replicas polling one VMS export the same `target`: every
    per-target series is first reduced with `max by (target, <its labels>)`,
    counters after rate()/increase(); only then may panels sum across labels."""
    queries = [
        (q.panel, q.expr)
        for q in dashboard_queries(dashboard)
        if not q.panel.startswith("variable: ")
    ]
    problems = _dedup_problems(queries, contract)
    assert not problems, "\n".join(problems)


def test_dedup_check_catches_sum(contract: dict[str, ContractMetric]) -> None:
    bad = [
        'sum by (target, status) (vms_downloads{target=~"$target"})',
        'max by (target) (vms_downloads{target=~"$target"})',
        'sum by (target) (increase(vms_downloads_finished_total{target=~"$target"}[1h]))',
        'max by (target) (vms_downloads_finished_total{target=~"$target"})',
        "sum by (target) (max_over_time(vms_up[5m]))",
        "max_over_time(vms_up[5m])",
        "max by (target) (vms_up) and vms_exporter_poll_interval_seconds",
    ]
    for expr in bad:
        assert any(_dedup_problem(expr, s, contract) for s in selectors(expr)), expr
    good = [
        "sum by (target) (max by (target, stream_type)"
        ' (vms_downloads{status="failed", file_exists="true"}))',
        "max by (target) (max_over_time(vms_up[5m])) == 1",
        "max by (target) (changes(vms_up[15m])) >= 2",
        "max by (target) (last_over_time(vms_downloads_newest_created_timestamp_seconds[3m])"
        " and (time() - vms_exporter_last_poll_success_timestamp_seconds) < 300)",
    ]
    for expr in good:
        assert not any(_dedup_problem(expr, s, contract) for s in selectors(expr)), expr


def test_rules_deduplicate_replicas_too(contract: dict[str, ContractMetric]) -> None:
    """Same rule for the alert expressions, the vms_up guards included."""
    problems = _dedup_problems([(r.name, r.expr) for r in load_rules()], contract)
    assert not problems, "\n".join(problems)


def test_required_content_is_on_the_dashboard(dashboard: dict[str, Any]) -> None:
    exprs = [q.expr for q in dashboard_queries(dashboard)]
    used = " ".join(exprs)
    for metric in [
        "vms_up",
        "vms_exporter_last_poll_success_timestamp_seconds",
        "vms_exporter_poll_duration_seconds_bucket",
        "vms_exporter_polls_total",
        "vms_downloads",
        "vms_downloads_finished_total",
        "vms_downloads_export_duration_seconds_bucket",
        "vms_downloads_oldest_in_progress_created_timestamp_seconds",
        "vms_downloads_newest_created_timestamp_seconds",
        "vms_downloads_file_removed_total",
        "vms_downloads_by_camera",
    ]:
        assert re.search(rf"\b{metric}\b", used), metric
    by_type = {p["type"] for p in panels(dashboard)}
    assert {"stat", "timeseries"} <= by_type
    status_panels = [
        p["type"]
        for p in panels(dashboard)
        if any(
            "sum by (status)" in t["expr"] or "sum by (target, status)" in t["expr"]
            for t in p["targets"]
        )
    ]
    assert {"stat", "timeseries"} <= set(status_panels), "downloads by status: stat + time series"
    assert any("histogram_quantile" in e and "export_duration" in e for e in exprs)
    assert any("stream_type" in e for e in exprs)
    assert any(p["fieldConfig"]["defaults"]["unit"] == "percentunit" for p in panels(dashboard))


def test_time_series_of_finished_exports_show_their_exemplars(dashboard: dict[str, Any]) -> None:
    """Exemplars name the download behind a finish (Grafana's exemplar toggle on the query)."""
    with_exemplars = re.compile(r"\b(vms_downloads_finished_total|vms_downloads_export_duration)")
    checked = 0
    for panel in panels(dashboard):
        if panel["type"] != "timeseries":
            continue
        for query in panel["targets"]:
            if with_exemplars.search(query["expr"]):
                assert query.get("exemplar") is True, f"{panel['title']} {query['refId']}"
                checked += 1
            else:
                assert not query.get("exemplar"), f"{panel['title']}: no exemplars to show"
    assert checked >= 3


def test_every_contract_metric_is_on_the_dashboard(
    dashboard: dict[str, Any], contract: dict[str, ContractMetric]
) -> None:
    used = {
        name.removesuffix(suffix)
        for name in used_metric_names(dashboard, rules=[])
        for suffix in ("_bucket", "_sum", "_count", "")
        if name.endswith(suffix)
    }
    missing = set(contract) - used - NOT_ON_DASHBOARD
    assert not missing, f"add a panel for {sorted(missing)} or list it in NOT_ON_DASHBOARD"


def test_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel query, variables substituted, as a recording rule for `promtool check rules`."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is required in CI (Debian/Ubuntu: apt-get install prometheus)")
        pytest.skip("promtool not found: install Prometheus (Debian: apt-get install prometheus)")
    queries = panel_queries()
    rules = [
        {"record": f"dashboard_query:{index}", "expr": q.expr} for index, q in enumerate(queries)
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(
        json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8"
    )
    result = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------
# Metric names of the dashboard and the rules against the contract


def test_every_metric_used_is_in_the_contract(contract: dict[str, ContractMetric]) -> None:
    used = used_metric_names()
    unknown = unknown_metric_names(used, contract)
    assert not unknown, {name: used[name] for name in sorted(unknown)}


def test_bare_histogram_names_are_unknown(contract: dict[str, ContractMetric]) -> None:
    names = {
        "vms_downloads_export_duration_seconds",
        "vms_downloads_export_duration_seconds_bucket",
        "vms_exporter_polls_total_bucket",
        "vms_downlaods",
        "up",
        "ALERTS",
    }
    assert unknown_metric_names(names, contract) == {
        "vms_downloads_export_duration_seconds",
        "vms_exporter_polls_total_bucket",
        "vms_downlaods",
    }


def test_metric_name_extraction() -> None:
    expr = (
        "sum by (target) (max by (target, status) (increase(vms_downloads_finished_total"
        '{target=~"$target", status="a}b"}[$__rate_interval] offset 5m)))\n'
        "/ on (target) group_left vms_up > bool 1e3 # vms_comment\n"
        'and topk(3, ALERTS{alertstate="firing"}) or absent(up{job="x"} == 1) unless vector(0)'
    )
    assert metric_names(expr) == {"vms_downloads_finished_total", "vms_up", "ALERTS", "up"}
    assert metric_names('label_values(vms_up{target=~"$target"}, job)') == {"vms_up"}
    assert metric_names("label_values(target)") == set()


def test_panel_queries_substitute_every_variable() -> None:
    queries = panel_queries(variables={"target": "main|branch"})
    assert queries
    for query in queries:
        assert "$" not in query.expr.replace("$1", ""), query
    assert any('target=~"main|branch"' in q.expr for q in queries)
    assert all(q.panel for q in queries)


def test_helper_paths_point_into_the_repository() -> None:
    assert DASHBOARD_PATH.is_relative_to(REPO)
    assert DASHBOARD_PATH.is_file()


def test_runbook_link_goes_to_an_exporter_of_the_selected_job(dashboard: dict[str, Any]) -> None:
    """Issue 11, point 8: by default the exporter serves the runbook (/runbook)."""
    (link,) = [link for link in dashboard["links"] if link["title"] == "Runbook"]
    assert link["url"] == "http://${instance}/runbook"
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "instance")
    assert variable["query"] == 'label_values(vms_exporter_build_info{job=~"$job"}, instance)'
    assert not variable["multi"] and not variable["includeAll"]
