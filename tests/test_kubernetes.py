"""deploy/kubernetes: manifests valid offline, and in agreement with the exporter.

Kubernetes kinds are validated strictly against the schemas kubernetes-validate ships (no
cluster, no network). The Prometheus Operator's CRD schemas are not shipped anywhere we can
install from, so the ServiceMonitor and PrometheusRule are checked against the fields of the
Operator's API reference (monitoring.coreos.com/v1) written out below, unknown fields
rejected: the API server would silently prune a misspelt one. The kustomizations are read
by a small reader of the two features they use (resources, strategic-merge patches), so the
checks run on what ``kubectl apply -k`` would apply.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from exporter import __version__
from exporter.cli import build_parser
from exporter.config import Settings, load_settings, parse_listen_address
from tests.test_alert_rules import run as promtool
from tests.test_deploy import example_job, exporter_routes
from tests.test_image import final

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "kubernetes"
ALERTS = ROOT / "prometheus" / "alerts.yml"
KUSTOMIZATIONS = [K8S, K8S / "operator", K8S / "login"]
# The oldest and the newest Kubernetes release the shipped schemas cover.
KUBERNETES_VERSIONS = ["1.27.0", kubernetes_validate.utils.latest_version()]
NAME = "vms-downloads-exporter"

Manifest = dict[str, Any]

# --- the Operator's v1 API, as far as these manifests use it ----------------------------

UNITS = ("y", "w", "d", "h", "m", "s", "ms")
DURATION = {"type": "string", "pattern": "^(0|" + "".join(rf"(([0-9]+){u})?" for u in UNITS) + ")$"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"matchLabels": STRING_MAP, "matchExpressions": {"type": "array"}},
}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "labels": STRING_MAP, "annotations": STRING_MAP},
}


def operator_resource(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
    }


SERVICE_MONITOR = operator_resource(
    "ServiceMonitor",
    {
        "type": "object",
        "required": ["selector", "endpoints"],
        "additionalProperties": False,
        "properties": {
            "jobLabel": {"type": "string"},
            "targetLabels": {"type": "array", "items": {"type": "string"}},
            "podTargetLabels": {"type": "array", "items": {"type": "string"}},
            "selector": LABEL_SELECTOR,
            "namespaceSelector": {"type": "object"},
            "sampleLimit": {"type": "integer"},
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"},
                        "targetPort": {"type": ["integer", "string"]},
                        "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https"]},
                        "params": {"type": "object"},
                        "interval": DURATION,
                        "scrapeTimeout": DURATION,
                        "honorLabels": {"type": "boolean"},
                        "honorTimestamps": {"type": "boolean"},
                        "tlsConfig": {"type": "object"},
                        "basicAuth": {"type": "object"},
                        "authorization": {"type": "object"},
                        "relabelings": {"type": "array"},
                        "metricRelabelings": {"type": "array"},
                    },
                },
            },
        },
    },
)

PROMETHEUS_RULE = operator_resource(
    "PrometheusRule",
    {
        "type": "object",
        "required": ["groups"],
        "additionalProperties": False,
        "properties": {
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "rules"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": DURATION,
                        "query_offset": DURATION,
                        "limit": {"type": "integer"},
                        "labels": STRING_MAP,
                        "rules": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["expr"],
                                "additionalProperties": False,
                                "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                "properties": {
                                    "alert": {"type": "string"},
                                    "record": {"type": "string"},
                                    "expr": {"type": ["integer", "string"]},
                                    "for": DURATION,
                                    "keep_firing_for": {**DURATION, "minLength": 1},
                                    "labels": STRING_MAP,
                                    "annotations": STRING_MAP,
                                },
                            },
                        },
                    },
                },
            }
        },
    },
)
OPERATOR_SCHEMAS = {"ServiceMonitor": SERVICE_MONITOR, "PrometheusRule": PROMETHEUS_RULE}


# --- reading the manifests ----------------------------------------------------------------


def documents(path: Path) -> list[Manifest]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def kustomization(directory: Path) -> dict[str, Any]:
    result: dict[str, Any] = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return result


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """A strategic-merge patch as far as maps go (these patches replace no list)."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = value


def build(directory: Path) -> list[Manifest]:
    """What ``kubectl apply -k directory`` applies (resources, then patches)."""
    spec = kustomization(directory)
    unknown = set(spec) - {"apiVersion", "kind", "resources", "patches"}
    assert not unknown, f"this reader does not understand {unknown}: extend build()"
    result: list[Manifest] = []
    for resource in spec.get("resources", []):
        path = (directory / resource).resolve()
        result += build(path) if path.is_dir() else documents(path)
    for patch in spec.get("patches", []):
        for change in documents(directory / patch["path"]):
            key = (change["kind"], change["metadata"]["name"])
            (target,) = [m for m in result if (m["kind"], m["metadata"]["name"]) == key]
            merge(target, change)
    return result


def one(manifests: list[Manifest], kind: str) -> Manifest:
    (found,) = [m for m in manifests if m["kind"] == kind]
    return found


def container(manifests: list[Manifest]) -> dict[str, Any]:
    (result,) = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = result
    return found


def port_named(manifests: list[Manifest], name: str) -> int:
    (port,) = [p["containerPort"] for p in container(manifests)["ports"] if p["name"] == name]
    return int(port)


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def config_mounted(manifests: list[Manifest], tmp_path: Path) -> tuple[Settings, str]:
    """The exporter's settings from the ConfigMap, with the Deployment's mounts laid out under
    ``tmp_path`` (an image path P at tmp_path/P); also the config file's text."""
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    by_name = {(m["kind"], m["metadata"]["name"]): m for m in manifests}
    mounts = {}
    for mount in container(manifests)["volumeMounts"]:
        volume = volumes[mount["name"]]
        mounts[mount["mountPath"]] = tmp_path / mount["mountPath"].lstrip("/")
        if "emptyDir" in volume:
            mounts[mount["mountPath"]].mkdir(parents=True)
            continue
        if "configMap" in volume:
            files = by_name["ConfigMap", volume["configMap"]["name"]]["data"]
        else:
            files = by_name["Secret", volume["secret"]["secretName"]]["stringData"]
        for key, text in files.items():
            (mounts[mount["mountPath"]] / key).parent.mkdir(parents=True, exist_ok=True)
            (mounts[mount["mountPath"]] / key).write_text(text)
    args, rest = build_parser().parse_known_args(container(manifests).get("args", []))
    assert not rest and args.command is None, container(manifests)["args"]
    config = PurePosixPath(args.config_file)
    assert str(config.parent) in mounts, f"{config} is not on a mounted volume"
    text = (mounts[str(config.parent)] / config.name).read_text()
    local = text
    for image_path, here in mounts.items():
        local = local.replace(f'"{image_path}/', f'"{here}/').replace(
            f'"{image_path}"', f'"{here}"'
        )
    local_file = tmp_path / "config-as-mounted.toml"
    local_file.write_text(local)
    return load_settings(local_file), text


@pytest.fixture(params=KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S.parent)))
def manifests(request: pytest.FixtureRequest) -> list[Manifest]:
    path: Path = request.param
    return build(path)


# --- validity -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifest_validates_offline(path: Path, version: str) -> None:
    for manifest in documents(path):
        schema = OPERATOR_SCHEMAS.get(manifest["kind"])
        if schema is not None:
            jsonschema.validate(manifest, schema)
        else:
            kubernetes_validate.validate(manifest, version, strict=True)


def test_an_invalid_manifest_is_caught() -> None:
    """The validators are not blind: a misspelt key or a bad duration fails."""
    deployment = documents(K8S / "deployment.yaml")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    monitor = documents(K8S / "operator" / "servicemonitor.yaml")[0]
    monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, SERVICE_MONITOR)


def test_kustomizations_list_every_manifest_once() -> None:
    for directory in KUSTOMIZATIONS:
        spec = kustomization(directory)
        listed = spec.get("resources", []) + [p["path"] for p in spec.get("patches", [])]
        assert len(listed) == len(set(listed)), f"{directory}: listed twice"
        for entry in listed:
            assert (directory / entry).exists(), f"{directory}: {entry} is missing"
        here = {p.name for p in directory.glob("*.yaml") if p.name != "kustomization.yaml"}
        assert here == {Path(e).name for e in listed if not (directory / e).is_dir()}


def test_manifests_are_namespace_agnostic(manifests: list[Manifest]) -> None:
    for manifest in manifests:
        assert "namespace" not in manifest["metadata"], manifest["metadata"]["name"]


# --- agreement with the exporter and the image -------------------------------------------


def test_pod_runs_locked_down_as_the_images_user(manifests: list[Manifest]) -> None:
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    uid, _, gid = final("USER")[-1].args.partition(":")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert pod["securityContext"]["runAsGroup"] == int(gid or uid)
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    security = container(manifests)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def test_image_tag_is_the_exporters_version(manifests: list[Manifest]) -> None:
    assert container(manifests)["image"] == f"{NAME}:{__version__}"


def mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "Gi" else 1)


def test_memory_is_requested_and_limited(manifests: list[Manifest]) -> None:
    resources = container(manifests)["resources"]
    request = mebibytes(resources["requests"]["memory"])
    limit = mebibytes(resources["limits"]["memory"])
    # Measured RSS (see deployment.yaml): 73 MiB with 25,000 downloads in the window.
    assert 73 <= request <= limit


def test_configmap_is_a_valid_configuration_with_the_mounted_secret(
    manifests: list[Manifest], tmp_path: Path
) -> None:
    settings, _ = config_mounted(manifests, tmp_path)
    secret_mount = next(
        m["mountPath"] for m in container(manifests)["volumeMounts"] if m["name"] == "secret"
    )
    secret = one(manifests, "Secret")["stringData"]
    for target in settings.targets.values():
        for key in ("token_file", "password_file"):
            path = getattr(target, key)
            if path is not None:
                assert path.parent == tmp_path / secret_mount.lstrip("/")
                assert path.name in secret, f"{key}: the Secret has no key {path.name}"
    # [state] directory is a writable volume of the pod (the root file system is read-only)
    state_mount = next(m for m in container(manifests)["volumeMounts"] if m["name"] == "state")
    assert settings.state.directory == tmp_path / state_mount["mountPath"].lstrip("/")
    assert not state_mount.get("readOnly", False)


def test_login_variant_logs_in_with_a_password_file(tmp_path: Path) -> None:
    settings, _ = config_mounted(build(K8S / "login"), tmp_path)
    (target,) = settings.targets.values()
    assert target.login and target.password_file is not None and target.token_file is None


def test_ports_and_probes_agree_with_the_exporter(
    manifests: list[Manifest], tmp_path: Path
) -> None:
    settings, _ = config_mounted(manifests, tmp_path)
    _, listen_port = parse_listen_address(settings.web.listen_address)
    assert port_named(manifests, "metrics") == listen_port
    assert [i.args for i in final("EXPOSE")] == [str(listen_port)]
    probes = container(manifests)
    routes = exporter_routes()
    for probe, path in (("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")):
        assert probes[probe]["httpGet"] == {"path": path, "port": "metrics"}
        assert path in routes
    service = one(manifests, "Service")
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["targetPort"], port["port"]) == ("metrics", "metrics", listen_port)
    pod_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert matches(service["spec"]["selector"], pod_labels)
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(listen_port)
    assert annotations["prometheus.io/path"] in routes


def test_network_policy_lets_in_scrapes_and_out_dns_and_the_vms(
    manifests: list[Manifest], tmp_path: Path
) -> None:
    policy = one(manifests, "NetworkPolicy")["spec"]
    pod_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert matches(policy["podSelector"]["matchLabels"], pod_labels)
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert ingress["from"], "not open to every pod"
    egress = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    settings, _ = config_mounted(manifests, tmp_path)
    for target in settings.targets.values():
        url = urlsplit(target.url)
        vms_port = url.port or (443 if url.scheme == "https" else 80)
        assert (vms_port, "TCP") in egress
    assert {(53, "UDP"), (53, "TCP")} <= egress
    assert all(rule.get("to") for rule in policy["egress"]), "egress open to everywhere"


def test_service_monitor_scrapes_the_service_under_the_documented_job() -> None:
    manifests = build(K8S / "operator")
    monitor = one(manifests, "ServiceMonitor")["spec"]
    service = one(manifests, "Service")
    assert matches(monitor["selector"]["matchLabels"], service["metadata"]["labels"])
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] in exporter_routes()
    assert service["metadata"]["labels"][monitor["jobLabel"]] == example_job()


def test_prometheusrule_is_up_to_date() -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "gen-prometheusrule"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_prometheusrule_holds_exactly_the_shipped_rules() -> None:
    (rule,) = documents(K8S / "operator" / "prometheusrule.yaml")
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    names = [group["name"] for group in rule["spec"]["groups"]]
    assert len(names) == len(set(names)), "group names are the list's key"


def test_prometheusrule_passes_promtool_after_extraction(tmp_path: Path) -> None:
    (rule,) = documents(K8S / "operator" / "prometheusrule.yaml")
    extracted = tmp_path / "rules.yml"
    extracted.write_text(yaml.safe_dump(rule["spec"]))
    result = promtool("check", "rules", str(extracted))
    assert result.returncode == 0, result.stdout + result.stderr
