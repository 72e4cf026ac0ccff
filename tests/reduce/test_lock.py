"""One writer per run: a second run of the same name fails at once, or waits, naming the holder.

The first run is paused on a chosen tile through the ``tile_fn`` seam (an in-process
cluster, so the tile function and the test share an Event): nothing is timed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

import rankdist
import rankdist.api as api
import rankdist.tiles.scheduler as scheduler
from rankdist.reduce import lock as runlock
from rankdist.reduce import runstore

from _data import counts_adata

PAUSED = threading.Event()
RELEASE = threading.Event()


def paused_tile(job, i, j):
    """The real tile task; tile (0, 0) first waits until the test sets RELEASE."""
    if (i, j) == (0, 0):
        PAUSED.set()
        if not RELEASE.wait(timeout=120):
            msg = "the test never released the paused tile"
            raise TimeoutError(msg)
    return scheduler.tile_task(job, i, j)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    adata = counts_adata(1100, 50, seed=8)
    return rankdist.ingest(adata, tmp_path_factory.mktemp("lock") / "s.zarr", progress=False)


def _run(store, client, name, *, wait=False, tile_fn=scheduler.tile_task):
    request = api.NeighborsRequest.checked(
        store,
        "spearman",
        5,
        (0.5,),
        params=None,
        name=name,
        block_size=512,
        type_hist=False,
        form="dense",
        progress=False,
        wait=wait,
    )
    return api._run(request, client, time.perf_counter(), tile_fn=tile_fn)


class _Paused:
    """The first run of ``name``, in a thread, held on tile (0, 0) until :meth:`finish`."""

    def __init__(self, store, client, name):
        PAUSED.clear()
        RELEASE.clear()
        self.result, self.error = None, None
        self.thread = threading.Thread(target=self._target, args=(store, client, name))
        self.thread.start()
        assert PAUSED.wait(timeout=120), "the first run never reached its paused tile"

    def _target(self, store, client, name):
        try:
            self.result = _run(store, client, name, tile_fn=paused_tile)
        except Exception as err:  # reported by finish()
            self.error = err

    def finish(self):
        RELEASE.set()
        self.thread.join(timeout=120)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.result


def test_second_run_of_same_name_fails_at_once_naming_holder(store, inproc_client):
    first = _Paused(store, inproc_client, "twice")
    lock = runlock.lock_path(store.path, "twice")
    try:
        held = json.loads(lock.read_text())
        assert held["host"] == socket.gethostname()
        assert held["pid"] == os.getpid()
        # through the public entry point: refused before any cluster work
        with pytest.raises(runlock.RunLockedError) as info:
            rankdist.neighbors(store, k=5, name="twice", client=inproc_client, progress=False)
        msg = str(info.value)
        assert f"pid {os.getpid()}" in msg
        assert f"host {socket.gethostname()}" in msg
        assert f"since {held['since']}" in msg
        assert "--wait" in msg
        # and at the lock itself, as a second process reaching it would
        with pytest.raises(runlock.RunLockedError), runlock.hold(store.path, "twice"):
            pass
        assert lock.exists()
    finally:
        res = first.finish()
    assert res.k == 5
    assert not lock.exists()
    assert runstore.list_runs(store) == ["twice"]


def test_wait_waits_for_the_holder(store, inproc_client, monkeypatch, capsys):
    monkeypatch.setattr(runlock, "POLL_S", 0.01)
    first = _Paused(store, inproc_client, "queued")
    results = {}
    waiter = threading.Thread(
        target=lambda: results.update(res=_run(store, inproc_client, "queued", wait=True))
    )
    waiter.start()
    err, deadline = "", time.monotonic() + 60
    while "waiting for run 'queued'" not in err:
        assert time.monotonic() < deadline, f"the second run never said it waits: {err!r}"
        err += capsys.readouterr().err
        waiter.join(timeout=0.01)
    assert "res" not in results  # it waits: the first run has not finished
    first.finish()
    waiter.join(timeout=120)
    assert results["res"].k == 5
    err += capsys.readouterr().err
    assert err.count("waiting for run") == 1
    assert not runlock.lock_path(store.path, "queued").exists()


def test_lock_removed_on_error(store, inproc_client):
    def failing(job, i, j):
        raise ValueError("tile failed on purpose")

    with pytest.raises(ValueError, match="on purpose"):
        _run(store, inproc_client, "fails", tile_fn=failing)
    assert not runlock.lock_path(store.path, "fails").exists()


def test_stale_lock_is_taken_over(store, inproc_client, capsys):
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(gone.stdout)
    lock = runlock.lock_path(store.path, "crashed")
    lock.parent.mkdir(exist_ok=True)
    stale = {"host": socket.gethostname(), "pid": dead_pid, "since": "2026-01-01T00:00:00+0000"}
    lock.write_text(json.dumps(stale))
    assert _run(store, inproc_client, "crashed").k == 5
    err = capsys.readouterr().err
    assert (
        f"taking over the stale lock of run 'crashed' (host {socket.gethostname()}, pid "
        f"{dead_pid}" in err
    )
    assert not lock.exists()


def test_debris_of_killed_runs_is_removed_at_the_next_start(store):
    """Lock files being made or set aside, and a run set aside, by a dead process."""
    dead = int(
        subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    results, host = store.path / "results", socket.gethostname()
    results.mkdir(exist_ok=True)
    (results / "leftovers").mkdir()  # the run published before
    stale = [
        results / f".leftovers.lock.{host}.{dead}.tmp",
        results / f".leftovers.lock.{host}.{dead}.stale",
        results / f".leftovers.old-{host}-{dead}-0123abcd",
    ]
    kept = [
        results / f".leftovers.lock.{host}.{os.getppid()}.tmp",  # a live process's
        results / f".leftovers.lock.node-17.invalid.{dead}.stale",  # another host's
        results / f".other.lock.{host}.{dead}.tmp",  # another run's
        results / f".leftovers.old-node-17.invalid-{dead}-0123abcd",
    ]
    for path in stale + kept:
        if ".old-" in path.name:
            path.mkdir()
            (path / "zarr.json").write_text("{}")
        else:
            path.write_text("{}")
    with runlock.hold(store.path, "leftovers"):
        assert [p for p in stale if p.exists()] == []
    assert all(p.exists() for p in kept)
    assert (results / "leftovers").is_dir()


def test_lock_of_another_host_is_not_stale(store):
    lock = runlock.lock_path(store.path, "elsewhere")
    lock.parent.mkdir(exist_ok=True)
    lock.write_text(json.dumps({"host": "node-17.invalid", "pid": 1, "since": "then"}))
    try:
        with pytest.raises(runlock.RunLockedError, match="host node-17.invalid, pid 1"):
            runlock.check_free(store.path, "elsewhere")
    finally:
        lock.unlink()


@pytest.mark.parametrize(
    "name", ["zarr.json", "ZARR.json", ".zattrs", ".zgroup", ".x", ".x.lock", "a/b"]
)
def test_run_names_cannot_collide_with_store_internals(store, name):
    with pytest.raises(ValueError, match="run name"):
        rankdist.neighbors(store, k=5, name=name, progress=False)
