"""Purity: what share of a cell's relations share its cell type, or only its coarse class.

A *relation* of a cell is one of its top-k neighbours (scope ``top-k``) or any other valid
cell whose similarity to it is at or above a cutoff c (scope ``>=c``). Everything here is
read from ``res.indices`` and ``res.counts``: no pair is recomputed. See docs/analysis.md.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import xarray as xr

from rankdist.analysis.hierarchy import Hierarchy, resolve
from rankdist.analysis.tables import group_mean, group_sum
from rankdist.reduce.result import NeighborResult

TOPK = "top-k"


def scope_name(cutoff: float) -> str:
    """The ``scope`` label of a cutoff: ``'>=0.5'``."""
    return f">={cutoff:g}"


def relations_by_label(res: NeighborResult, role: str) -> list[tuple[str, float, np.ndarray]]:
    """Per scope, every cell's relations counted by the partner's label.

    Parameters
    ----------
    res
        A neighbours result with labels ``role``.
    role
        ``'cell_type'``, ``'coarse_type'`` or ``'batch'``.

    Returns
    -------
    list of (scope, cutoff, counts)
        ``('top-k', nan, (n_cells, n_labels) int64)`` from ``res.indices``, then one
        ``('>=c', c, ...)`` per cutoff from ``res.counts[role]`` (if stored). Rows of
        excluded cells are zero.
    """
    if role not in res.labels:
        msg = f"no {role!r} labels in this result; stored roles: {sorted(res.labels)}"
        raise KeyError(msg)
    lab = res.labels[role]
    n_labels = len(lab.categories)
    valid = ~res.excluded
    rows = np.flatnonzero(valid)
    partner = lab.codes[res.indices[rows]].astype(np.int64)
    flat = (np.arange(len(rows))[:, None] * n_labels + partner).ravel()
    topk = np.zeros((res.n_cells, n_labels), dtype=np.int64)
    topk[rows] = np.bincount(flat, minlength=len(rows) * n_labels).reshape(len(rows), n_labels)
    out = [(TOPK, float("nan"), topk)]
    if role in res.counts:
        # counts[role] is read by position: its last axis follows lab.categories
        arr = (
            res.counts[role]
            .transpose("cell", "cutoff", f"neighbor_{role}")
            .to_numpy()
            .astype(np.int64)
        )
        if arr.shape != (res.n_cells, len(res.cutoffs), n_labels):
            msg = (
                f"counts[{role!r}] has shape {arr.shape}; expected "
                f"{(res.n_cells, len(res.cutoffs), n_labels)} (cells, cutoffs, labels)"
            )
            raise ValueError(msg)
        for c, cut in enumerate(res.cutoffs):
            out.append((scope_name(cut), float(cut), arr[:, c, :]))
    return out


def purity(
    res: NeighborResult, hierarchy: Hierarchy | str | os.PathLike | None = None
) -> xr.Dataset:
    """Share of each cell type's relations with the same type, a sibling type, or another class.

    Parameters
    ----------
    res
        A neighbours result with ``cell_type`` labels.
    hierarchy
        A :class:`Hierarchy`, or a CSV path for :func:`load_hierarchy`. None uses the
        stored ``coarse_type`` labels where there are any; without a hierarchy,
        ``similar_type``, ``different_coarse`` and their chance levels are NaN.

    Returns
    -------
    xarray.Dataset
        Dims ``cell_type`` (every fine type, then ``'all'``) and ``scope`` (``'top-k'``,
        then ``'>=c'`` per cutoff); coords ``cutoff`` (on scope, NaN for top-k) and
        ``coarse_type`` (on cell_type). Every variable has both dims:

        - ``same_type``, ``similar_type`` (same coarse class, other fine type),
          ``different_coarse``, ``different_type`` (= 1 - same_type): shares of the
          relations of the group's cells, pooled over relations;
        - ``same_type_cell_mean``: mean of per-cell same-type shares over the cells with
          at least one relation;
        - ``expected_same_type``, ``expected_similar_type``, ``expected_different_coarse``:
          chance levels (``(n_t - 1) / (N - 1)`` and so on, see docs/analysis.md);
        - ``cells`` (int64): valid cells of the type; ``cells_without_relation`` (int64):
          those with no relation in the scope; ``relations`` (int64): relations pooled.
    """
    hier = resolve(res, hierarchy)
    lab = res.labels["cell_type"]
    codes = lab.codes.astype(np.int64)
    n_types = len(lab.categories)
    valid = ~res.excluded
    scopes = relations_by_label(res, "cell_type")
    rows = np.arange(res.n_cells)
    shape = (n_types + 1, len(scopes))
    same_type = np.full(shape, np.nan)
    similar = np.full(shape, np.nan)
    cell_mean = np.full(shape, np.nan)
    relations = np.zeros(shape, dtype=np.int64)
    without = np.zeros(shape, dtype=np.int64)
    for s, (_, _, by_type) in enumerate(scopes):
        total = by_type.sum(axis=1)
        same = by_type[rows, codes]
        n_rel = group_sum(total, codes, valid, n_types)
        relations[:, s] = n_rel
        without[:, s] = group_sum(total == 0, codes, valid, n_types)
        with np.errstate(invalid="ignore", divide="ignore"):
            same_type[:, s] = np.where(
                n_rel > 0, group_sum(same, codes, valid, n_types) / n_rel, np.nan
            )
            per_cell = np.where(total > 0, same / np.maximum(total, 1), np.nan)
            cell_mean[:, s] = group_mean(per_cell, codes, valid, n_types)
            if hier is not None:
                onehot = np.eye(len(hier.coarse), dtype=np.int64)[hier.fine_to_coarse]
                by_coarse = by_type @ onehot
                sibling = by_coarse[rows, hier.fine_to_coarse[codes]] - same
                similar[:, s] = np.where(
                    n_rel > 0, group_sum(sibling, codes, valid, n_types) / n_rel, np.nan
                )
    expected = _chance(codes, valid, n_types, hier)
    type_names = [*lab.categories, "all"]
    coarse_names = (
        [hier.coarse[c] for c in hier.fine_to_coarse] + [""] if hier else [""] * len(type_names)
    )
    dims = ("cell_type", "scope")

    def var(values, meaning):
        return xr.Variable(dims, values, attrs={"meaning": meaning})

    def per_type(values):
        return np.repeat(np.asarray(values)[:, None], len(scopes), axis=1)

    ds = xr.Dataset(
        {
            "same_type": var(same_type, "share of relations with the same fine type (pooled)"),
            "similar_type": var(similar, "share with another fine type of the same coarse class"),
            "different_coarse": var(
                1.0 - same_type - similar, "share with a cell of another coarse class"
            ),
            "different_type": var(1.0 - same_type, "share with another fine type"),
            "same_type_cell_mean": var(
                cell_mean, "mean over cells with >= 1 relation of the per-cell same-type share"
            ),
            "expected_same_type": var(
                per_type(expected["same"]), "chance: share of other valid cells of the type"
            ),
            "expected_similar_type": var(
                per_type(expected["similar"]),
                "chance: share of other valid cells of a sibling type",
            ),
            "expected_different_coarse": var(
                per_type(1.0 - expected["same"] - expected["similar"]),
                "chance: share of other valid cells of another coarse class",
            ),
            "cells": var(per_type(expected["cells"]), "valid (non-excluded) cells"),
            "cells_without_relation": var(without, "cells with no relation in the scope"),
            "relations": var(relations, "relations pooled (pairs counted from both ends)"),
        },
        coords={
            "cell_type": type_names,
            "scope": [name for name, _, _ in scopes],
            "cutoff": ("scope", [cut for _, cut, _ in scopes]),
            "coarse_type": ("cell_type", coarse_names),
        },
        attrs={
            "k": res.k,
            "run": str(res.metadata.get("name", "")),
            "encoding": str(res.metadata.get("encoding", "")),
            "hierarchy": "none" if hier is None else ",".join(hier.coarse),
        },
    )
    return ds


def _chance(codes, valid, n_types, hier) -> dict[str, np.ndarray]:
    """Chance levels per type and for all cells: a partner drawn from the other valid cells."""
    n_t = np.bincount(codes[valid], minlength=n_types).astype(np.int64)
    n = int(n_t.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        same = np.where(n_t > 0, (n_t - 1) / (n - 1), np.nan)
        same_all = float((n_t * (n_t - 1)).sum() / (n * (n - 1)))
        if hier is not None:
            m_c = np.bincount(hier.fine_to_coarse, weights=n_t, minlength=len(hier.coarse))
            sib = m_c[hier.fine_to_coarse] - n_t
            similar = np.where(n_t > 0, sib / (n - 1), np.nan)
            similar_all = float((n_t * sib).sum() / (n * (n - 1)))
        else:
            similar = np.full(n_types, np.nan)
            similar_all = np.nan
    return {
        "same": np.append(same, same_all),
        "similar": np.append(similar, similar_all),
        "cells": np.append(n_t, n),
    }


def purity_table(res: NeighborResult, role: str = "cell_type") -> pd.DataFrame:
    """Per label value and overall: the share of relations with the same label.

    Parameters
    ----------
    res
        A neighbours result whose store has the label ``role``.
    role
        ``'cell_type'``, ``'coarse_type'`` or ``'batch'``.

    Returns
    -------
    pandas.DataFrame
        One row per label value plus ``'all'``, columns:

        - ``cells``: valid (non-excluded) cells;
        - ``expected``: chance, the share of the other valid cells with the label,
          ``(n_l - 1) / (N - 1)`` (``'all'``: ``sum n_l (n_l - 1) / (N (N - 1))``);
        - ``topk_same``: mean share of a cell's k neighbours with its label;
        - ``same@c``: at each cutoff c, the share of all relations (similarity >= c) of
          the label's cells that are with the same label, pooled over relations;
        - ``none@c``: cells with no relation at or above c (left out of ``same@c``).

        For ``role='cell_type'`` these are columns of :func:`purity`.
    """
    scopes = relations_by_label(res, role)
    lab = res.labels[role]
    codes = lab.codes.astype(np.int64)
    n_labels = len(lab.categories)
    valid = ~res.excluded
    chance = _chance(codes, valid, n_labels, None)
    rows = np.arange(res.n_cells)
    table = pd.DataFrame(
        {"cells": chance["cells"], "expected": chance["same"]},
        index=pd.Index([*lab.categories, "all"], name=role),
    )
    for name, cut, by_label in scopes:
        total = by_label.sum(axis=1)
        n_rel = group_sum(total, codes, valid, n_labels)
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = group_sum(by_label[rows, codes], codes, valid, n_labels) / n_rel
        shares[n_rel == 0] = np.nan
        if name == TOPK:
            table["topk_same"] = shares
        else:
            table[f"same@{cut:g}"] = shares
            table[f"none@{cut:g}"] = group_sum(total == 0, codes, valid, n_labels).astype(np.int64)
    return table
