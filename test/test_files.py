"""Atomic writes (deer_ros/files.py): a failed write keeps the previous file and leaves no temporary behind."""
from __future__ import annotations

import pytest

from deer_ros.files import atomic_path, write_atomic, write_text_atomic


def test_a_write_replaces_the_file_and_creates_its_folder(tmp_path):
    target = tmp_path / "new" / "log.json"
    assert write_text_atomic(target, "first") == target and target.read_text() == "first"
    write_atomic(target, lambda f: f.write(b"second"))
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["log.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "state.pt"
    target.write_text("old")

    def crash(f) -> None:
        f.write(b"half a fi")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        write_atomic(target, crash)
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("also half")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
