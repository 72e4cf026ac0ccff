"""Batch mixing of the exact kNN graph: same-batch shares, LISI, kBET, graph connectivity.

LISI, kBET and graph connectivity follow scib-metrics 0.5 (``lisi_knn``, ``kbet``,
``graph_connectivity``) applied to ``res.to_scib()``: the k neighbours plus the cell
itself, distances ``1 - rho``. They are computed here in numpy/scipy over the valid
cells, so results with excluded cells work too. See docs/analysis.md for the formulas.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.stats
import xarray as xr
from scipy.sparse.csgraph import connected_components

from rankdist.analysis.tables import group_mean, group_sum
from rankdist.reduce.result import NeighborResult

#: Cells per block: LISI's calibration, kBET, same-batch shares. The largest temporary is
#: simpson_index's (rows, batches) float64: 56 MB for 427 batches.
_LISI_ROWS = 16384


def batch_mixing(
    res: NeighborResult,
    k: int | None = None,
    *,
    perplexity: float | None = None,
    alpha: float = 0.05,
) -> xr.Dataset:
    """Per-cell batch mixing of the top-k neighbours, and graph-level scib metrics.

    Parameters
    ----------
    res
        A neighbours result with ``batch`` and ``cell_type`` labels.
    k
        Use the first k neighbours (default: all ``res.k``).
    perplexity
        LISI's effective neighbourhood size; default ``floor((k + 1) / 3)`` as in
        scib-metrics (which counts the cell itself among its k + 1 neighbours).
    alpha
        kBET significance level.

    Returns
    -------
    xarray.Dataset
        On dim ``cell`` (NaN for excluded cells), with coords ``cell_type`` and ``batch``:
        ``same_batch``, ``expected_same_batch``, ``ilisi``, ``clisi``, ``kbet_pvalue``.
        Scalars: ``kbet_acceptance``, ``graph_connectivity``, ``ilisi_scaled`` and
        ``clisi_scaled`` (scib-metrics' ``ilisi_knn`` / ``clisi_knn``: scaled medians).
    """
    k = _check_k(res, k)
    batch = _labels(res, "batch", "--batch")
    ctype = _labels(res, "cell_type", "--cell-type")
    excluded = np.asarray(res.excluded)
    valid = np.flatnonzero(~excluded)
    b = batch.codes.astype(np.int64)
    t = ctype.codes.astype(np.int64)
    if perplexity is None:
        perplexity = float(np.floor((k + 1) / 3))
    if perplexity < 1:
        msg = f"LISI needs perplexity >= 1; got {perplexity} (k={k}); use k >= 2 or set it"
        raise ValueError(msg)

    expected = _expected_same_batch(t[valid], b[valid])
    frequencies = _batch_frequencies(b, valid)
    same = np.empty(len(valid))
    ilisi = np.empty(len(valid))
    clisi = np.empty(len(valid))
    pvalues = np.empty(len(valid))
    # one block of valid cells at a time: the (rows, k) float64 and the (rows, labels)
    # temporaries stay bounded whatever the number of cells
    for start in range(0, len(valid), _LISI_ROWS):
        part = slice(start, start + _LISI_ROWS)
        cells = valid[part]
        nbr = res.indices[cells, :k]
        dist = res.distances[cells, :k].astype(np.float64)
        same[part] = (b[nbr] == b[cells, None]).mean(axis=1)
        weights, _ = perplexity_weights(dist, perplexity)
        ilisi[part] = 1.0 / simpson_index(weights, b[nbr])
        clisi[part] = 1.0 / simpson_index(weights, t[nbr])
        pvalues[part] = _kbet_block(np.hstack([cells[:, None], nbr]), b, *frequencies)
    nbr = res.indices[:, :k] if len(valid) == res.n_cells else res.indices[valid, :k]

    n = res.n_cells

    def per_cell(values, meaning):
        full = np.full(n, np.nan)
        full[valid] = values
        return xr.Variable("cell", full, attrs={"meaning": meaning})

    n_batches = len(np.unique(b[valid]))
    n_types = len(np.unique(t[valid]))
    with np.errstate(invalid="ignore", divide="ignore"):
        ilisi_scaled = (np.nanmedian(ilisi) - 1) / (n_batches - 1)
        clisi_scaled = (n_types - np.nanmedian(clisi)) / (n_types - 1)
    return xr.Dataset(
        {
            "same_batch": per_cell(same, "share of the k neighbours from the cell's batch"),
            "expected_same_batch": per_cell(
                expected, "share of the other valid cells of its type that are in its batch"
            ),
            "ilisi": per_cell(ilisi, "LISI of batch labels (effective number of batches)"),
            "clisi": per_cell(clisi, "LISI of cell-type labels (effective number of types)"),
            "kbet_pvalue": per_cell(pvalues, "kBET chi-square p-value (self + k neighbours)"),
            "kbet_acceptance": ((), float((pvalues >= alpha).mean()) if n_batches > 1 else np.nan),
            "graph_connectivity": ((), graph_connectivity(nbr, valid, t, n)),
            "ilisi_scaled": ((), float(ilisi_scaled)),
            "clisi_scaled": ((), float(clisi_scaled)),
        },
        coords={
            "cell": res.cell_names.astype(str),
            "cell_type": ("cell", np.asarray(ctype.categories, dtype=object)[t]),
            "batch": ("cell", np.asarray(batch.categories, dtype=object)[b]),
        },
        attrs={
            "k": k,
            "perplexity": perplexity,
            "alpha": alpha,
            "run": str(res.metadata.get("name", "")),
            "encoding": str(res.metadata.get("encoding", "")),
        },
    )


def batch_summary(
    res: NeighborResult, k: int | None = None, *, mixing: xr.Dataset | None = None
) -> xr.Dataset:
    """Per cell type (and ``'all'``): mean same-batch share against its chance level.

    Parameters
    ----------
    res
        A neighbours result with ``batch`` and ``cell_type`` labels.
    k
        Use the first k neighbours (default: all).
    mixing
        ``batch_mixing(res, k)`` if already computed (LISI and kBET are the costly part
        at atlas scale); computed here otherwise.

    Returns
    -------
    xarray.Dataset
        Dim ``cell_type`` (fine types, then ``'all'``): ``cells`` (int), ``batches``
        (int: batches the type's valid cells come from), ``same_batch``,
        ``expected_same_batch``, ``excess_same_batch`` (mean of per-cell
        ``same_batch - expected_same_batch``), ``ilisi``, ``clisi`` (means over cells).
    """
    per_cell = batch_mixing(res, k) if mixing is None else mixing
    ctype = res.labels["cell_type"]
    t = ctype.codes.astype(np.int64)
    b = res.labels["batch"].codes.astype(np.int64)
    valid = ~res.excluded
    n_types = len(ctype.categories)
    pairs = np.unique(t[valid] * (int(b.max()) + 1) + b[valid])
    batches = np.bincount(pairs // (int(b.max()) + 1), minlength=n_types)
    same = per_cell["same_batch"].to_numpy()
    exp = per_cell["expected_same_batch"].to_numpy()

    def mean(values):
        return group_mean(values, t, valid, n_types)

    cols = {
        "cells": group_sum(1, t, valid, n_types).astype(np.int64),
        "batches": np.append(batches, len(np.unique(b[valid]))),
        "same_batch": mean(same),
        "expected_same_batch": mean(exp),
        "excess_same_batch": mean(same - exp),
        "ilisi": mean(per_cell["ilisi"].to_numpy()),
        "clisi": mean(per_cell["clisi"].to_numpy()),
    }
    return xr.Dataset(
        {name: ("cell_type", np.asarray(v)) for name, v in cols.items()},
        coords={"cell_type": [*ctype.categories, "all"]},
        attrs=dict(per_cell.attrs),
    )


def simpson_index(weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Simpson's index of the neighbours' labels: ``sum_l (sum_{j: label l} P_j)^2``.

    With the weights of :func:`perplexity_weights` this is the LISI of Korsunsky et al.
    (2019, Harmony) as scib-metrics computes it; LISI is its inverse.

    Parameters
    ----------
    weights
        ``(n, k)`` neighbour weights, rows summing to 1.
    labels
        ``(n, k)`` int label codes of the neighbours.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float64 Simpson's index, in ``[1 / n_labels, 1]``.
    """
    n = len(weights)
    n_labels = int(labels.max()) + 1
    flat = (np.arange(n)[:, None] * n_labels + labels).ravel()
    per_label = np.bincount(flat, weights=weights.ravel(), minlength=n * n_labels)
    return (per_label.reshape(n, n_labels) ** 2).sum(axis=1)


def perplexity_weights(
    dist: np.ndarray, perplexity: float, tol: float = 1e-5
) -> tuple[np.ndarray, np.ndarray]:
    """LISI's neighbour weights: ``P_j ~ exp(-beta d_j)`` with entropy ``log(perplexity)``.

    scib-metrics' calibration (``utils/_lisi.py``, ``_get_neighbor_probability``): beta
    starts at 1 and is doubled / halved until the target is bracketed, then bisected, at
    most 50 steps, until the entropy ``H = log(sum P) + beta sum(d P) / sum P`` is within
    ``tol`` of ``log(perplexity)``. Run for all rows at once, in float64, on distances
    shifted by each row's minimum: the shift leaves P and H unchanged, but without it
    ``exp(-beta d)`` underflows where the k distances are large and close together
    (correlation distances ~0.4 that need beta ~300), which scib-metrics' float32 does.

    Parameters
    ----------
    dist
        ``(n, k)`` distances to the neighbours (self excluded).
    perplexity, tol
        Target perplexity and tolerance on the entropy.

    Returns
    -------
    tuple of numpy.ndarray
        ``(n, k)`` weights (rows sum to 1) and ``(n,)`` the calibrated ``beta``.
    """
    d = dist - dist.min(axis=1, keepdims=True)
    n = len(d)
    log_u = np.log(perplexity)
    beta = np.ones(n)
    beta_min = np.full(n, -np.inf)
    beta_max = np.full(n, np.inf)
    h, p = _entropy(d, beta)
    h_diff = h - log_u
    for _ in range(50):
        active = np.abs(h_diff) >= tol
        if not active.any():
            break
        up = active & (h_diff > 0)
        down = active & ~(h_diff > 0)
        beta_min = np.where(up, beta, beta_min)
        beta_max = np.where(down, beta, beta_max)
        widen = np.where(np.isinf(beta_max), beta * 2, (beta + beta_max) / 2)
        narrow = np.where(np.isinf(beta_min), beta / 2, (beta + beta_min) / 2)
        beta = np.where(up, widen, np.where(down, narrow, beta))
        h[active], p[active] = _entropy(d[active], beta[active])
        h_diff = h - log_u
    return p, beta


def _entropy(d: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.exp(-d * beta[:, None])
    total = p.sum(axis=1)
    h = np.log(total) + beta * (d * p).sum(axis=1) / total
    return h, p / total[:, None]


def kbet_pvalues(neighbourhoods: np.ndarray, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """kBET (Buettner et al. 2019) p-value of each neighbourhood, as scib-metrics' ``kbet``.

    Pearson's chi-square of the neighbourhood's batch counts against the batch
    frequencies of all the cells in the graph, ``n_batches - 1`` degrees of freedom.

    Parameters
    ----------
    neighbourhoods
        ``(m, k + 1)`` cell indices: the cell itself, then its k neighbours.
    batch
        ``(n_cells,)`` int batch codes.
    valid
        Indices of the cells in the graph (whose batches set the expected frequencies).

    Returns
    -------
    numpy.ndarray
        ``(m,)`` float64 p-values (NaN if the graph holds a single batch).
    """
    present, expected = _batch_frequencies(batch, valid)
    out = np.empty(len(neighbourhoods))
    for start in range(0, len(neighbourhoods), _LISI_ROWS):
        part = slice(start, start + _LISI_ROWS)
        out[part] = _kbet_block(neighbourhoods[part], batch, present, expected)
    return out


def _batch_frequencies(batch: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The batches of the valid cells (sorted codes) and their shares of those cells."""
    present, freq = np.unique(batch[valid], return_counts=True)
    return present, freq / freq.sum()


def _kbet_block(
    neighbourhoods: np.ndarray, batch: np.ndarray, present: np.ndarray, freq: np.ndarray
) -> np.ndarray:
    """kBET p-values of a block of neighbourhoods, from the batches present in each.

    The chi-square ``sum_l (o_l - e_l)^2 / e_l`` over all batches l is, for the batches a
    neighbourhood lacks (o_l = 0), ``sum e_l``: so it is ``sum_l e_l`` plus, over the
    batches present only, ``(o_l - e_l)^2 / e_l - e_l``. The observed counts are the run
    lengths of each row's sorted batch codes: ``(rows, k + 1)`` values, not
    ``(rows, n_batches)``. Equal to the dense sum up to float64 rounding.
    """
    m, size = neighbourhoods.shape
    if len(present) < 2:
        return np.full(m, np.nan)
    expected = freq * size
    slot = np.sort(np.searchsorted(present, batch[neighbourhoods]), axis=1)
    starts = np.ones((m, size), dtype=bool)
    starts[:, 1:] = slot[:, 1:] != slot[:, :-1]
    row, col = np.nonzero(starts)
    ends = np.append(col[1:], size)
    ends[np.flatnonzero(np.diff(row))] = size  # a run ends with its row
    observed = ends - col
    e = expected[slot[row, col]]
    stat = np.bincount(row, weights=(observed - e) ** 2 / e - e, minlength=m) + expected.sum()
    return scipy.stats.chi2.sf(stat, len(present) - 1)


def graph_connectivity(nbr: np.ndarray, valid: np.ndarray, types: np.ndarray, n: int) -> float:
    """scib's graph connectivity: per cell type, the share of its cells in the largest
    strongly connected component of the kNN graph restricted to the type; then the mean
    over types.

    Parameters
    ----------
    nbr
        ``(m, k)`` neighbour indices of the cells ``valid``.
    valid
        ``(m,)`` indices of the cells in the graph.
    types
        ``(n,)`` cell-type codes.
    n
        Number of cells.

    Returns
    -------
    float
        The mean over the cell types present among the valid cells.
    """
    m, k = nbr.shape
    valid_types = types[valid]
    position = np.full(n, -1, dtype=np.int64)  # a cell's row in its type's subgraph
    shares = []
    # each type's subgraph is built from its own cells' rows (no N x N matrix is sliced):
    # its edges are the neighbours of the same type
    for t in np.unique(valid_types):
        rows = np.flatnonzero(valid_types == t)
        cells = valid[rows]
        position[cells] = np.arange(len(cells))
        target = position[nbr[rows]]
        keep = target >= 0
        index = np.int32 if len(cells) * k < np.iinfo(np.int32).max else np.int64
        sub = sp.csr_matrix(
            (
                np.ones(int(keep.sum()), dtype=np.int8),
                target[keep].astype(index),
                np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(index),
            ),
            shape=(len(cells), len(cells)),
        )
        _, comp = connected_components(sub, connection="strong")
        shares.append(np.bincount(comp).max() / len(cells))
        position[cells] = -1
    return float(np.mean(shares))


def _expected_same_batch(types: np.ndarray, batches: np.ndarray) -> np.ndarray:
    """Per cell: share of the other valid cells of its type that are in its batch."""
    n_b = int(batches.max()) + 1
    pair = types * n_b + batches
    n_tb = np.bincount(pair)[pair]
    n_t = np.bincount(types)[types]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_t > 1, (n_tb - 1) / (n_t - 1), np.nan)


def _check_k(res: NeighborResult, k: int | None) -> int:
    if k is None:
        return res.k
    if not 1 <= k <= res.k:
        msg = f"k={k} is outside 1..{res.k} (the result holds {res.k} neighbours per cell)"
        raise ValueError(msg)
    return int(k)


def _labels(res: NeighborResult, role: str, flag: str):
    if role not in res.labels:
        msg = (
            f"no {role} labels in this result (stored roles: {sorted(res.labels)}); "
            f"ingest with {flag} COL"
        )
        raise ValueError(msg)
    return res.labels[role]
