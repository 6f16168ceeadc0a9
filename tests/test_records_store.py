"""Remembered records across restarts: the file itself, then real restarts on the simulator."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.core import Memory
from exporter.records_store import CHUNK, FORMAT, RecordStore
from exporter.vms.models import COMPLETED, with_details
from tests.builders import T0, rec
from tests.exporter_harness import Harness, exporter_on_simulator, parse_exemplars
from vms_simulator import SimulatorConfig

URL = "http://127.0.0.1:8080/api/v1/users/downloads"
DAY = 86400.0


def store(directory: Path, url: str = URL) -> RecordStore:
    return RecordStore(directory, "main", url, DAY)


def memory(count: int = 3) -> Memory:
    records = [
        rec(
            i,
            ("in_progress", "completed", "failed")[i % 3],
            created=T0 - i,
            camera=None if i % 4 == 0 else str(i % 5),
        )
        for i in range(count)
    ]
    records.append(rec("x-1", "other", stream="unknown", exists="unknown", updated=None))
    records.append(rec("ид 7", "completed", camera='cam "a"\\b'))  # escaped in JSON
    return Memory({r.id: r for r in records}, T0 - 60)


def test_round_trip_in_chunks(tmp_path: Path) -> None:
    saved = memory(2 * CHUNK + 5)
    store(tmp_path).save(saved, T0)
    assert len(store(tmp_path).path.read_bytes().splitlines()) == 1 + 3 + 1
    loaded = store(tmp_path).load(T0 + 60)
    assert loaded == saved
    assert loaded is not None and loaded.records["1"].status is COMPLETED  # shared, not copied
    cameras = [r.camera_id for r in loaded.records.values() if r.camera_id == "1"]
    assert len(cameras) > 1 and len({id(c) for c in cameras}) == 1


def test_names_and_logins_never_reach_the_disk(tmp_path: Path) -> None:
    detailed = with_details(rec(1, "failed"), "ул. Улица 1", "op@x")
    store(tmp_path).save(Memory({"1": detailed}, T0), T0)
    text = store(tmp_path).path.read_text(encoding="utf-8")
    assert "Улица" not in text and "op@x" not in text
    loaded = store(tmp_path).load(T0)
    assert loaded is not None and loaded.records["1"] == rec(1, "failed")


def test_no_saved_state_is_a_quiet_baseline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert store(tmp_path).load(T0) is None
    assert not caplog.records


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _lose_last_chunk(path: Path) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-2] + lines[-1:]))


def _newer_format(path: Path) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    header = json.loads(lines[0]) | {"format": FORMAT + 1}
    path.write_bytes(json.dumps(header).encode() + b"\n" + b"".join(lines[1:]))


def _bad_record(path: Path) -> None:
    path.write_text(path.read_text().replace('"completed"', '"done"', 1))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_truncate, "truncated"),
        (_lose_last_chunk, "truncated or corrupt"),
        (_newer_format, f"format {FORMAT + 1}"),
        (_bad_record, "corrupt record"),
        (lambda p: p.write_bytes(b"\x00\xff garbage\n"), "not valid JSON"),
        (lambda p: p.write_text('{"format": 1, "kind": "session"}\n'), "not a records file"),
        (lambda p: p.write_bytes(b""), "truncated"),
    ],
)
def test_unusable_state_is_ignored_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object, reason: str
) -> None:
    store(tmp_path).save(memory(CHUNK + 1), T0)
    damage(store(tmp_path).path)  # type: ignore[operator]
    with caplog.at_level(logging.INFO):
        assert store(tmp_path).load(T0 + 60) is None
    assert len(caplog.records) == 1
    assert reason in caplog.records[0].reason  # type: ignore[attr-defined]


def test_state_of_another_url_or_older_than_the_lookback_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store(tmp_path).save(memory(), T0)
    assert store(tmp_path, url="https://other.vms/api/v1/downloads").load(T0) is None
    assert store(tmp_path).load(T0 - 60 + DAY + 1) is None  # the saved poll began at T0 - 60
    assert store(tmp_path).load(T0 - 60 + DAY) is not None
    reasons = [r.reason for r in caplog.records]  # type: ignore[attr-defined]
    assert reasons == ["saved for another URL", "older than the lookback"]


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from exporter.state import write_atomically

def chunks():
    yield b'{"half": '
    os.kill(os.getpid(), signal.SIGKILL)
    yield b'written"}'

write_atomically(Path(sys.argv[1]), chunks())
"""


def test_kill_9_during_a_save_leaves_the_previous_state(tmp_path: Path) -> None:
    saved = memory(CHUNK + 1)
    store(tmp_path).save(saved, T0)
    killed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_WRITER), str(store(tmp_path).path)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr.decode()
    assert len(list(tmp_path.iterdir())) == 2  # the state and the killed writer's temp file
    assert store(tmp_path).load(T0) == saved
    assert list(tmp_path.iterdir()) == [store(tmp_path).path]  # the leftover is cleaned up


# --------------------------------------------------------------------------
# Restarts of the exporter against the simulator

SIM = SimulatorConfig(downloads=300, seed=4, arrival_interval=20, fail_ratio=0)


def finished(h: Harness, status: str) -> float | None:
    return h.metrics.registry.get_sample_value(
        "vms_downloads_finished_total", {"target": "main", "status": status}
    )


def created(h: Harness) -> float:
    return sum(
        h.metrics.registry.get_sample_value(
            "vms_downloads_created_total", {"target": "main", "stream_type": s}
        )
        or 0
        for s in ("high", "low", "unknown")
    )


async def test_an_export_that_failed_while_down_is_counted_once(tmp_path: Path) -> None:
    async with exporter_on_simulator(SIM, state_dir=tmp_path) as h:
        await h.poller.poll_once()
        await h.restart_exporter()
        await h.sim_faults(fail_new_exports=True)
        h.clock.advance(600)  # while the exporter is down
        await h.poller.poll_once()
        failed = [i for i in await h.simulator_items() if i["status"] == "failed"]
        assert failed, "the simulator should have failed the new exports"
        assert finished(h, "failed") == len(failed)
        latest = max(failed, key=lambda i: (i["updated_at"], i["id"]))
        exposition = generate_openmetrics(h.metrics.registry).decode()  # type: ignore[no-untyped-call]
        counter = (
            "vms_downloads_finished_total",
            frozenset({("target", "main"), ("status", "failed")}),
        )
        assert parse_exemplars(exposition)[counter]["download_id"] == str(latest["id"])
        for _ in range(2):  # restarted twice more, nothing changed: nothing counted again
            await h.restart_exporter()
            await h.poller.poll_once()
            assert (finished(h, "failed"), finished(h, "completed"), created(h)) == (0, 0, 0)


async def test_without_a_state_directory_a_restart_is_a_blind_baseline() -> None:
    async with exporter_on_simulator(SIM) as h:
        await h.poller.poll_once()
        await h.restart_exporter()
        await h.sim_faults(fail_new_exports=True)
        h.clock.advance(600)
        await h.poller.poll_once()
        assert finished(h, "failed") == 0


async def test_a_truncated_state_file_means_one_log_line_and_a_baseline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with exporter_on_simulator(SIM, state_dir=tmp_path) as h:
        await h.poller.poll_once()
        await h.restart_exporter()
        await h.sim_faults(fail_new_exports=True)
        h.clock.advance(600)
        _truncate(tmp_path / "main.records.jsonl")
        with caplog.at_level(logging.WARNING):
            await h.poller.poll_once()
            await h.poller.poll_once()
        assert finished(h, "failed") == 0  # a baseline: nothing counted twice or at all
        ignored = [r for r in caplog.records if r.getMessage().startswith("saved state ignored")]
        assert len(ignored) == 1 and ignored[0].reason == "truncated"  # type: ignore[attr-defined]
        assert store(tmp_path, h.simulator.url + "/api/v1/users/downloads").load(h.clock())


async def test_a_failing_save_is_logged_once_and_polling_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    _make(state)
    async with exporter_on_simulator(SIM, state_dir=state) as h:
        await h.poller.poll_once()
        _remove(state)  # the disk refuses from now on
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                h.clock.advance(60)
                assert (await h.poller.poll_once()).result == "success"
            _make(state)
            await h.poller.poll_once()
        messages = [r.getMessage() for r in caplog.records]
        assert (
            messages.count(
                "cannot save the remembered records; a restart will start a new baseline"
            )
            == 1
        )
        assert "remembered records saved again" in messages
        assert store(state, h.simulator.url + "/api/v1/users/downloads").load(h.clock())


def _make(directory: Path) -> None:
    directory.mkdir()


def _remove(directory: Path) -> None:
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()
