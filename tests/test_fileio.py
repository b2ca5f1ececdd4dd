"""regioncap.fileio: writes land whole or not at all, and leave no temporary file."""

import json
import stat

import pytest

from regioncap.fileio import atomic_path, write_json_atomic, write_text_atomic


def test_text_and_json_are_written_and_replace_the_old_file(tmp_path):
    path = tmp_path / "sub" / "a.json"
    write_text_atomic(path, "old")
    write_json_atomic(path, {"b": [1, 2]}, indent=None)
    assert path.read_text(encoding="utf-8") == '{"b": [1, 2]}\n'
    assert json.loads(path.read_text()) == {"b": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash while writing")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]


def test_temporary_keeps_the_suffix_and_the_file_gets_the_usual_mode(tmp_path):
    path = tmp_path / "plot.png"
    with atomic_path(path) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path and tmp != path
        tmp.write_bytes(b"png")
    reference = tmp_path / "reference"
    reference.write_bytes(b"")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(reference.stat().st_mode)


def test_the_file_is_synced_before_the_move_and_the_folder_after(tmp_path, monkeypatch):
    """A power cut after the move must not leave an empty record: the data reaches the disk before the
    rename, and the rename itself (the folder's entry) after it."""
    import os

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = tmp_path / "regioncap-index.json"
    write_json_atomic(path, {"schema": 2})
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    assert events[0][1].startswith(str(tmp_path / ".regioncap-index.")) and events[0][1].endswith(".tmp.json")
    assert events[1][1] == str(path) and events[2][1] == str(tmp_path)
