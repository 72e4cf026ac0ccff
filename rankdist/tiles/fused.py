"""The fused pass: one read of a similarity sub-tile updates top-k lists and counts.

The GEMM's ``S`` only screens. Every similarity that enters a top-k list, and every one
within the GEMM's error bound of a cutoff, is :func:`pair_value` of the two rows, which
is symmetric bit for bit (docs/architecture.md: "The GEMM screens; pair_value decides").
"""

from __future__ import annotations

import numba
import numpy as np


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

    Returns the number of pairs whose value was recomputed by :func:`pair_value`.

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
    rescored = 0
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
                rescored += _fold_run(
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
    return rescored


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
    """Exact per-element update for columns ``c0:c1`` of row ``a`` (see fused_pass).

    Returns the number of pairs recomputed by :func:`pair_value`.
    """
    k = r_sim.shape[1]
    rescored = 0
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
            rescored += 1
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
    return rescored


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
