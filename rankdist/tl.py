"""``rankdist.tl.purity``: the purity table of the neighbour graph an AnnData carries.

The scanpy-style counterpart of :func:`rankdist.purity_table` for the graph that
:func:`rankdist.pp.neighbors` wrote (or any kNN graph under scanpy's keys). See
docs/scanpy.md.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import xarray as xr

from rankdist.analysis.purity import purity_table
from rankdist.io.store import Labels
from rankdist.pp import provenance_key
from rankdist.reduce.result import NeighborResult, load


def purity(
    adata,
    cell_type: str | None = None,
    *,
    coarse_type: str | None = None,
    batch: str | None = None,
    neighbors_key: str | None = None,
) -> pd.DataFrame:
    """Per label value and overall, the share of each cell's neighbours with its own label.

    Give exactly one obs column, as the label role it plays: ``cell_type='bulk_labels'``,
    ``coarse_type=...`` or ``batch=...``.

    The table is found in one of two ways:

    - when :func:`rankdist.pp.neighbors` ran with ``store=`` and counted relations by the
      same column (``cell_type=`` ... there too), and the store still holds the run for
      these cells: :func:`rankdist.purity_table` of that run, top-k and every cutoff;
    - otherwise, from the graph in ``obsp[uns[neighbors_key]['distances_key']]`` and the
      labels in ``adata.obs``: the **top-k scope only** (``cells``, ``expected``,
      ``topk_same``). A cell whose row of the graph is empty (excluded: constant over
      the genes) counts nowhere, as in :func:`rankdist.purity_table`.

    Parameters
    ----------
    adata
        An AnnData with a neighbour graph (:func:`rankdist.pp.neighbors`, or
        ``sc.pp.neighbors``: every non-empty row must hold the same number of neighbours).
    cell_type, coarse_type, batch
        The obs column holding the labels, under the role it plays; exactly one.
    neighbors_key
        As in scanpy's ``tl`` functions: the ``key_added`` of the neighbours (default:
        ``uns['neighbors']``).

    Returns
    -------
    pandas.DataFrame
        As :func:`rankdist.purity_table`: one row per label value plus ``'all'``,
        index named after the role; columns ``cells``, ``expected``, ``topk_same`` and,
        from a stored run, ``same@c`` and ``none@c`` per cutoff.
    """
    role, column = _one_role(cell_type=cell_type, coarse_type=coarse_type, batch=batch)
    key = "neighbors" if neighbors_key is None else neighbors_key
    entry = _neighbors_entry(adata, key)
    record = adata.uns.get(provenance_key(neighbors_key), {})
    stored = _stored_result(adata, record, role, column)
    if stored is not None:
        return purity_table(stored, role)
    labels = _obs_labels(adata, role, column)
    res = _topk_result(adata, entry["distances_key"], key, labels, record)
    return purity_table(res, role)


def _one_role(**columns: str | None) -> tuple[str, str]:
    given = {role: col for role, col in columns.items() if col is not None}
    if len(given) != 1:
        msg = (
            f"give exactly one label column, e.g. purity(adata, cell_type='bulk_labels') "
            f"(or coarse_type=, batch=); got {given or 'none'}"
        )
        raise TypeError(msg)
    return next(iter(given.items()))


def _neighbors_entry(adata, key: str) -> dict:
    entry = adata.uns.get(key)
    if not isinstance(entry, dict) or "distances_key" not in entry:
        found = sorted(
            name for name, v in adata.uns.items() if isinstance(v, dict) and "distances_key" in v
        )
        msg = (
            f"no neighbours under uns[{key!r}]; run rankdist.pp.neighbors(adata"
            f"{'' if key == 'neighbors' else f', key_added={key!r}'}) first"
            + (f", or pass neighbors_key= one of {found}" if found else "")
        )
        raise KeyError(msg)
    if entry["distances_key"] not in adata.obsp:
        msg = (
            f"uns[{key!r}] names obsp[{entry['distances_key']!r}], which adata lacks; "
            "rerun rankdist.pp.neighbors"
        )
        raise KeyError(msg)
    return entry


def _stored_result(adata, record, role: str, column: str) -> NeighborResult | None:
    """The run ``record`` names, if it holds these cells and counted by ``column``."""
    if "store" not in record or "run" not in record:
        return None
    store, run = str(record["store"]), str(record["run"])
    if not Path(store).is_dir():
        warnings.warn(
            f"the store {store} that rankdist.pp.neighbors used is gone; purity from the "
            "graph in adata: top-k only",
            UserWarning,
            stacklevel=3,
        )
        return None
    res = load(store, run)
    same_cells = res.n_cells == adata.n_obs and np.array_equal(
        res.cell_names.astype(str), adata.obs_names.to_numpy(dtype=str)
    )
    if not same_cells:
        msg = (
            f"run {run!r} of {store} holds other cells than adata; rerun "
            "rankdist.pp.neighbors on this AnnData"
        )
        raise ValueError(msg)
    labels = res.labels.get(role)
    if labels is None or labels.column != column:
        counted = {r: lab.column for r, lab in res.labels.items()}
        warnings.warn(
            f"run {run!r} of {store} counted relations by {counted or 'no labels'}, not "
            f"{role}={column!r}; purity from the graph in adata: top-k only (pass "
            f"{role}={column!r} to rankdist.pp.neighbors for the cutoff columns)",
            UserWarning,
            stacklevel=3,
        )
        return None
    return res


def _obs_labels(adata, role: str, column: str) -> Labels:
    if column not in adata.obs.columns:
        msg = f"{role} column {column!r} not in obs; available: {list(adata.obs.columns)}"
        raise KeyError(msg)
    values = adata.obs[column]
    missing = values.isna()
    if missing.any():
        first = list(adata.obs_names[missing.to_numpy()][:3])
        msg = (
            f"obs column {column!r} has {int(missing.sum())} missing value(s) (first cells: "
            f"{first}); fill or drop them first"
        )
        raise ValueError(msg)
    cat = pd.Categorical(
        values.cat.remove_unused_categories()
        if isinstance(values.dtype, pd.CategoricalDtype)
        else values.astype(str)
    )
    return Labels(
        role=role,
        column=column,
        codes=np.asarray(cat.codes, dtype=np.int32),
        categories=tuple(str(c) for c in cat.categories),
    )


def _topk_result(adata, dkey: str, key: str, labels: Labels, record) -> NeighborResult:
    """A top-k-only :class:`NeighborResult` from the distance graph (no cutoff counts)."""
    graph = sp.csr_matrix(adata.obsp[dkey])
    per_row = np.diff(graph.indptr)
    excluded = per_row == 0
    k = int(per_row.max()) if graph.nnz else 0
    if k == 0 or (per_row[~excluded] != k).any():
        msg = (
            f"obsp[{dkey!r}] (uns[{key!r}]) has {sorted(set(per_row[~excluded].tolist()))} "
            "neighbours per cell; purity needs the same k for every cell with neighbours "
            "(a kNN graph from rankdist.pp.neighbors or sc.pp.neighbors)"
        )
        raise ValueError(msg)
    n = adata.n_obs
    indices = np.full((n, k), -1, dtype=np.int64)
    similarities = np.full((n, k), np.nan, dtype=np.float32)
    indices[~excluded] = graph.indices.reshape(-1, k)
    similarities[~excluded] = (1.0 - graph.data.astype(np.float64)).reshape(-1, k)
    metadata = {k_: v for k_, v in dict(record).items() if k_ in ("name", "encoding")}
    return NeighborResult(
        indices=indices,
        similarities=similarities,
        excluded=excluded,
        cell_names=adata.obs_names.to_numpy(dtype=str),
        cutoffs=(),
        counts=xr.Dataset(),
        labels={labels.role: labels},
        metadata=metadata,
    )
