"""End to end: the simulator, the exporter and a real Prometheus on loopback.

Prometheus (Debian package ``prometheus``) scrapes the exporter every second and
evaluates the shipped alert rules; the tests read everything back through its
HTTP API. Outside CI the module is skipped when the binary is absent; in CI it fails.
The tests run in file order on one stack: the simulator starts healthy (no
export fails), the dashboard is checked on that healthy system, and only then
are new exports made to fail for the alert test.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.processes import binary, eventually, free_port, stop_all
from tests.promql_names import ALERTS_PATH, panel_queries

pytestmark = pytest.mark.e2e

# Not the example's job name, as under the Prometheus Operator (the Service's
# name): no rule may depend on it (issue 11, point 2).
JOB = "cctv/vms-exporter"

# Panel queries that are empty on a healthy system, by design, with the reason.
EMPTY_BY_DESIGN: dict[str, str] = {
    "annotation: VMS alerts firing": "no alert fires on a healthy system",
    "Top cameras by failed downloads in the window": "it lists only cameras with a failed "
    "export (> 0), and the simulator runs with --fail-ratio 0 until the alert test",
}


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback)
        return json.loads(response.read())


@dataclass
class Stack:
    prometheus: str
    exporter: str
    simulator: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        body = _get(url)
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def exemplars(self, expr: str) -> list[dict[str, Any]]:
        now = time.time()
        params = {"query": expr, "start": f"{now - 3600:.3f}", "end": f"{now + 60:.3f}"}
        body = _get(f"{self.prometheus}/api/v1/query_exemplars?" + urllib.parse.urlencode(params))
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]
        return result

    def simulator_items(self) -> list[dict[str, Any]]:
        """Every download the simulator holds, read from its API, page by page."""
        items: list[dict[str, Any]] = []
        for number in range(1, 100):
            query = urllib.parse.urlencode(
                {
                    "per_page": "1000",
                    "page": str(number),
                    "from": "2000-01-01 00:00:00",
                    "to": "2100-01-01 00:00:00",
                }
            )
            request = urllib.request.Request(  # noqa: S310 (loopback)
                f"{self.simulator}/api/v1/users/downloads?{query}",
                headers={"Authorization": "Bearer demo", "Accept": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                body = json.loads(response.read())
            items.extend(body["data"])
            if number >= body["meta"]["last_page"]:
                return items
        raise AssertionError("the simulator reported more than 99 pages")

    def alerts(self) -> dict[str, str]:
        body = _get(f"{self.prometheus}/api/v1/alerts")
        return {a["labels"]["alertname"]: a["state"] for a in body["data"]["alerts"]}


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_bin = binary("prometheus")
    work = tmp_path_factory.mktemp("e2e")
    sim_port, exporter_port, prom_port = free_port(), free_port(), free_port()
    exporter_cmd = [sys.executable, "-m", "exporter"]
    config = work / "exporter.toml"
    config.write_text(
        '[poll]\ninterval = "2s"\ntimeout = "1500ms"\nlookback = "24h"\n'
        "[metrics]\nper_camera = true\nmax_cameras = 20\n"
        f'[targets.main]\nurl = "http://127.0.0.1:{sim_port}"\ntoken = "demo"\n'
        'timezone = "Europe/Moscow"\nrequest_timeout = "1s"\nper_page = 500\n'
    )
    prom_config = work / "prometheus.yml"
    prom_config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {ALERTS_PATH}\n"
        f"scrape_configs:\n  - job_name: '{JOB}'\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n"
    )
    processes = [
        _spawn(
            [
                *exporter_cmd,
                "simulate",
                "--listen",
                f"127.0.0.1:{sim_port}",
                "--downloads",
                "3000",
                "--seed",
                "1",
                "--token",
                "demo",
                "--fail-ratio",
                "0",
                "--arrival-interval",
                "0.5",
                "--export-time",
                "1:10",
            ],
            work / "simulator.log",
        ),
        _spawn(
            [
                *exporter_cmd,
                "--config.file",
                str(config),
                "--web.listen-address",
                f"127.0.0.1:{exporter_port}",
            ],
            work / "exporter.log",
        ),
        _spawn(
            [
                prometheus_bin,
                f"--config.file={prom_config}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--enable-feature=exemplar-storage",
                "--log.level=warn",
            ],
            work / "prometheus.log",
        ),
    ]
    stack = Stack(
        f"http://127.0.0.1:{prom_port}",
        f"http://127.0.0.1:{exporter_port}",
        f"http://127.0.0.1:{sim_port}",
    )
    try:
        eventually(
            "Prometheus ready",
            lambda: (
                urllib.request.urlopen(  # noqa: S310
                    f"{stack.prometheus}/-/ready", timeout=2
                ).status
                == 200
            ),
        )
        yield stack
    finally:
        stop_all(processes)


def test_prometheus_scrapes_the_exporter(stack: Stack) -> None:
    up = eventually("exporter target up", lambda: stack.query(f'up{{job="{JOB}"}} == 1'))
    assert len(up) == 1
    vms_up = eventually("vms_up", lambda: stack.query('vms_up{target="main"} == 1'))
    assert vms_up[0]["metric"]["job"] == JOB


def test_promtool_finds_nothing_to_complain_about_in_metrics(stack: Stack) -> None:
    with urllib.request.urlopen(f"{stack.exporter}/metrics", timeout=5) as response:  # noqa: S310
        exposition = response.read()
    result = subprocess.run(
        [binary("promtool"), "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == "" and result.stderr.decode().strip() == ""


def test_every_rule_evaluates_without_error(stack: Stack) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        groups = _get(f"{stack.prometheus}/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        done = all(not r["lastEvaluation"].startswith("0001") for r in rules)
        return rules if rules and done else None

    rules = eventually("every rule evaluated once", evaluated)
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not broken
    assert len(rules) >= 10


def test_dead_mans_switch_is_silent_under_another_job_name(stack: Stack) -> None:
    """Before issue 11, VmsExporterAbsent (critical) fired forever on this healthy stack."""
    eventually("vms_up", lambda: stack.query('vms_up{target="main"} == 1'))
    time.sleep(3)  # a few evaluations (every second) with the exporter up
    assert stack.query("absent(vms_exporter_build_info)") == []
    assert "VmsExporterAbsent" not in stack.alerts()
    assert "VmsExporterDown" not in stack.alerts()


def test_every_panel_query_returns_data(stack: Stack) -> None:
    queries = panel_queries(variables={"target": "main", "job": JOB, "__rate_interval": "30s"})
    assert len(queries) >= 20
    pending = {
        f"{q.panel} {q.ref_id}".strip(): q.expr for q in queries if q.panel not in EMPTY_BY_DESIGN
    }

    def all_have_data() -> bool:
        for key, expr in list(pending.items()):
            if stack.query(expr):
                del pending[key]
        return not pending

    try:
        eventually("every panel query returns a series", all_have_data)
    except AssertionError:
        raise AssertionError(f"panels without data: {json.dumps(pending, indent=1)}") from None
    for panel, reason in EMPTY_BY_DESIGN.items():
        expr = next(q.expr for q in queries if q.panel == panel)
        assert stack.query(expr) == [], f"{panel} was to be empty: {reason}"


def test_failed_exports_alert_fires_only_after_failures(stack: Stack) -> None:
    eventually("vms_up", lambda: stack.query('vms_up{target="main"} == 1'))
    time.sleep(3)  # a few evaluations on a healthy system
    assert "VmsDownloadsExportFailed" not in stack.alerts()
    request = urllib.request.Request(  # noqa: S310 (loopback)
        f"{stack.simulator}/-/sim/faults",
        data=b'{"fail_new_exports": true}',
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        assert response.status == 200
    state = eventually(
        "VmsDownloadsExportFailed pending or firing",
        lambda: stack.alerts().get("VmsDownloadsExportFailed"),
    )
    assert state in ("pending", "firing")
    failed = stack.query('vms_downloads_finished_total{target="main",status="failed"}')
    assert float(failed[0]["value"][1]) > 0
    alert = next(
        a
        for a in _get(f"{stack.prometheus}/api/v1/alerts")["data"]["alerts"]
        if a["labels"]["alertname"] == "VmsDownloadsExportFailed"
    )
    runbook, anchor = alert["annotations"]["runbook_url"].split("#")
    assert runbook == f"{stack.exporter}/runbook"  # the instance that polls the target
    with urllib.request.urlopen(runbook, timeout=5) as response:  # noqa: S310 (loopback)
        assert f'id="{anchor}"'.encode() in response.read()
    assert alert["annotations"]["description"].endswith("/d/vms-downloads?var-target=main")
    which = re.search(r"Which ones: (\S+)", alert["annotations"]["description"])
    assert which and which.group(1) == f"{stack.exporter}/problems?target=main"
    listed = _get(which.group(1) + "&format=json")["targets"]["main"]["failed"]
    failed_ids = {str(i["id"]) for i in stack.simulator_items() if i["status"] == "failed"}
    assert listed and {e["id"] for e in listed} <= failed_ids


def test_a_failed_export_is_named_by_its_exemplar(stack: Stack) -> None:
    """Runs after the alert test, which made new exports fail."""
    expr = 'vms_downloads_finished_total{target="main",status="failed"}'
    found = eventually(
        "an exemplar on the failed-exports counter",
        lambda: [e for series in stack.exemplars(expr) for e in series["exemplars"]],
    )
    failed = {str(i["id"]): i for i in stack.simulator_items() if i["status"] == "failed"}
    for exemplar in found:
        labels = exemplar["labels"]
        assert set(labels) <= {"download_id", "camera_id"}, labels
        item = failed.get(labels["download_id"])
        assert item is not None, f"{labels} is not a failed download of the simulator"
        assert labels.get("camera_id") == str(item["stream"]["camera_id"])
    print("query_exemplars:", json.dumps(found))
