"""rankdist.load: top-k read whole, counts and relations backed by the stored chunks."""

from __future__ import annotations

import dataclasses
import shutil

import dask
import numpy as np
import pytest
import xarray as xr

import rankdist
from rankdist.io.verified import MissingChunkError

from _data import ingest_tricky, tricky_adata


@pytest.fixture(scope="module")
def stored(tmp_path_factory, client):
    """A store with one finished run, every label role, 1300 cells in three row blocks."""
    store = ingest_tricky(
        tricky_adata(n_cells=1300, n_genes=40, seed=5), tmp_path_factory.mktemp("lazy") / "s.zarr"
    )
    with pytest.warns(rankdist.ExcludedCellsWarning):
        res = rankdist.neighbors(
            store,
            k=6,
            cutoffs=(0.2, 0.4, 0.6),
            client=client,
            name="run",
            block_size=512,
            progress=False,
        )
    return store, res


def _copy(store, name: str):
    shutil.copytree(store.path / "results" / "run", store.path / "results" / name)
    return store.path / "results" / name


def _chunk_files(folder):
    return [p for p in folder.rglob("*") if p.is_file() and p.name != "zarr.json"]


def test_load_reads_counts_and_relations_only_when_used(stored):
    """Loaded, then the stored chunks removed: reading the counts afterwards finds the gaps
    (a missing-chunk error), so load read none of them; the top-k were read whole at load."""
    store, res = stored
    run = _copy(store, "gone")
    lazy = rankdist.load(store, "gone")
    for name in ("counts", "relations"):
        ds = getattr(lazy, name)
        assert ds.data_vars and all(dask.is_dask_collection(v.data) for v in ds.data_vars.values())
    for path in _chunk_files(run / "counts") + _chunk_files(run / "relations"):
        path.unlink()
    shutil.rmtree(run / "indices")
    shutil.rmtree(run / "similarities")
    assert np.array_equal(lazy.indices, res.indices)
    assert np.array_equal(lazy.similarities, res.similarities, equal_nan=True)
    assert res.counts["batch"].to_numpy().any() and res.relations["total"].to_numpy().any()
    # a missing chunk is an error: these values are read only now, after the removal
    with pytest.raises(MissingChunkError, match="counts/batch"):
        lazy.counts["batch"].to_numpy()
    with pytest.raises(MissingChunkError, match="relations/total"):
        lazy.relations["total"].to_numpy()


def test_counts_and_relations_keep_their_dims_coords_and_attrs(stored):
    store, res = stored
    assert sorted(res.counts.data_vars) == ["batch", "cell_type", "coarse_type"]
    da = res.counts["cell_type"]
    assert da.dims == ("cell", "cutoff", "neighbor_cell_type")
    assert list(da.coords["neighbor_cell_type"].to_numpy()) == list(
        res.labels["cell_type"].categories
    )
    assert list(da.coords["cell"].to_numpy()) == list(store.cell_names)
    assert list(da.coords["cutoff"].to_numpy()) == [0.2, 0.4, 0.6]
    assert da.attrs == {"column": "celltype", "meaning": "relations with similarity >= cutoff"}
    assert da.dtype == np.int32 and da.data.chunksize == (512, 3, da.shape[2])
    rel = res.relations
    assert sorted(rel.data_vars) == ["same_batch", "same_cell_type", "same_coarse_type", "total"]
    assert all(v.dims == ("cell", "cutoff") and v.dtype == np.int32 for v in rel.values())
    assert rel.indexes["cell"].equals(res.counts.indexes["cell"])
    # what analyses and users do with counts: select by name, sum, take values
    name = str(store.cell_names[700])
    one = res.counts["batch"].sel(cell=name, cutoff=0.4)
    assert int(one.sum()) == int(rel["total"].sel(cell=name, cutoff=0.4))
    summed = res.counts["coarse_type"].sum("neighbor_coarse_type")
    assert np.array_equal(summed.values, rel["total"].values)


def test_in_memory_result_derives_the_same_relations(stored):
    _, res = stored
    eager = dataclasses.replace(res, counts=res.counts.compute(), relations=None)
    assert not any(dask.is_dask_collection(v.data) for v in eager.relations.values())
    assert eager.relations.identical(res.relations.compute())
    rows = np.arange(res.n_cells)
    counts = eager.counts["batch"].to_numpy()
    want = counts[rows, :, res.labels["batch"].codes]
    assert np.array_equal(eager.relations["same_batch"].to_numpy(), want)
    assert (eager.relations["total"].to_numpy()[res.excluded] == 0).all()


def test_relations_derived_lazily_where_a_run_has_none(stored):
    """A format-1 run (no relations/) derives them from the counts, one task per chunk."""
    store, res = stored
    run = _copy(store, "old")
    shutil.rmtree(run / "relations")
    old = rankdist.load(store, "old")
    total = old.relations["total"].data
    assert dask.is_dask_collection(total) and total.numblocks == (3, 1)
    assert old.relations.identical(res.relations)


def test_result_without_counts_has_empty_relations(stored):
    _, res = stored
    no_counts = xr.Dataset(coords={"cell": res.cell_names})
    bare = dataclasses.replace(res, counts=no_counts, relations=None)
    assert not bare.relations.data_vars
