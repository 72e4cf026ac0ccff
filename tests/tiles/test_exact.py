"""Exactness against brute-force float64 scipy, through the public API on a real cluster."""

from __future__ import annotations

import numpy as np
import pytest

import rankdist

from _data import (
    assert_matches_oracle,
    ingest_tricky,
    oracle_counts,
    oracle_pearson_logcp,
    oracle_spearman,
    safe_cutoffs,
    tricky_adata,
)

K = 12


@pytest.fixture(scope="module")
def tricky(tmp_path_factory):
    adata = tricky_adata()
    path = tmp_path_factory.mktemp("exact") / "tricky.zarr"
    store = ingest_tricky(adata, path)
    return adata, store


@pytest.mark.parametrize("kernel", ["float32", "screen"])
@pytest.mark.parametrize("encoding", ["spearman", "pearson"])
def test_neighbours_and_counts_match_oracle(tricky, client, encoding, kernel):
    adata, store = tricky
    x = np.asarray(adata.X, dtype=np.float64)
    if encoding == "spearman":
        rho = oracle_spearman(x)
    else:
        rho = oracle_pearson_logcp(x, x.sum(axis=1))
    cutoffs = safe_cutoffs(rho, [0.15, 0.3, 0.5])
    with pytest.warns(rankdist.ExcludedCellsWarning, match="2 cell"):
        res = rankdist.neighbors(
            store,
            encoding,
            k=K,
            cutoffs=cutoffs,
            client=client,
            block_size=512,
            progress=False,
            kernel=kernel,
            name=f"{encoding}-{kernel}",
        )
    assert res.metadata["kernel"] == kernel
    excluded = np.zeros(adata.n_obs, bool)
    excluded[[7, 8]] = True
    assert np.array_equal(res.excluded, excluded)
    ambiguous = assert_matches_oracle(res.indices, res.similarities, res.excluded, rho, K)
    assert ambiguous <= 5  # float32 can't order values closer than ~1e-7; these must be rare
    for role, col in [("cell_type", "celltype"), ("coarse_type", "coarse"), ("batch", "donor")]:
        codes = adata.obs[col].cat.codes.to_numpy()
        n_values = len(adata.obs[col].cat.categories)
        want = oracle_counts(rho, excluded, codes, n_values, cutoffs)
        got = res.counts[role].to_numpy()
        assert got.shape == want.shape
        assert np.array_equal(got, want), f"{role} counts differ from the oracle"


@pytest.mark.filterwarnings("ignore::rankdist.ExcludedCellsWarning")
def test_duplicates_tie_by_lower_index(tricky, client):
    _, store = tricky
    res = rankdist.neighbors(store, k=K, cutoffs=(0.5,), client=client, progress=False)
    # cells 3, 4 and 250 are identical: each one's best two are the other two, lower first
    assert res.indices[250, :2].tolist() == [3, 4]
    assert res.indices[3, :2].tolist() == [4, 250]
    assert res.indices[4, :2].tolist() == [3, 250]
    np.testing.assert_allclose(res.similarities[250, :2], 1.0, atol=1e-6)


@pytest.mark.filterwarnings("ignore::rankdist.ExcludedCellsWarning")
def test_stored_run_loads_identically(tricky, client):
    _, store = tricky
    res = rankdist.neighbors(store, k=5, cutoffs=(0.4,), client=client, name="k5", progress=False)
    again = rankdist.load(store.path, run="k5")
    assert np.array_equal(res.indices, again.indices)
    assert np.array_equal(res.similarities, again.similarities, equal_nan=True)
    assert res.counts.identical(again.counts)
    assert again.metadata["k"] == 5 and again.metadata["encoding"] == "spearman"
    assert again.indices.dtype == np.int64 and again.similarities.dtype == np.float32
    assert (np.diff(again.similarities[~again.excluded], axis=1) <= 0).all()


@pytest.mark.filterwarnings("ignore::rankdist.ExcludedCellsWarning")
def test_counts_dataset_names_the_neighbor_labels(tricky, client):
    _, store = tricky
    res = rankdist.neighbors(store, k=5, cutoffs=(0.4,), client=client, name="k5", progress=False)
    assert sorted(res.counts.data_vars) == ["batch", "cell_type", "coarse_type"]
    da = res.counts["cell_type"]
    assert da.dims == ("cell", "cutoff", "neighbor_cell_type")
    assert list(da.coords["neighbor_cell_type"].to_numpy()) == ["B", "T", "NK", "Mono"]
