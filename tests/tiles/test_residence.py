"""Blocks resident in worker memory, or streamed from the store where Z does not fit.

A run keeps its encoded blocks in worker memory (one ``rankdist-block`` task reads each
from the store, once) when the blocks each worker holds fit
:data:`rankdist.tiles.grid.RESIDENT_SHARE` of its memory limit; otherwise every tile
reads its blocks from the store. The choice is automatic and recorded in the run's
metadata, and the results are the same bit for bit either way, on worker threads or
worker processes, with either kernel.
"""

from __future__ import annotations

import dask
import numpy as np
import pytest
from distributed import Client, LocalCluster, get_task_stream

import rankdist
from rankdist.tiles.blocks import read_counts, start_counting
from rankdist.tiles.grid import RESIDENT_SHARE, choose_residence

from _data import ingest_tricky, tricky_adata

#: The memory manager off: a worker's limit is then only what rankdist plans with.
NO_MEMORY_MANAGER = {
    f"distributed.worker.memory.{mark}": False for mark in ("target", "spill", "pause", "terminate")
}


def test_choose_residence():
    gb = 1e9
    assert choose_residence(10 * gb, [None, 4 * gb]).mode == "resident"  # one unlimited worker
    assert choose_residence(10 * gb, []).mode == "resident"
    # one or two workers hold all of Z; 50 hold a fifth each (OwnerLayout(50).block_share)
    fits = choose_residence(RESIDENT_SHARE * 20 * gb, [20 * gb, 30 * gb])
    assert fits.mode == "resident"
    assert fits.reason == (
        "Z (2 GB): the blocks a worker holds (2 GB) fit in 10% of its memory (2 GB)"
    )
    over = choose_residence(2.1 * gb, [20 * gb, 30 * gb])
    assert over.mode == "streamed"
    assert over.reason == (
        "Z (2.1 GB): the blocks a worker holds (2.1 GB) exceed 10% of its memory (2 GB); "
        "each tile reads its blocks"
    )
    assert choose_residence(10 * gb, [20 * gb] * 50).mode == "resident"  # 2 GB each
    assert choose_residence(10.1 * gb, [20 * gb] * 50).mode == "streamed"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    adata = tricky_adata(n_cells=1300, n_genes=120, seed=5)
    return ingest_tricky(adata, tmp_path_factory.mktemp("residence") / "s.zarr")


@pytest.fixture(scope="module")
def small_memory_client():
    """One worker of two threads in this process whose memory limit (1 MB) Z exceeds."""
    with (
        dask.config.set(NO_MEMORY_MANAGER),
        LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            processes=False,
            memory_limit="1MB",
            dashboard_address=":0",
        ) as lc,
        Client(lc) as c,
    ):
        yield c


def _run(store, client, name, kernel="float32"):
    client.run(start_counting)
    with get_task_stream(client) as stream:
        res = rankdist.neighbors(
            store,
            k=15,
            cutoffs=(0.2, 0.4),
            client=client,
            block_size=512,
            name=name,
            kernel=kernel,
            progress=False,
        )
    reads = [n for per_worker in client.run(read_counts).values() for n, _ in per_worker.values()]
    block_tasks = sum(1 for task in stream.data if task["key"].startswith("rankdist-block"))
    return res, reads, block_tasks


@pytest.mark.filterwarnings("ignore::rankdist.ExcludedCellsWarning")
def test_resident_and_streamed_blocks_give_identical_results(
    store, client, inproc_client, small_memory_client
):
    runs = {
        "threads": _run(store, inproc_client, "threads"),
        "processes": _run(store, client, "processes"),
        "streamed": _run(store, small_memory_client, "streamed"),
        "streamed-screen": _run(store, small_memory_client, "streamed-screen", "screen"),
        "threads-screen": _run(store, inproc_client, "threads-screen", "screen"),
    }
    n_blocks = 3
    for label in ("threads", "processes", "threads-screen"):
        res, reads, block_tasks = runs[label]
        assert res.metadata["blocks"] == "resident", label
        assert block_tasks == n_blocks, label
        assert "fit in 10% of its memory" in res.metadata["blocks_reason"]
        # each block read from the store at most once (threads in this process may find
        # it in the block cache an earlier streamed run here filled)
        assert len(reads) <= n_blocks and set(reads) <= {1}, label
    assert sorted(runs["processes"][1]) == [1] * n_blocks  # fresh worker processes
    for label in ("streamed", "streamed-screen"):
        res, _, block_tasks = runs[label]
        assert res.metadata["blocks"] == "streamed", label
        assert "exceed 10% of its memory" in res.metadata["blocks_reason"]
        assert block_tasks == 0, label  # the tiles read their blocks themselves
    ref = runs["threads"][0]
    assert ref.metadata["n_blocks"] == n_blocks
    for label, (res, _, _) in runs.items():
        assert np.array_equal(res.indices, ref.indices), label
        assert np.array_equal(res.similarities.view(np.int32), ref.similarities.view(np.int32)), (
            label
        )
        assert res.counts.identical(ref.counts), label


@pytest.mark.parametrize("workers", [2, 3, 16, 50, 100])
def test_owner_layout_balances_work_and_bounds_the_blocks_a_worker_needs(workers):
    """At 141 blocks (2.3 M cells): work within 15 % of even, ``2 N / s`` cells per worker."""
    import collections
    import math

    from rankdist.tiles.grid import OwnerLayout, TilePlan

    layout, plan = OwnerLayout(workers), TilePlan(141 * 16384, 16384)
    s = layout.groups
    assert s % 2 == 0 and s >= 2 * round(math.sqrt(workers / 2))
    work, needs = collections.Counter(), collections.defaultdict(set)
    for i, j in plan.tiles():
        assert 0 <= layout.unit(i, j) < s * s // 2
        work[layout.owner(i, j)] += plan.tile_pairs(i, j)
        needs[layout.owner(i, j)] |= {i, j}
    assert len(work) == min(workers, s * s // 2)  # at 100 workers, 98 units: 2 only steal
    assert max(work.values()) <= 1.2 * sum(work.values()) / workers
    per_unit = 2 * math.ceil(plan.n_blocks / s)  # the blocks of two groups
    units_per_worker = math.ceil(s * s / 2 / workers)
    assert max(len(b) for b in needs.values()) <= min(plan.n_blocks, units_per_worker * per_unit)
    if workers == 50:
        assert s == 10 and max(len(b) for b in needs.values()) <= 2 * 15  # N/5 of 141 blocks
