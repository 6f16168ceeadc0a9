"""OpenMetrics exemplars for event metrics: which download an event was about.

Only ids go into an exemplar (``download_id`` and, when known and within
OpenMetrics' 128-character budget, ``camera_id``) — never a name, a login or
a file name. Exemplars appear only in the OpenMetrics exposition.
"""

from __future__ import annotations

from exporter.vms.models import Download

MAX_EXEMPLAR_CHARS = 128
"""OpenMetrics: the label names and values of one exemplar, together, at most 128 characters."""


def exemplar(item: Download) -> dict[str, str]:
    labels = {"download_id": item.id}
    camera = item.camera_id
    if camera is not None and _size(labels) + len("camera_id") + len(camera) <= MAX_EXEMPLAR_CHARS:
        labels["camera_id"] = camera
    return labels


def _size(labels: dict[str, str]) -> int:
    return sum(len(name) + len(value) for name, value in labels.items())
