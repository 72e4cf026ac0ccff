"""Results are bit-identical whatever the number of workers or the block size."""

from __future__ import annotations

import numpy as np
import pytest

import rankdist

from _data import ingest_tricky, tricky_adata


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # 1300 cells: 3 blocks of 512, or 2 of 1024, or 1 of 1536 -> different tile layouts
    adata = tricky_adata(n_cells=1300, n_genes=120, seed=3)
    return ingest_tricky(adata, tmp_path_factory.mktemp("stab") / "s.zarr")


def _run(store, client, block_size, name):
    return rankdist.neighbors(
        store,
        k=15,
        cutoffs=(0.2, 0.4),
        client=client,
        block_size=block_size,
        name=name,
        progress=False,
    )


@pytest.mark.filterwarnings("ignore::rankdist.ExcludedCellsWarning")
@pytest.mark.parametrize("encoding", ["spearman", "pearson"])
def test_identical_across_workers_block_sizes_and_kernels(
    store, client, client_one, inproc_client, encoding
):
    runs = {}
    for label, cl, bs, kernel in [
        ("1w-512", client_one, 512, "float32"),
        ("2w-512", client, 512, "float32"),
        ("2w-1024", client, 1024, "float32"),
        ("1w-1536", client_one, 1536, "float32"),
        ("1w-512-screen", client_one, 512, "screen"),
        ("2w-1024-screen", client, 1024, "screen"),
        ("threads-1536-screen", inproc_client, 1536, "screen"),
    ]:
        res = rankdist.neighbors(
            store,
            encoding,
            k=15,
            cutoffs=(0.2, 0.4),
            client=cl,
            block_size=bs,
            name=f"{encoding}-{label}",
            progress=False,
            kernel=kernel,
        )
        assert res.metadata["kernel"] == kernel
        runs[label] = res
    ref = runs["1w-512"]
    assert ref.metadata["n_blocks"] == 3
    for label, res in runs.items():
        assert np.array_equal(res.indices, ref.indices), label
        # bitwise, not approximately: compare the float32 bit patterns (NaN rows included)
        assert np.array_equal(res.similarities.view(np.int32), ref.similarities.view(np.int32)), (
            label
        )
        assert res.counts.identical(ref.counts), label


@pytest.mark.filterwarnings("ignore::rankdist.ExcludedCellsWarning")
def test_rerun_replaces_run_atomically(store, client):
    first = _run(store, client, 512, "again")
    second = _run(store, client, 512, "again")
    assert np.array_equal(first.indices, second.indices)
    runs = rankdist.list_runs(store)
    assert "again" in runs
    leftovers = [p.name for p in (store.path / "results").iterdir() if p.name.startswith(".")]
    assert leftovers == []
