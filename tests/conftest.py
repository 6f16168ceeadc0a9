"""Shared fixtures: a clean environment for every test."""

from __future__ import annotations

import os

import pytest

from tests import aioresponses_compat

aioresponses_compat.install()


@pytest.fixture(autouse=True)
def _clean_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No VMS_EXPORTER_* variable from the caller's shell, and no ./config.toml picked up."""
    for key in list(os.environ):
        if key.startswith("VMS_EXPORTER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
