"""Analysis Datasets as tidy CSV tables."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr


def cell_rows(var: xr.DataArray, dims: tuple[str, ...], start: int, stop: int) -> np.ndarray:
    """Cells ``start:stop`` of a per-cell result variable, as a numpy array.

    Parameters
    ----------
    var
        A variable of ``res.counts`` or ``res.relations`` (numpy- or Dask-backed), with a
        ``cell`` dim.
    dims
        Its dims in the order wanted, ``cell`` first: ``('cell', 'cutoff')``.
    start, stop
        The cells.

    Returns
    -------
    numpy.ndarray
        The rows, read here from the stored chunks they fall in when ``var`` is
        Dask-backed (in this process, not on a cluster: a block is small).
    """
    data = var.transpose(*dims).data[start:stop]
    if isinstance(data, np.ndarray):
        return data
    return np.asarray(data.compute(scheduler="synchronous"))


def group_sum(values, codes: np.ndarray, mask: np.ndarray, n_groups: int) -> np.ndarray:
    """``(n_groups + 1,)``: sums of ``values`` over the masked cells of each group, then all.

    Parameters
    ----------
    values
        ``(n_cells,)`` numbers (bools count as 0/1).
    codes
        ``(n_cells,)`` int group codes in ``[0, n_groups)``.
    mask
        ``(n_cells,)`` bool: the cells to include.
    n_groups
        Number of groups.

    Returns
    -------
    numpy.ndarray
        float64 sums per group, the overall sum last.
    """
    weights = np.broadcast_to(np.asarray(values, dtype=np.float64), mask.shape)[mask]
    sums = np.bincount(codes[mask], weights=weights, minlength=n_groups)
    return np.append(sums, weights.sum())


def group_mean(values, codes: np.ndarray, mask: np.ndarray, n_groups: int) -> np.ndarray:
    """``(n_groups + 1,)``: means of finite ``values`` over the masked cells per group, then all.

    Parameters
    ----------
    values
        ``(n_cells,)`` float values; NaN entries are left out.
    codes, mask, n_groups
        As for :func:`group_sum`.

    Returns
    -------
    numpy.ndarray
        float64 means per group (NaN for a group without values), the overall mean last.
    """
    values = np.asarray(values, dtype=np.float64)
    mask = mask & np.isfinite(values)
    total = group_sum(values, codes, mask, n_groups)
    count = group_sum(1.0, codes, mask, n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def tidy_frame(ds: xr.Dataset) -> pd.DataFrame:
    """A Dataset as one long table: a row per coordinate combination, a column per variable.

    Variables sharing the same dims go through ``Dataset.to_dataframe()`` together (dims
    become leading columns); groups with different dims (per-cell values beside
    per-cell-type values, or scalars) are stacked, each row leaving the other groups'
    columns empty. No cross product of unrelated dims is formed.

    Parameters
    ----------
    ds
        Any Dataset returned by ``rankdist.analysis``.

    Returns
    -------
    pandas.DataFrame
        The long table, with a plain RangeIndex.
    """
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, var in ds.data_vars.items():
        groups.setdefault(tuple(var.dims), []).append(str(name))
    frames = []
    for dims, names in groups.items():
        sub = ds[names]
        if dims:
            sub = sub.drop_vars([c for c in sub.coords if not set(sub[c].dims) <= set(dims)])
            frames.append(sub.to_dataframe().reset_index())
        else:
            frames.append(pd.DataFrame({n: [sub[n].item()] for n in names}))
    if not frames:
        return pd.DataFrame()
    # nullable ints, so an int column stays int where other groups' rows leave it empty
    frames = [
        f.astype({c: "Int64" for c in f.columns if pd.api.types.is_integer_dtype(f[c])})
        for f in frames
    ]
    return pd.concat(frames, ignore_index=True, sort=False)


def write_tables(datasets: dict[str, xr.Dataset], out_dir: str | os.PathLike) -> list[Path]:
    """Write each Dataset as ``<key>.csv`` in ``out_dir`` (made if missing).

    Parameters
    ----------
    datasets
        Table name -> Dataset (from :func:`purity`, :func:`batch_mixing`, ...).
    out_dir
        Directory for the CSV files.

    Returns
    -------
    list of pathlib.Path
        The files written, in the order of ``datasets``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, ds in datasets.items():
        if not key or "/" in key or key.startswith("."):
            msg = f"table name {key!r} is not a plain file name"
            raise ValueError(msg)
        path = out / f"{key}.csv"
        tidy_frame(ds).to_csv(path, index=False)
        paths.append(path)
    return paths
