"""Stratified subsampling at ingest: at most N cells per type, seeded, reading only kept rows."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import zarr

import rankdist
from rankdist.cli import main
from rankdist.io.readers import open_source
from rankdist.io.source import AnnDataSource

from _data import counts_adata

#: cells per type in :func:`typed_adata`: one large, one just over N=30, one rare
SIZES = {"A": 500, "B": 31, "C": 5}


def typed_adata(seed: int = 0) -> ad.AnnData:
    """Counts with cell types of SIZES cells, shuffled, and unique names."""
    n = sum(SIZES.values())
    adata = counts_adata(n, 10, seed=seed)
    labels = np.repeat(list(SIZES), list(SIZES.values()))
    adata.obs["cell_type"] = pd.Categorical(np.random.default_rng(seed).permutation(labels))
    return adata


def kept_names(store) -> list[str]:
    return list(store.cell_names)


def ingest(adata, path, **kw):
    return rankdist.ingest(adata, path, cell_type="cell_type", progress=False, **kw)


def test_counts_per_type_order_and_rows(tmp_path):
    adata = typed_adata()
    store = ingest(adata, tmp_path / "s.zarr", max_per_type=30, seed=7)
    types = store.labels["cell_type"]
    kept = pd.Series(np.asarray(types.categories)[types.codes]).value_counts().to_dict()
    assert kept == {"A": 30, "B": 30, "C": 5}  # rare type C kept whole
    # kept cells in their original order, with their own rows and library sizes
    index = adata.obs_names.get_indexer(kept_names(store))
    assert (np.diff(index) > 0).all()
    root = zarr.open_group(store.path, mode="r")
    np.testing.assert_array_equal(root["X"][:], adata.X[index])
    np.testing.assert_allclose(root["obs/total_counts"][:], adata.X[index].sum(axis=1))
    assert list(np.asarray(types.categories)[types.codes]) == list(
        adata.obs["cell_type"].astype(str).iloc[index]
    )
    sub = store.provenance["subsample"]
    assert sub == {
        "max_per_type": 30,
        "seed": 7,
        "column": "cell_type",
        "n_cells_before": 536,
        "n_cells_kept": 65,
        "cells_per_type": SIZES,
        "kept_per_type": {"A": 30, "B": 30, "C": 5},
    }


def test_sample_is_reproducible_from_the_seed(tmp_path):
    adata = typed_adata()
    first = kept_names(ingest(adata, tmp_path / "a.zarr", max_per_type=30, seed=1))
    again = kept_names(ingest(adata, tmp_path / "b.zarr", max_per_type=30, seed=1))
    other = kept_names(ingest(adata, tmp_path / "c.zarr", max_per_type=30, seed=2))
    assert first == again and first != other
    # the documented draw: one default_rng(seed), types in category order, choice without
    # replacement for each type with more than N cells
    rng = np.random.default_rng(1)
    codes = adata.obs["cell_type"].cat.codes.to_numpy()
    keep = np.zeros(len(codes), dtype=bool)
    for code in range(len(adata.obs["cell_type"].cat.categories)):
        cells = np.flatnonzero(codes == code)
        keep[rng.choice(cells, 30, replace=False) if len(cells) > 30 else cells] = True
    assert first == list(adata.obs_names[keep])


def test_n_at_least_every_type_keeps_everything(tmp_path):
    adata = typed_adata()
    store = ingest(adata, tmp_path / "s.zarr", max_per_type=500)
    assert kept_names(store) == list(adata.obs_names)
    np.testing.assert_array_equal(zarr.open_group(store.path, mode="r")["X"][:], adata.X)


def test_needs_cell_type_and_valid_numbers(tmp_path, capsys):
    adata = typed_adata()
    with pytest.raises(ValueError, match=r"needs the cell type column: pass cell_type=COLUMN"):
        rankdist.ingest(adata, tmp_path / "s.zarr", max_per_type=10, progress=False)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_per_type must be a positive integer"):
            ingest(adata, tmp_path / "s.zarr", max_per_type=bad)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        ingest(adata, tmp_path / "s.zarr", max_per_type=3, seed=-1)
    assert not (tmp_path / "s.zarr").exists()
    path = tmp_path / "x.h5ad"
    adata.write_h5ad(path)
    assert main(["ingest", str(path), str(tmp_path / "s.zarr"), "--max-per-type", "3"]) == 2
    assert "--cell-type COLUMN" in capsys.readouterr().err


def test_only_spans_with_kept_rows_are_read(tmp_path, monkeypatch):
    monkeypatch.setattr("rankdist.layout.CHUNK_VALUES", 512 * 10)  # 512-cell chunks
    sizes = {"A": 1500, "B": 3}
    adata = counts_adata(1503, 10, seed=4)
    labels = np.r_[np.full(1500, "A"), np.full(3, "B")]
    labels[[10, 700, 1400]] = "B"  # B cells spread out, As at the end
    labels[1500:] = "A"
    adata.obs["cell_type"] = pd.Categorical(labels)
    assert pd.Series(labels).value_counts().to_dict() == sizes
    reads = []
    rows_of = AnnDataSource._rows

    def spy(self, start, stop):
        reads.append((start, stop))
        return rows_of(self, start, stop)

    monkeypatch.setattr(AnnDataSource, "_rows", spy)
    store = ingest(adata, tmp_path / "s.zarr", max_per_type=2, seed=0)
    index = adata.obs_names.get_indexer(kept_names(store))
    assert len(index) == 4
    # each read lies inside one 512-cell span of the store's chunk size, from its first
    # to its last kept cell
    spans = {}
    for i in index:
        spans.setdefault(i // 512, []).append(i)
    assert reads == [(min(v), max(v) + 1) for _, v in sorted(spans.items())]


@pytest.mark.parametrize("layout", ["dense", "csr", "csc"])
def test_iter_chunks_reads_selected_rows(tmp_path, layout):
    adata = counts_adata(100, 9, seed=5)
    if layout != "dense":
        adata.X = {"csr": sp.csr_matrix, "csc": sp.csc_matrix}[layout](adata.X)
    adata.write_h5ad(tmp_path / "x.h5ad")
    dense = np.asarray(adata.X.toarray() if sp.issparse(adata.X) else adata.X)
    rows = np.array([0, 1, 2, 17, 40, 41, 99])
    genes = np.array([1, 4, 8])
    with open_source(tmp_path / "x.h5ad") as source:
        got = list(source.iter_chunks(20, genes=genes, rows=rows))
        assert [start for start, _ in got] == [0, 4, 6]  # spans 0, 2 and 4 only
        np.testing.assert_array_equal(np.vstack([b for _, b in got]), dense[rows][:, genes])
        assert list(source.iter_chunks(20, rows=np.array([], dtype=int))) == []
        for bad in ([3, 2], [5, 5], [100], [-1]):
            with pytest.raises(ValueError, match="rows must be sorted, unique cell indices"):
                next(source.iter_chunks(20, rows=np.array(bad)))


def test_subsample_across_sources(tmp_path, capsys):
    a = typed_adata(seed=1)
    b = typed_adata(seed=2)
    b.obs_names = [f"b{i}" for i in range(b.n_obs)]
    paths = [tmp_path / "a.h5ad", tmp_path / "b.h5ad"]
    a.write_h5ad(paths[0])
    b.write_h5ad(paths[1])
    store = tmp_path / "s.zarr"
    argv = [
        "ingest",
        *map(str, paths),
        str(store),
        "--cell-type",
        "cell_type",
        "--max-per-type",
        "40",
        "--seed",
        "3",
        "--quiet",
    ]
    assert main(argv) == 0
    assert "kept 90 of 1072 cells (at most 40 per cell type, seed 3)" in capsys.readouterr().out
    s = rankdist.Store(store)
    sub = s.provenance["subsample"]
    assert sub["kept_per_type"] == {"A": 40, "B": 40, "C": 10}  # C: 5 + 5 cells, whole
    names = list(s.cell_names)
    from_a = [n for n in names if not n.startswith("b")]
    assert names == from_a + [n for n in names if n.startswith("b")]  # source order kept
    sources = s.provenance["sources"]
    assert [x["n_cells"] for x in sources] == [len(from_a), 90 - len(from_a)]
    both = np.vstack([a.X, b.X])
    index = pd.Index([*a.obs_names, *b.obs_names]).get_indexer(names)
    np.testing.assert_array_equal(zarr.open_group(store, mode="r")["X"][:], both[index])
    assert s.labels["batch"].codes.tolist() == [0] * len(from_a) + [1] * (90 - len(from_a))


def test_labels_left_without_cells_are_dropped(tmp_path):
    adata = typed_adata()
    # one batch made only of type A cells that the sample will not keep all of
    a_cells = np.flatnonzero(adata.obs["cell_type"] == "A")
    batch = np.full(adata.n_obs, "main", dtype=object)
    batch[a_cells[:3]] = "tiny"
    adata.obs["batch"] = pd.Categorical(batch)
    for seed in range(20):  # a seed whose sample misses the 3 'tiny' cells
        store = ingest(adata, tmp_path / f"s{seed}.zarr", batch="batch", max_per_type=2, seed=seed)
        if "tiny" not in set(adata.obs.loc[list(store.cell_names), "batch"]):
            break
    assert store.labels["batch"].categories == ("main",)
    assert (store.labels["batch"].codes == 0).all()
