"""Real data: scanpy's bundled pbmc68k_reduced (700 PBMCs), through files and the CLI."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

import rankdist

from _data import assert_matches_oracle, oracle_spearman


@pytest.fixture(scope="module")
def pbmc_h5ad(tmp_path_factory):
    adata = sc.datasets.pbmc68k_reduced()
    path = tmp_path_factory.mktemp("pbmc") / "pbmc68k_reduced.h5ad"
    adata.write_h5ad(path)
    return adata, path


@pytest.fixture(scope="module")
def pbmc_result(pbmc_h5ad, tmp_path_factory, client):
    adata, path = pbmc_h5ad
    store = rankdist.ingest(
        path,
        tmp_path_factory.mktemp("pbmcstore") / "pbmc.zarr",
        cell_type="bulk_labels",
        batch="phase",
        use_raw=True,
        progress=False,
    )
    res = rankdist.neighbors(store, k=15, cutoffs=(0.3, 0.5), client=client, progress=False)
    return adata, store, res


def test_pbmc_matches_oracle(pbmc_result):
    adata, store, res = pbmc_result
    assert store.n_cells == 700 and store.n_genes == adata.raw.n_vars
    x = adata.raw.X.toarray() if sp.issparse(adata.raw.X) else adata.raw.X
    rho = oracle_spearman(x)
    assert not res.excluded.any()
    assert_matches_oracle(res.indices, res.similarities, res.excluded, rho, 15)


def test_pbmc_neighbours_share_type_more_than_chance(pbmc_result):
    _, store, res = pbmc_result
    table = rankdist.purity_table(res, "cell_type")
    assert table.loc["all", "topk_same"] > 2 * table.loc["all", "expected"]


def test_export_runs_scanpy_umap_and_scib(pbmc_result, tmp_path):
    _, store, res = pbmc_result
    out = tmp_path / "pbmc_knn.h5ad"
    res.to_anndata().write_h5ad(out)
    exported = ad.read_h5ad(out)
    d = exported.obsp["distances"]
    assert d.dtype == np.float32 and d.shape == (700, 700) and (d.getnnz(axis=1) == 15).all()
    assert (d.diagonal() == 0).all()  # self excluded
    assert exported.uns["neighbors"]["params"]["n_neighbors"] == 16
    assert exported.uns["neighbors"]["params"]["metric"] == "correlation"
    # the distance of each stored neighbour is 1 - rho
    i, j = 5, res.indices[5, 0]
    assert d[i, j] == pytest.approx(1 - res.similarities[5, 0], abs=1e-6)
    # connectivities are what scanpy itself derives from the same kNN
    from scanpy.neighbors._connectivity import umap as scanpy_umap

    idx, dist = res.self_first()
    want = scanpy_umap(idx, dist, n_obs=700, n_neighbors=16)
    assert abs(exported.obsp["connectivities"] - want).max() < 1e-6
    sc.tl.umap(exported, random_state=0)
    assert exported.obsm["X_umap"].shape == (700, 2) and np.isfinite(exported.obsm["X_umap"]).all()
    sc.tl.leiden(exported, flavor="igraph", n_iterations=2, random_state=0)
    assert exported.obs["leiden"].nunique() > 1
    # scib-metrics takes the self-first layout as is
    from scib_metrics import graph_connectivity

    nr = res.to_scib()
    assert nr.indices.shape == (700, 16) and (nr.indices[:, 0] == np.arange(700)).all()
    score = graph_connectivity(nr, exported.obs["bulk_labels"].to_numpy())
    assert 0 < score <= 1


def test_report_shows_within_vs_between_for_both_encodings(pbmc_result, client, tmp_path):
    from rankdist.analysis import type_similarity
    from rankdist.report import build_report

    _, store, _ = pbmc_result
    for encoding in ("spearman", "pearson"):
        res = rankdist.neighbors(
            store,
            encoding,
            k=15,
            cutoffs=(0.3, 0.5),
            client=client,
            type_hist=True,
            name=f"{encoding}-hist",
            progress=False,
        )
        sim = type_similarity(res)
        within, between = (float(sim[v].sel(quantile=0.5)) for v in ("within", "between"))
        assert within > between + 0.02, (encoding, within, between)
    page = build_report(store, tmp_path / "report", runs=["spearman-hist", "pearson-hist"])
    html = page.read_text()
    for run in ("spearman-hist", "pearson-hist"):
        assert (tmp_path / "report" / "figures" / f"similarity_{run}.png").exists()
        assert (tmp_path / "report" / "tables" / f"similarity_{run}.csv").exists()
        assert f"median similarity of cell types, {run}" in html
    assert "no type x type histogram" not in html.lower()
