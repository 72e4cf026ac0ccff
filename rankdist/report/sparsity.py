"""The sparsity section's numbers: the share of zero counts per cell and per cell type."""

from __future__ import annotations

import numpy as np
import xarray as xr

from rankdist.io.store import Store


def zero_fraction(store: Store) -> np.ndarray:
    """``(n_cells,)`` float64: share of the stored genes with a zero count, per cell.

    X is read one stored chunk of cells at a time, never whole.
    """
    n, step = store.n_cells, max(store.chunk_cells, 1)
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, step):
        stop = min(n, start + step)
        out[start:stop] = (store.read_x(start, stop) == 0).mean(axis=1)
    return out


def sparsity_table(store: Store, zeros: np.ndarray) -> xr.Dataset:
    """Per cell type (and ``'all'``): cells and the mean, median, min, max zero fraction."""
    if "cell_type" in store.labels:
        lab = store.labels["cell_type"]
        groups = [lab.codes == t for t in range(len(lab.categories))]
        names = [*lab.categories, "all"]
    else:
        groups, names = [], ["all"]
    groups.append(np.ones(store.n_cells, dtype=bool))

    def stat(fn):
        return np.array([fn(zeros[m]) if m.any() else np.nan for m in groups])

    return xr.Dataset(
        {
            "cells": ("cell_type", np.array([int(m.sum()) for m in groups])),
            "zero_fraction_mean": ("cell_type", stat(np.mean)),
            "zero_fraction_median": ("cell_type", stat(np.median)),
            "zero_fraction_min": ("cell_type", stat(np.min)),
            "zero_fraction_max": ("cell_type", stat(np.max)),
        },
        coords={"cell_type": names},
        attrs={"n_genes": store.n_genes},
    )
