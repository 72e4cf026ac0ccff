"""A result's kNN graph as scanpy reads it: distances, UMAP connectivities, AnnData export.

Every graph is built block by block of rows from the ``(n, k)`` neighbour arrays, in int32
indices and float32 values (int64 indices only past 2**31 - 1 entries), so memory is the
graph itself plus one block: at 2.3 M cells x k = 30, 0.55 GB for the distances and about
1.1 GB for the connectivities. The results are identical to building the whole graph at
once (tests/reduce/test_graph.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

#: Rows per block when a graph is built.
BLOCK_ROWS = 65536


def _index_dtype(n: int, nnz: int) -> type:
    """The index dtype scipy chooses for an ``(n, n)`` matrix of ``nnz`` entries."""
    return np.int32 if max(n, nnz) <= np.iinfo(np.int32).max else np.int64


def _blocks(n: int, rows: int | None):
    rows = BLOCK_ROWS if rows is None else rows
    for start in range(0, n, rows):
        yield slice(start, min(n, start + rows))


class _RowsWriter:
    """Fills a ``(n, n)`` CSR's arrays block of rows by block of rows, allocated once.

    The arrays are sized for ``capacity`` entries up front, so a graph is never held
    twice (as pieces and as their concatenation); the matrix uses the filled part.
    """

    def __init__(self, n: int, capacity: int):
        index = _index_dtype(n, capacity)
        self.n = n
        self.indptr = np.zeros(n + 1, dtype=index)
        self.indices = np.empty(capacity, dtype=index)
        self.data = np.empty(capacity, dtype=np.float32)
        self.row = self.pos = 0

    def add(self, counts: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> None:
        """Append rows: entries per row, then their columns and values, row after row."""
        stop = self.pos + len(cols)
        self.indptr[self.row + 1 : self.row + 1 + len(counts)] = self.pos + np.cumsum(counts)
        self.indices[self.pos : stop] = cols
        self.data[self.pos : stop] = vals
        self.row += len(counts)
        self.pos = stop

    def matrix(self) -> sp.csr_matrix:
        graph = sp.csr_matrix(
            (self.data[: self.pos], self.indices[: self.pos], self.indptr),
            shape=(self.n, self.n),
        )
        graph.has_sorted_indices = True
        graph.has_canonical_format = True
        return graph


def _sorted_rows(cols: np.ndarray, vals: np.ndarray, keep: np.ndarray):
    """Each row's kept ``(cols, vals)`` in ascending column order, and the counts per row."""
    order = np.argsort(cols, axis=1, kind="stable")
    cols = np.take_along_axis(cols, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    keep = np.take_along_axis(keep, order, axis=1)
    return keep.sum(axis=1), cols[keep], vals[keep]


def distance_graph(
    indices: np.ndarray,
    distances: np.ndarray,
    excluded: np.ndarray,
    *,
    block_rows: int | None = None,
) -> sp.csr_matrix:
    """``(n, n)`` float32 CSR of the distance to each cell's k neighbours (no self).

    Parameters
    ----------
    indices
        ``(n, k)`` int neighbour indices (rows of excluded cells are ignored).
    distances
        ``(n, k)`` float32 distances ``1 - rho``.
    excluded
        ``(n,)`` bool: cells without edges.
    block_rows
        Rows handled at a time (default :data:`BLOCK_ROWS`).

    Returns
    -------
    scipy.sparse.csr_matrix
        Sorted column indices, int32 while the graph has fewer than 2**31 entries.
    """
    n, k = indices.shape
    nnz = int((~excluded).sum()) * k
    out = _RowsWriter(n, nnz)
    for rows in _blocks(n, block_rows):
        keep = np.broadcast_to(~excluded[rows, None], (len(excluded[rows]), k))
        out.add(*_sorted_rows(indices[rows], distances[rows], keep))
    return out.matrix()


def membership_strengths(
    indices: np.ndarray,
    distances: np.ndarray,
    excluded: np.ndarray,
    *,
    block_rows: int | None = None,
) -> sp.csr_matrix:
    """UMAP's directed fuzzy graph: row i holds the membership strength of each neighbour.

    umap's own ``smooth_knn_dist`` and ``compute_membership_strengths``, on the kNN with
    the cell itself first at distance 0 and ``n_neighbors = k + 1`` (as scanpy calls
    ``fuzzy_simplicial_set``), run one block of rows at a time: sigma, rho and the
    strengths of a row depend only on that row. (``smooth_knn_dist`` floors sigma by the
    mean of *all* distances where a row's distances are all 0, but there rho = 0 and every
    strength is 1 whatever sigma is, so the graph does not depend on the blocks.)
    Zero strengths are dropped, as ``fuzzy_simplicial_set`` drops them.

    Parameters
    ----------
    indices, distances, excluded, block_rows
        As for :func:`distance_graph`.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(n, n)`` float32, sorted column indices; no entries in excluded cells' rows.
    """
    from umap.umap_ import compute_membership_strengths, smooth_knn_dist

    n, k = indices.shape
    out = _RowsWriter(n, int((~excluded).sum()) * k)
    for rows in _blocks(n, block_rows):
        keep_rows = ~excluded[rows]
        nbr = indices[rows][keep_rows]
        m = len(nbr)
        counts = np.zeros(rows.stop - rows.start, dtype=np.int64)
        if m == 0:
            out.add(counts, nbr[:, :0].ravel(), np.empty(0, np.float32))
            continue
        knn_dists = np.zeros((m, k + 1), dtype=np.float32)
        knn_dists[:, 1:] = distances[rows][keep_rows]
        sigmas, rhos = smooth_knn_dist(knn_dists, float(k + 1), local_connectivity=1.0)
        # only the strengths are used: column 0 is the cell itself (strength 0, as umap
        # gives a row's own index); -2 marks a neighbour, never equal to a row number
        # and never umap's -1 (missing)
        knn_local = np.full((m, k + 1), -2, dtype=np.int64)
        knn_local[:, 0] = np.arange(m)
        _, _, vals, _ = compute_membership_strengths(knn_local, knn_dists, sigmas, rhos, False)
        vals = vals.reshape(m, k + 1)[:, 1:]
        kept, cols, strengths = _sorted_rows(nbr, vals, vals != 0)
        counts[keep_rows] = kept
        out.add(counts, cols, strengths)
    return out.matrix()


def fuzzy_union(graph: sp.csr_matrix, *, block_rows: int | None = None) -> sp.csr_matrix:
    """``A + Aᵀ - A∘Aᵀ`` (UMAP's fuzzy set union), one block of rows at a time.

    Each entry is ``(a_ij + a_ji) - a_ij a_ji`` in float32, the operations umap's
    ``fuzzy_simplicial_set`` applies (scipy's sparse sum, difference and elementwise
    product) to the whole matrix, so the result is identical; entries that come out 0 are
    not stored.

    Parameters
    ----------
    graph
        ``(n, n)`` float32 CSR with sorted indices (:func:`membership_strengths`).
    block_rows
        Rows per block (default :data:`BLOCK_ROWS`).

    Returns
    -------
    scipy.sparse.csr_matrix
        The symmetric ``(n, n)`` float32 union, sorted column indices.
    """
    n = graph.shape[0]
    transposed = graph.T.tocsr()
    transposed.sort_indices()
    out = _RowsWriter(n, 2 * graph.nnz)  # at most every edge and its reverse
    for rows in _blocks(n, block_rows):
        a, at = graph[rows], transposed[rows]
        union = sp.csr_matrix((a + at) - a.multiply(at))
        union.sort_indices()
        out.add(np.diff(union.indptr), union.indices, union.data.astype(np.float32))
    return out.matrix()


def connectivities(
    indices: np.ndarray,
    distances: np.ndarray,
    excluded: np.ndarray,
    *,
    block_rows: int | None = None,
) -> sp.csr_matrix:
    """UMAP fuzzy-simplicial-set weights, as scanpy derives them from the kNN.

    Excluded cells have no edges; a valid cell's weights depend only on the valid cells'
    rows, so no renumbering to the valid cells is needed.

    Parameters
    ----------
    indices, distances, excluded, block_rows
        As for :func:`distance_graph`.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(n, n)`` float32, symmetric, sorted column indices.
    """
    directed = membership_strengths(indices, distances, excluded, block_rows=block_rows)
    return fuzzy_union(directed, block_rows=block_rows)


def self_first(
    indices: np.ndarray, distances: np.ndarray, excluded: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(n, k + 1)`` int64 indices and float32 distances with each cell itself in column 0.

    This is the layout of scib-metrics' ``NeighborsResults``. Excluded cells get their
    own index in every column and distance ``inf``.
    """
    n, k = indices.shape
    idx = np.empty((n, k + 1), dtype=np.int64)
    idx[:, 0] = np.arange(n)
    idx[:, 1:] = indices
    dist = np.empty((n, k + 1), dtype=np.float32)
    dist[:, 0] = 0
    dist[:, 1:] = distances
    if excluded.any():
        idx[excluded] = np.arange(n)[excluded, None]
        dist[excluded, 1:] = np.inf
    return idx, dist


def to_anndata(res, *, key_added: str | None = None, obs=None):
    """The AnnData of :meth:`rankdist.reduce.result.NeighborResult.to_anndata`."""
    import anndata as ad
    import pandas as pd

    if obs is None:
        obs = pd.DataFrame(index=pd.Index(res.cell_names.astype(str), name=None))
        for lab in res.labels.values():
            obs[lab.column] = pd.Categorical.from_codes(lab.codes, lab.categories)
    adata = ad.AnnData(obs=obs.copy())
    adata.obs["rankdist_excluded"] = res.excluded
    dkey = "distances" if key_added is None else f"{key_added}_distances"
    ckey = "connectivities" if key_added is None else f"{key_added}_connectivities"
    adata.obsp[dkey] = res.distance_graph
    adata.obsp[ckey] = res.connectivities
    adata.uns["neighbors" if key_added is None else key_added] = {
        "connectivities_key": ckey,
        "distances_key": dkey,
        "params": {
            "n_neighbors": res.k + 1,  # scanpy counts the cell itself
            "method": "umap",
            "metric": "correlation",
            "random_state": 0,
            "rankdist_encoding": str(res.metadata.get("encoding")),
        },
    }
    idx, dist = res.self_first()
    adata.obsm["rankdist_indices"] = idx
    adata.obsm["rankdist_distances"] = dist
    adata.uns["rankdist"] = plain_metadata(res.metadata) | {"cutoffs": list(res.cutoffs)}
    return adata


def write_h5ad(res, path: str | os.PathLike, *, key_added: str | None = None):
    """Write :func:`to_anndata` of ``res`` to ``path`` atomically.

    See :meth:`rankdist.reduce.result.NeighborResult.write_h5ad`.
    """
    from rankdist.io.store import atomic_file

    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        msg = (
            f"cannot write {path}: the folder {folder} {what}; create it first or "
            "choose another path"
        )
        raise FileNotFoundError(msg)
    adata = res.to_anndata(key_added=key_added)
    with atomic_file(path) as tmp:
        adata.write_h5ad(tmp)
    return adata


def plain_metadata(d):
    """Metadata as AnnData-writable plain types (no None)."""
    if isinstance(d, dict):
        return {str(k): plain_metadata(v) for k, v in d.items() if v is not None}
    if isinstance(d, list | tuple):
        return [plain_metadata(v) for v in d if v is not None]
    return d
