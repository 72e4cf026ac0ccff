"""batch_mixing / batch_summary against loops over cells and scib-metrics' own functions."""

from __future__ import annotations

import dataclasses
from collections import deque

import numpy as np
import pytest
import scipy.stats

import rankdist
from rankdist.analysis import batch_mixing, batch_summary
from rankdist.analysis.batch import perplexity_weights
from rankdist.datasets.toy import synthetic_counts

from _data import tricky_adata


@pytest.fixture(scope="module")
def synth(tmp_path_factory, client):
    """300 synthetic cells, 6 types, 3 batches, none excluded: what to_scib() takes."""
    adata = synthetic_counts(n_cells=300, n_genes=200, n_batches=3, seed=1)
    store = rankdist.ingest(
        adata,
        tmp_path_factory.mktemp("batch") / "s.zarr",
        cell_type="cell_type",
        coarse_type="coarse_type",
        batch="batch",
        progress=False,
    )
    return rankdist.neighbors(store, k=10, cutoffs=(0.5,), client=client, progress=False)


@pytest.fixture(scope="module")
def tricky(tmp_path_factory, client):
    """300 tricky cells with two constant (excluded) ones."""
    store = rankdist.ingest(
        tricky_adata(n_cells=300),
        tmp_path_factory.mktemp("batch") / "t.zarr",
        cell_type="celltype",
        batch="donor",
        progress=False,
    )
    with pytest.warns(rankdist.ExcludedCellsWarning):
        return rankdist.neighbors(store, k=8, cutoffs=(0.5,), client=client, progress=False)


@pytest.fixture(params=["synth", "tricky"])
def res(request):
    return request.getfixturevalue(request.param)


def lisi_one_cell(dist, labels, perplexity, tol=1e-5):
    """scib-metrics' LISI for one cell, written out as a scalar loop (float64).

    Distances are shifted by their minimum: P and H do not change, exp does not underflow.
    """
    dist = dist - dist.min()
    beta, beta_min, beta_max = 1.0, -np.inf, np.inf

    def entropy(beta):
        p = np.exp(-dist * beta)
        return np.log(p.sum()) + beta * (dist * p).sum() / p.sum(), p / p.sum()

    h, p = entropy(beta)
    tries = 0
    while abs(h - np.log(perplexity)) >= tol and tries < 50:
        if h - np.log(perplexity) > 0:
            beta_min = beta
            beta = beta * 2 if beta_max == np.inf else (beta + beta_max) / 2
        else:
            beta_max = beta
            beta = beta / 2 if beta_min == -np.inf else (beta + beta_min) / 2
        h, p = entropy(beta)
        tries += 1
    return 1 / sum(p[labels == lab].sum() ** 2 for lab in set(labels))


def largest_scc_share(members, res, k):
    """Share of ``members`` in the largest strongly connected component, by BFS both ways."""
    inside = set(members)
    out = {i: [j for j in res.indices[i, :k] if j in inside] for i in members}

    def reach(start, edges):
        seen, todo = {start}, deque([start])
        while todo:
            for j in edges[todo.popleft()]:
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
        return seen

    back = {i: [] for i in members}
    for i, js in out.items():
        for j in js:
            back[j].append(i)
    best = 0
    for i in members:
        best = max(best, len(reach(i, out) & reach(i, back)))
    return best / len(members)


@pytest.mark.parametrize("k", [None, 5])
def test_batch_mixing_by_brute_force(res, k):
    ds = batch_mixing(res, k)
    k = k or res.k
    b = res.labels["batch"].codes
    t = res.labels["cell_type"].codes
    valid = np.flatnonzero(~res.excluded)
    freq = np.bincount(b[valid]) / len(valid)
    perplexity = np.floor((k + 1) / 3)
    pvalues = []
    for i in range(res.n_cells):
        row = ds.isel(cell=i)
        if res.excluded[i]:
            assert all(np.isnan(row[v].item()) for v in ("same_batch", "ilisi", "kbet_pvalue"))
            continue
        nbr = res.indices[i, :k]
        assert row["same_batch"].item() == pytest.approx(np.mean(b[nbr] == b[i]), abs=1e-15)
        same_type = [j for j in valid if j != i and t[j] == t[i]]
        want = np.mean(b[same_type] == b[i]) if same_type else np.nan
        np.testing.assert_allclose(row["expected_same_batch"].item(), want, rtol=1e-12)
        dist = res.distances[i, :k].astype(np.float64)
        for var, labels in (("ilisi", b), ("clisi", t)):
            want = lisi_one_cell(dist, labels[nbr], perplexity)
            assert row[var].item() == pytest.approx(want, rel=1e-6), (i, var)
        # kBET: chi-square of self + k neighbours' batches against all valid cells' batches
        observed = np.bincount(b[np.r_[i, nbr]], minlength=len(freq))
        p = scipy.stats.chisquare(observed, freq * (k + 1)).pvalue
        assert row["kbet_pvalue"].item() == pytest.approx(p, rel=1e-9, abs=1e-15)
        pvalues.append(p)
    assert ds["kbet_acceptance"].item() == np.mean(np.array(pvalues) >= 0.05)
    types = np.unique(t[valid])
    want = np.mean([largest_scc_share(valid[t[valid] == ty], res, k) for ty in types])
    assert ds["graph_connectivity"].item() == pytest.approx(want, rel=1e-12)
    assert ds.attrs["perplexity"] == perplexity and ds.attrs["k"] == k


def test_batch_summary_by_brute_force(res):
    per_cell = batch_mixing(res)
    summary = batch_summary(res)
    names = list(res.labels["cell_type"].categories)
    assert list(summary.cell_type.values) == [*names, "all"]
    t = res.labels["cell_type"].codes
    valid = ~res.excluded
    for g, name in enumerate([*names, "all"]):
        cells = [i for i in range(res.n_cells) if valid[i] and (name == "all" or t[i] == g)]
        row = summary.sel(cell_type=name)
        assert row["cells"].item() == len(cells)
        pick = per_cell.isel(cell=cells)
        for var in ("same_batch", "expected_same_batch", "ilisi", "clisi"):
            assert row[var].item() == pytest.approx(float(np.mean(pick[var])), rel=1e-12)
        excess = np.mean(pick["same_batch"] - pick["expected_same_batch"])
        assert row["excess_same_batch"].item() == pytest.approx(float(excess), rel=1e-9, abs=1e-15)
        assert row["batches"].item() == len(set(res.labels["batch"].codes[cells]))


def scib_inputs(res):
    """scib-metrics' NeighborsResults and labels: res.to_scib(), or the valid subgraph."""
    from scib_metrics.nearest_neighbors import NeighborsResults

    batch = np.asarray(res.labels["batch"].categories)[res.labels["batch"].codes]
    ctype = np.asarray(res.labels["cell_type"].categories)[res.labels["cell_type"].codes]
    if not res.excluded.any():
        return res.to_scib(), batch, ctype
    valid = np.flatnonzero(~res.excluded)
    idx, dist = res.self_first()
    nr = NeighborsResults(indices=np.searchsorted(valid, idx[valid]), distances=dist[valid])
    return nr, batch[valid], ctype[valid]


@pytest.mark.parametrize("k", [None, 5])
def test_agrees_with_scib_metrics(res, k):
    """LISI, kBET and graph connectivity through scib-metrics' own functions.

    scib-metrics calibrates LISI's weights exp(-beta d) in float32 (jax): where the k
    correlation distances are large and close (0.42..0.44, which needs beta ~300),
    exp(-beta d) falls below float32's smallest normal (exp(-87.3)) and scib's entropy
    goes wrong. LISI is unchanged by shifting a row's distances, so scib on the shifted
    graph must agree everywhere, and on the graph as exported wherever beta * d stays
    clear of the underflow during the bisection (beta at most doubles past its final value).
    """
    from scib_metrics import clisi_knn, graph_connectivity, ilisi_knn, kbet, lisi_knn
    from scib_metrics.nearest_neighbors import NeighborsResults

    nr, batch, ctype = scib_inputs(res)
    k = k or res.k
    nr = nr.subset_neighbors(k + 1)
    ds = batch_mixing(res, k)
    valid = ~res.excluded
    ilisi = ds["ilisi"].to_numpy()[valid]
    clisi = ds["clisi"].to_numpy()[valid]
    shifted = nr.distances.copy()
    shifted[:, 1:] -= shifted[:, 1:].min(axis=1, keepdims=True)
    nr_shifted = NeighborsResults(indices=nr.indices, distances=shifted)
    np.testing.assert_allclose(ilisi, lisi_knn(nr_shifted, batch), rtol=1e-5)
    np.testing.assert_allclose(clisi, lisi_knn(nr_shifted, ctype), rtol=1e-5)
    assert ds["ilisi_scaled"].item() == pytest.approx(
        float(ilisi_knn(nr_shifted, batch)), rel=1e-5, abs=1e-6
    )
    assert ds["clisi_scaled"].item() == pytest.approx(
        float(clisi_knn(nr_shifted, ctype)), rel=1e-5, abs=1e-6
    )

    dist = nr.distances[:, 1:].astype(np.float64)
    _, beta = perplexity_weights(dist, np.floor((k + 1) / 3))
    safe = 2 * beta * dist.max(axis=1) < 80
    assert safe.sum() > 50
    np.testing.assert_allclose(ilisi[safe], lisi_knn(nr, batch)[safe], rtol=5e-5)
    np.testing.assert_allclose(clisi[safe], lisi_knn(nr, ctype)[safe], rtol=5e-5)

    acceptance, _, pvalues = kbet(nr, batch)
    np.testing.assert_allclose(ds["kbet_pvalue"].to_numpy()[valid], pvalues, atol=2e-6)
    assert ds["kbet_acceptance"].item() == float(acceptance)  # exact: no p-value near alpha
    assert ds["graph_connectivity"].item() == float(graph_connectivity(nr, ctype))


def test_errors(synth):
    with pytest.raises(ValueError, match="outside 1..10"):
        batch_mixing(synth, k=11)
    no_batch = dataclasses.replace(
        synth, labels={r: lab for r, lab in synth.labels.items() if r != "batch"}
    )
    with pytest.raises(ValueError, match="--batch"):
        batch_mixing(no_batch)
    with pytest.raises(ValueError, match="perplexity"):
        batch_mixing(synth, k=1)


def test_lisi_in_row_chunks_is_the_same(synth, monkeypatch):
    whole = batch_mixing(synth)
    monkeypatch.setattr("rankdist.analysis.batch._LISI_ROWS", 7)
    chunked = batch_mixing(synth)
    np.testing.assert_array_equal(chunked["ilisi"], whole["ilisi"])
    np.testing.assert_array_equal(chunked["clisi"], whole["clisi"])


def test_summary_reuses_a_given_mixing(synth, monkeypatch):
    """batch_summary(mixing=...) gives the same table without recomputing LISI/kBET."""
    import rankdist.analysis.batch as batch_module

    res = synth
    mixing = batch_module.batch_mixing(res)
    want = batch_module.batch_summary(res)

    def no_recompute(*args, **kwargs):
        raise AssertionError("batch_mixing recomputed")

    monkeypatch.setattr(batch_module, "batch_mixing", no_recompute)
    assert batch_module.batch_summary(res, mixing=mixing).identical(want)


def dense_kbet_pvalues(neighbourhoods, batch, valid):
    """The (cells, batches) computation kbet_pvalues replaced: every batch's count per row."""
    present, freq = np.unique(batch[valid], return_counts=True)
    freq = freq / freq.sum()
    slot = np.searchsorted(present, batch[neighbourhoods])
    m, size = neighbourhoods.shape
    flat = (np.arange(m)[:, None] * len(present) + slot).ravel()
    observed = np.bincount(flat, minlength=m * len(present)).reshape(m, len(present))
    expected = freq * size
    stat = ((observed - expected) ** 2 / expected).sum(axis=1)
    return scipy.stats.chi2.sf(stat, len(present) - 1)


@pytest.mark.parametrize("n_batches", [2, 5, 427])
def test_kbet_from_present_batches_equals_the_dense_sum(n_batches, monkeypatch):
    """Within float64 rounding: the sum over absent batches is regrouped, not dropped."""
    from rankdist.analysis.batch import kbet_pvalues

    rng = np.random.default_rng(3)
    n, k = 3000, 30
    batch = rng.integers(0, n_batches, n)
    batch[rng.random(n) < 0.5] = 0  # one large batch: neighbourhoods with repeated batches
    valid = np.flatnonzero(rng.random(n) < 0.95)
    hoods = np.hstack([valid[:, None], rng.choice(valid, (len(valid), k))])
    hoods[::9, 1:] = hoods[::9, :1]  # a single batch in the whole neighbourhood
    monkeypatch.setattr("rankdist.analysis.batch._LISI_ROWS", 257)
    got = kbet_pvalues(hoods, batch, valid)
    want = dense_kbet_pvalues(hoods, batch, valid)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-300)
    assert (got < 0.05).any() and (got > 0.05).any()


def test_kbet_memory_does_not_grow_with_cells_x_batches(monkeypatch):
    """20,000 neighbourhoods of 427 batches: the dense counts alone would take 68 MB."""
    import tracemalloc

    from rankdist.analysis.batch import kbet_pvalues

    rng = np.random.default_rng(4)
    n, k = 20_000, 30
    batch = rng.integers(0, 427, n)
    hoods = np.hstack([np.arange(n)[:, None], rng.integers(0, n, (n, k))])
    monkeypatch.setattr("rankdist.analysis.batch._LISI_ROWS", 1024)
    tracemalloc.start()
    try:
        kbet_pvalues(hoods, batch, np.arange(n))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8e6, peak


def sliced_graph_connectivity(nbr, valid, types, n):
    """The N x N slicing graph_connectivity replaced (the whole graph, then each type's)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    m, k = nbr.shape
    graph = sp.csr_matrix(
        (np.ones(m * k, dtype=np.int8), nbr.ravel(), np.arange(0, m * k + 1, k)), shape=(m, n)
    )[:, valid]
    shares = []
    for t in np.unique(types[valid]):
        mask = types[valid] == t
        _, comp = connected_components(graph[mask][:, mask], connection="strong")
        shares.append(np.bincount(comp).max() / mask.sum())
    return float(np.mean(shares))


def test_graph_connectivity_per_type_equals_slicing_the_whole_graph(res):
    from rankdist.analysis.batch import graph_connectivity

    t = res.labels["cell_type"].codes.astype(np.int64)
    valid = np.flatnonzero(~res.excluded)
    for k in (2, 5, res.k):
        nbr = res.indices[valid, :k]
        want = sliced_graph_connectivity(nbr, valid, t, res.n_cells)
        assert graph_connectivity(nbr, valid, t, res.n_cells) == want


def test_every_variable_is_the_same_in_blocks(res, monkeypatch):
    """Blocks of 7 cells give the whole-array result exactly, excluded cells included."""
    whole = batch_mixing(res)
    monkeypatch.setattr("rankdist.analysis.batch._LISI_ROWS", 7)
    assert batch_mixing(res).identical(whole)


def test_lazy_and_eager_results_give_identical_tables(res):
    """The result as loaded (counts over Dask, read when used) and one held in memory agree."""
    import dask

    assert any(dask.is_dask_collection(v.data) for v in res.counts.values())
    eager = dataclasses.replace(res, counts=res.counts.compute(), relations=None)
    assert not any(dask.is_dask_collection(v.data) for v in eager.counts.values())
    mixing = batch_mixing(res)
    assert mixing.identical(batch_mixing(eager))
    assert batch_summary(res, mixing=mixing).identical(batch_summary(eager))
