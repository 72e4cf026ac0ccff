"""The type x type histogram from the tile pass against exact pair statistics."""

from __future__ import annotations

import numpy as np
import pytest

import rankdist
from rankdist.analysis.similarity import type_similarity

from _data import oracle_spearman, tricky_adata


@pytest.fixture(scope="module")
def runs(tmp_path_factory, client):
    adata = tricky_adata(n_cells=1300, n_genes=100, seed=5)
    store = rankdist.ingest(
        adata,
        tmp_path_factory.mktemp("th") / "t.zarr",
        cell_type="celltype",
        batch="donor",
        progress=False,
    )
    kw = dict(k=8, cutoffs=(0.3,), client=client, type_hist=True, progress=False)
    with pytest.warns(rankdist.ExcludedCellsWarning):
        small = rankdist.neighbors(store, block_size=512, name="b512", **kw)
    with pytest.warns(rankdist.ExcludedCellsWarning):
        big = rankdist.neighbors(store, block_size=1536, name="b1536", **kw)
    return adata, small, big


def test_histogram_counts_every_pair_once_by_type(runs):
    adata, res, other = runs
    rho = oracle_spearman(np.asarray(adata.X, dtype=np.float64))
    valid = ~res.excluded
    types = adata.obs["celltype"].cat.codes.to_numpy()
    edges = np.linspace(-1, 1, 401)
    n_types = len(adata.obs["celltype"].cat.categories)
    want = np.zeros((n_types, n_types, 400), np.int64)
    iu = np.triu_indices(len(types), 1)
    keep = valid[iu[0]] & valid[iu[1]]
    a, b = iu[0][keep], iu[1][keep]
    bins = np.clip(np.searchsorted(edges, rho[a, b], side="right") - 1, 0, 399)
    np.add.at(want, (types[a], types[b], bins), 1)
    want = want + want.transpose(1, 0, 2)
    d = np.arange(n_types)
    want[d, d] //= 2
    got = res.pair_hist.to_numpy()
    assert got.sum(axis=-1)[np.triu_indices(n_types)].sum() == keep.sum()  # every pair once
    # float32 vs float64 may move a pair lying on a bin edge (Spearman on tied ranks hits
    # multiples of 0.005 exactly) to the neighbouring bin; nothing else may differ
    vals = rho[a, b]
    on_edge = np.abs(vals - edges[np.clip(np.rint((vals + 1) / 0.005).astype(int), 0, 400)]) < 2e-6
    assert np.abs(got - want).sum() <= 2 * on_edge.sum()
    assert np.array_equal(got.sum(axis=-1), want.sum(axis=-1))
    assert np.array_equal(got, other.pair_hist.to_numpy())  # block size changes nothing


def test_quantiles_within_one_bin_of_exact(runs):
    adata, res, _ = runs
    rho = oracle_spearman(np.asarray(adata.X, dtype=np.float64))
    valid = ~res.excluded
    types = adata.obs["celltype"].cat.codes.to_numpy()
    cats = list(adata.obs["celltype"].cat.categories)
    ds = type_similarity(res)
    iu = np.triu_indices(len(types), 1)
    keep = valid[iu[0]] & valid[iu[1]]
    a, b = iu[0][keep], iu[1][keep]
    for s, ta in enumerate(cats):
        for t, tb in enumerate(cats):
            sel = ((types[a] == s) & (types[b] == t)) | ((types[a] == t) & (types[b] == s))
            exact = np.quantile(rho[a, b][sel], [0.25, 0.5, 0.75])
            got = ds["similarity"].sel(type_a=ta, type_b=tb).to_numpy()
            assert np.all(np.abs(got - exact) <= 0.005), (ta, tb, got, exact)
            assert ds["pairs"].sel(type_a=ta, type_b=tb) == sel.sum()
    same = types[a] == types[b]
    for name, sel in (("within", same), ("between", ~same)):
        exact = np.quantile(rho[a, b][sel], [0.25, 0.5, 0.75])
        assert np.all(np.abs(ds[name].to_numpy() - exact) <= 0.005), name
    assert ds["within"].sel(quantile=0.5) > ds["between"].sel(quantile=0.5)


def test_needs_the_histogram(runs, client, tmp_path):
    _, res, _ = runs
    res.pair_hist = None
    with pytest.raises(ValueError, match="type_hist=True"):
        type_similarity(res)
