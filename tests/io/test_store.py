"""io/store.py's helpers: atomic_file (a file appears whole or not at all) and
drop_unused_categories."""

from __future__ import annotations

import os

import numpy as np
import pytest

from rankdist.io.store import atomic_file, drop_unused_categories

MODES = [None, "w", "wb"]


def _write(target, mode, text: str, fsync: bool = False):
    """Enter atomic_file(target, ...), write ``text``; return (context, temporary path)."""
    ctx = atomic_file(target, mode=mode, fsync=fsync)
    got = ctx.__enter__()
    if mode is None:
        got.write_text(text)
        return ctx, got
    got.write(text if mode == "w" else text.encode())
    return ctx, target.parent / os.path.basename(got.name)


@pytest.mark.parametrize("mode", MODES)
def test_success_renames_the_temporary_file(tmp_path, mode):
    target = tmp_path / "out.json"
    target.write_text("old")
    ctx, tmp = _write(target, mode, "new")
    assert tmp.parent == tmp_path and tmp.name.startswith(".out.json.tmp-")  # hidden sibling
    assert target.read_text() == "old"  # nothing visible until the body returns
    ctx.__exit__(None, None, None)
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.parametrize("mode", MODES)
def test_a_failure_leaves_the_target_and_no_temporary(tmp_path, mode):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="injected"):
        with atomic_file(target, mode=mode) as got:
            if mode is None:
                got.write_text("half")
            else:
                got.write("half" if mode == "w" else b"half")
            raise RuntimeError("injected")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    with pytest.raises(RuntimeError, match="injected"), atomic_file(tmp_path / "new.json"):
        raise RuntimeError("injected")  # before the body created anything
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_failed_rename_leaves_no_temporary(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise PermissionError(f"cannot replace {dst}")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError, match="cannot replace"):
        with atomic_file(tmp_path / "out.json", mode="w") as fh:
            fh.write("new")
    assert list(tmp_path.iterdir()) == []


def test_two_writers_do_not_collide(tmp_path):
    """Each writer has its own temporary file; the last to finish wins, whole."""
    target = tmp_path / "cal.json"
    first, first_tmp = _write(target, "w", "first")
    second, second_tmp = _write(target, None, "second")
    assert first_tmp != second_tmp
    second.__exit__(None, None, None)
    assert target.read_text() == "second"
    first.__exit__(None, None, None)
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["cal.json"]


@pytest.mark.parametrize("mode", [None, "wb"])
def test_fsync_flushes_the_file_before_the_rename(tmp_path, monkeypatch, mode):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append((os.fstat(fd).st_size, (tmp_path / "part.npz").exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    for fsync in (False, True):
        synced.clear()
        (tmp_path / "part.npz").unlink(missing_ok=True)
        ctx, _ = _write(tmp_path / "part.npz", mode, "12345", fsync=fsync)
        ctx.__exit__(None, None, None)
        assert synced == ([(5, False)] if fsync else []), fsync  # all of it, before the rename


def test_a_body_that_writes_nothing_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing was written for .*out.h5ad"):
        with atomic_file(tmp_path / "out.h5ad"):
            pass
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="mode 'a'"):
        with atomic_file(tmp_path / "out.h5ad", mode="a"):
            pass


def test_drop_unused_categories_keeps_order_as_int32():
    codes, cats = drop_unused_categories(np.array([3, 0, 3, 1]), ["a", "b", "c", "d"])
    assert codes.dtype == np.int32 and codes.tolist() == [2, 0, 2, 1]
    assert cats == ["a", "b", "d"]
    codes, cats = drop_unused_categories(np.array([], dtype=np.int32), ("a", "b"))
    assert codes.dtype == np.int32 and codes.tolist() == [] and cats == []
