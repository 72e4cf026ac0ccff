"""The tile kernel: one GEMM per canonical sub-tile, then one fused numba pass.

For a tile (i, j), i <= j, S = Z_i Z_j^T is computed in ``SUBTILE``-sized GEMM calls
(see :mod:`rankdist.tiles.grid`). Each S sub-tile, still in cache, goes through
:func:`fused_pass` once, which updates both the rows of i (with the columns of j as
candidates) and the rows of j (with the rows of i): top-k and cutoff-bin counts.
On diagonal tiles only pairs a < b are visited, so self-pairs never count.

This module is the only hot code. A GPU version would replace :func:`tile_partials`
(GEMM plus fused pass) and keep the same inputs and :class:`Partial` outputs.
"""

from __future__ import annotations

import numba
import numpy as np

from rankdist.encode.sparse import SparseRows
from rankdist.layout import SUBTILE
from rankdist.reduce.partial import EMPTY, Partial
from rankdist.tiles.sparse import Slab, sparse_subtile


@numba.njit(nogil=True, cache=True, inline="always")
def _insert(top_sim, top_idx, row, s, idx):
    """Insert (s, idx) into the best-first list of ``row``, dropping the worst."""
    pos = top_sim.shape[1] - 1
    while pos > 0:
        ps = top_sim[row, pos - 1]
        if ps > s or (ps == s and top_idx[row, pos - 1] < idx):
            break
        top_sim[row, pos] = ps
        top_idx[row, pos] = top_idx[row, pos - 1]
        pos -= 1
    top_sim[row, pos] = s
    top_idx[row, pos] = idx


# Not inline="always": Numba inlines at its own IR level, where the callee's fastmath
# flags are lost and the sum is no longer vectorised (10x slower, measured).
@numba.njit(nogil=True, cache=True, fastmath=True)
def pair_value(x, y):
    """The similarity of two rows of Z as reported: their dot product, rounded once.

    Each product of two float32 values is exact in float64 and the float64 sum is far
    more accurate than float32, so this is the float32 rounding of the exact dot
    product in all but vanishingly rare cases; what matters more is that it is
    symmetric: ``pair_value(x, y) == pair_value(y, x)`` bit for bit, whatever the
    machine. A float32 GEMM need not be (OpenBLAS's Haswell kernels give ``S[a, b]``
    and ``S[b, a]`` different bits for about 5 % of pairs), and then two duplicated
    cells would get different similarities to a third and the tie would not break by
    the lower index. fastmath lets LLVM vectorise the sum; the order it picks does not
    depend on which row is ``x``.
    """
    acc = 0.0
    for g in range(x.shape[0]):
        acc += np.float64(x[g]) * np.float64(y[g])
    return np.float32(acc)


def gemm_error_bound(n_genes: int) -> float:
    """A bound on ``|S[a, b] - pair_value(z_a, z_b)|`` for unit rows of ``n_genes`` values.

    A float32 dot product of length G, summed in any order, is within
    ``gamma_G = G u / (1 - G u)`` (u = 2^-24) of the exact value for unit vectors
    (Higham, Accuracy and Stability of Numerical Algorithms, 3.1); ``pair_value`` adds
    one more rounding of at most u. The rows' norms are 1 up to float32 rounding, hence
    the small slack.
    """
    u = 2.0**-24
    g = n_genes * u
    return 1.01 * (g / (1.0 - g) + 2 * u)


@numba.njit(nogil=True, cache=True)
def fused_pass(
    S,
    za,
    zb,
    margin,
    row_g0,
    col_g0,
    row_l0,
    col_l0,
    upper_only,
    row_valid,
    col_valid,
    row_codes,
    col_codes,
    cutoffs,
    r_sim,
    r_idx,
    r_counts,
    c_sim,
    c_idx,
    c_counts,
):
    """Fold one similarity sub-tile into the row-side and column-side partials.

    ``S`` (the GEMM) only screens: every similarity that enters a top-k list, and every
    one within ``margin`` of a cutoff, is :func:`pair_value` of the two rows, so a
    pair's reported value and counts do not depend on where the GEMM computed it.

    Parameters
    ----------
    S
        ``(nr, nc)`` float32 similarities of rows ``row_g0 + a`` and cells ``col_g0 + b``.
    za, zb
        ``(nr, G)`` and ``(nc, G)`` float32 rows of Z that ``S`` multiplies; with
        ``margin < 0`` (the sparse form) they are not read and ``S`` is used as is.
    margin
        :func:`gemm_error_bound`: how far ``S`` may lie from :func:`pair_value`.
    row_g0, col_g0
        Global cell index of S's first row and first column.
    row_l0, col_l0
        Block-local index of S's first row (in the row partial) and column (in the column
        partial).
    upper_only
        Visit only b > a (a diagonal sub-tile: S is square and symmetric).
    row_valid, col_valid
        Block-local bool masks; invalid (constant) cells are neither rows nor candidates.
    row_codes, col_codes
        ``(n_roles, block rows)`` int32 label codes, already offset so that all roles
        index one shared value axis of the counts.
    cutoffs
        Ascending float64 cutoffs; bin c holds similarities in ``[cutoffs[c], cutoffs[c+1])``.
    r_sim, r_idx, r_counts
        Row-side partial (top-k similarity, index, bin counts), updated in place.
    c_sim, c_idx, c_counts
        Column-side partial, updated in place (the same arrays as the row side on a
        diagonal tile).
    """
    nr, nc = S.shape
    k = r_sim.shape[1]
    n_cut = cutoffs.shape[0]
    exact = margin >= 0
    delta = np.float32(margin) if exact else np.float32(0.0)
    cmin = np.float32(cutoffs[0]) - delta if n_cut > 0 else np.float32(np.inf)
    # Column-side thresholds (each column's current k-th best), kept contiguous.
    c_thr_s = np.empty(nc, dtype=np.float32)
    c_thr_i = np.empty(nc, dtype=np.int64)
    for b in range(nc):
        c_thr_s[b] = c_sim[col_l0 + b, k - 1]
        c_thr_i[b] = c_idx[col_l0 + b, k - 1]
    for a in range(nr):
        ra = row_l0 + a
        if not row_valid[ra]:
            continue
        b0 = a + 1 if upper_only else 0
        for c0 in range(b0, nc, _RUN):
            c1 = min(c0 + _RUN, nc)
            # Branch-free screen of a run of columns: can any element reach the row's
            # k-th best (or the lowest cutoff), or its column's k-th best? (>= is a
            # superset of the tie-aware test in _fold_run, so skipping a run with no hit
            # is exact.)
            # S may sit up to ``delta`` below the value that decides, hence the margin.
            thr = min(r_sim[ra, k - 1] - delta, cmin)
            hits = 0
            for b in range(c0, c1):
                s = S[a, b]
                hits += (s >= thr) | (s >= c_thr_s[b] - delta)
            if hits:
                _fold_run(
                    S,
                    za,
                    zb,
                    exact,
                    delta,
                    a,
                    ra,
                    row_g0,
                    col_g0,
                    col_l0,
                    c0,
                    c1,
                    col_valid,
                    row_codes,
                    col_codes,
                    cutoffs,
                    r_sim,
                    r_idx,
                    r_counts,
                    c_sim,
                    c_idx,
                    c_counts,
                    c_thr_s,
                    c_thr_i,
                )


#: Columns screened together before any per-element work.
_RUN = 32


@numba.njit(nogil=True, cache=True, inline="always")
def _fold_run(
    S,
    za,
    zb,
    exact,
    delta,
    a,
    ra,
    row_g0,
    col_g0,
    col_l0,
    c0,
    c1,
    col_valid,
    row_codes,
    col_codes,
    cutoffs,
    r_sim,
    r_idx,
    r_counts,
    c_sim,
    c_idx,
    c_counts,
    c_thr_s,
    c_thr_i,
):
    """Exact per-element update for columns ``c0:c1`` of row ``a`` (see fused_pass)."""
    k = r_sim.shape[1]
    n_cut = cutoffs.shape[0]
    n_roles = row_codes.shape[0]
    ga = row_g0 + a
    thr_s = r_sim[ra, k - 1]
    thr_i = r_idx[ra, k - 1]
    for b in range(c0, c1):
        cb = col_l0 + b
        if not col_valid[cb]:
            continue
        s = S[a, b]
        if exact and _decides(s, delta, thr_s, c_thr_s[b], cutoffs):
            s = pair_value(za[a], zb[b])
        gb = col_g0 + b
        if s > thr_s or (s == thr_s and gb < thr_i):
            _insert(r_sim, r_idx, ra, s, gb)
            thr_s = r_sim[ra, k - 1]
            thr_i = r_idx[ra, k - 1]
        if s > c_thr_s[b] or (s == c_thr_s[b] and ga < c_thr_i[b]):
            _insert(c_sim, c_idx, cb, s, ga)
            c_thr_s[b] = c_sim[cb, k - 1]
            c_thr_i[b] = c_idx[cb, k - 1]
        if n_cut > 0 and s >= cutoffs[0]:
            c = n_cut - 1
            while s < cutoffs[c]:
                c -= 1
            for r in range(n_roles):
                r_counts[ra, c, col_codes[r, cb]] += 1
                c_counts[cb, c, row_codes[r, ra]] += 1


@numba.njit(nogil=True, cache=True, inline="always")
def _decides(s, delta, row_thr, col_thr, cutoffs):
    """Could the exact value of a pair whose GEMM value is ``s`` enter a list or a count?

    True when ``s`` is within ``delta`` of, or above, the row's or the column's k-th
    best, or within ``delta`` of a cutoff. Elsewhere ``s`` and the exact value fall on
    the same side of every threshold, so ``s`` gives the same decisions and counts.
    """
    if s >= row_thr - delta or s >= col_thr - delta:
        return True
    for c in range(cutoffs.shape[0]):
        if abs(s - cutoffs[c]) <= delta:
            return True
    return False


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
            else:
                np.matmul(zi[p : p + SUBTILE], zj[q : q + SUBTILE].T, out=s)
            if q == (p if diag else 0):
                _prime(s, pi.top_sim[p : p + na], vj[q : q + nb], diag and p == q, 1, margin)
            if p == 0:
                _prime(s, pj.top_sim[q : q + nb], vi[:na], diag and q == 0, 0, margin)
            fused_pass(
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
    return pi, (None if diag else pj)


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
