import json
import os

import pytest

from sbnlib.io import atomic_write_bytes, atomic_write_json, ensure_writable_dir, read_json_object


def test_atomic_write_replaces_whole_file_with_normal_mode(tmp_path):
    p = tmp_path / "sub" / "r.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert oct(p.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert [f.name for f in p.parent.iterdir()] == ["r.json"]  # no temporary files left


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "r.bin"
    atomic_write_bytes(p, b"old")

    def boom(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"old"
    assert [f.name for f in tmp_path.iterdir()] == ["r.bin"]


def test_next_write_removes_temporaries_of_a_killed_write(tmp_path):
    p = tmp_path / "r.json"
    stale = tmp_path / ".r.json.k1ll3d_1.tmp"  # what a SIGKILL between write and rename leaves
    stale.write_text('{"half": ')
    other = tmp_path / ".r.json.x.k1ll3d_2.tmp"  # a temporary of the file "r.json.x": not ours
    other.write_text("keep")
    atomic_write_json(p, {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1}
    assert sorted(f.name for f in tmp_path.iterdir()) == [other.name, "r.json"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_dir(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    with pytest.raises(OSError, match="not writable"):
        ensure_writable_dir(d)


def test_dir_under_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="cannot create output directory"):
        ensure_writable_dir(tmp_path / "file" / "sub")


def test_a_live_writers_temporary_is_never_removed(tmp_path):
    p = tmp_path / "r.json"
    live = tmp_path / f".r.json.{os.getpid()}-abc123.tmp"  # another writer's, mid-write (this process is alive)
    live.write_text('{"half": ')
    dead = tmp_path / ".r.json.999999999-abc123.tmp"  # a writer whose process is gone
    dead.write_text('{"half": ')
    atomic_write_json(p, {"a": 1})
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted([live.name, "r.json"])


@pytest.mark.parametrize("content, problem", [
    (b"{not json", "unreadable"),
    (b"\xff\xfe{}", "unreadable"),
    (b"[1, 2]", "holds a list, not a JSON object"),
    (None, "unreadable"),  # no file at all
])
def test_read_json_object_names_the_file_the_problem_and_the_fix(tmp_path, content, problem):
    p = tmp_path / "cost.json"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(ValueError) as e:
        read_json_object(p, "rerun the study")
    assert str(p) in str(e.value) and problem in str(e.value) and str(e.value).endswith("; rerun the study")
    p.write_text('{"a": [1]}')
    assert read_json_object(p, "rerun the study") == {"a": [1]}
