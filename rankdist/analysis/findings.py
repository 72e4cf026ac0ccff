"""Findings: each run's headline shares with bootstrap intervals, paired differences, sentences.

Every metric is a ratio of sums over cells (``sum(num) / sum(den)``), read from the
stored top-k, relations and batch mixing a block of cells at a time and summed per
resampling unit (a batch where the store has batch labels, else a cell). Intervals come
from :func:`rankdist.analysis.bootstrap.bootstrap_ratios`; two runs of one store
resampled with the same seed share their draws, so their difference is paired. See
docs/analysis.md ("Findings").
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from rankdist.analysis.batch import batch_mixing
from rankdist.analysis.bootstrap import RunStatistics, bootstrap_ratios, unit_codes
from rankdist.analysis.compare import shared_neighbours
from rankdist.analysis.hierarchy import Hierarchy, resolve
from rankdist.analysis.purity import BLOCK_CELLS, TOPK, _stored_coarse_matches, scope_name
from rankdist.analysis.readings import findings_table, readings
from rankdist.analysis.tables import cell_rows
from rankdist.reduce.relations import TOTAL, same_name
from rankdist.reduce.result import NeighborResult

#: Metrics read per scope (top-k and each cutoff); the last two need a hierarchy.
TYPE_METRICS = ("same_type", "similar_type", "other_class")
#: Metrics of the top-k neighbours that need batch labels.
BATCH_METRICS = (
    "same_batch",
    "expected_same_batch",
    "excess_same_batch",
    "batch_driven",
    "ilisi",
    "kbet_acceptance",
)


def run_statistics(
    res: NeighborResult,
    *,
    hierarchy: Hierarchy | str | os.PathLike | None = None,
    mixing=None,
    resamples: int = 1000,
    seed: int = 0,
    block_cells: int = BLOCK_CELLS,
) -> RunStatistics:
    """One run's findings metrics, each with its bootstrap replicates.

    Parameters
    ----------
    res
        A result with ``cell_type`` labels (and ``batch`` labels for the batch metrics).
    hierarchy
        As for :func:`rankdist.analysis.purity`; without one, ``similar_type`` and
        ``other_class`` are left out.
    mixing
        ``batch_mixing(res)`` if already computed (else computed here when there are
        batch labels).
    resamples, seed
        Bootstrap resamples and the seed of their draws.
    block_cells
        Cells read at once.

    Returns
    -------
    RunStatistics
    """
    if "cell_type" not in res.labels:
        msg = f"no cell_type labels in this result (stored roles: {sorted(res.labels)})"
        raise ValueError(msg)
    hier = resolve(res, hierarchy)
    t = res.labels["cell_type"].codes.astype(np.int64)
    has_batch = "batch" in res.labels
    b = res.labels["batch"].codes.astype(np.int64) if has_batch else None
    units, over = unit_codes(b, res.n_cells)
    n_units = int(units.max()) + 1 if len(units) else 0
    f2c = None if hier is None else np.asarray(hier.fine_to_coarse)
    stored = same_name("cell_type") in res.relations
    scopes = [(TOPK, None)]
    scopes += [(scope_name(c), i) for i, c in enumerate(res.cutoffs)] if stored else []
    type_metrics = TYPE_METRICS if f2c is not None else TYPE_METRICS[:1]
    keys = [(m, s) for s, _ in scopes for m in type_metrics]
    if has_batch:
        keys += [(m, TOPK) for m in BATCH_METRICS]
        mixing = batch_mixing(res) if mixing is None else mixing
    column = {key: j for j, key in enumerate(keys)}
    num = np.zeros((n_units, len(keys)))
    den = np.zeros((n_units, len(keys)))
    cells = np.zeros(len(keys), dtype=np.int64)
    from_coarse = f2c is not None and _stored_coarse_matches(res, f2c[t])

    for start in range(0, res.n_cells, block_cells):
        block = slice(start, min(start + block_cells, res.n_cells))
        valid = ~np.asarray(res.excluded[block])
        own = t[block]
        u = units[block]

        def add(key, n_c, d_c, block=block, valid=valid, u=u):
            j = column[key]
            keep = valid & (d_c > 0) & np.isfinite(n_c)
            cells[j] += int(keep.sum())
            n_c, d_c = np.where(keep, n_c, 0.0), np.where(keep, d_c, 0.0)
            if over == "cells":
                num[block, j], den[block, j] = n_c, d_c
            else:
                num[:, j] += np.bincount(u, weights=n_c, minlength=n_units)
                den[:, j] += np.bincount(u, weights=d_c, minlength=n_units)

        nbr = res.indices[block]
        partner = t[nbr]
        partner[~valid] = -1
        same = (partner == own[:, None]).sum(axis=1).astype(np.float64)
        k = np.full(len(own), float(res.k))
        add(("same_type", TOPK), same, k)
        if f2c is not None:
            in_class = f2c[partner]
            in_class[~valid] = -1
            sib = (in_class == f2c[own][:, None]).sum(axis=1) - same
            add(("similar_type", TOPK), sib, k)
            add(("other_class", TOPK), k - same - sib, k)
        for name, c in scopes[1:]:
            total = cell_rows(res.relations[TOTAL], ("cell", "cutoff"), *_se(block))[:, c]
            same_c = cell_rows(
                res.relations[same_name("cell_type")], ("cell", "cutoff"), *_se(block)
            )[:, c]
            add(("same_type", name), same_c, total)
            if f2c is None:
                continue
            if from_coarse:
                klass = cell_rows(
                    res.relations[same_name("coarse_type")], ("cell", "cutoff"), *_se(block)
                )[:, c]
            else:
                dims = ("cell", "cutoff", "neighbor_cell_type")
                by_type = cell_rows(res.counts["cell_type"], dims, *_se(block))[:, c, :]
                klass = (by_type * (f2c[None, :] == f2c[own][:, None])).sum(axis=1)
            add(("similar_type", name), klass - same_c, total)
            add(("other_class", name), total - klass, total)
        if has_batch:
            one = np.ones(len(own))
            bb = b[block]
            driven = ((b[nbr] == bb[:, None]) & (partner != own[:, None])).mean(axis=1)
            same_b = mixing["same_batch"].to_numpy()[block]
            expected = mixing["expected_same_batch"].to_numpy()[block]
            add(("same_batch", TOPK), same_b, one)
            add(("expected_same_batch", TOPK), expected, one)
            add(("excess_same_batch", TOPK), same_b - expected, one)
            add(("batch_driven", TOPK), driven, one)
            add(("ilisi", TOPK), mixing["ilisi"].to_numpy()[block], one)
            pvalues = mixing["kbet_pvalue"].to_numpy()[block]
            alpha = float(mixing.attrs.get("alpha", 0.05))
            accepted = np.where(np.isfinite(pvalues), pvalues >= alpha, np.nan)
            add(("kbet_acceptance", TOPK), accepted, np.where(np.isfinite(pvalues), 1.0, 0.0))

    value, replicates = bootstrap_ratios(num, den, resamples, seed)
    return RunStatistics(
        run=str(res.metadata.get("name", "")),
        encoding=str(res.metadata.get("encoding", "")),
        keys=keys,
        value=value,
        replicates=replicates,
        cells=cells,
        over=over,
        n_units=n_units,
        n_cells=res.n_cells,
        seed=seed,
    )


def _se(block: slice) -> tuple[int, int]:
    return block.start, block.stop


def overlap_statistics(
    jaccard: np.ndarray,
    batch_codes: np.ndarray | None,
    *,
    run: str,
    encoding: str,
    versus: str,
    resamples: int = 1000,
    seed: int = 0,
) -> RunStatistics:
    """The mean neighbour overlap (Jaccard index) of a run with a baseline run, bootstrapped.

    Parameters
    ----------
    jaccard
        ``(n_cells,)`` per-cell Jaccard index of the two top-k sets, NaN where either run
        excluded the cell (``compare_encodings(res, base)['jaccard']``).
    batch_codes
        ``(n_cells,)`` batch codes, or None: resample cells.
    run, encoding, versus
        The run, its encoding and the baseline run.
    resamples, seed
        As for :func:`run_statistics` (the same seed gives the same draws).

    Returns
    -------
    RunStatistics
        One metric, ``('overlap', 'top-k')``, with ``versus`` set.
    """
    jaccard = np.asarray(jaccard, dtype=np.float64)
    units, over = unit_codes(batch_codes, len(jaccard))
    n_units = int(units.max()) + 1 if len(units) else 0
    keep = np.isfinite(jaccard)
    n_c, d_c = np.where(keep, jaccard, 0.0), keep.astype(np.float64)
    if over == "cells":
        num, den = n_c[:, None], d_c[:, None]
    else:
        num = np.bincount(units, weights=n_c, minlength=n_units)[:, None]
        den = np.bincount(units, weights=d_c, minlength=n_units)[:, None]
    value, replicates = bootstrap_ratios(num, den, resamples, seed)
    return RunStatistics(
        run=run,
        encoding=encoding,
        keys=[("overlap", TOPK)],
        value=value,
        replicates=replicates,
        cells=np.array([int(keep.sum())]),
        over=over,
        n_units=n_units,
        n_cells=len(jaccard),
        seed=seed,
        versus=versus,
    )


def neighbour_overlap(res: NeighborResult, base: NeighborResult) -> np.ndarray:
    """``(n_cells,)`` Jaccard index of each cell's top-k sets in two runs (NaN if excluded)."""
    jaccard = np.full(res.n_cells, np.nan)
    for start in range(0, res.n_cells, BLOCK_CELLS):
        block = slice(start, min(start + BLOCK_CELLS, res.n_cells))
        both = ~np.asarray(res.excluded[block]) & ~np.asarray(base.excluded[block])
        shared = shared_neighbours(res.indices[block][both], base.indices[block][both])
        jaccard[np.arange(block.start, block.stop)[both]] = shared / (2 * res.k - shared)
    return jaccard


def findings(
    results: Mapping[str, NeighborResult] | Sequence[NeighborResult],
    *,
    hierarchy: Hierarchy | str | os.PathLike | None = None,
    baseline: str | None = None,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """The findings table of several runs of one store (``tables/findings.csv`` of the report).

    Parameters
    ----------
    results
        Runs by name (or a list; names from their metadata), all of one store.
    hierarchy
        Coarse classes, as for :func:`rankdist.analysis.purity`.
    baseline
        Run that every other run's neighbour overlap is measured against; default the
        first ``pearson`` run, none if there is none.
    resamples, seed, level
        Bootstrap resamples, seed and interval coverage.

    Returns
    -------
    pandas.DataFrame
        See :func:`findings_table`; ``attrs['readings']`` holds the sentences of
        :func:`rankdist.analysis.readings.readings` against ``baseline``.
    """

    if not isinstance(results, Mapping):
        results = {str(r.metadata.get("name", i)): r for i, r in enumerate(results)}
    stats = []
    for name, res in results.items():
        st = run_statistics(res, hierarchy=hierarchy, resamples=resamples, seed=seed)
        st.run = name
        stats.append(st)
    if baseline is None:
        pearson = [n for n, r in results.items() if r.metadata.get("encoding") == "pearson"]
        baseline = pearson[0] if pearson else None
    if baseline is not None and baseline not in results:
        msg = f"baseline {baseline!r} is not among the runs {list(results)}"
        raise ValueError(msg)
    if baseline is not None:
        base = results[baseline]
        batch = base.labels["batch"].codes if "batch" in base.labels else None
        for name, res in results.items():
            if name != baseline and res.k == base.k:
                stats.append(
                    overlap_statistics(
                        neighbour_overlap(res, base),
                        batch,
                        run=name,
                        encoding=str(res.metadata.get("encoding", "")),
                        versus=baseline,
                        resamples=resamples,
                        seed=seed,
                    )
                )
    table = findings_table(stats, level)
    table.attrs["readings"] = readings(table, baseline) if baseline is not None else []
    return table
