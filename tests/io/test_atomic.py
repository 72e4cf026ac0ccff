"""io/atomic.py: temporary names carry host and pid; debris of dead writers is removed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

import rankdist.io.atomic as atomic
from rankdist.io.atomic import (
    atomic_directory,
    atomic_file,
    publish_directory,
    remove_stale_siblings,
)


def _dead_pid() -> int:
    """The pid of a process that has exited (and was reaped): no process runs under it."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    pid = int(proc.stdout)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    return pid


def _debris(tmp_path, target: str, host: str, pid: int, *, directory: bool, kind: str = "tmp"):
    path = tmp_path / f".{target}.{kind}-{host}-{pid}-0123abcd"
    if directory:
        (path / "X").mkdir(parents=True)
        (path / "X" / "c0").write_bytes(b"half")
    else:
        path.write_bytes(b"half")
    return path


def test_temporary_names_carry_host_and_pid(tmp_path):
    prefix = f".out.zarr.tmp-{socket.gethostname()}-{os.getpid()}-"
    with atomic_directory(tmp_path / "out.zarr") as tmp:
        assert tmp.name.startswith(prefix) and len(tmp.name) == len(prefix) + 8
    with atomic_file(tmp_path / "out.h5ad") as tmp:
        assert tmp.name.startswith(prefix.replace("zarr", "h5ad"))
        tmp.write_bytes(b"whole")


@pytest.mark.parametrize("directory", [True, False])
def test_a_dead_writers_debris_is_removed_at_the_next_start(tmp_path, directory):
    host, dead = socket.gethostname(), _dead_pid()
    stale = _debris(tmp_path, "s.zarr", host, dead, directory=directory)
    live = _debris(tmp_path, "s.zarr", host, os.getppid(), directory=directory)
    elsewhere = _debris(tmp_path, "s.zarr", "node-7.other", dead, directory=directory)
    other_target = _debris(tmp_path, "t.zarr", host, dead, directory=directory)
    unowned = tmp_path / ".s.zarr.tmp-0123abcd"  # the old form: no owner to check
    unowned.mkdir()
    if directory:
        with atomic_directory(tmp_path / "s.zarr") as tmp:
            (tmp / "zarr.json").write_text("{}")
    else:
        with atomic_file(tmp_path / "s.zarr", mode="w") as fh:
            fh.write("whole")
    assert not stale.exists()
    assert live.exists() and elsewhere.exists() and other_target.exists() and unowned.exists()
    assert (tmp_path / "s.zarr").exists()


def test_remove_stale_siblings_reports_what_it_removed(tmp_path):
    stale = _debris(tmp_path, "r", socket.gethostname(), _dead_pid(), directory=True)
    assert remove_stale_siblings(tmp_path / "r") == [stale]
    assert remove_stale_siblings(tmp_path / "r") == []
    assert remove_stale_siblings(tmp_path / "missing" / "r") == []


def test_a_replaced_directory_is_set_aside_under_a_name_with_host_and_pid(tmp_path, monkeypatch):
    (tmp_path / "r").mkdir()
    (tmp_path / "ready").mkdir()
    left = []
    monkeypatch.setattr(atomic.shutil, "rmtree", lambda p, **kw: left.append(p))  # killed first
    publish_directory(tmp_path / "ready", tmp_path / "r")
    (old,) = left
    prefix = f".r.old-{socket.gethostname()}-{os.getpid()}-"
    assert old.name.startswith(prefix) and len(old.name) == len(prefix) + 8


def test_a_dead_publishers_old_directory_is_removed_at_the_next_start(tmp_path):
    host, dead = socket.gethostname(), _dead_pid()
    (tmp_path / "s.zarr").mkdir()
    stale = _debris(tmp_path, "s.zarr", host, dead, directory=True, kind="old")
    live = _debris(tmp_path, "s.zarr", host, os.getppid(), directory=True, kind="old")
    elsewhere = _debris(tmp_path, "s.zarr", "node-7.other", dead, directory=True, kind="old")
    with atomic_directory(tmp_path / "s.zarr", replace=True) as tmp:
        (tmp / "zarr.json").write_text("{}")
    assert not stale.exists()
    assert live.exists() and elsewhere.exists()
    assert (tmp_path / "s.zarr" / "zarr.json").exists()


def test_an_old_directory_whose_target_is_missing_is_put_back(tmp_path):
    # killed between publish_directory's two renames: the old one is the only copy
    host, dead = socket.gethostname(), _dead_pid()
    stale = _debris(tmp_path, "s.zarr", host, dead, directory=True, kind="old")
    with pytest.raises(FileExistsError, match="s.zarr already exists"):
        with atomic_directory(tmp_path / "s.zarr"):
            pytest.fail("the store put back must not be replaced without replace=True")
    assert not stale.exists()
    assert (tmp_path / "s.zarr" / "X" / "c0").read_bytes() == b"half"
    assert remove_stale_siblings(tmp_path / "s.zarr") == []
