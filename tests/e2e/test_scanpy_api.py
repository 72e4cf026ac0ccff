"""The scanpy-style entry points: ``rankdist.pp.neighbors`` and ``rankdist.tl.purity``.

The oracle is scanpy itself: ``sc.pp.neighbors(..., metric='correlation',
transformer='sklearn')`` (brute force, exact) on each cell's average-tie ranks is the
Spearman kNN graph, so ``rankdist.pp.neighbors`` must write the same graph.
"""

from __future__ import annotations

import importlib.util
import tempfile

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from scanpy.neighbors._connectivity import umap as scanpy_umap
from scipy.stats import rankdata

import rankdist

from _data import tricky_adata

N_NEIGHBORS = 15


@pytest.fixture(scope="module")
def pbmc_counts():
    """pbmc68k_reduced's ``.raw`` (non-negative expression of 765 genes) with its obs."""
    pbmc = sc.datasets.pbmc68k_reduced()
    x = pbmc.raw.X.toarray() if sp.issparse(pbmc.raw.X) else np.asarray(pbmc.raw.X)
    return ad.AnnData(X=x, obs=pbmc.obs.copy(), var=pbmc.raw.var.copy())


@pytest.fixture(scope="module")
def pbmc_graphs(pbmc_counts, client):
    """Our graph, and scanpy's exact correlation kNN on the per-cell ranks."""
    ours = pbmc_counts.copy()
    rankdist.pp.neighbors(ours, n_neighbors=N_NEIGHBORS, client=client, progress=False)
    ranks = ad.AnnData(X=rankdata(pbmc_counts.X, axis=1), obs=pbmc_counts.obs.copy())
    sc.pp.neighbors(
        ranks, n_neighbors=N_NEIGHBORS, use_rep="X", metric="correlation", transformer="sklearn"
    )
    return ours, ranks


def _rows(graph: sp.csr_matrix) -> list[dict[int, float]]:
    graph = sp.csr_matrix(graph)
    return [
        dict(zip(graph.indices[a:b].tolist(), graph.data[a:b].tolist(), strict=True))
        for a, b in zip(graph.indptr[:-1], graph.indptr[1:], strict=True)
    ]


def test_graph_is_scanpys_exact_correlation_knn_on_ranks(pbmc_graphs):
    ours, ref = pbmc_graphs
    d, want = ours.obsp["distances"], ref.obsp["distances"]
    assert d.dtype == np.float32 and d.shape == want.shape == (700, 700)
    assert (np.diff(d.indptr) == N_NEIGHBORS - 1).all()  # scanpy counts the cell itself
    for i, (mine, theirs) in enumerate(zip(_rows(d), _rows(want), strict=True)):
        assert i not in mine
        # the k-th distance may tie with the next cell's only exactly; the set may then
        # differ in those cells alone
        kth = max(theirs.values())
        for j in set(mine) ^ set(theirs):
            dist = mine.get(j, theirs.get(j))
            assert dist == pytest.approx(kth, abs=1e-6), (i, j)
        for j in set(mine) & set(theirs):
            assert mine[j] == pytest.approx(theirs[j], abs=1e-5), (i, j)
    # the weights are scanpy's own on our kNN, and on the same edges as scanpy's on its
    # kNN; they differ from those by float32 against float64 distances (about 1e-5: a
    # distance's last bit moves UMAP's sigma)
    idx, dist = _self_first(d)
    again = scanpy_umap(idx, dist, n_obs=700, n_neighbors=N_NEIGHBORS)
    c, c_ref = ours.obsp["connectivities"], ref.obsp["connectivities"]
    assert abs(c - again).max() < 1e-6
    assert (c != 0).toarray().tolist() == (c_ref != 0).toarray().tolist()
    assert abs(c - c_ref).max() < 1e-4
    assert ours.uns["neighbors"]["params"]["n_neighbors"] == N_NEIGHBORS
    assert ours.uns["neighbors"]["params"]["metric"] == "correlation"
    assert ours.uns["neighbors"]["params"]["method"] == "umap"
    assert ours.uns["neighbors"]["connectivities_key"] == "connectivities"
    assert ours.uns["neighbors"]["distances_key"] == "distances"
    assert ours.uns["rankdist"]["encoding"] == "spearman" and "store" not in ours.uns["rankdist"]


def _self_first(graph):
    """scanpy's (n, n_neighbors) kNN arrays from a distances graph, self in column 0."""
    graph = sp.csr_matrix(graph)
    n, k = graph.shape[0], int(np.diff(graph.indptr)[0])
    cols, vals = graph.indices.reshape(n, k), graph.data.reshape(n, k)
    order = np.argsort(vals, axis=1, kind="stable")
    idx = np.hstack([np.arange(n)[:, None], np.take_along_axis(cols, order, axis=1)])
    dist = np.hstack([np.zeros((n, 1)), np.take_along_axis(vals, order, axis=1)])
    return idx, dist


def test_umap_and_leiden_run_on_our_graph(pbmc_graphs):
    ours = pbmc_graphs[0].copy()
    sc.tl.umap(ours, random_state=0)
    assert ours.obsm["X_umap"].shape == (700, 2) and np.isfinite(ours.obsm["X_umap"]).all()
    if importlib.util.find_spec("igraph") is not None:
        sc.tl.leiden(ours, flavor="igraph", n_iterations=2, random_state=0)
        assert ours.obs["leiden"].nunique() > 1


def test_purity_from_the_graph_is_the_runs_top_k(pbmc_graphs, pbmc_counts, client, tmp_path):
    ours = pbmc_graphs[0]
    from_graph = rankdist.tl.purity(ours, cell_type="bulk_labels")
    assert list(from_graph.columns) == ["cells", "expected", "topk_same"]
    assert from_graph.index.name == "cell_type"
    # the same cells with the store kept and labels counted: the run's own table
    kept = pbmc_counts.copy()
    store = tmp_path / "pbmc.zarr"
    rankdist.pp.neighbors(
        kept,
        store=store,
        cell_type="bulk_labels",
        cutoffs=(0.3, 0.5),
        client=client,
        progress=False,
    )
    assert kept.uns["rankdist"]["store"] == str(store.resolve())
    assert kept.uns["rankdist"]["run"] == "spearman"
    table = rankdist.tl.purity(kept, cell_type="bulk_labels")
    want = rankdist.purity_table(rankdist.load(store, "spearman"), "cell_type")
    assert table.equals(want) and "same@0.3" in table.columns
    kept.write_h5ad(tmp_path / "kept.h5ad")  # what pp.neighbors wrote survives a file
    assert rankdist.tl.purity(ad.read_h5ad(tmp_path / "kept.h5ad"), cell_type="bulk_labels").equals(
        want
    )
    assert np.allclose(from_graph["topk_same"], want["topk_same"], rtol=0, atol=1e-12)
    assert (from_graph[["cells", "expected"]] == want[["cells", "expected"]]).all().all()
    # a column the run did not count by: top-k from the graph, said once
    with pytest.warns(UserWarning, match="top-k only"):
        by_phase = rankdist.tl.purity(kept, batch="phase")
    assert list(by_phase.columns) == ["cells", "expected", "topk_same"]


def test_constant_cells_have_no_edges_and_key_added(client, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    adata = tricky_adata()  # cells 7 and 8 constant, 3 and 4 duplicate 250
    store = tmp_path / "tricky.zarr"
    with pytest.warns(rankdist.ExcludedCellsWarning):
        rankdist.pp.neighbors(
            adata, n_neighbors=11, key_added="rank", store=store, client=client, progress=False
        )
    assert not any((tmp_path / "tmp").iterdir())  # a named store: no temporary one
    want = rankdist.load(store, "spearman").to_anndata(key_added="rank")
    for key in ("rank_distances", "rank_connectivities"):
        got = adata.obsp[key]
        assert (got != want.obsp[key]).nnz == 0 and got.dtype == np.float32
        assert got[[7, 8]].nnz == 0 and got[:, [7, 8]].nnz == 0
    assert "distances" not in adata.obsp and "neighbors" not in adata.uns
    assert adata.uns["rank"]["params"]["n_neighbors"] == 11
    assert adata.uns["rank_rankdist"]["k"] == 10
    sc.tl.umap(adata, neighbors_key="rank", random_state=0)
    assert np.isfinite(adata.obsm["X_umap"]).all()
    with pytest.warns(UserWarning, match="counted relations by no labels"):
        table = rankdist.tl.purity(adata, cell_type="celltype", neighbors_key="rank")
    assert table.loc["all", "cells"] == adata.n_obs - 2  # the excluded cells count nowhere


def test_temporary_store_is_removed(client, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    adata = tricky_adata(n_cells=300)
    with pytest.warns(rankdist.ExcludedCellsWarning):
        rankdist.pp.neighbors(adata, n_neighbors=5, client=client, progress=False)
    assert list(tmp_path.iterdir()) == []
    assert (np.diff(adata.obsp["distances"].indptr) == 4).sum() == 298


def test_options_are_checked_before_any_work():
    adata = tricky_adata(n_cells=260)
    with pytest.raises(TypeError, match="n_neighbors=11 instead of k"):
        rankdist.pp.neighbors(adata, k=10)
    with pytest.raises(TypeError, match=r"unexpected options \['n_pcs'\]"):
        rankdist.pp.neighbors(adata, n_pcs=50)
    with pytest.raises(ValueError, match="n_neighbors must be an integer >= 2"):
        rankdist.pp.neighbors(adata, n_neighbors=1)
    with pytest.raises(KeyError, match=r"run rankdist.pp.neighbors\(adata\) first"):
        rankdist.tl.purity(adata, cell_type="celltype")
    with pytest.raises(TypeError, match="exactly one label column"):
        rankdist.tl.purity(adata, cell_type="celltype", batch="donor")


def test_signatures_follow_scanpy_and_are_documented():
    import inspect

    nb = inspect.signature(rankdist.pp.neighbors).parameters
    assert list(nb)[:5] == ["adata", "encoding", "n_neighbors", "key_added", "store"]
    assert nb["n_neighbors"].default == 15 and nb["key_added"].default is None
    pur = inspect.signature(rankdist.tl.purity).parameters
    assert list(pur)[:2] == ["adata", "cell_type"] and pur["neighbors_key"].default is None
    for fn in (rankdist.pp.neighbors, rankdist.tl.purity):
        doc = inspect.getdoc(fn)
        assert "Parameters" in doc and "Returns" in doc
        for param in inspect.signature(fn).parameters:
            assert param in doc, f"{fn.__name__}: {param!r} not in its docstring"
