"""mixin/gen.py (scripts/gen-mixin): the rules and the dashboard generated from one source."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mixin.gen import DASHBOARD_OUT, RULES_OUT, inject
from tests.promql_names import (
    REPO,
    RULE_TESTS_DIR,
    dashboard_queries,
    load_dashboard,
    load_rules,
    selectors,
)
from tests.test_alert_rules import run as promtool

RETENTION_TESTS = RULE_TESTS_DIR / "retention"


def gen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mixin.gen", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def generate(tmp_path: Path, settings: str) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(settings, encoding="utf-8")
    out = tmp_path / "out"
    result = gen("--config", str(config), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_committed_files_are_up_to_date() -> None:
    result = gen("--check")
    assert result.returncode == 0, f"run scripts/gen-mixin and commit:\n{result.stderr}"


def test_check_fails_on_a_hand_edited_file(tmp_path: Path) -> None:
    out = generate(tmp_path, "")
    rules = out / RULES_OUT
    rules.write_text(rules.read_text(encoding="utf-8").replace("> 0.25", "> 0.5"), "utf-8")
    result = gen("--check", "--config", str(tmp_path / "config.toml"), "--out", str(out))
    assert result.returncode == 1
    assert "prometheus/alerts.yml" in result.stderr and "> 0.25" in result.stderr
    assert "vms-downloads.json" not in result.stderr.splitlines()[-1]


def test_the_selector_reaches_every_selector_of_the_exporters_series(tmp_path: Path) -> None:
    out = generate(tmp_path, 'selector = \'job="cctv", env=~"prod|staging"\'\n')
    result = promtool("check", "rules", str(out / RULES_OUT))
    assert result.returncode == 0, result.stdout + result.stderr
    exprs = [r.expr for r in load_rules([out / RULES_OUT])]
    exprs += [q.expr for q in dashboard_queries(load_dashboard(out / DASHBOARD_OUT))]
    checked = 0
    for expr in exprs:
        for found in selectors(expr):
            if found.metric.startswith("vms_") or found.metric == "up":
                assert 'job="cctv", env=~"prod|staging"' in found.matchers, expr
                checked += 1
    assert checked > 50
    absent = next(r for r in load_rules([out / RULES_OUT]) if r.name == "VmsExporterAbsent")
    assert "vms_exporter_build_info{" in absent.expr


def test_default_rules_name_no_scrape_job() -> None:
    """Issue 11, point 2: a job named otherwise (Prometheus Operator) breaks nothing."""
    for rule in load_rules():
        assert "job=" not in rule.expr.replace(" ", ""), rule.name


def test_inject() -> None:
    sel = 'job="x"'
    assert inject("vms_up == 0", sel) == 'vms_up{job="x"} == 0'
    assert inject('vms_up{target="up"}', sel) == 'vms_up{job="x", target="up"}'
    assert inject("rate(vms_a_total[5m])", sel) == 'rate(vms_a_total{job="x"}[5m])'
    assert inject('label_values(vms_up{target=~"$target"}, job)', sel) == (
        'label_values(vms_up{job="x", target=~"$target"}, job)'
    )
    assert inject('ALERTS{alertname=~"vms_up"} and on (instance) up', sel) == (
        'ALERTS{alertname=~"vms_up"} and on (instance) up{job="x"}'
    )
    assert inject("vms_up == 0", "") == "vms_up == 0"


def test_links_follow_the_settings(tmp_path: Path) -> None:
    out = generate(
        tmp_path,
        'exporter_url = "https://vms-exporter.example/"\n'
        'grafana_url = "https://grafana.example/"\n',
    )
    for rule in load_rules([out / RULES_OUT]):
        anchor = rule.name.lower()
        assert rule.annotations["runbook_url"] == f"https://vms-exporter.example/runbook#{anchor}"
        assert (
            "Dashboard: https://grafana.example/d/vms-downloads" in rule.annotations["description"]
        )
    which = {
        r.name
        for r in load_rules([out / RULES_OUT])
        if "Which ones: https://vms-exporter.example/problems?target={{ $labels.target }} "
        in r.annotations["description"]
    }
    assert which == {
        "VmsDownloadsExportFailed",
        "VmsDownloadsFailureRatioHigh",
        "VmsDownloadsExportStuck",
        "VmsDownloadsFileRemoved",
    }
    board = load_dashboard(out / DASHBOARD_OUT)
    assert board["links"][0]["url"] == "https://vms-exporter.example/runbook"
    out = generate(tmp_path, 'runbook_url = "https://git.example/ops/runbook.md"\n')
    urls = {r.annotations["runbook_url"].split("#")[0] for r in load_rules([out / RULES_OUT])}
    assert urls == {"https://git.example/ops/runbook.md"}


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ('selectr = "x"\n', "selectr"),
        ("selector = 'job=vms'\n", "selector"),
        ('file_retention = "5d"\n', "file_retention"),
        ('grafana_url = "grafana:3000"\n', "grafana_url"),
        ('grafana_url = ""\n', "grafana_url"),
        ('lost_scrape_window = "three minutes"\n', "lost_scrape_window"),
        ("selector = 3\n", "selector"),
    ],
)
def test_a_bad_setting_exits_2_naming_the_key(tmp_path: Path, settings: str, key: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(settings, encoding="utf-8")
    result = gen("--config", str(config), "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and f": {key}:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / RULES_OUT).exists()


def test_file_retention_tells_clean_up_from_a_lost_file(tmp_path: Path) -> None:
    """Issue 11, point 7: tests/rules/retention/ run against rules generated with its config."""
    out = tmp_path / "repo"
    result = gen("--config", str(RETENTION_TESTS / "config.toml"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    rule = next(r for r in load_rules([out / RULES_OUT]) if r.name == "VmsDownloadsFileRemoved")
    assert "vms_downloads_file_removed_age_seconds_bucket" in rule.expr
    tests = sorted(RETENTION_TESTS.glob("*_test.yml"))
    assert tests
    (out / "tests" / "rules").mkdir(parents=True)
    for test in tests:
        document = yaml.safe_load(test.read_text(encoding="utf-8"))
        assert document["rule_files"] == ["../../prometheus/alerts.yml"]
        copy = out / "tests" / "rules" / test.name
        shutil.copy(test, copy)
        result = promtool("test", "rules", str(copy))
        assert result.returncode == 0, result.stdout + result.stderr
