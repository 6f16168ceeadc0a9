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
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in services()["exporter"]["environment"].items():
        monkeypatch.setenv(key, str(value))
    settings = load_settings()
    assert settings.targets["default"].url == "http://simulator:8080"


def test_compose_simulator_command_is_valid() -> None:
    exporter_args, rest = build_parser().parse_known_args(services()["simulator"]["command"])
    assert exporter_args.command == "simulate"
    config, host, port = config_from_args(build_simulator_parser().parse_args(rest))
    assert (host, port) == ("0.0.0.0", 8080)
    assert config.public_url == "http://simulator:8080"
    assert config.token == "demo"
