"""Export graphs built block by block: identical to building the whole graph at once."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import rankdist
from rankdist.reduce import graph

from _data import tricky_adata


def fabricated_knn(n=400, k=12, n_excluded=0, seed=0):
    """A kNN with the cases that matter: ties, rows of zero distances, far neighbours.

    Neighbours are distinct, never the cell itself, never an excluded cell; distances
    ascend along each row.
    """
    rng = np.random.default_rng(seed)
    excluded = np.zeros(n, dtype=bool)
    excluded[rng.choice(n, n_excluded, replace=False)] = True
    valid = np.flatnonzero(~excluded)
    indices = np.full((n, k), -1, dtype=np.int64)
    for i in valid:
        others = valid[valid != i]
        indices[i] = rng.choice(others, k, replace=False)
    dist = np.sort(rng.uniform(0, 1, (n, k)).astype(np.float32), axis=1)
    dist[::7] = np.round(dist[::7], 1)  # ties within rows
    dist[3::11] = 0  # duplicated cells: every distance 0 (rho = 0)
    dist[5::13, 1:] = 60  # far neighbours: strengths underflow to 0 and are dropped
    dist[5::13, 0] = 0.01
    dist[excluded] = np.nan
    return indices, dist, excluded


def whole_graph_distances(indices, dist, excluded):
    """The whole-graph construction the block version replaced."""
    n, k = indices.shape
    keep = ~excluded
    rows = np.repeat(np.arange(n), k).reshape(n, k)[keep].ravel()
    out = sp.csr_matrix(
        (dist[keep].ravel(), (rows, indices[keep].ravel())), shape=(n, n), dtype=np.float32
    )
    out.sort_indices()
    return out


def whole_graph_connectivities(indices, dist, excluded):
    """umap's fuzzy_simplicial_set on the whole graph of the valid cells, as scanpy calls it."""
    from umap.umap_ import fuzzy_simplicial_set

    n, k = indices.shape
    valid = np.flatnonzero(~excluded)
    knn_idx = np.hstack([np.arange(len(valid))[:, None], np.searchsorted(valid, indices[valid])])
    knn_dist = np.hstack([np.zeros((len(valid), 1), np.float32), dist[valid]])
    conn, _, _ = fuzzy_simplicial_set(
        sp.coo_matrix((len(valid), 1)), k + 1, None, None, knn_indices=knn_idx, knn_dists=knn_dist
    )
    conn = conn.tocoo()
    out = sp.csr_matrix(
        (conn.data.astype(np.float32), (valid[conn.row], valid[conn.col])), shape=(n, n)
    )
    out.sort_indices()
    return out


def assert_same_csr(got, want):
    """Bit for bit: structure, index dtype and float32 values."""
    assert got.shape == want.shape
    assert got.dtype == want.dtype == np.float32
    assert got.indices.dtype == want.indices.dtype
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.data, want.data)


@pytest.mark.parametrize("n_excluded", [0, 9])
@pytest.mark.parametrize("block_rows", [7, 64, 100_000])
def test_blocks_give_the_whole_graph_bit_for_bit(n_excluded, block_rows):
    """Exact equality, not float tolerance: every entry is the same float32 operations.

    The strengths of a row come from umap's own functions on that row alone, and each
    union entry is (a_ij + a_ji) - a_ij a_ji in float32 either way.
    """
    indices, dist, excluded = fabricated_knn(n_excluded=n_excluded)
    conn = graph.connectivities(indices, dist, excluded, block_rows=block_rows)
    want = whole_graph_connectivities(indices, dist, excluded)
    assert_same_csr(conn, want)
    assert (conn != conn.T).nnz == 0
    assert not conn[np.flatnonzero(excluded)].nnz
    dgraph = graph.distance_graph(indices, dist, excluded, block_rows=block_rows)
    assert_same_csr(dgraph, whole_graph_distances(indices, dist, excluded))


def test_far_neighbours_and_zero_rows_are_covered():
    """The fabricated kNN holds dropped (zero-strength) edges and all-zero-distance rows."""
    indices, dist, excluded = fabricated_knn()
    directed = graph.membership_strengths(indices, dist, excluded)
    assert directed.nnz < (~excluded).sum() * indices.shape[1]  # strengths that underflowed
    assert (directed[3].data == 1).all()  # rho = 0: every strength is 1


def test_connectivities_uses_no_searchsorted_without_excluded_cells(monkeypatch):
    indices, dist, excluded = fabricated_knn(n=50, k=5)

    def refuse(*args, **kwargs):
        raise AssertionError("searchsorted called")

    monkeypatch.setattr(np, "searchsorted", refuse)
    conn = graph.connectivities(indices, dist, excluded)
    monkeypatch.undo()
    assert_same_csr(conn, whole_graph_connectivities(indices, dist, excluded))


@pytest.fixture(scope="module")
def tricky_result(tmp_path_factory, client):
    store = rankdist.ingest(
        tricky_adata(n_cells=300),
        tmp_path_factory.mktemp("graph") / "t.zarr",
        cell_type="celltype",
        batch="donor",
        progress=False,
    )
    with pytest.warns(rankdist.ExcludedCellsWarning):
        return rankdist.neighbors(store, k=8, cutoffs=(0.5,), client=client, progress=False)


def test_result_exports_the_block_graphs(tricky_result, tmp_path, monkeypatch):
    res = tricky_result
    monkeypatch.setattr(graph, "BLOCK_ROWS", 16)
    assert res.excluded.any()
    want = whole_graph_connectivities(res.indices, res.distances, res.excluded)
    assert_same_csr(res.connectivities, want)
    adata = res.write_h5ad(tmp_path / "g.h5ad")
    assert_same_csr(adata.obsp["connectivities"], want)
    idx, dist = res.self_first()
    assert idx.dtype == np.int64 and dist.dtype == np.float32
    np.testing.assert_array_equal(idx[:, 1:][~res.excluded], res.indices[~res.excluded])
    assert (idx[res.excluded] == np.flatnonzero(res.excluded)[:, None]).all()
    assert np.isinf(dist[res.excluded, 1:]).all() and (dist[:, 0] == 0).all()
