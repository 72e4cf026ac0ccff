"""The tile kernel: one GEMM per canonical sub-tile, then one fused numba pass.

For a tile (i, j), i <= j, S = Z_i Z_j^T is computed in ``SUBTILE``-sized GEMM calls
(see :mod:`rankdist.tiles.grid`). Each S sub-tile, still in cache, goes through
:func:`~rankdist.tiles.fused.fused_pass` once, which updates both the rows of i (with
the columns of j as candidates) and the rows of j (with the rows of i): top-k and
cutoff-bin counts.
On diagonal tiles only pairs a < b are visited, so self-pairs never count.

This module and tiles/fused.py are the only hot code. A GPU version would replace
:func:`tile_partials` (GEMM plus fused pass) and keep the same inputs and :class:`Partial` outputs.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numba
import numpy as np

from rankdist.encode.sparse import SparseRows
from rankdist.layout import SUBTILE
from rankdist.reduce.partial import EMPTY, Partial
from rankdist.tiles.fused import fused_pass, gemm_error_bound
from rankdist.tiles.screen import Quantised, crowded, refine_subtile, screen_subtile
from rankdist.tiles.sparse import Slab, sparse_subtile


def tile_partials(
    block_i,
    block_j,
    i: int,
    j: int,
    i_start: int,
    j_start: int,
    k: int,
    cutoffs: np.ndarray,
    n_values: int,
    floors: tuple[np.ndarray, np.ndarray] | None = None,
    hist_types: int = 0,
    quantised: tuple[Quantised, Quantised] | None = None,
    count: bool = True,
) -> tuple[Partial, Partial | None]:
    """Compute tile (i, j) and return the row partials of block i and (if i != j) block j.

    Parameters
    ----------
    block_i, block_j
        ``(z, valid, codes)`` of the two blocks: float32 ``(rows, genes)`` standardised
        rows (or both :class:`~rankdist.encode.sparse.SparseRows`, multiplied by
        :func:`~rankdist.tiles.sparse.sparse_subtile`), bool ``(rows,)``, int32
        ``(n_roles, rows)`` offset label codes.
    i, j
        Block indices, i <= j.
    i_start, j_start
        Global index of each block's first cell (multiples of ``SUBTILE``).
    k
        Neighbours kept per cell.
    cutoffs
        Ascending float64 cutoffs.
    n_values
        Length of the shared label-value axis of the counts.
    floors
        Optional float32 lower bounds of each row's final k-th best similarity, for the
        rows of block i and block j. Candidates strictly below a row's floor cannot reach
        its final top-k and are dropped early; the results do not depend on them.
    hist_types
        If > 0, also count every pair of the tile by (cell type, cell type, similarity
        bin), with the cell-type codes in row 0 of the blocks' codes; the histogram goes
        with block i's partial only, so each tile counts once.
    quantised
        The two dense blocks quantised for the screen (:mod:`rankdist.tiles.screen`): the
        8-bit product replaces the float32 GEMM and its certified bound the GEMM's error
        bound, so the results are the same bit for bit. Not with ``hist_types``, which
        bins every pair by its screened value.
    count
        Add the tile to this process's :func:`tile_counts` (the kernel choice's timing
        tile does not).

    Returns
    -------
    Partial, Partial or None
        Row partials of block i and (off the diagonal) block j. Lists may hold fewer than
        k entries (``-inf`` / ``EMPTY``) where floors dropped candidates.
    """
    zi, vi, ci = block_i
    zj, vj, cj = block_j
    diag = i == j
    sparse = isinstance(zi, SparseRows)
    if sparse:
        # Each slab is prepared once per tile and reused by every sub-tile it meets.
        slabs_i = [Slab.of(zi.rows(p, p + SUBTILE)) for p in range(0, len(zi), SUBTILE)]
        slabs_j = (
            slabs_i
            if diag
            else [Slab.of(zj.rows(q, q + SUBTILE)) for q in range(0, len(zj), SUBTILE)]
        )
    elif diag:
        # A distinct buffer keeps numpy on the general GEMM path (it takes a syrk path
        # when both operands are one array, whose rounding differs from the grid's).
        zj = zi.copy()
    n_cut = len(cutoffs)
    # A diagonal tile serves both sides of block i with one partial.
    row_sides = [(i, j, "row"), (i, j, "col")] if diag else [(i, j, "row")]
    pi = Partial.empty(i, len(zi), k, n_cut, n_values, tiles=row_sides)
    pj = pi if diag else Partial.empty(j, len(zj), k, n_cut, n_values, tiles=[(i, j, "col")])
    if floors is not None:
        # Placeholders (floor, EMPTY) admit exactly the candidates s >= floor.
        pi.top_sim[:] = floors[0][:, None]
        if not diag:
            pj.top_sim[:] = floors[1][:, None]
    hist = np.zeros((hist_types, hist_types, HIST_BINS), np.int32) if hist_types else None
    # The sparse product is left as computed (its rows are not dense); dense tiles report
    # pair_value for every pair that decides something.
    margin = -1.0 if sparse else gemm_error_bound(zi.shape[1])
    if quantised is not None and (sparse or hist is not None):
        msg = "the screen multiplies dense blocks, without the type x type histogram"
        raise ValueError(msg)
    rescored = n_subtiles = n_refined = 0
    buffers: dict[tuple[int, int], np.ndarray] = {}
    for p in range(0, len(zi), SUBTILE):
        na = min(SUBTILE, len(zi) - p)
        for q in range(p if diag else 0, len(zj), SUBTILE):
            nb = min(SUBTILE, len(zj) - q)
            s = buffers.get((na, nb))
            if s is None:
                s = buffers[(na, nb)] = np.empty((na, nb), dtype=np.float32)
            if sparse:
                sparse_subtile(slabs_i[p // SUBTILE], slabs_j[q // SUBTILE], s)
            elif quantised is not None:
                margin, acc = screen_subtile(quantised[0], p, na, quantised[1], q, s)
                # A sub-tile that primes empty lists is refined first: floors taken at
                # the refined margin drop more candidates later (measured: 14 % fewer
                # pairs recomputed, 6 % less time on a tile without earlier floors).
                refined = (
                    q == (p if diag else 0) and not np.isfinite(pi.top_sim[p : p + na, -1]).all()
                ) or (p == 0 and not np.isfinite(pj.top_sim[q : q + nb, -1]).all())
                if refined:
                    margin = refine_subtile(quantised[0], p, na, quantised[1], q, acc, s)
                    n_refined += 1
            else:
                np.matmul(zi[p : p + SUBTILE], zj[q : q + SUBTILE].T, out=s)
            if q == (p if diag else 0):
                _prime(s, pi.top_sim[p : p + na], vj[q : q + nb], diag and p == q, 1, margin)
            if p == 0:
                _prime(s, pj.top_sim[q : q + nb], vi[:na], diag and q == 0, 0, margin)
            if (
                quantised is not None
                and not refined
                and crowded(
                    s,
                    margin,
                    pi.top_sim[p : p + na, k - 1],
                    pj.top_sim[q : q + nb, k - 1],
                    cutoffs,
                    diag and p == q,
                )
            ):
                # Primed by the first level (its margin keeps the floors below), refined
                # where too many pairs would otherwise be recomputed one by one.
                margin = refine_subtile(quantised[0], p, na, quantised[1], q, acc, s)
                n_refined += 1
            n_subtiles += 1
            rescored += fused_pass(
                s,
                _NO_ROWS if sparse else zi[p : p + na],
                _NO_ROWS if sparse else zj[q : q + nb],
                margin,
                i_start + p,
                j_start + q,
                p,
                q,
                diag and p == q,
                vi,
                vj,
                ci,
                cj,
                cutoffs,
                pi.top_sim,
                pi.top_idx,
                pi.counts,
                pj.top_sim,
                pj.top_idx,
                pj.counts,
            )
            if hist is not None:
                pair_histogram(s, diag and p == q, vi, vj, ci[0], cj[0], p, q, hist)
    for part in (pi,) if diag else (pi, pj):
        part.top_sim[part.top_idx == EMPTY] = -np.inf  # drop unused placeholders
    if hist is not None:
        pi.pair_hist = hist.astype(np.int64)
    if count:
        _count(_visited_pairs(len(zi), len(zj), diag), rescored, n_subtiles, n_refined)
    return pi, (None if diag else pj)


def _visited_pairs(rows_i: int, rows_j: int, diag: bool) -> int:
    """Pairs a tile visits: the upper triangle of a diagonal tile, else every pair."""
    return rows_i * (rows_i - 1) // 2 if diag else rows_i * rows_j


_counts_lock = threading.Lock()
_counts = [0, 0, 0, 0]  # see TileCounts, in this process


class TileCounts(NamedTuple):
    """What the tiles of this process did: pairs visited and recomputed exactly by
    :func:`~rankdist.tiles.fused.pair_value`, sub-tiles, and sub-tiles the screen refined."""

    pairs: int
    rescored: int
    subtiles: int
    refined: int


def _count(*counts: int) -> None:
    with _counts_lock:
        for i, c in enumerate(counts):
            _counts[i] += c


def tile_counts(reset: bool = False) -> TileCounts:
    """The :class:`TileCounts` of the tiles computed in this process so far.

    The share of pairs rescored is what decides whether the screen pays
    (``benchmarks/bench_neighbors.py`` prints it). ``reset`` starts counting afresh.
    """
    with _counts_lock:
        counts = TileCounts(*_counts)
        if reset:
            _counts[:] = [0, 0, 0, 0]
    return counts


#: Stands in for the rows of Z in the sparse form's fused pass (never read there).
_NO_ROWS = np.zeros((1, 0), dtype=np.float32)


def _prime(
    s: np.ndarray,
    top_sim: np.ndarray,
    cand_valid: np.ndarray,
    diagonal: bool,
    axis: int,
    margin: float = -1.0,
):
    """Raise empty lists' placeholders to the k-th best of this first sub-tile.

    A row's k-th best among any of its candidates is a lower bound on its final k-th best,
    so lists may start from it instead of -inf: the fused pass then inserts about k
    candidates per row instead of every early one. ``axis=1`` primes the rows of ``s``,
    ``axis=0`` its columns. Only rows whose floor is still unknown are touched.
    """
    k = top_sim.shape[1]
    unknown = ~np.isfinite(top_sim[:, -1])
    n_cand = int(cand_valid.sum()) - (1 if diagonal else 0)
    if not unknown.any() or n_cand < k:
        return
    vals = s if axis == 1 else s.T
    if diagonal:
        # The fused pass reads only the upper triangle of a diagonal sub-tile, and BLAS
        # need not give S[a, b] and S[b, a] the same bits: a floor taken from the lower
        # triangle could exceed the value the pass sees and drop a true neighbour.
        upper = np.triu(np.ones(s.shape, dtype=bool), 1)
        vals = np.where(upper, s, s.T)
        np.fill_diagonal(vals, -np.inf)
    if not cand_valid.all():
        vals = vals.copy() if not diagonal else vals
        vals[:, ~cand_valid] = -np.inf
    kth = np.partition(vals, vals.shape[1] - k, axis=1)[:, vals.shape[1] - k]
    if margin > 0:
        # The pass keeps exact values, which may lie up to ``margin`` below S's.
        kth = (kth.astype(np.float64) - 2 * margin).astype(np.float32)
    top_sim[unknown] = kth[unknown, None]


#: Similarity histogram bins: 400 bins of width 0.005 on [-1, 1].
HIST_BINS = 400


@numba.njit(nogil=True, cache=True)
def pair_histogram(S, upper_only, row_valid, col_valid, row_types, col_types, row_l0, col_l0, hist):
    """Add every pair of the sub-tile to ``hist[type_a, type_b, bin]`` (int32, in place).

    Bins are ``HIST_BINS`` equal bins on [-1, 1]; 1.0 falls in the last. On a diagonal
    sub-tile only pairs b > a are counted, so each unordered pair of cells counts once.
    Bin indices of a row are computed in one vectorised loop, then scattered.
    """
    nr, nc = S.shape
    n_bins = hist.shape[2]
    half = np.float32(n_bins / 2.0)
    flat = hist.reshape(hist.shape[0], hist.shape[1] * n_bins)
    col_base = np.empty(nc, np.int64)
    for b in range(nc):
        col_base[b] = col_types[col_l0 + b] * n_bins if col_valid[col_l0 + b] else -1
    idx = np.empty(nc, np.int64)
    for a in range(nr):
        ra = row_l0 + a
        if not row_valid[ra]:
            continue
        h = flat[row_types[ra]]
        row = S[a]
        b0 = a + 1 if upper_only else 0
        for b in range(b0, nc):
            k = np.int64((row[b] + np.float32(1.0)) * half)
            idx[b] = col_base[b] + min(max(k, 0), n_bins - 1)
        for b in range(b0, nc):
            if col_base[b] >= 0:
                h[idx[b]] += 1
