"""Ingest end to end: every input format gives the same store; provenance; encoding cache."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
import zarr

import rankdist
from rankdist.encode.cache import encode

from _data import counts_adata
from _formats import write_10x_h5, write_10x_mtx


def _store_arrays(store):
    root = zarr.open_group(store.path, mode="r")
    return {
        "X": np.asarray(root["X"][:]),
        "cells": list(store.cell_names),
        "genes": list(store.gene_names),
        "totals": np.asarray(root["obs/total_counts"][:]),
    }


def test_anndata_formats_give_identical_stores(tmp_path):
    adata = counts_adata(300, 40, seed=1)
    paths = {}
    for layout in ("dense", "csr", "csc"):
        a = adata.copy()
        if layout != "dense":
            a.X = sp.csr_matrix(a.X) if layout == "csr" else sp.csc_matrix(a.X)
        paths[layout] = tmp_path / f"{layout}.h5ad"
        a.write_h5ad(paths[layout])
    paths["zarr"] = tmp_path / "anndata.zarr"
    adata.write_zarr(paths["zarr"])
    stores = {
        name: rankdist.ingest(
            p, tmp_path / f"{name}.store.zarr", cell_type="cell_type", progress=False
        )
        for name, p in paths.items()
    }
    ref = _store_arrays(stores["dense"])
    np.testing.assert_array_equal(ref["X"], adata.X)
    np.testing.assert_allclose(ref["totals"], adata.X.sum(axis=1, dtype=np.float64))
    for name, store in stores.items():
        got = _store_arrays(store)
        assert got["cells"] == ref["cells"] and got["genes"] == ref["genes"], name
        np.testing.assert_array_equal(got["X"], ref["X"], err_msg=name)
        lab = store.labels["cell_type"]
        assert lab.column == "cell_type"
        assert list(np.asarray(lab.categories)[lab.codes]) == list(
            adata.obs["cell_type"].astype(str)
        )


@pytest.mark.parametrize("fmt", ["10x-h5", "10x-mtx"])
def test_10x_formats_match_scanpy_and_give_the_same_neighbours(tmp_path, client, fmt):
    adata = counts_adata(260, 50, seed=2)
    if fmt == "10x-h5":
        path = write_10x_h5(adata, tmp_path / "m.h5")
        ref = sc.read_10x_h5(path)
        ref.var_names_make_unique()
    else:
        path = write_10x_mtx(adata, tmp_path / "mtx", gzip=True)
        ref = sc.read_10x_mtx(path)
    store = rankdist.ingest(path, tmp_path / "tenx.zarr", progress=False)
    got = _store_arrays(store)
    assert got["cells"] == list(ref.obs_names) and got["genes"] == list(ref.var_names)
    np.testing.assert_array_equal(got["X"], ref.X.toarray())
    assert store.provenance["source_kind"] == fmt
    # the same matrix through an in-memory AnnData gives bit-identical neighbours
    twin = rankdist.ingest(ref, tmp_path / "twin.zarr", progress=False)
    kw = dict(k=8, cutoffs=(0.3,), client=client, progress=False)
    with pytest.warns(rankdist.ExcludedCellsWarning):  # counts_adata's cell 2 is empty
        a = rankdist.neighbors(store, **kw)
    with pytest.warns(rankdist.ExcludedCellsWarning):
        b = rankdist.neighbors(twin, **kw)
    assert np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.similarities, b.similarities, equal_nan=True)


def test_provenance_and_gene_selection(tmp_path):
    adata = counts_adata(200, 60, seed=3)
    path = tmp_path / "x.h5ad"
    adata.write_h5ad(path)
    store = rankdist.ingest(path, tmp_path / "s.zarr", genes="hvg:20", progress=False)
    prov = store.provenance
    assert prov["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert prov["source"] == str(path.resolve()) and prov["source_kind"] == "h5ad"
    assert prov["source_shape"] == [200, 60]
    assert prov["parameters"]["genes"]["mode"] == "hvg"
    assert prov["rankdist_version"] == rankdist.__version__
    assert store.n_genes == 20
    # library sizes stay those of all genes, not of the selected ones
    np.testing.assert_allclose(
        np.asarray(zarr.open_group(store.path)["obs/total_counts"][:]), adata.X.sum(axis=1)
    )


@pytest.mark.filterwarnings("ignore::rankdist.ExcludedCellsWarning")
def test_encodings_are_cached_by_parameters(tmp_path, client):
    store = rankdist.ingest(counts_adata(150, 30, seed=4), tmp_path / "c.zarr", progress=False)
    first = encode(store, "pearson", None, client, progress=False)
    mtime = (first.path / "Z" / "zarr.json").stat().st_mtime_ns
    again = encode(store, "pearson", {"target_sum": 1e4}, client, progress=False)
    assert again.path == first.path  # same resolved parameters: reused
    assert (again.path / "Z" / "zarr.json").stat().st_mtime_ns == mtime
    other = encode(store, "pearson", {"target_sum": 1e6}, client, progress=False)
    assert other.path != first.path and other.key != first.key
    z1 = np.asarray(zarr.open_group(first.path)["Z"][:])
    z2 = np.asarray(zarr.open_group(other.path)["Z"][:])
    assert not np.array_equal(z1, z2)  # the parameter changed the encoding
    names = sorted(p.name for p in (store.path / "encodings").iterdir() if p.is_dir())
    assert len(names) == 2 and all(n.startswith("pearson-") for n in names)
