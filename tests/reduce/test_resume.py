"""A run killed at any point resumes with the same command, redoing no finished tile.

The process holding the client and the LocalCluster (scheduler and workers) is killed
with SIGKILL, as a batch system or an impatient user would, at several points. Each point
is a pause in the run (tests/faults/_hooks.py: the n-th tile, merge or write task waits
for a file that never comes), so the run cannot finish or pass the point before the kill,
however fast or busy the machine.
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
from faults import _hooks
from faults._checks import wait_idle
from faults._hooks import durable_tiles

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
        kernel="float32",
    )


def _kill_at(
    store_path: Path, name: str, pause: _hooks.Pause, hook: Path, args: list[str] = ARGS
) -> Path:
    """Run ``rankdist neighbors`` until ``pause``, then SIGKILL it; its work directory."""
    argv = ["neighbors", str(store_path), "--name", name, "--quiet", *args]
    proc = _hooks.start(hook, pause, argv)
    try:
        _hooks.wait_ready(hook, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the client, scheduler and every worker
        proc.communicate()
    return store_path / "results" / f".{name}.partial"


def _n(work: Path, pattern: str) -> int:
    ckpt = work / "checkpoint"
    return len(list(ckpt.glob(pattern))) if ckpt.exists() else 0


#: Where the run is killed: before any tile has finished (so before any checkpoint),
#: after 6 merged partials were checkpointed, after 4 row blocks were written.
KILL_POINTS = {
    "before-any-checkpoint": _hooks.TILES,
    "after-merges": _hooks.merged(6),
    "after-written-blocks": _hooks.written(4),
}


@pytest.mark.parametrize(
    "point,kernels",
    [(point, ("float32", "float32")) for point in KILL_POINTS]
    + [("after-merges", ("screen", "screen")), ("after-merges", ("screen", "float32"))],
)
def test_killed_run_resumes_bit_identical(store, reference, point, kernels, tmp_path):
    """Killed and resumed with the kernels given: all give the float32 reference's bits."""
    name = f"killed-{point}-{'-'.join(kernels)}"
    killed, resumed = ([*ARGS, "--kernel", kernel] for kernel in kernels)
    work = _kill_at(store.path, name, KILL_POINTS[point], tmp_path / "hook", killed)
    n_blocks = reference.metadata["n_blocks"]
    durable = durable_tiles(work / "checkpoint", n_blocks)
    assert not (store.path / "results" / name).exists()  # nothing half-written is visible
    if point == "before-any-checkpoint":
        assert (work / "job.json").exists() and _n(work, "b*.npz") == 0 and durable == 0
    if point == "after-written-blocks":
        assert _n(work, "written-*") >= 4

    proc = subprocess.run(
        [str(EXE), "neighbors", str(store.path), "--name", name, "--quiet", *resumed],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    res = rankdist.load(store.path, name)
    meta = res.metadata
    assert meta["kernel"] == kernels[1]
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
    durable = durable_tiles(work / "checkpoint", 5)
    written = len(scan(work / "checkpoint").written)
    assert durable >= 5 and written >= 1  # block 0's five tiles at least

    # tasks already running when the tile failed may still checkpoint, so the counts are read
    # again once the cluster is idle; the resumed run must report exactly those
    wait_idle(inproc_client)
    durable, written = (
        durable_tiles(work / "checkpoint", 5),
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
