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
    load_rules,
    metric_names,
    rule_files,
)

RUNBOOK_BASE = "https://github.com/example/vms-downloads-exporter/blob/main/docs/runbook.md"
SEVERITIES = {"critical", "warning", "info"}
EXAMPLE_CONFIG = PROMETHEUS_DIR / "prometheus.example.yml"
RULE_TESTS = sorted(RULE_TESTS_DIR.glob("*.yml"))
GUARD = re.compile(r"\band\s+on\s*\(\s*target\s*\)\s*vms_up\s*==\s*1\b")
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
    is not polled successfully must not fire a VmsDownloads* alert."""
    for alert in alerts:
        uses_downloads = any(n.startswith("vms_downloads") for n in metric_names(alert.expr))
        if alert.name.startswith("VmsDownloads") or uses_downloads:
            assert GUARD.search(alert.expr), f"{alert.name}: add `and on (target) vms_up == 1`"


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
