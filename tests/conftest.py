"""Shared fixtures: a clean environment for configuration, and small builders."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No VMS_EXPORTER_* variable from the caller's shell, and no ./config.toml picked up."""
    import os

    for key in list(os.environ):
        if key.startswith("VMS_EXPORTER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    yield
