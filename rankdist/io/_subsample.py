"""Subsampling at ingest: at most ``max_per_type`` cells of each cell type (seeded).

The kept cells are chosen from the combined cell-type labels before any matrix row is
read; :func:`_keep_rows` then gives each source part only its kept rows to read.
"""

from __future__ import annotations

import numpy as np

from rankdist.io._combine import _Part


def _check_subsample(max_per_type, seed, cell_type) -> int | None:
    if max_per_type is None:
        return None
    if cell_type is None:
        msg = (
            f"max_per_type={max_per_type} keeps at most that many cells per cell type, so it "
            "needs the cell type column: pass cell_type=COLUMN (--cell-type COLUMN)"
        )
        raise ValueError(msg)
    for name, value, low in (("max_per_type", max_per_type, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            kind = "a positive" if low else "a non-negative"
            msg = f"{name} must be {kind} integer, got {value!r}"
            raise ValueError(msg)
    return int(max_per_type)


def _subsample(cell_type, max_per_type: int, seed: int) -> tuple[np.ndarray, dict]:
    """Indices (sorted) of at most ``max_per_type`` cells per type, and their record.

    Types are visited in category order; each with more cells than ``max_per_type`` draws
    ``rng.choice(its cells, max_per_type, replace=False)`` from one
    ``numpy.random.default_rng(seed)``.
    """
    column, codes, categories = cell_type
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(codes), dtype=bool)
    before, after = {}, {}
    for code, name in enumerate(categories):
        cells = np.flatnonzero(codes == code)
        if len(cells) > max_per_type:
            cells = rng.choice(cells, size=max_per_type, replace=False)
        keep[cells] = True
        before[name] = int((codes == code).sum())
        after[name] = len(cells)
    record = {
        "max_per_type": max_per_type,
        "seed": seed,
        "column": column,
        "n_cells_before": len(codes),
        "n_cells_kept": int(keep.sum()),
        "cells_per_type": before,
        "kept_per_type": after,
    }
    return np.flatnonzero(keep), record


def _keep_rows(parts: list[_Part], kept: np.ndarray) -> None:
    """Give each part its kept source rows and its first store row."""
    start = offset = 0
    for part in parts:
        stop = start + part.source.n_cells
        lo, hi = np.searchsorted(kept, [start, stop])
        part.rows = kept[lo:hi] - start
        part.offset = offset
        offset += len(part.rows)
        start = stop
