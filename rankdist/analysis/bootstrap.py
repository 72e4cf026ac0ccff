"""Bootstrap of pooled shares: resample cells, or batches (a cluster bootstrap), with a seed.

Every findings metric is a ratio of sums, ``sum(num) / sum(den)`` over cells. Summed per
resampling unit (a cell, or a batch), one resample is the units drawn with replacement and
their sums added up. The units are drawn from ``numpy.random.default_rng(seed)``, one
``rng.integers(0, n_units, n_units)`` per resample, so two runs resampled with the same
seed over the same units see the same draws: their difference is a paired bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Resamples whose unit counts are multiplied into the sums at once: a (this, n_units) block.
_RESAMPLE_BLOCK = 8


@dataclass
class RunStatistics:
    """One run's metrics on the data and on every resample (what the findings table is made of).

    Attributes
    ----------
    run, encoding
        The run's name and encoding.
    keys
        ``(metric, scope)`` of each column of ``value`` / ``replicates``.
    value
        ``(n_metrics,)`` float64 ratios of sums.
    replicates
        ``(resamples, n_metrics)`` the same on each resample.
    cells
        ``(n_metrics,)`` int64: cells that contribute (a denominator > 0).
    over
        ``'cells'`` or ``'batches'``; ``n_units`` of them were resampled.
    n_cells
        Cells of the store (excluded ones too): runs are paired only over the same cells.
    seed
        Seed of the resamples' draws.
    versus
        For a pair statistic (the neighbour overlap), the other run; else ``''``.
    """

    run: str
    encoding: str
    keys: list[tuple[str, str]]
    value: np.ndarray
    replicates: np.ndarray
    cells: np.ndarray
    over: str
    n_units: int
    n_cells: int
    seed: int
    versus: str = ""


def unit_codes(batch_codes: np.ndarray | None, n_cells: int) -> tuple[np.ndarray, str]:
    """Each cell's resampling unit, numbered ``0..n_units-1``, and what a unit is.

    Parameters
    ----------
    batch_codes
        ``(n_cells,)`` int batch codes, or None when the store has no batch labels.
    n_cells
        Number of cells (all of them, excluded ones too).

    Returns
    -------
    codes : numpy.ndarray
        ``(n_cells,)`` int64: the cell's own index without batches; else the rank of its
        batch among the batches that hold a cell (unused categories are no unit).
    over : str
        ``'cells'`` or ``'batches'``.
    """
    if batch_codes is None:
        return np.arange(n_cells, dtype=np.int64), "cells"
    _, codes = np.unique(np.asarray(batch_codes, dtype=np.int64), return_inverse=True)
    return codes.astype(np.int64), "batches"


def bootstrap_ratios(
    num: np.ndarray, den: np.ndarray, resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every metric's ratio of sums on the data and on each resample of the units.

    Parameters
    ----------
    num, den
        ``(n_units, n_metrics)`` float64: per unit, each metric's numerator and
        denominator summed over the unit's cells.
    resamples
        Number of resamples (0 for none).
    seed
        Seed of ``numpy.random.default_rng``; resample r draws
        ``rng.integers(0, n_units, n_units)``.

    Returns
    -------
    value : numpy.ndarray
        ``(n_metrics,)``: ``num.sum(0) / den.sum(0)``, NaN where the denominator is 0.
    replicates : numpy.ndarray
        ``(resamples, n_metrics)``: the same on each resample (NaN where a resample's
        denominator is 0).
    """
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    n_units = num.shape[0]
    rng = np.random.default_rng(seed)
    value = _ratio(num.sum(axis=0), den.sum(axis=0))
    replicates = np.empty((resamples, num.shape[1]))
    for start in range(0, resamples, _RESAMPLE_BLOCK):
        stop = min(resamples, start + _RESAMPLE_BLOCK)
        weights = np.stack(
            [
                np.bincount(rng.integers(0, n_units, n_units), minlength=n_units)
                for _ in range(start, stop)
            ]
        ).astype(np.float64)
        replicates[start:stop] = _ratio(weights @ num, weights @ den)
    return value, replicates


def percentile_interval(
    replicates: np.ndarray, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """The percentile bootstrap interval of each column, ignoring NaN replicates.

    Parameters
    ----------
    replicates
        ``(resamples, n)`` values.
    level
        Coverage, e.g. 0.95 for the 2.5 % and 97.5 % quantiles.

    Returns
    -------
    tuple of numpy.ndarray
        ``(n,)`` lower and upper bounds (NaN without a finite replicate).
    """
    tail = (1.0 - level) / 2.0
    if replicates.shape[0] == 0 or not np.isfinite(replicates).any():
        nan = np.full(replicates.shape[1], np.nan)
        return nan, nan.copy()
    finite = np.isfinite(replicates).any(axis=0)
    low = np.full(replicates.shape[1], np.nan)
    high = low.copy()
    low[finite] = np.nanquantile(replicates[:, finite], tail, axis=0)
    high[finite] = np.nanquantile(replicates[:, finite], 1.0 - tail, axis=0)
    return low, high


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
