"""Two encodings of the same cells: how much their neighbours agree, and which is batch-driven."""

from __future__ import annotations

import numpy as np
import xarray as xr

from rankdist.analysis.tables import group_mean, group_sum
from rankdist.reduce.result import NeighborResult

#: Cells per block of rows.
_BLOCK_ROWS = 65536


def compare_encodings(res_a: NeighborResult, res_b: NeighborResult) -> xr.Dataset:
    """Neighbour overlap per cell and batch-driven neighbours per cell type, for two runs.

    Parameters
    ----------
    res_a, res_b
        Two results on the same cells (same store) with the same k, e.g. the
        ``spearman`` and ``pearson`` runs. Both need ``cell_type`` labels; without
        ``batch`` labels the batch-driven columns are NaN (and ``more_batch_driven`` ``''``).

    Returns
    -------
    xarray.Dataset
        - ``jaccard`` on dim ``cell``: ``|A & B| / |A | B|`` of the cell's two neighbour
          sets; NaN where either run excluded the cell;
        - on dim ``cell_type`` (fine types, then ``'all'``): ``cells`` (int: cells valid
          in both runs), ``jaccard_mean`` (over those cells), ``batch_driven_a`` /
          ``batch_driven_b`` (mean over the type's cells valid in that run of the share
          of neighbours from the same batch but another cell type) and
          ``more_batch_driven`` (the name of the run with the larger share, ``'equal'``
          on a tie, ``''`` where undefined).

        ``attrs['a']`` / ``attrs['b']`` hold the two names: the encodings, or the run
        names where both runs share an encoding.

    Raises
    ------
    ValueError
        The runs differ in cells or k, or lack ``cell_type`` labels.
    """
    if res_a.n_cells != res_b.n_cells or not _same_names(res_a.cell_names, res_b.cell_names):
        msg = (
            f"the two results are on different cells ({res_a.n_cells} vs {res_b.n_cells}); "
            "compare runs of the same store"
        )
        raise ValueError(msg)
    if res_a.k != res_b.k:
        msg = f"the two results differ in k ({res_a.k} vs {res_b.k}); run both with the same --k"
        raise ValueError(msg)
    if "cell_type" not in res_a.labels:
        msg = f"no cell_type labels in these results (stored roles: {sorted(res_a.labels)})"
        raise ValueError(msg)
    name_a, name_b = _names(res_a, res_b)
    ctype = res_a.labels["cell_type"]
    t = ctype.codes.astype(np.int64)
    b = res_a.labels["batch"].codes.astype(np.int64) if "batch" in res_a.labels else None
    n, k = res_a.n_cells, res_a.k
    both = ~res_a.excluded & ~res_b.excluded

    jaccard = np.full(n, np.nan)
    driven_a = np.full(n, np.nan)
    driven_b = np.full(n, np.nan)
    excluded_a, excluded_b = np.asarray(res_a.excluded), np.asarray(res_b.excluded)
    # a block of rows at a time: the (rows, k) gathers and the (rows, 2k) sort stay bounded
    for start in range(0, n, _BLOCK_ROWS):
        block = slice(start, min(n, start + _BLOCK_ROWS))
        cells = np.arange(block.start, block.stop)
        nbr_a, nbr_b = res_a.indices[block], res_b.indices[block]
        in_both = ~excluded_a[block] & ~excluded_b[block]
        shared = shared_neighbours(nbr_a[in_both], nbr_b[in_both])
        jaccard[cells[in_both]] = shared / (2 * k - shared)
        pairs = ((driven_a, nbr_a, excluded_a), (driven_b, nbr_b, excluded_b))
        for out, nbr, excluded in pairs if b is not None else ():
            v = ~excluded[block]
            rows, nb = cells[v], nbr[v]
            out[rows] = ((b[nb] == b[rows, None]) & (t[nb] != t[rows, None])).mean(axis=1)

    n_types = len(ctype.categories)
    everyone = np.ones(n, dtype=bool)
    mean_a = group_mean(driven_a, t, everyone, n_types)
    mean_b = group_mean(driven_b, t, everyone, n_types)
    more = np.array(
        [_more(x, y, name_a, name_b) for x, y in zip(mean_a, mean_b, strict=True)], dtype=object
    )
    return xr.Dataset(
        {
            "jaccard": ("cell", jaccard, {"meaning": "overlap of the two neighbour sets"}),
            "cells": ("cell_type", group_sum(1, t, both, n_types).astype(np.int64)),
            "jaccard_mean": ("cell_type", group_mean(jaccard, t, everyone, n_types)),
            "batch_driven_a": ("cell_type", mean_a, {"run": name_a}),
            "batch_driven_b": ("cell_type", mean_b, {"run": name_b}),
            "more_batch_driven": ("cell_type", more),
        },
        coords={
            "cell": np.asarray(res_a.cell_names).astype(str),
            "cell_type": [*ctype.categories, "all"],
        },
        attrs={"a": name_a, "b": name_b, "k": k},
    )


def shared_neighbours(a: np.ndarray, b: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """``(n,)`` int64: how many neighbours rows of ``a`` and ``b`` (each without repeats) share.

    Each row pair is sorted together: a neighbour in both sets shows up as two equal
    adjacent entries. Done in chunks of rows to bound memory.
    """
    out = np.empty(len(a), dtype=np.int64)
    for start in range(0, len(a), chunk):
        both = np.sort(np.hstack([a[start : start + chunk], b[start : start + chunk]]), axis=1)
        out[start : start + chunk] = (np.diff(both, axis=1) == 0).sum(axis=1)
    return out


def _same_names(a, b, chunk: int = 1 << 20) -> bool:
    """Whether two arrays of cell names are equal, compared as text a chunk at a time."""
    a, b = np.asarray(a), np.asarray(b)
    if len(a) != len(b):
        return False
    return all(
        np.array_equal(a[s : s + chunk].astype(str), b[s : s + chunk].astype(str))
        for s in range(0, len(a), chunk)
    )


def _names(res_a: NeighborResult, res_b: NeighborResult) -> tuple[str, str]:
    """The encodings' names, or the run names where the encodings are the same."""
    for key in ("encoding", "name"):
        a, b = str(res_a.metadata.get(key, "")), str(res_b.metadata.get(key, ""))
        if a and b and a != b:
            return a, b
    return "a", "b"


def _more(x: float, y: float, name_a: str, name_b: str) -> str:
    if np.isnan(x) or np.isnan(y):
        return ""
    if x == y:
        return "equal"
    return name_a if x > y else name_b
