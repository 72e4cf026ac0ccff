"""numba kernels that turn expression rows into standardised float32 rows.

A standardised row z has mean 0 and Euclidean norm 1, so the Pearson correlation of
two rows is their dot product. Spearman's rho is Pearson on average-tie ranks
(scipy.stats.rankdata(method="average")); each kernel is oracle-tested against scipy.
Rows with zero variance (all values equal, e.g. an empty cell) have no defined
correlation: they come back as zeros with ``valid = False``.
"""

from __future__ import annotations

import numba
import numpy as np

#: Largest count ranked by counting (see :func:`_average_ranks`); larger values sort.
COUNTING_MAX = 1 << 16


@numba.njit(nogil=True, cache=True)
def _average_ranks(x, out, vals, pos, tally):
    """Average-tie ranks (1-based) of the 1-d float64 ``x`` into ``out``.

    Expression rows are mostly zeros, which all share one rank when nothing is negative:
    then only the non-zeros are ranked (``vals`` and ``pos`` are work buffers of len(x)).
    Rows of counts (whole numbers up to :data:`COUNTING_MAX`, the usual case) are ranked
    by counting how often each value occurs, in linear time; any other row is sorted.
    ``tally`` is a zeroed int64 buffer of ``COUNTING_MAX + 1`` entries, left zeroed.
    """
    n = x.shape[0]
    nz = 0
    counts = True
    top = 0.0
    for g in range(n):
        v = x[g]
        if v < 0:
            nz = -1
            break
        if v != 0:
            vals[nz] = v
            pos[nz] = g
            nz += 1
            if v > top:
                top = v
            if v != np.floor(v):
                counts = False
    if nz < 0:  # negative values: rank the whole row
        for g in range(n):
            vals[g] = x[g]
            pos[g] = g
        nz = n
        offset = 0
    else:
        offset = n - nz
        zero_rank = 0.5 * (offset + 1)
        for g in range(n):
            if x[g] == 0:
                out[g] = zero_rank
        if counts and top <= COUNTING_MAX:
            _counting_ranks(vals, pos, nz, int(top), offset, out, tally)
            return
    order = np.argsort(vals[:nz], kind="quicksort")
    i = 0
    while i < nz:
        j = i
        vi = vals[order[i]]
        while j + 1 < nz and vals[order[j + 1]] == vi:
            j += 1
        rank = offset + 0.5 * (i + j) + 1.0
        for t in range(i, j + 1):
            out[pos[order[t]]] = rank
        i = j + 1


@numba.njit(nogil=True, cache=True, inline="always")
def _counting_ranks(vals, pos, nz, top, offset, out, tally):
    """Ranks of ``nz`` positive whole numbers ``vals`` (at most ``top``) by counting.

    The ``c`` values equal to ``v``, preceded by ``p`` smaller non-zeros, take the
    average of ranks ``offset + p + 1 .. offset + p + c``. Ranks are exact: the same
    float64 numbers the sorting path computes.
    """
    for t in range(nz):
        tally[int(vals[t])] += 1
    # tally[v] becomes twice the average rank of value v (an integer; halved below).
    below = 0
    for v in range(1, top + 1):
        c = tally[v]
        if c:
            tally[v] = 2 * (offset + below) + c + 1
            below += c
    for t in range(nz):
        out[pos[t]] = 0.5 * tally[int(vals[t])]
    for t in range(nz):
        tally[int(vals[t])] = 0


@numba.njit(nogil=True, cache=True)
def _standardise_into(v, z_row):
    """Centre and scale the float64 row ``v`` into ``z_row``; False if it is constant."""
    n = v.shape[0]
    # Constancy is decided on the values themselves: a float mean of equal values need
    # not equal them, which would leave a ~1e-16 "variance" and a meaningless direction.
    constant = True
    for g in range(1, n):
        if v[g] != v[0]:
            constant = False
            break
    if constant:
        for g in range(n):
            z_row[g] = 0.0
        return False
    mean = 0.0
    for g in range(n):
        mean += v[g]
    mean /= n
    ss = 0.0
    for g in range(n):
        d = v[g] - mean
        v[g] = d
        ss += d * d
    inv = 1.0 / np.sqrt(ss)
    for g in range(n):
        z_row[g] = v[g] * inv
    return True


@numba.njit(nogil=True, cache=True, fastmath=True)
def _sum_sq_dev(v, mean):
    """Sum of squared deviations (vectorised: the summation order is the compiler's)."""
    ss = 0.0
    for g in range(v.shape[0]):
        d = v[g] - mean
        ss += d * d
    return ss


@numba.njit(nogil=True, cache=True)
def _standardise_ranks(ranks, z_row):
    """Centre and scale average-tie ranks into ``z_row``; False if they are all tied.

    Average-tie ranks of n values always sum to n(n+1)/2, so the mean is exactly
    (n+1)/2, and a row is constant exactly when every rank equals it.
    """
    n = ranks.shape[0]
    mean = 0.5 * (n + 1)
    constant = True
    for g in range(n):
        if ranks[g] != mean:
            constant = False
            break
    if constant:
        z_row[:] = 0.0
        return False
    inv = 1.0 / np.sqrt(_sum_sq_dev(ranks, mean))
    for g in range(n):
        z_row[g] = (ranks[g] - mean) * inv
    return True


@numba.njit(nogil=True, cache=True)
def standardised_ranks(block):
    """Spearman encoding: standardised average-tie ranks of each row.

    Parameters
    ----------
    block
        ``(cells, genes)`` float64 expression.

    Returns
    -------
    z
        ``(cells, genes)`` float32, each valid row with mean 0 and norm 1.
    valid
        ``(cells,)`` bool, False for constant rows (their z row is 0).
    """
    n, g = block.shape
    z = np.empty((n, g), dtype=np.float32)
    valid = np.empty(n, dtype=np.bool_)
    ranks = np.empty(g, dtype=np.float64)
    vals = np.empty(g, dtype=np.float64)
    pos = np.empty(g, dtype=np.int64)
    tally = np.zeros(COUNTING_MAX + 1, dtype=np.int64)
    for r in range(n):
        _average_ranks(block[r], ranks, vals, pos, tally)
        valid[r] = _standardise_ranks(ranks, z[r])
    return z, valid


@numba.njit(nogil=True, cache=True)
def standardised_log_cp(block, totals, target_sum):
    """Pearson baseline: standardised ``log1p(x / total * target_sum)`` of each row.

    Parameters
    ----------
    block
        ``(cells, genes)`` float64 counts of the selected genes.
    totals
        ``(cells,)`` float64 library sizes over all genes of the source.
    target_sum
        Counts per cell after normalisation (1e4: counts per 10k).

    Returns
    -------
    z, valid
        As :func:`standardised_ranks`.
    """
    n, g = block.shape
    z = np.empty((n, g), dtype=np.float32)
    valid = np.empty(n, dtype=np.bool_)
    v = np.empty(g, dtype=np.float64)
    for r in range(n):
        scale = target_sum / totals[r] if totals[r] > 0 else 0.0
        for j in range(g):
            v[j] = np.log1p(block[r, j] * scale)
        valid[r] = _standardise_into(v, z[r])
    return z, valid


@numba.njit(nogil=True, cache=True)
def standardised_top_ranks(block, gene_divisors, top):
    """Truncated rank-value encoding: the ``top`` highest genes ranked, every other gene tied.

    For each row the ranking key of gene g is ``block[r, g] / gene_divisors[g]`` where
    ``block[r, g] != 0``. The kept genes are the non-zero genes that fewer than ``top``
    non-zero genes beat on that key: the ``top`` highest, plus every gene tied with the
    ``top``-th (so the result never depends on the gene order). The row's value vector is
    the key on kept genes and 0 elsewhere; its average-tie ranks
    (``scipy.stats.rankdata(method="average")``) are standardised as in
    :func:`standardised_ranks`. Used by the geneformer encoding (divisors: per-gene
    non-zero medians, Theodoris et al. 2023) and the topn encoding (divisors 1,
    cell2sentence, Levine et al. 2023).

    Parameters
    ----------
    block
        ``(cells, genes)`` float64, non-negative.
    gene_divisors
        ``(genes,)`` float64, positive wherever a column of ``block`` has a non-zero.
    top
        Genes kept per row, at least 1.

    Returns
    -------
    z, valid
        As :func:`standardised_ranks`; a row with no non-zero, or whose kept genes are
        every gene and all tied, is constant.
    """
    n, g = block.shape
    z = np.empty((n, g), dtype=np.float32)
    valid = np.empty(n, dtype=np.bool_)
    ranks = np.empty(g, dtype=np.float64)
    vals = np.empty(g, dtype=np.float64)
    pos = np.empty(g, dtype=np.int64)
    for r in range(n):
        nz = 0
        for j in range(g):
            x = block[r, j]
            if x != 0:
                vals[nz] = x / gene_divisors[j]
                pos[nz] = j
                nz += 1
        order = np.argsort(vals[:nz], kind="quicksort")  # ascending
        first = 0  # position in `order` of the lowest kept gene
        if nz > top:
            first = nz - top
            cut = vals[order[first]]
            while first > 0 and vals[order[first - 1]] == cut:
                first -= 1  # genes tied with the top-th are kept too
        offset = g - (nz - first)  # genes tied at the bottom
        bottom = 0.5 * (offset + 1)
        for j in range(g):
            ranks[j] = bottom
        i = first
        while i < nz:
            k = i
            vi = vals[order[i]]
            while k + 1 < nz and vals[order[k + 1]] == vi:
                k += 1
            rank = offset + 0.5 * (i + k) - first + 1.0
            for t in range(i, k + 1):
                ranks[pos[order[t]]] = rank
            i = k + 1
        valid[r] = _standardise_into(ranks, z[r])
    return z, valid
