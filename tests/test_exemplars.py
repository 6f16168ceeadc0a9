"""Exemplar labels: ids only, within OpenMetrics' 128-character budget."""

from __future__ import annotations

from exporter.exemplars import MAX_EXEMPLAR_CHARS, exemplar
from tests.builders import rec


def test_download_and_camera_ids() -> None:
    assert exemplar(rec(6414, camera="12")) == {"download_id": "6414", "camera_id": "12"}


def test_no_camera_when_unknown() -> None:
    assert exemplar(rec(6414, camera=None)) == {"download_id": "6414"}


def test_camera_left_out_rather_than_exceed_the_budget() -> None:
    labels = exemplar(rec("d" * 64, camera="c" * 64))
    assert labels == {"download_id": "d" * 64}
    assert sum(len(k) + len(v) for k, v in labels.items()) <= MAX_EXEMPLAR_CHARS
