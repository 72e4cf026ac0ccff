"""Several sources in one store: common genes, batches, cell names, labels, atomicity."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import zarr

import rankdist
from rankdist.cli import main

from _data import counts_adata


def two_sources(tmp_path, *, same_names: bool = True):
    """Sources a (60 cells) and b (50 cells): b lacks gene G003, has gene X1, reversed order."""
    a = counts_adata(60, 12, seed=1)
    a.obs["cell_type"] = pd.Categorical(a.obs["cell_type"].astype(str).replace("NK", "B"))
    a.obs["donor"] = pd.Categorical(np.where(np.arange(60) < 30, "d1", "d2"))
    b = counts_adata(50, 12, seed=2)
    b.obs["cell_type"] = pd.Categorical(
        np.where(np.arange(50) % 5 == 0, "Mono", b.obs["cell_type"].astype(str))
    )
    b.obs["donor"] = pd.Categorical(np.full(50, "d3"))
    b.var_names = [*b.var_names[:3], "X1", *b.var_names[4:]]
    b = b[:, ::-1].copy()
    if not same_names:
        b.obs_names = [f"other{i}" for i in range(50)]
    paths = [tmp_path / "a.h5ad", tmp_path / "b.h5ad"]
    a.write_h5ad(paths[0])
    b.write_h5ad(paths[1])
    return a, b, paths


def common_columns(a, b):
    common = a.var_names[a.var_names.isin(b.var_names)]
    return common, a.var_names.get_indexer(common), b.var_names.get_indexer(common)


def test_two_sources_concatenate_on_common_genes(tmp_path):
    a, b, paths = two_sources(tmp_path)
    store = rankdist.ingest(paths, tmp_path / "s.zarr", cell_type="cell_type", progress=False)
    common, cols_a, cols_b = common_columns(a, b)
    assert list(common) == [g for g in a.var_names if g != "G003"]  # first source's order
    assert list(store.gene_names) == list(common)
    root = zarr.open_group(store.path, mode="r")
    np.testing.assert_array_equal(root["X"][:], np.vstack([a.X[:, cols_a], b.X[:, cols_b]]))
    # library sizes over every gene of each cell's own source, dropped ones included
    np.testing.assert_allclose(root["obs/total_counts"][:], np.r_[a.X.sum(axis=1), b.X.sum(axis=1)])
    # barcodes collide (both sources name cells BC00000-1, ...): every name is prefixed
    assert list(store.cell_names[:2]) == ["a:BC00000-1", "a:BC00001-1"]
    assert list(store.cell_names[60:62]) == ["b:BC00000-1", "b:BC00001-1"]
    # the batch is the source's file name; cell types are the union of the categories
    batch = store.labels["batch"]
    assert batch.column == "source" and batch.categories == ("a", "b")
    assert batch.codes.tolist() == [0] * 60 + [1] * 50
    types = store.labels["cell_type"]
    assert types.categories == ("B", "T", "Mono", "NK")  # a's, then b's new ones
    got = np.asarray(types.categories)[types.codes]
    want = np.r_[a.obs["cell_type"].astype(str), b.obs["cell_type"].astype(str)]
    assert got.tolist() == want.tolist()
    prov = store.provenance
    assert prov["genes_common"] == 11
    for entry, path, n in zip(prov["sources"], paths, (60, 50), strict=True):
        assert entry["source"] == str(path.resolve()) and entry["source_kind"] == "h5ad"
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["source_shape"] == [n, 12] and entry["n_cells"] == n
        assert entry["genes_dropped"] == 1
    assert prov["sha256"] == [s["sha256"] for s in prov["sources"]]
    assert prov["cell_names"] == "prefixed with the source label"
    assert prov["parameters"]["labels"] == {"cell_type": "cell_type", "batch": "source"}


def test_batch_column_and_unique_names(tmp_path):
    a, b, paths = two_sources(tmp_path, same_names=False)
    store = rankdist.ingest(paths, tmp_path / "s.zarr", batch="donor", progress=False)
    assert list(store.cell_names) == [*a.obs_names, *b.obs_names]  # no collision: as is
    batch = store.labels["batch"]
    assert batch.column == "donor" and batch.categories == ("d1", "d2", "d3")
    assert store.provenance["cell_names"] == "as in the source"
    assert "cell_type" not in store.labels


def test_gene_list_and_mixed_dtypes(tmp_path):
    a, b, _ = two_sources(tmp_path)
    b.X = b.X.astype(np.int32)
    (tmp_path / "genes.txt").write_text("G007\nG001\n")
    store = rankdist.ingest(
        [a, b], tmp_path / "s.zarr", genes=str(tmp_path / "genes.txt"), progress=False
    )
    assert list(store.gene_names) == ["G001", "G007"]
    root = zarr.open_group(store.path, mode="r")
    assert root["X"].dtype == np.float64  # float32 and int32 sources
    assert store.labels["batch"].categories == ("anndata_0", "anndata_1")


def test_several_sources_stream_through_unaligned_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr("rankdist.layout.CHUNK_VALUES", 512 * 4)  # 512-cell store chunks
    parts = [counts_adata(n, 8, seed=n) for n in (700, 300, 600)]
    for i, p in enumerate(parts):
        p.obs_names = [f"s{i}c{j}" for j in range(p.n_obs)]
    store = rankdist.ingest(parts, tmp_path / "s.zarr", progress=False)
    assert store.chunk_cells == 512 and store.n_cells == 1600
    x = np.asarray(zarr.open_group(store.path, mode="r")["X"][:])
    np.testing.assert_array_equal(x, np.vstack([p.X for p in parts]))


def test_failure_in_the_second_source_leaves_nothing(tmp_path):
    a, b, _ = two_sources(tmp_path)
    b.X[40, 2] = np.nan
    b.write_h5ad(tmp_path / "b.h5ad")
    out = tmp_path / "s.zarr"
    with pytest.raises(ValueError, match=r"b\.h5ad: X has 1 non-finite value.*'BC00040-1'"):
        rankdist.ingest([tmp_path / "a.h5ad", tmp_path / "b.h5ad"], out, progress=False)
    assert not out.exists() and not list(tmp_path.glob(".s.zarr.*"))


def test_label_column_missing_from_one_source(tmp_path):
    a, b, paths = two_sources(tmp_path)
    del b.obs["donor"]
    b.write_h5ad(paths[1])
    with pytest.raises(KeyError, match=r"column 'donor' not in obs of .*b\.h5ad"):
        rankdist.ingest(paths, tmp_path / "s.zarr", batch="donor", progress=False)
    assert not (tmp_path / "s.zarr").exists()


def test_same_file_names_cannot_name_batches(tmp_path):
    a, b, _ = two_sources(tmp_path)
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a.write_h5ad(tmp_path / "x" / "cells.h5ad")
    b.write_h5ad(tmp_path / "y" / "cells.h5ad")
    paths = [tmp_path / "x" / "cells.h5ad", tmp_path / "y" / "cells.h5ad"]
    with pytest.raises(ValueError, match=r"have the same name 'cells'.*pass batch=COLUMN"):
        rankdist.ingest(paths, tmp_path / "s.zarr", progress=False)


def test_no_common_gene(tmp_path):
    a = counts_adata(10, 8, seed=1)
    b = counts_adata(10, 8, seed=2)
    b.var_names = [f"Y{i}" for i in range(8)]
    with pytest.raises(ValueError, match="no gene is in every one of the 2 sources"):
        rankdist.ingest([a, b], tmp_path / "s.zarr", progress=False)


def test_duplicate_gene_names_are_refused_for_several_sources(tmp_path):
    a = counts_adata(10, 8, seed=1)
    a.var_names = ["G0", "G0", *[f"G{i}" for i in range(2, 8)]]
    with pytest.raises(ValueError, match=r"duplicate gene name\(s\), e\.g\. \['G0'\]"):
        rankdist.ingest([a, counts_adata(10, 8, seed=2)], tmp_path / "s.zarr", progress=False)


def test_cli_takes_several_sources_and_reports_dropped_genes(tmp_path, capsys):
    _, _, paths = two_sources(tmp_path)
    store = tmp_path / "s.zarr"
    assert (
        main(["ingest", *map(str, paths), str(store), "--cell-type", "cell_type", "--quiet"]) == 0
    )
    out = capsys.readouterr().out
    assert "110 cells x 11 genes" in out and "11 genes are in every source" in out
    assert "a: 60 cells, 1 of 12 genes dropped" in out
    assert "b: 50 cells, 1 of 12 genes dropped" in out
    assert rankdist.Store(store).labels["batch"].categories == ("a", "b")
