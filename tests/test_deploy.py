"""The shipped compose stack starts: its exporter and simulator settings are valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.cli import build_parser
from exporter.config import load_settings
from vms_simulator.__main__ import build_parser as build_simulator_parser
from vms_simulator.cli import config_from_args

COMPOSE = Path(__file__).resolve().parents[1] / "deploy" / "docker-compose.yml"


def services() -> dict[str, Any]:
    result: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    return result


def test_compose_exporter_environment_is_a_valid_configuration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    exporter = services()["exporter"]
    environment = dict(exporter["environment"])
    # The state directory is a volume in the container: it must be mounted, and stands
    # for a writable directory here.
    state = environment.pop("VMS_EXPORTER_STATE__DIRECTORY")
    assert any(str(v).split(":")[1] == state for v in exporter["volumes"]), "state not on a volume"
    environment["VMS_EXPORTER_STATE__DIRECTORY"] = str(tmp_path)
    for key, value in environment.items():
        monkeypatch.setenv(key, str(value))
    settings = load_settings()
    assert settings.targets["default"].url == "http://simulator:8080"
    assert settings.state.directory == tmp_path


def test_compose_simulator_command_is_valid() -> None:
    exporter_args, rest = build_parser().parse_known_args(services()["simulator"]["command"])
    assert exporter_args.command == "simulate"
    config, host, port = config_from_args(build_simulator_parser().parse_args(rest))
    assert (host, port) == ("0.0.0.0", 8080)
    assert config.public_url == "http://simulator:8080"
    assert config.token == "demo"
