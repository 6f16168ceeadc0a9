"""The Prometheus rules: promtool's syntax check and unit tests, and the conventions.

promtool comes with Prometheus (Debian/Ubuntu: `apt-get install prometheus`).
Without it these tests are skipped, except when the CI variable is set.
"""

from __future__ import annotations

import json
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
    DASHBOARD_PATH,
    PROMETHEUS_DIR,
    REPO,
    RULE_TESTS_DIR,
    RUNBOOK_PATH,
    Rule,
    load_rules,
    metric_names,
    rule_files,
)

RUNBOOK_BASE = "https://github.com/example/vms-downloads-exporter/blob/main/docs/runbook.md"
SEVERITIES = {"critical", "warning", "info"}
EXAMPLE_CONFIG = PROMETHEUS_DIR / "prometheus.example.yml"
RULE_TESTS = sorted(RULE_TESTS_DIR.glob("*.yml"))
# The one guard of every alert on the window gauges or the VMS's events: a
# poll of the target succeeded within the last 5 minutes. Not the literal
# `vms_up == 1`: vms_up is 0 from a failed poll until the next one, so that
# guard resets `for:` on every failed poll (on a target where 1 poll in 10
# fails, VmsDownloadsFailureRatioHigh and VmsDownloadsExportStuck never fired).
GUARD_TEXT = "and on (target) max by (target) (max_over_time(vms_up[5m])) == 1"
GUARD = re.compile(
    r"\band\s+on\s*\(\s*target\s*\)\s*max\s+by\s*\(\s*target\s*\)\s*"
    r"\(\s*max_over_time\s*\(\s*vms_up\s*\[\s*5m\s*\]\s*\)\s*\)\s*==\s*1\b"
)
# A guard on the current value of vms_up being 1, raw or aggregated.
INSTANT_UP_GUARD = re.compile(
    r"(?:\bvms_up|\b(?:max|min)\s+by\s*\(\s*target\s*\)\s*\(\s*vms_up\s*\))\s*==\s*1\b"
)
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
WINDOW_GAUGES = {
    "vms_downloads",
    "vms_downloads_by_camera",
    "vms_downloads_oldest_in_progress_created_timestamp_seconds",
    "vms_downloads_newest_created_timestamp_seconds",
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
        assert alert.annotations["runbook_url"] == f"{RUNBOOK_BASE}#{alert.name.lower()}"
        assert alert.annotations["summary"].strip() and alert.annotations["description"].strip()
        if alert.duration:
            assert re.fullmatch(r"(\d+[smhdw])+", alert.duration), alert.name


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
    assert RUNBOOK_BASE in runbook, "the runbook explains how to change the base URL"


def test_business_alerts_are_guarded_by_vms_up(alerts: list[Rule]) -> None:
    """Window gauges keep their last value after failed polls: a target that
    has not been polled successfully for 5 minutes must not fire a
    VmsDownloads* alert. One guard, spelled the same everywhere, and never
    the current `vms_up == 1`, which resets `for:` on every failed poll."""
    spellings = set()
    for alert in alerts:
        uses_downloads = any(n.startswith("vms_downloads") for n in metric_names(alert.expr))
        if alert.name.startswith("VmsDownloads") or uses_downloads:
            assert GUARD.search(alert.expr), f"{alert.name}: add `{GUARD_TEXT}`"
        assert not INSTANT_UP_GUARD.search(alert.expr), (
            f"{alert.name}: `vms_up == 1` resets `for:` on every failed poll; use `{GUARD_TEXT}`"
        )
        found = GUARD.search(alert.expr)
        if found:
            spellings.add(" ".join(found.group(0).split()))
    assert spellings == {GUARD_TEXT}


def test_guard_regexes() -> None:
    assert GUARD.search(f"x > 0\n{GUARD_TEXT}")
    assert not GUARD.search("x > 0 and on (target) vms_up == 1")
    assert not GUARD.search(
        "x > 0 and on (target) max by (target) (max_over_time(vms_up[15m])) == 1"
    )
    for bad in (
        "x > 0 and on (target) vms_up == 1",
        "x > 0 and on (target) max by (target) (vms_up) == 1",
        "x > 0 and on(target) vms_up==1",
    ):
        assert INSTANT_UP_GUARD.search(bad), bad
    for good in (GUARD_TEXT, "max by (target) (vms_up) == 0", "changes(vms_up[15m]) >= 2"):
        assert not INSTANT_UP_GUARD.search(good), good


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
        "target down": "max by (target) (vms_up) == 0",
        "stale polls": "vms_exporter_last_poll_success_timestamp_seconds",
        "unauthorized": 'vms_exporter_polls_total{result="unauthorized"}',
        "exporter down": 'up{job="vms-downloads-exporter"}',
    }
    for what, fragment in needed.items():
        assert any(fragment in e for e in exprs.values()), what
    assert any("absent(" in e for e in exprs.values())


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


def test_runbook_sed_changes_every_runbook_link(tmp_path: Path) -> None:
    """The runbook's one command points the alerts and the dashboard at another copy."""
    if (
        shutil.which("sed") is None
        or subprocess.run(["sed", "--version"], capture_output=True, check=False).returncode
    ):
        pytest.skip("needs GNU sed, as the runbook's command does")
    commands = [block for block in _runbook_blocks("sh") if "sed -i" in block]
    assert len(commands) == 1, "one sed command in the runbook's Setup"
    copies = {path: tmp_path / path.relative_to(REPO) for path in (ALERTS_PATH, DASHBOARD_PATH)}
    for path, copy in copies.items():
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
        assert RUNBOOK_BASE in copy.read_text(encoding="utf-8"), path
    result = subprocess.run(
        ["sh", "-eu", "-c", commands[0]], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    for path, copy in copies.items():
        text = copy.read_text(encoding="utf-8")
        assert RUNBOOK_BASE not in text, f"{path.name} still links to the placeholder"
        assert "/docs/runbook.md" in text, path
    json.loads(copies[DASHBOARD_PATH].read_text(encoding="utf-8"))


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
