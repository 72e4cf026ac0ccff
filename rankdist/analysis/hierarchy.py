"""The cell-type hierarchy: which coarse class each fine cell type belongs to."""

from __future__ import annotations

import csv as csvlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rankdist.reduce.result import NeighborResult


@dataclass(frozen=True, eq=False)
class Hierarchy:
    """Fine cell types nested in coarse classes.

    Attributes
    ----------
    fine
        Fine cell-type names, in the order of the stored ``cell_type`` categories.
    coarse
        Coarse class names.
    fine_to_coarse
        ``(len(fine),)`` int64: the index into ``coarse`` of each fine type.
    """

    fine: tuple[str, ...]
    coarse: tuple[str, ...]
    fine_to_coarse: np.ndarray

    def __post_init__(self):
        if self.fine_to_coarse.shape != (len(self.fine),):
            msg = f"fine_to_coarse {self.fine_to_coarse.shape} != ({len(self.fine)},) fine types"
            raise ValueError(msg)
        bad = (self.fine_to_coarse < 0) | (self.fine_to_coarse >= len(self.coarse))
        if bad.any():
            msg = f"fine types {_names(self.fine, bad)} map outside the {len(self.coarse)} classes"
            raise ValueError(msg)

    def coarse_of(self, fine_codes: np.ndarray) -> np.ndarray:
        """Coarse-class codes of an array of fine-type codes."""
        return self.fine_to_coarse[fine_codes]


def load_hierarchy(res: NeighborResult, csv: str | os.PathLike | None = None) -> Hierarchy:
    """The fine -> coarse mapping of a result's cell types.

    Parameters
    ----------
    res
        A result whose store has ``cell_type`` labels.
    csv
        Optional two-column CSV (``fine,coarse``; a header row is optional). It takes
        precedence over the stored ``coarse_type`` labels. It must name every fine type
        of the store, each with one coarse class, and no other.

    Returns
    -------
    Hierarchy
        Fine types in the stored category order, coarse classes in the stored category
        order (or, from a CSV, in order of first appearance).

    Raises
    ------
    ValueError
        A fine type with two coarse classes (stored labels or CSV), a CSV naming unknown
        types or missing some, or neither a CSV nor stored ``coarse_type`` labels.
    """
    fine_labels = _cell_type_labels(res)
    fine = tuple(fine_labels.categories)
    if csv is not None:
        return _from_csv(fine, Path(csv))
    if "coarse_type" not in res.labels:
        msg = (
            "no cell-type hierarchy: the store has no coarse_type labels. Pass --coarse-type "
            "COL at ingest (rankdist.ingest(..., coarse_type=COL)), or give a two-column CSV "
            "fine,coarse (load_hierarchy(res, csv=PATH))"
        )
        raise ValueError(msg)
    coarse_labels = res.labels["coarse_type"]
    n_fine, n_coarse = len(fine), len(coarse_labels.categories)
    pairs = np.zeros((n_fine, n_coarse), dtype=bool)
    pairs[fine_labels.codes, coarse_labels.codes] = True
    per_fine = pairs.sum(axis=1)
    if (per_fine > 1).any():
        detail = {
            fine[t]: [coarse_labels.categories[c] for c in np.flatnonzero(pairs[t])]
            for t in np.flatnonzero(per_fine > 1)
        }
        msg = (
            f"obs column {coarse_labels.column!r} is not a hierarchy over "
            f"{fine_labels.column!r}: fine types in more than one coarse class: {detail}. "
            "Fix the labels, or pass a CSV fine,coarse (load_hierarchy(res, csv=PATH))"
        )
        raise ValueError(msg)
    if (per_fine == 0).any():
        msg = (
            f"fine types {_names(fine, per_fine == 0)} have no cells, so the stored labels "
            "give them no coarse class; pass a CSV fine,coarse (load_hierarchy(res, csv=PATH))"
        )
        raise ValueError(msg)
    return Hierarchy(
        fine=fine,
        coarse=tuple(coarse_labels.categories),
        fine_to_coarse=pairs.argmax(axis=1).astype(np.int64),
    )


def stored_or_none(res: NeighborResult) -> Hierarchy | None:
    """The stored hierarchy, or None where the store has no ``coarse_type`` labels.

    Inconsistent stored labels still raise: a silent fallback would hide them.
    """
    if "coarse_type" not in res.labels:
        return None
    return load_hierarchy(res)


def resolve(res: NeighborResult, hierarchy) -> Hierarchy | None:
    """``hierarchy`` as given (a Hierarchy or a CSV path), else the stored one, else None."""
    if hierarchy is None:
        return stored_or_none(res)
    if not isinstance(hierarchy, Hierarchy):
        hierarchy = load_hierarchy(res, csv=hierarchy)
    fine = tuple(_cell_type_labels(res).categories)
    if hierarchy.fine != fine:
        msg = f"the hierarchy's fine types {list(hierarchy.fine)} are not the result's {list(fine)}"
        raise ValueError(msg)
    return hierarchy


def _cell_type_labels(res: NeighborResult):
    if "cell_type" not in res.labels:
        msg = (
            f"no cell_type labels in this result (stored roles: {sorted(res.labels)}); "
            "ingest with --cell-type COL (rankdist.ingest(..., cell_type=COL))"
        )
        raise ValueError(msg)
    return res.labels["cell_type"]


def _from_csv(fine: tuple[str, ...], path: Path) -> Hierarchy:
    if not path.is_file():
        msg = f"hierarchy CSV {path} does not exist"
        raise FileNotFoundError(msg)
    with path.open(newline="") as fh:
        rows = [
            [v.strip() for v in row] for row in csvlib.reader(fh) if any(v.strip() for v in row)
        ]
    short = [i + 1 for i, row in enumerate(rows) if len(row) < 2]
    if short:
        msg = f"{path}: rows {short[:5]} have fewer than two columns (want fine,coarse)"
        raise ValueError(msg)
    known = set(fine)
    # A first row whose fine column is not a cell type is a header (e.g. "fine,coarse").
    if rows and rows[0][0] not in known:
        rows = rows[1:]
    mapping: dict[str, str] = {}
    conflicts: dict[str, set[str]] = {}
    for row in rows:
        f, c = row[0], row[1]
        if f in mapping and mapping[f] != c:
            conflicts.setdefault(f, {mapping[f]}).add(c)
        mapping.setdefault(f, c)
    unknown = sorted(set(mapping) - known)
    missing = [f for f in fine if f not in mapping]
    problems = []
    if conflicts:
        problems.append(f"fine types with two coarse classes: {_sorted_sets(conflicts)}")
    if unknown:
        problems.append(f"unknown fine types (not cell types of the store): {unknown}")
    if missing:
        problems.append(f"fine types missing from the CSV: {missing}")
    if problems:
        msg = f"{path}: " + "; ".join(problems) + f". The store's cell types: {list(fine)}"
        raise ValueError(msg)
    coarse = tuple(dict.fromkeys(mapping[f] for f in mapping))
    lookup = {c: i for i, c in enumerate(coarse)}
    f2c = np.array([lookup[mapping[f]] for f in fine], dtype=np.int64)
    return Hierarchy(fine=fine, coarse=coarse, fine_to_coarse=f2c)


def _names(names, mask) -> list[str]:
    return [names[i] for i in np.flatnonzero(mask)]


def _sorted_sets(d: dict[str, set[str]]) -> dict[str, list[str]]:
    return {k: sorted(v) for k, v in sorted(d.items())}
