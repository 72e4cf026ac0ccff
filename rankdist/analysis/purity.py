"""Purity: what fraction of a cell's relations share its label."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankdist.reduce.result import NeighborResult


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
        - ``expected``: the share a random neighbour would have (label frequency);
        - ``topk_same``: mean share of a cell's k neighbours with its label;
        - ``same@c``: at each cutoff c, the share of all relations (similarity >= c) of
          the label's cells that are with the same label, pooled over relations;
        - ``none@c``: cells with no relation at or above c (left out of ``same@c``).
    """
    if role not in res.labels:
        msg = f"no {role!r} labels in this result; stored roles: {sorted(res.labels)}"
        raise KeyError(msg)
    lab = res.labels[role]
    codes = lab.codes
    valid = ~res.excluded
    n_cat = len(lab.categories)
    freq = np.bincount(codes[valid], minlength=n_cat) / valid.sum()
    same_topk = np.full(res.n_cells, np.nan)
    same_topk[valid] = (codes[res.indices[valid]] == codes[valid, None]).mean(axis=1)
    counts = res.counts[role].to_numpy() if role in res.counts else None
    rows = []
    groups = [(c, valid & (codes == i), freq[i]) for i, c in enumerate(lab.categories)]
    groups.append(("all", valid, float((freq * freq).sum())))
    for name, mask, expected in groups:
        row = {
            role: name,
            "cells": int(mask.sum()),
            "expected": expected,
            "topk_same": float(np.mean(same_topk[mask])) if mask.any() else np.nan,
        }
        if counts is not None:
            for c, cut in enumerate(res.cutoffs):
                total = counts[mask, c, :].sum(axis=1)
                same = counts[mask, c, :][np.arange(mask.sum()), codes[mask]]
                row[f"same@{cut:g}"] = same.sum() / total.sum() if total.sum() else np.nan
                row[f"none@{cut:g}"] = int((total == 0).sum())
        rows.append(row)
    return pd.DataFrame(rows).set_index(role)
