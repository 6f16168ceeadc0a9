"""State files: atomic, versioned, and ignored (never fatal) when unusable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.state import FORMAT, StateDirectory, check_directory


def test_written_state_reads_back_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    state = StateDirectory(tmp_path)
    state.write("main", "session", {"session_id": 7})
    state.write("main", "session", {"session_id": 8})

    assert state.read("main", "session") == {"format": FORMAT, "kind": "session", "session_id": 8}
    assert [p.name for p in tmp_path.iterdir()] == ["main.session.json"]
    state.remove("main", "session")
    state.remove("main", "session")  # twice is fine
    assert state.read("main", "session") is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"[1, 2]",
        json.dumps({"format": FORMAT + 1, "kind": "session", "session_id": 1}).encode(),
        json.dumps({"format": FORMAT, "kind": "records", "session_id": 1}).encode(),
        b"\xff\xfe",
        b"[" * 100_000,
    ],
    ids=["empty", "broken", "not-object", "newer-format", "other-kind", "not-utf8", "deep"],
)
def test_unusable_state_reads_as_none(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "main.session.json").write_bytes(content)
    assert StateDirectory(tmp_path).read("main", "session") is None


def test_names_cannot_leave_the_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="state names"):
        StateDirectory(tmp_path).path("../x", "session")


def test_a_directory_must_exist_and_be_writable(tmp_path: Path) -> None:
    assert check_directory(tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # the write test cleans up
    assert "not an existing directory" in (check_directory(tmp_path / "missing") or "")
    (tmp_path / "file").write_text("x")
    assert "not an existing directory" in (check_directory(tmp_path / "file") or "")
