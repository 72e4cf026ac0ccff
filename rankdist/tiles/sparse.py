"""The sparse similarity product: one canonical sub-tile from the sparse form of Z.

With every gene kept, a cell's standardised ranks are ``z = s + c * 1``: all its zeros
share one rank, so ``c`` is the standardised value of that rank and ``s = z - c`` is
non-zero only at the cell's expressed genes. Because ``sum(z) = 0``, ``sum(s) = -G c``
and

    z_a . z_b = s_a . s_b - G c_a c_b.

:func:`sparse_subtile` computes a ``(rows of slab a) x (rows of slab b)`` block of
``Z_a Z_b^T`` this way. Genes expressed in many cells of both slabs go through one
small dense float32 GEMM on their columns; every other gene goes through a row-wise
inverted-index product (for each row of a and each of its genes, the rows of b that
express the gene), accumulated in float64. Which genes are dense depends only on the
two slabs, and the per-pair summation order only on their contents, so a pair's
float32 value is the same whatever the block size or the number of workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numba
import numpy as np

from rankdist.encode.sparse import SparseRows

#: How Z is stored and multiplied; ``auto`` chooses from the sampled gene density.
Form = Literal["auto", "dense", "sparse"]
FORMS: tuple[str, ...] = get_args(Form)

#: Costs of the sparse product in units of one multiply-add of the single-threaded
#: float32 dense GEMM, per pair of cells (measured on 33k genes at 93 % zeros,
#: benchmarks/bench_sparse.py; docs/encodings.md). A scattered float64 multiply-add of
#: the inverted-index product: 1.7 ns against 0.0155 ns.
SCATTER_OVER_GEMM = 110.0
#: A scattered gene also costs per stored value of slab a (the loop over its expressing
#: rows of b starts there): about 18 ns, spread over the 512 pairs of that row.
ENTRY_COST = 2.3
#: A dense gene costs its GEMM column plus gathering that column for both slabs; the
#: small GEMM (``K`` = dense genes, one operand transposed) runs below the full one's
#: rate, so the measured cost is about twice the column's share.
DENSE_GENE_COST = 2.0
#: A gene goes through the dense GEMM when (cells of slab a expressing it) x (cells of
#: slab b expressing it) exceeds this fraction of the sub-tile's pairs: scattering it
#: would cost more than its GEMM column.
DENSE_PAIR_FRACTION = 1.0 / SCATTER_OVER_GEMM
#: ``form='auto'`` runs sparse when its predicted cost is below this fraction of dense.
SPARSE_MAX_COST = 0.6
#: ``form='auto'`` stays dense below this many genes: Z is small, and the per-row work
#: of the sparse product (slab preparation, finishing each S row) is not amortised.
MIN_SPARSE_GENES = 4096


def predicted_cost_ratio(density: np.ndarray) -> float:
    """Predicted time of the sparse product over the dense GEMM, from per-gene density.

    The GEMM costs one multiply-add per gene and pair of cells. A gene expressed by a
    fraction ``p`` of the cells costs the sparse product :data:`DENSE_GENE_COST` if
    ``p**2`` exceeds :data:`DENSE_PAIR_FRACTION` (it goes through the small GEMM), else
    ``p**2`` scattered multiply-adds plus the per-value overhead
    (:data:`SCATTER_OVER_GEMM`, :data:`ENTRY_COST`).
    """
    p = np.asarray(density, dtype=np.float64)
    if not len(p):
        return 1.0
    scattered = SCATTER_OVER_GEMM * p**2 + ENTRY_COST * p
    per_gene = np.where(p**2 > DENSE_PAIR_FRACTION, DENSE_GENE_COST, scattered)
    return float(per_gene.sum() / len(p))


def choose_form(density: np.ndarray) -> str:
    """``'sparse'`` if the sparse product is predicted clearly faster, else ``'dense'``."""
    if len(density) < MIN_SPARSE_GENES:
        return "dense"
    return "sparse" if predicted_cost_ratio(density) < SPARSE_MAX_COST else "dense"


@dataclass(frozen=True)
class Slab:
    """One sub-tile's rows prepared for the product: CSR, gene-major copy, gene counts."""

    rows: SparseRows
    col_ptr: np.ndarray  # (genes + 1,) int64
    col_rows: np.ndarray  # (nnz,) int32 row of each value, ascending within a gene
    col_data: np.ndarray  # (nnz,) float32
    gene_counts: np.ndarray  # (genes,) int64 rows expressing each gene

    @classmethod
    def of(cls, rows: SparseRows) -> Slab:
        col_ptr, col_rows, col_data = _to_gene_major(
            rows.indptr, rows.indices, rows.data, rows.n_genes
        )
        return cls(rows, col_ptr, col_rows, col_data, np.diff(col_ptr))


@numba.njit(nogil=True, cache=True)
def _to_gene_major(indptr, indices, data, n_genes):
    """CSR -> CSC by counting; rows stay ascending within each gene."""
    col_ptr = np.zeros(n_genes + 1, np.int64)
    for t in range(indices.shape[0]):
        col_ptr[indices[t] + 1] += 1
    for g in range(n_genes):
        col_ptr[g + 1] += col_ptr[g]
    fill = col_ptr[:-1].copy()
    col_rows = np.empty(indices.shape[0], np.int32)
    col_data = np.empty(indices.shape[0], np.float32)
    for r in range(indptr.shape[0] - 1):
        for t in range(indptr[r], indptr[r + 1]):
            g = indices[t]
            col_rows[fill[g]] = r
            col_data[fill[g]] = data[t]
            fill[g] += 1
    return col_ptr, col_rows, col_data


@numba.njit(nogil=True, cache=True)
def _dense_columns_t(col_ptr, col_rows, col_data, genes, n_rows):
    """``(len(genes), n_rows)`` float32: the slab's values of ``genes``, gene-major.

    Gathered from the gene-major copy, so only the values of those genes are visited.
    """
    out = np.zeros((genes.shape[0], n_rows), np.float32)
    for j in range(genes.shape[0]):
        g = genes[j]
        for u in range(col_ptr[g], col_ptr[g + 1]):
            out[j, col_rows[u]] = col_data[u]
    return out


@numba.njit(nogil=True, cache=True)
def _sparse_rows_product(
    a_ptr,
    a_idx,
    a_dat,
    a_c,
    b_col_ptr,
    b_col_rows,
    b_col_data,
    b_c,
    column_of_gene,
    dense,
    n_genes,
    out,
):
    """``out[a, b] = float32(sum_g s_a,g s_b,g + dense[a, b] - G c_a c_b)``.

    Sparse genes (``column_of_gene < 0``) are summed in float64 in the row's gene order;
    ``dense`` holds the float32 GEMM over the others (or has zero columns).
    """
    na = a_ptr.shape[0] - 1
    nb = b_c.shape[0]
    use_dense = dense.shape[0] > 0
    acc = np.empty(nb, np.float64)
    for a in range(na):
        acc[:] = 0.0
        for t in range(a_ptr[a], a_ptr[a + 1]):
            g = a_idx[t]
            if column_of_gene[g] >= 0:
                continue
            va = np.float64(a_dat[t])
            for u in range(b_col_ptr[g], b_col_ptr[g + 1]):
                acc[b_col_rows[u]] += va * b_col_data[u]
        gc = n_genes * a_c[a]
        for b in range(nb):
            v = acc[b]
            if use_dense:
                v += dense[a, b]
            out[a, b] = np.float32(v - gc * b_c[b])


def dense_genes(slab_a: Slab, slab_b: Slab, fraction: float = DENSE_PAIR_FRACTION) -> np.ndarray:
    """Genes whose expressing-pair count exceeds ``fraction`` of the sub-tile's pairs."""
    pairs = slab_a.gene_counts * slab_b.gene_counts
    return np.flatnonzero(pairs > fraction * len(slab_a.rows) * len(slab_b.rows))


def sparse_subtile(
    slab_a: Slab, slab_b: Slab, out: np.ndarray, fraction: float = DENSE_PAIR_FRACTION
) -> np.ndarray:
    """float32 ``Z_a Z_b^T`` of two slabs into ``out`` (shape ``(len a, len b)``).

    Parameters
    ----------
    slab_a, slab_b
        Prepared rows (:meth:`Slab.of`) of at most one sub-tile each.
    out
        float32 C-contiguous result, overwritten.
    fraction
        Dense-gene threshold (:func:`dense_genes`); 0 sends every shared gene through
        the GEMM, ``inf`` none.

    Returns
    -------
    numpy.ndarray
        ``out``.
    """
    ra, rb = slab_a.rows, slab_b.rows
    genes = dense_genes(slab_a, slab_b, fraction)
    column_of_gene = np.full(ra.n_genes, -1, np.int32)
    column_of_gene[genes] = np.arange(len(genes), dtype=np.int32)
    if len(genes):
        da = _dense_columns_t(slab_a.col_ptr, slab_a.col_rows, slab_a.col_data, genes, len(ra))
        db = _dense_columns_t(slab_b.col_ptr, slab_b.col_rows, slab_b.col_data, genes, len(rb))
        dense = np.matmul(da.T, db)
    else:
        dense = np.zeros((0, 0), np.float32)
    _sparse_rows_product(
        ra.indptr,
        ra.indices,
        ra.data,
        ra.c,
        slab_b.col_ptr,
        slab_b.col_rows,
        slab_b.col_data,
        rb.c,
        column_of_gene,
        dense,
        float(ra.n_genes),
        out,
    )
    return out
