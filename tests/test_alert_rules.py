"""The Prometheus rules: promtool's syntax check and unit tests, and the conventions.

promtool comes with Prometheus (Debian/Ubuntu: `apt-get install prometheus`).
Without it these tests are skipped, except when the CI variable is set.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.promql_names import (
    ALERTS_PATH,
    PROMETHEUS_DIR,
    RULE_TESTS_DIR,
    RUNBOOK_PATH,
    Rule,
    contract_metrics,
    load_rules,
    metric_names,
    rule_files,
    selectors,
)
from tests.rule_mutants import mutants, survivors

SEVERITIES = {"critical", "warning", "info"}
EXAMPLE_CONFIG = PROMETHEUS_DIR / "prometheus.example.yml"
RULE_TESTS = sorted(RULE_TESTS_DIR.glob("*.yml"))
# A guard on the current value of vms_up being 1, raw or aggregated: it resets
# `for:` on every failed poll.
INSTANT_UP_GUARD = re.compile(
    r"(?:\bvms_up|\b(?:max|min)\s+by\s*\(\s*target\s*\)\s*\(\s*vms_up\s*\))\s*==\s*1\b"
)
# The old per-target guard that hid counter alerts during an outage (issue 11, point 5).
TARGET_GUARD = re.compile(r"max_over_time\s*\(\s*vms_up\s*\[")
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
WINDOW_GAUGES = {
    "vms_downloads",
    "vms_downloads_by_camera",
    "vms_downloads_oldest_in_progress_created_timestamp_seconds",
    "vms_downloads_newest_created_timestamp_seconds",
}
# Mutants of alerts.yml that no rule test rejects, on purpose (tests/rule_mutants.py).
ACCEPTED_MUTANTS = {
    ("VmsExporterTargetDown", "sum instead of max across replicas"): "equivalent: vms_up is "
    "0 or 1, so the sum is 0 exactly when the max is",
    ("VmsExporterPollErrorsHigh", "2 -> 1 (#1)"): "differs only for a target whose vms_up "
    "changes every 8 to 15 minutes, which neither version reports (see the runbook)",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is required in CI (Debian/Ubuntu: apt-get install prometheus)")
        pytest.skip("promtool not found: install Prometheus (Debian: apt-get install prometheus)")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def rules() -> list[Rule]:
    return load_rules()


@pytest.fixture(scope="module")
def alerts(rules: list[Rule]) -> list[Rule]:
    return [r for r in rules if r.kind == "alert"]


# --------------------------------------------------------------------------
# promtool


def test_promtool_check_rules() -> None:
    files = rule_files()
    assert ALERTS_PATH in files
    result = run("check", "rules", *map(str, files))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_example_config() -> None:
    """The example scrape config is valid and loads the rule files."""
    result = run("check", "config", str(EXAMPLE_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alerts.yml" in result.stdout + result.stderr


def test_there_are_rule_unit_tests() -> None:
    assert len(RULE_TESTS) >= 3


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda p: p.name)
def test_promtool_test_rules(test_file: Path) -> None:
    result = run("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------
# Conventions


def test_the_yaml_reader_sees_every_rule(rules: list[Rule]) -> None:
    text = ALERTS_PATH.read_text(encoding="utf-8")
    expected = len(re.findall(r"^\s*- (?:alert|record):", text, re.MULTILINE))
    assert len([r for r in rules if r.path == ALERTS_PATH]) == expected > 0


def test_alert_names(alerts: list[Rule]) -> None:
    names = [a.name for a in alerts]
    assert len(names) == len(set(names))
    for name in names:
        assert re.fullmatch(r"Vms(Downloads|Exporter)(?:[A-Z][a-z0-9]*)+", name), name


def test_labels_and_annotations(alerts: list[Rule]) -> None:
    for alert in alerts:
        assert alert.labels.get("severity") in SEVERITIES, alert.name
        assert set(alert.annotations) >= {"summary", "description", "runbook_url"}, alert.name
        assert alert.annotations["runbook_url"].endswith(f"/runbook#{alert.name.lower()}")
        assert alert.annotations["summary"].strip() and alert.annotations["description"].strip()
        if alert.duration:
            assert re.fullmatch(r"(\d+[smhdw])+", alert.duration), alert.name


def test_links_work_out_of_the_box(alerts: list[Rule]) -> None:
    """Issue 11, point 8: the exporter instance that polls the target serves the runbook,
    and every description links the dashboard with the target selected."""
    for alert in alerts:
        url = alert.annotations["runbook_url"]
        assert url.startswith("http://{{") and "example" not in url, alert.name
        description = alert.annotations["description"]
        link = "http://localhost:3000/d/vms-downloads"
        if alert.name in ("VmsExporterDown", "VmsExporterAbsent"):
            assert description.endswith(f"Dashboard: {link}"), alert.name
        else:
            assert description.endswith(f"Dashboard: {link}?var-target={{{{ $labels.target }}}}")
            assert "$labels.target" in url, alert.name


def test_each_severity_says_why(alerts: list[Rule]) -> None:
    """Issue 11, point 9: the comment above each alert gives the reason for its severity."""
    text = ALERTS_PATH.read_text(encoding="utf-8")
    for alert in alerts:
        block = text[: text.index(f"- alert: {alert.name}\n")].rsplit("\n\n", 1)[-1]
        assert f"Severity {alert.labels['severity']}" in block, alert.name
    by_name = {a.name: a for a in alerts}
    assert by_name["VmsExporterPollsStale"].labels == by_name["VmsExporterTargetDown"].labels


def test_every_severity_is_used(alerts: list[Rule]) -> None:
    assert {a.labels["severity"] for a in alerts} == SEVERITIES


def github_anchors(markdown: str) -> set[str]:
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, re.MULTILINE):
        anchor = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(anchor)
    return anchors


def test_runbook_has_a_section_per_alert(alerts: list[Rule]) -> None:
    runbook = RUNBOOK_PATH.read_text(encoding="utf-8")
    anchors = github_anchors(runbook)
    sections = set(re.findall(r"^## (Vms\w+)\s*$", runbook, re.MULTILINE))
    assert sections == {a.name for a in alerts}
    for alert in alerts:
        assert alert.annotations["runbook_url"].rsplit("#", 1)[1] in anchors, alert.name
    assert "scripts/gen-mixin" in runbook, "the runbook explains how to set the links"


def test_only_window_gauges_are_guarded_and_per_replica(alerts: list[Rule]) -> None:
    """Issue 11, points 5 and 6. Window gauges keep their last value after failed
    polls: an alert on them uses each replica's data only while that replica's own
    last success is fresh, judged by its exported poll interval. Counters cannot
    fire from frozen data: no guard that would hide failures seen before an outage."""
    for alert in alerts:
        gauges = metric_names(alert.expr) & WINDOW_GAUGES
        assert not TARGET_GUARD.search(alert.expr), alert.name
        assert not INSTANT_UP_GUARD.search(alert.expr), alert.name
        if gauges:
            assert "vms_exporter_last_poll_success_timestamp_seconds" in alert.expr, alert.name
            assert "vms_exporter_poll_interval_seconds" in alert.expr, alert.name
            assert "vms_up" not in metric_names(alert.expr), alert.name
        elif alert.name.startswith("VmsDownloads"):
            assert "vms_up" not in metric_names(alert.expr), alert.name


def test_gauges_survive_a_lost_scrape(alerts: list[Rule]) -> None:
    """Issue 11, point 3: an alert with `for:` reads gauges over a range, never
    instantly: a failed scrape's staleness markers would empty the expression."""
    known = contract_metrics()
    for alert in alerts:
        if not alert.duration:
            continue
        for found in selectors(alert.expr):
            metric = known.get(found.metric)
            if (
                metric is None
                or metric.type != "gauge"
                or found.metric == "vms_exporter_build_info"
            ):
                continue
            rest = alert.expr[found.end :].lstrip()
            assert rest.startswith("["), f"{alert.name}: {found.metric} read instantly"


def test_target_down_has_hysteresis() -> None:
    """Issue 11, point 4: one successful poll in an outage does not resolve it."""
    document = yaml.safe_load(ALERTS_PATH.read_text(encoding="utf-8"))
    rules = {r["alert"]: r for g in document["groups"] for r in g["rules"]}
    assert rules["VmsExporterTargetDown"].get("keep_firing_for")


def test_guard_regexes() -> None:
    for bad in (
        "x > 0 and on (target) vms_up == 1",
        "x > 0 and on (target) max by (target) (vms_up) == 1",
        "x > 0 and on(target) vms_up==1",
    ):
        assert INSTANT_UP_GUARD.search(bad), bad
    for good in ("max by (target) (vms_up) == 0", "changes(vms_up[15m]) >= 2"):
        assert not INSTANT_UP_GUARD.search(good), good
    assert TARGET_GUARD.search("and on (target) max by (target) (max_over_time(vms_up[5m])) == 1")


def test_polls_stale_scales_with_the_poll_interval(alerts: list[Rule]) -> None:
    by_name = {a.name: a for a in alerts}
    assert "vms_exporter_poll_interval_seconds" in by_name["VmsExporterPollsStale"].expr


def test_poll_errors_high_needs_flapping(alerts: list[Rule]) -> None:
    """An outage that is over (or still going on) is not flapping."""
    expr = {a.name: a for a in alerts}["VmsExporterPollErrorsHigh"].expr
    assert re.search(r"changes\s*\(\s*vms_up\s*\[", expr)


def test_counters_not_window_gauges_for_events(alerts: list[Rule]) -> None:
    """Failures and removals come from counters; the window gauges stay high
    for the whole lookback and would keep an alert firing all day."""
    for alert in alerts:
        used = metric_names(alert.expr)
        assert not used & (
            WINDOW_GAUGES - {"vms_downloads_oldest_in_progress_created_timestamp_seconds"}
        ), alert.name
    by_name = {a.name: a for a in alerts}
    assert "vms_downloads_file_removed_total" in by_name["VmsDownloadsFileRemoved"].expr
    failed = 'vms_downloads_finished_total{status="failed"}'
    assert failed in by_name["VmsDownloadsExportFailed"].expr


def test_age_thresholds_fit_in_the_lookback(alerts: list[Rule]) -> None:
    for alert in alerts:
        if "vms_downloads_oldest_in_progress_created_timestamp_seconds" in alert.expr:
            assert "vms_exporter_lookback_seconds" in alert.expr, alert.name


def test_required_alerts_exist(alerts: list[Rule]) -> None:
    exprs = {a.name: a.expr for a in alerts}
    needed = {
        "failed exports": 'increase(vms_downloads_finished_total{status="failed"}',
        "stuck in progress": "vms_downloads_oldest_in_progress_created_timestamp_seconds",
        "aged out": "vms_downloads_aged_out_in_progress_total",
        "files removed": "vms_downloads_file_removed_total",
        "target down": "max by (target) (last_over_time(vms_up[",
        "stale polls": "vms_exporter_last_poll_success_timestamp_seconds",
        "unauthorized": 'vms_exporter_polls_total{result="unauthorized"}',
        "exporter down": "up == 0",
        "dead man's switch": "absent(vms_exporter_build_info)",
    }
    for what, fragment in needed.items():
        assert any(fragment in e for e in exprs.values()), what


# --------------------------------------------------------------------------
# What the runbook tells operators to configure


def _runbook_blocks(language: str) -> list[str]:
    runbook = RUNBOOK_PATH.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```", runbook, re.MULTILINE | re.DOTALL)


def _matches(matcher: str, labels: dict[str, str]) -> bool:
    """One Alertmanager matcher such as `alertname =~ "A|B"` against labels."""
    found = re.fullmatch(r'\s*(\w+)\s*(=~|!~|!=|=)\s*"?([^"]*?)"?\s*', matcher)
    assert found, matcher
    name, op, value = found.groups()
    actual = labels.get(name, "")
    if op == "=":
        return actual == value
    if op == "!=":
        return actual != value
    hit = re.fullmatch(value, actual) is not None
    return hit if op == "=~" else not hit


def test_suggested_inhibitions_never_silence_a_more_severe_alert(alerts: list[Rule]) -> None:
    """A warning must not inhibit a critical alert: warnings may go to a
    channel nobody watches at night, and the critical page would be lost."""
    documents = [yaml.safe_load(block) for block in _runbook_blocks("yaml")]
    rules = [r for d in documents if isinstance(d, dict) for r in d.get("inhibit_rules", [])]
    assert rules, "the runbook suggests Alertmanager inhibit_rules"
    labelled = [{"alertname": a.name, **a.labels} for a in alerts]
    for rule in rules:
        sources = [a for a in labelled if all(_matches(m, a) for m in rule["source_matchers"])]
        targets = [a for a in labelled if all(_matches(m, a) for m in rule["target_matchers"])]
        assert sources and targets, f"{rule}: matches no alert of alerts.yml"
        for source in sources:
            for target in targets:
                assert SEVERITY_RANK[source["severity"]] >= SEVERITY_RANK[target["severity"]], (
                    f"{source['alertname']} ({source['severity']}) would inhibit "
                    f"{target['alertname']} ({target['severity']})"
                )


def _rule_test_cases() -> Iterator[tuple[str, bool]]:
    """(alertname, expects firing) for every alert_rule_test of tests/rules/."""
    for path in RULE_TESTS:
        document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert "../../prometheus/alerts.yml" in document["rule_files"], path
        for test in document["tests"]:
            for case in test.get("alert_rule_test", []):
                yield case["alertname"], bool(case.get("exp_alerts"))


def test_every_alert_is_tested_firing_and_silent(alerts: list[Rule]) -> None:
    cases = list(_rule_test_cases())
    names = {a.name for a in alerts}
    tested = {name for name, _ in cases}
    assert tested <= names, f"tests for unknown alerts: {tested - names}"
    for name in names:
        assert (name, True) in cases, f"{name}: no test where it fires"
        assert (name, False) in cases, f"{name}: no test where it stays silent"


def test_rule_tests_reject_every_mutant() -> None:
    """The rule tests catch small wrong versions of every alert (tests/rule_mutants.py),
    except the few accepted, each with its reason."""
    promtool()
    candidates = {(m.alert, m.change) for m in mutants()}
    assert len(candidates) > 70
    assert set(ACCEPTED_MUTANTS) <= candidates, "an accepted mutant no longer exists"
    alive = {(m.alert, m.change) for m in survivors(run)}
    assert alive - set(ACCEPTED_MUTANTS) == set(), "rule tests miss these mutants"
    assert set(ACCEPTED_MUTANTS) - alive == set(), "now rejected: drop from ACCEPTED_MUTANTS"
