"""Purity: what share of a cell's relations share its cell type, or only its coarse class.

A *relation* of a cell is one of its top-k neighbours (scope ``top-k``) or any other valid
cell whose similarity to it is at or above a cutoff c (scope ``>=c``). Everything here is
read from ``res.indices`` and ``res.relations`` (per cell and cutoff: the total and the
same-label count), a block of cells at a time, so memory does not grow with the cells
beyond the N x k top-k: no pair is recomputed, no cell x label array is formed. See
docs/analysis.md.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import xarray as xr

from rankdist.analysis.hierarchy import Hierarchy, resolve
from rankdist.analysis.tables import group_sum
from rankdist.reduce.relations import TOTAL, same_name
from rankdist.reduce.result import NeighborResult

TOPK = "top-k"
#: Cells per block read at once: 2**16 cells x k = 30 neighbours are 16 MB of indices.
BLOCK_CELLS = 1 << 16


def scope_name(cutoff: float) -> str:
    """The ``scope`` label of a cutoff: ``'>=0.5'``."""
    return f">={cutoff:g}"


def _rows(var: xr.DataArray, dims: tuple[str, ...], start: int, stop: int) -> np.ndarray:
    """Cells ``start:stop`` of a result variable, in memory (Dask-backed ones read here)."""
    data = var.transpose(*dims).data[start:stop]
    if isinstance(data, np.ndarray):
        return data
    return np.asarray(data.compute(scheduler="synchronous"))


class PooledRelations:
    """Per scope and label group, the sums purity and purity_table pool, a block at a time.

    Every attribute is ``(n_groups + 1, n_scopes)`` float64, the overall value last:
    ``relations``, ``without`` (cells without a relation), ``same`` (relations with the
    cell's own label), ``sibling`` (with another fine type of its coarse class; zeros
    without a hierarchy), ``share_sum`` and ``share_cells`` (per-cell same-label shares
    summed, and the cells with a share). Integer sums are exact in float64 below 2**53.
    """

    def __init__(self, names: list[tuple[str, float]], n_groups: int):
        self.names = names
        shape = (n_groups + 1, len(names))
        for key in ("relations", "without", "same", "sibling", "share_sum", "share_cells"):
            setattr(self, key, np.zeros(shape))
        self.n_groups = n_groups

    def add(self, s: int, total, same, sibling, codes, valid) -> None:
        """Add one block's per-cell ``total``, ``same`` and ``sibling`` of scope ``s``."""
        n = self.n_groups
        self.relations[:, s] += group_sum(total, codes, valid, n)
        self.without[:, s] += group_sum(total == 0, codes, valid, n)
        self.same[:, s] += group_sum(same, codes, valid, n)
        if sibling is not None:
            self.sibling[:, s] += group_sum(sibling, codes, valid, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_cell = np.where(total > 0, same / np.maximum(total, 1), np.nan)
        shared = valid & np.isfinite(per_cell)
        self.share_sum[:, s] += group_sum(per_cell, codes, shared, n)
        self.share_cells[:, s] += group_sum(1.0, codes, shared, n)

    def share(self, part: np.ndarray) -> np.ndarray:
        """``part / relations``, NaN where a group has no relation."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.relations > 0, part / self.relations, np.nan)


def pooled_relations(
    res: NeighborResult,
    role: str,
    hierarchy: Hierarchy | None = None,
    *,
    block_cells: int | None = None,
) -> PooledRelations:
    """Every scope's relations of each label group, read a block of cells at a time.

    Parameters
    ----------
    res
        A neighbours result with labels ``role``.
    role
        ``'cell_type'``, ``'coarse_type'`` or ``'batch'``.
    hierarchy
        With ``role='cell_type'``: the coarse classes for the sibling counts.
    block_cells
        Cells read at once (default :data:`BLOCK_CELLS`): memory is ``block_cells x
        (k + n_cutoffs)`` numbers (with a hierarchy other than the stored
        ``coarse_type`` labels, also ``block_cells x n_cutoffs x n_types`` counts),
        whatever the number of cells.

    Returns
    -------
    PooledRelations
        Scope ``'top-k'`` from ``res.indices``, then ``'>=c'`` per cutoff from
        ``res.relations`` (where ``same_<role>`` is there). Excluded cells count nowhere.
    """
    if role not in res.labels:
        msg = f"no {role!r} labels in this result; stored roles: {sorted(res.labels)}"
        raise KeyError(msg)
    codes = res.labels[role].codes
    n_groups = len(res.labels[role].categories)
    stored = same_name(role) in res.relations
    if stored:
        _check_relations(res, role)
    names = [(TOPK, float("nan"))]
    names += [(scope_name(c), float(c)) for c in res.cutoffs] if stored else []
    sums = PooledRelations(names, n_groups)
    f2c = None if hierarchy is None else hierarchy.fine_to_coarse
    from_coarse = f2c is not None and _stored_coarse_matches(res, f2c[codes])
    rel_dims = ("cell", "cutoff")
    block_cells = block_cells or BLOCK_CELLS
    for start in range(0, res.n_cells, block_cells):
        stop = min(start + block_cells, res.n_cells)
        own, valid = codes[start:stop].astype(np.int64), ~res.excluded[start:stop]
        partner = codes[res.indices[start:stop]]  # an excluded row's -1s pick any code
        partner[~valid] = -1  # ... and are no label
        same = (partner == own[:, None]).sum(axis=1)
        total = np.where(valid, res.k, 0)
        sibling = None
        if f2c is not None:
            in_class = f2c[partner]
            in_class[~valid] = -1
            sibling = (in_class == f2c[own][:, None]).sum(axis=1) - same
        sums.add(0, total, same, sibling, own, valid)
        if not stored:
            continue
        total = _rows(res.relations["total"], rel_dims, start, stop)
        same = _rows(res.relations[same_name(role)], rel_dims, start, stop)
        in_class = None
        if from_coarse:
            in_class = _rows(res.relations[same_name("coarse_type")], rel_dims, start, stop)
        elif f2c is not None:
            dims = (*rel_dims, f"neighbor_{role}")
            by_type = _rows(res.counts[role], dims, start, stop)
            mask = f2c[None, :] == f2c[own][:, None]
            in_class = (by_type * mask[:, None, :]).sum(axis=2)
        for c in range(len(res.cutoffs)):
            sibling = None if in_class is None else in_class[:, c] - same[:, c]
            sums.add(c + 1, total[:, c], same[:, c], sibling, own, valid)
    return sums


def _check_relations(res: NeighborResult, role: str) -> None:
    want = (res.n_cells, len(res.cutoffs))
    for name in (TOTAL, same_name(role)):
        shape = res.relations[name].transpose("cell", "cutoff").shape
        if shape != want:
            msg = (
                f"relations[{name!r}] has shape {shape}; expected {want} (cells, cutoffs): "
                "the relations do not belong to this result"
            )
            raise ValueError(msg)


def _stored_coarse_matches(res: NeighborResult, coarse_codes: np.ndarray) -> bool:
    """Whether the stored coarse labels are the hierarchy's classes, cell for cell.

    Then ``relations['same_coarse_type']`` is each cell's relations in its class; else
    (a CSV hierarchy grouping the types otherwise) they are summed from the counts.
    """
    if "coarse_type" not in res.labels or same_name("coarse_type") not in res.relations:
        return False
    return np.array_equal(res.labels["coarse_type"].codes, coarse_codes)


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
    sums = pooled_relations(res, "cell_type", hier)
    scopes = sums.names
    same_type = sums.share(sums.same)
    similar = np.full_like(same_type, np.nan) if hier is None else sums.share(sums.sibling)
    with np.errstate(invalid="ignore", divide="ignore"):
        cell_mean = np.where(sums.share_cells > 0, sums.share_sum / sums.share_cells, np.nan)
    relations = sums.relations.astype(np.int64)
    without = sums.without.astype(np.int64)
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
            "scope": [name for name, _ in scopes],
            "cutoff": ("scope", [cut for _, cut in scopes]),
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
    sums = pooled_relations(res, role)
    lab = res.labels[role]
    codes = lab.codes.astype(np.int64)
    n_labels = len(lab.categories)
    chance = _chance(codes, ~res.excluded, n_labels, None)
    table = pd.DataFrame(
        {"cells": chance["cells"], "expected": chance["same"]},
        index=pd.Index([*lab.categories, "all"], name=role),
    )
    shares = sums.share(sums.same)
    for s, (name, cut) in enumerate(sums.names):
        if name == TOPK:
            table["topk_same"] = shares[:, s]
        else:
            table[f"same@{cut:g}"] = shares[:, s]
            table[f"none@{cut:g}"] = sums.without[:, s].astype(np.int64)
    return table
