"""A run killed at any point resumes with the same command, redoing no finished tile.

The process holding the client and the LocalCluster (scheduler and workers) is killed
with SIGKILL, as a batch system or an impatient user would, at several points.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import rankdist
import rankdist.api as api
import rankdist.tiles.scheduler as scheduler
from rankdist.datasets.toy import synthetic_counts
from rankdist.reduce.checkpoint import scan

from _data import counts_adata

EXE = Path(sys.executable).with_name("rankdist")
ARGS = ["--k", "10", "--cutoffs", "0.45,0.5", "--block-size", "512", "--workers", "1"]


@pytest.fixture(scope="module")
def store(tmp_path_factory, client):
    adata = synthetic_counts(n_cells=8_000, n_genes=400, seed=11)
    s = rankdist.ingest(
        adata,
        tmp_path_factory.mktemp("resume") / "r.zarr",
        cell_type="cell_type",
        batch="batch",
        progress=False,
    )
    return s


@pytest.fixture(scope="module")
def reference(store, client):
    """An uninterrupted run (it also caches the encoding the killed runs reuse)."""
    return rankdist.neighbors(
        store,
        k=10,
        cutoffs=(0.45, 0.5),
        block_size=512,
        client=client,
        name="ref",
        progress=False,
    )


def _durable_tiles(ckpt: Path, n_blocks: int) -> int:
    """Tiles whose every side is on disk (a written block or a checkpoint)."""
    state = scan(ckpt)
    covered = {b: state.covered(b) for b in range(n_blocks)}
    done = 0
    for i in range(n_blocks):
        for j in range(i, n_blocks):
            sides = [(i, "row")] + ([(i, "col")] if i == j else [(j, "col")])
            if all(b in state.written or (i, j, side) in covered[b] for b, side in sides):
                done += 1
    return done


def _kill_when(store_path: Path, name: str, ready) -> Path:
    proc = subprocess.Popen(
        [str(EXE), "neighbors", str(store_path), "--name", name, "--quiet", *ARGS],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    work = store_path / "results" / f".{name}.partial"
    deadline = time.monotonic() + 120
    try:
        while not ready(work):
            if proc.poll() is not None:
                pytest.fail(f"the run finished before the kill point: {proc.stderr.read()}")
            if time.monotonic() > deadline:
                pytest.fail("kill point not reached in 120 s")
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the client, scheduler and every worker
        proc.wait()
    return work


def _n(work: Path, pattern: str) -> int:
    ckpt = work / "checkpoint"
    return len(list(ckpt.glob(pattern))) if ckpt.exists() else 0


KILL_POINTS = {
    "before-any-checkpoint": lambda w: (w / "job.json").exists(),
    "after-merges": lambda w: _n(w, "b*.npz") >= 6,
    "after-written-blocks": lambda w: _n(w, "written-*") >= 4,
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_killed_run_resumes_bit_identical(store, reference, point):
    name = f"killed-{point}"
    work = _kill_when(store.path, name, KILL_POINTS[point])
    n_blocks = reference.metadata["n_blocks"]
    durable = _durable_tiles(work / "checkpoint", n_blocks)
    assert not (store.path / "results" / name).exists()  # nothing half-written is visible

    proc = subprocess.run(
        [str(EXE), "neighbors", str(store.path), "--name", name, "--quiet", *ARGS],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    res = rankdist.load(store.path, name)
    meta = res.metadata
    said = f"resuming run {name!r} in {store.path}: {durable} of {meta['n_tiles']} tiles already"
    assert said in proc.stderr  # even with --quiet
    # finished tiles were not redone; every other tile was computed exactly once
    assert meta["tiles_resumed"] == durable
    assert meta["tiles_resumed"] + meta["tiles_computed"] == meta["n_tiles"]
    if point != "before-any-checkpoint":
        assert durable > 0
    assert not work.exists()
    assert np.array_equal(res.indices, reference.indices)
    assert np.array_equal(res.similarities.view(np.int32), reference.similarities.view(np.int32))
    assert res.counts.identical(reference.counts)


# --- a resumed run says so -----------------------------------------------------------------


def _stop_after_block_0(work: Path):
    """A tile task that computes every tile but (4, 4), which fails once block 0 is written."""

    def tile(job, i, j):
        if (i, j) == (4, 4):
            deadline = time.monotonic() + 120
            while not (work / "checkpoint" / "written-0").exists():  # the hook: a ready file
                if time.monotonic() > deadline:
                    msg = "block 0 was never written"
                    raise TimeoutError(msg)
                time.sleep(0.01)
            msg = "stopped on purpose after block 0"
            raise RuntimeError(msg)
        return scheduler.tile_task(job, i, j)

    return tile


def test_a_resumed_run_says_how_much_it_reuses(tmp_path, inproc_client, capsys):
    store = rankdist.ingest(counts_adata(2100, 30, seed=4), tmp_path / "s.zarr", progress=False)
    request = api.NeighborsRequest.checked(
        store,
        "spearman",
        5,
        (0.5,),
        params=None,
        name="again",
        block_size=512,
        type_hist=False,
        form="dense",
        progress=False,
    )
    work = store.path / "results" / ".again.partial"
    stop = _stop_after_block_0(work)
    with (
        pytest.warns(rankdist.ExcludedCellsWarning),  # counts_adata's cell 2 is empty
        pytest.raises(RuntimeError, match="stopped on purpose"),
    ):
        api._run(request, inproc_client, time.perf_counter(), tile_fn=stop)
    assert "resuming" not in capsys.readouterr().err  # a fresh run says nothing of the kind
    durable = _durable_tiles(work / "checkpoint", 5)
    written = len(scan(work / "checkpoint").written)
    assert durable >= 5 and written >= 1  # block 0's five tiles at least

    # tasks already running when the tile failed may still checkpoint, so the counts are read
    # again once the cluster is idle; the resumed run must report exactly those
    deadline = time.monotonic() + 120
    while any(inproc_client.run(lambda dask_worker: len(dask_worker.active_threads)).values()):
        assert time.monotonic() < deadline, "the stopped run's tasks never finished"
        time.sleep(0.05)
    durable, written = (
        _durable_tiles(work / "checkpoint", 5),
        len(scan(work / "checkpoint").written),
    )
    with pytest.warns(rankdist.ExcludedCellsWarning):
        res = api._run(request, inproc_client, time.perf_counter())
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"rankdist: resuming run 'again' in {store.path}: {durable} of 15 tiles already done "
        f"({written} of 5 row blocks written)"
    ]
    assert res.metadata["tiles_resumed"] == durable
    assert res.metadata["blocks_resumed"] == written
