"""State files: atomic, versioned, and ignored (never fatal) when unusable."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.state import (
    FORMAT,
    StateDirectory,
    check_directory,
    remove_leftovers,
    write_atomically,
)


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


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        assert check_directory(tmp_path) == f"cannot write in {tmp_path}: Permission denied"
    finally:
        tmp_path.chmod(0o700)


def test_a_file_written_in_chunks_replaces_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "main.records.jsonl"
    write_atomically(path, [b"old"])
    write_atomically(path, iter([b"new ", b"content"]))
    assert path.read_bytes() == b"new content"
    assert list(tmp_path.iterdir()) == [path]


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "main.records.jsonl"
    write_atomically(path, [b"old"])

    def failing() -> Iterator[bytes]:
        yield b"half"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomically(path, failing())
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]


def test_leftovers_of_a_killed_writer_are_removed_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "main.records.jsonl"
    path.write_text("kept")
    (tmp_path / f".{path.name}.abc123").write_text("half")
    (tmp_path / "other.records.jsonl").write_text("kept too")
    remove_leftovers(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, "other.records.jsonl"]
