"""The shipped compose stack starts and hangs together: every mounted file exists, and ports,
paths, probes, environment and the Prometheus scrape configuration agree with the exporter.
No engine runs here; the Prometheus configuration is checked by promtool as the container
sees it (the mounts laid out under a temporary root)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from exporter.cli import build_parser
from exporter.config import load_settings, parse_listen_address
from exporter.metrics import ExporterMetrics
from exporter.web import create_app
from tests.test_alert_rules import run as promtool
from vms_simulator.__main__ import build_parser as build_simulator_parser
from vms_simulator.app import STATS_PATH
from vms_simulator.cli import config_from_args

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
PROMETHEUS_PORT = 9090  # prom/prometheus's default --web.listen-address
GRAFANA_PROVISIONING = "/etc/grafana/provisioning"  # the grafana image's GF_PATHS_PROVISIONING


def services() -> dict[str, Any]:
    result: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    return result


def mounts(service: str) -> dict[PurePosixPath, Path]:
    """Container path → host path of a service's bind mounts (named volumes left out)."""
    result = {}
    for volume in services()[service].get("volumes", []):
        host, container, *_ = volume.split(":")
        if host.startswith((".", "/")):
            result[PurePosixPath(container)] = (DEPLOY / host).resolve()
    return result


def host_path(service: str, container_path: str) -> Path:
    """Where a file the container reads at ``container_path`` comes from (longest mount)."""
    wanted = PurePosixPath(container_path)
    for container, host in sorted(mounts(service).items(), key=lambda m: -len(m[0].parts)):
        if wanted == container or container in wanted.parents:
            return host.joinpath(*wanted.relative_to(container).parts)
    raise AssertionError(f"{service} does not mount {container_path}")


def container_ports(service: str) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1]) for p in services()[service].get("ports", [])}


def exporter_settings(monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> Any:
    """The compose exporter's settings, with ``state_dir`` standing in for its state volume."""
    environment = {**services()["exporter"]["environment"]}
    environment["VMS_EXPORTER_STATE__DIRECTORY"] = str(state_dir)
    for key, value in environment.items():
        monkeypatch.setenv(key, str(value))
    return load_settings()


def prometheus_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(
        host_path("prometheus", "/etc/prometheus/prometheus.yml").read_text(encoding="utf-8")
    )
    return config


def simulator_args() -> tuple[Any, str, int]:
    exporter_args, rest = build_parser().parse_known_args(services()["simulator"]["command"])
    assert exporter_args.command == "simulate"
    return config_from_args(build_simulator_parser().parse_args(rest))


def exporter_routes() -> set[str]:
    app = create_app(ExporterMetrics(process_metrics=False), [])
    return {resource.canonical for resource in app.router.resources()}


def test_every_mounted_file_exists() -> None:
    for service in services():
        for container, host in mounts(service).items():
            assert host.exists(), f"{service}: {host} (mounted at {container}) is missing"


def test_images_are_built_from_this_repository() -> None:
    for service in ("simulator", "exporter"):
        assert (DEPLOY / services()[service]["build"] / "Dockerfile").is_file()


def test_compose_exporter_environment_is_a_valid_configuration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    exporter = services()["exporter"]
    # The state directory is a named volume in the container: it must be mounted there,
    # and stands for a writable directory here.
    state = exporter["environment"]["VMS_EXPORTER_STATE__DIRECTORY"]
    assert any(str(v).split(":")[1] == state for v in exporter["volumes"]), "state not on a volume"
    settings = exporter_settings(monkeypatch, tmp_path)
    assert settings.targets["default"].url == "http://simulator:8080"
    assert settings.state.directory == tmp_path


def test_compose_simulator_command_is_valid() -> None:
    config, host, port = simulator_args()
    assert (host, port) == ("0.0.0.0", 8080)
    assert config.public_url == "http://simulator:8080"
    assert config.token == "demo"


def test_the_exporter_reaches_the_simulator_with_its_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config, _, port = simulator_args()
    target = exporter_settings(monkeypatch, tmp_path).targets["default"]
    url = urlsplit(target.url)
    assert (url.hostname, url.port) == ("simulator", port)
    assert target.token is not None and target.token.get_secret_value() == config.token
    assert target.timezone == config.server_timezone


def test_published_port_is_the_exporters_listen_port(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, port = parse_listen_address(exporter_settings(monkeypatch, tmp_path).web.listen_address)
    assert container_ports("exporter") == {port}


def test_simulator_health_check_asks_the_simulator() -> None:
    _, _, port = simulator_args()
    test = services()["simulator"]["healthcheck"]["test"]
    assert test[:4] == ["CMD", "python", "-m", "exporter.healthcheck"]
    url = urlsplit(test[4])
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", port, STATS_PATH)


def test_prometheus_scrapes_the_exporter_where_it_listens(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (job,) = prometheus_config()["scrape_configs"]
    _, port = parse_listen_address(exporter_settings(monkeypatch, tmp_path).web.listen_address)
    assert [t for c in job["static_configs"] for t in c["targets"]] == [f"exporter:{port}"]
    assert job.get("metrics_path", "/metrics") in exporter_routes()
    assert job.get("scheme", "http") == "http"  # no web.config_file in the stack


def example_job() -> str:
    """The scrape job name of prometheus/prometheus.example.yml, the documented one."""
    example = yaml.safe_load((ROOT / "prometheus" / "prometheus.example.yml").read_text())
    (job,) = example["scrape_configs"]
    return str(job["job_name"])


def test_prometheus_job_is_the_documented_one() -> None:
    (job,) = prometheus_config()["scrape_configs"]
    assert job["job_name"] == example_job()


def test_prometheus_loads_the_shipped_rules() -> None:
    base = PurePosixPath("/etc/prometheus")
    for rule_file in prometheus_config()["rule_files"]:
        container = base / rule_file if not rule_file.startswith("/") else PurePosixPath(rule_file)
        assert host_path("prometheus", str(container)) == ROOT / "prometheus" / "alerts.yml"


def test_promtool_check_config_as_the_container_sees_it(tmp_path: Path) -> None:
    for container, host in mounts("prometheus").items():
        link = tmp_path / container.relative_to("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(host)
    result = promtool("check", "config", str(tmp_path / "etc/prometheus/prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr


def test_grafana_reads_provisioning_and_dashboards_from_the_mounts() -> None:
    assert host_path("grafana", GRAFANA_PROVISIONING) == ROOT / "grafana" / "provisioning"
    providers = yaml.safe_load(
        host_path("grafana", f"{GRAFANA_PROVISIONING}/dashboards/vms.yml").read_text()
    )["providers"]
    for provider in providers:
        folder = host_path("grafana", provider["options"]["path"])
        assert list(folder.glob("*.json")), f"no dashboard in {folder}"


def test_grafana_datasource_is_the_compose_prometheus() -> None:
    sources = yaml.safe_load(
        host_path("grafana", f"{GRAFANA_PROVISIONING}/datasources/prometheus.yml").read_text()
    )["datasources"]
    url = urlsplit(sources[0]["url"])
    assert (url.hostname, url.port) == ("prometheus", PROMETHEUS_PORT)
    assert "prometheus" in services() and container_ports("prometheus") == {PROMETHEUS_PORT}
    interval = prometheus_config()["global"]["scrape_interval"]
    assert sources[0]["jsonData"]["timeInterval"] == interval


def test_start_order_waits_for_health() -> None:
    depends = services()["exporter"]["depends_on"]
    assert depends["simulator"]["condition"] == "service_healthy"
    assert services()["prometheus"]["depends_on"]["exporter"]["condition"] == "service_healthy"
