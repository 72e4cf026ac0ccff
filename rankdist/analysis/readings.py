"""The findings table (values, intervals, paired differences) and its reading in words.

One sentence per question, worded by the sign of the difference and whether its interval
excludes 0. See docs/analysis.md ("Findings").
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from rankdist.analysis.bootstrap import RunStatistics, percentile_interval

#: Columns of the findings table (``tables/findings.csv``), in order.
COLUMNS = (
    "run",
    "encoding",
    "versus",
    "statistic",
    "metric",
    "scope",
    "value",
    "ci_low",
    "ci_high",
    "n",
    "resampled_over",
    "units",
    "resamples",
    "seed",
)

#: Per metric: the sentence's claim (``{run}``, ``{value}``, ``{ci}``) and whether the
#: metric is a share (written in %, differences in points) or a plain number.
QUESTIONS: dict[str, tuple[str, bool]] = {
    "same_type": ("{run} keeps {value} {ci} of its top-k neighbours in the same cell type", True),
    "similar_type": (
        "{run} finds {value} {ci} of its top-k neighbours in a sibling type "
        "(same coarse class, other type)",
        True,
    ),
    "other_class": (
        "{run} finds {value} {ci} of its top-k neighbours in another coarse class",
        True,
    ),
    "same_batch": ("{run} draws {value} {ci} of its top-k neighbours from the cell's batch", True),
    "expected_same_batch": (
        "{run}'s cells would draw {value} {ci} of their neighbours from their own batch if "
        "neighbours were random cells of their own type",
        True,
    ),
    "excess_same_batch": (
        "{run}'s same-batch share exceeds the share expected from each type's batch mix "
        "by {value} {ci}",
        True,
    ),
    "batch_driven": (
        "{run} has {value} {ci} batch-driven neighbours (same batch, other cell type)",
        True,
    ),
    "ilisi": ("{run} has a mean iLISI of {value} {ci}", False),
    "kbet_acceptance": ("{run} passes kBET in {value} {ci} of the neighbourhoods", True),
}
#: Questions answered in the report's sentences, in order.
READ = (
    "same_type",
    "similar_type",
    "other_class",
    "excess_same_batch",
    "batch_driven",
    "ilisi",
    "kbet_acceptance",
)


def _num(x: float, share: bool) -> str:
    return f"{100 * x:.1f}" if share else f"{x:.2f}"


def _interval(low: float, high: float, share: bool) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "[no interval]"
    return f"[{_num(low, share)}, {_num(high, share)}]"


def reading(
    metric: str,
    run: str,
    value: tuple[float, float, float],
    versus: str | None = None,
    difference: tuple[float, float, float] | None = None,
) -> str:
    """One sentence: a run's metric with its interval, and how it differs from ``versus``.

    Parameters
    ----------
    metric
        A key of :data:`QUESTIONS`.
    run
        The run's name.
    value
        ``(value, ci_low, ci_high)``.
    versus, difference
        The other run and ``(run - versus, ci_low, ci_high)``; None for no comparison.

    Returns
    -------
    str
        The difference clause depends on its interval: above 0 gives *"more than"*
        (*"higher than"* for a plain number), below 0 *"fewer than"* (*"lower than"*;
        the size and its interval then written as positive numbers),
        an interval that holds 0 *"no clear difference from"*, and no interval (too few
        units to resample) says so.
    """
    claim, share = QUESTIONS[metric]
    v, lo, hi = value
    unit = " %" if share and metric != "excess_same_batch" else (" points" if share else "")
    text = claim.format(run=run, value=f"{_num(v, share)}{unit}", ci=_interval(lo, hi, share))
    if versus is None or difference is None:
        return text + "."
    d, dlo, dhi = difference
    points = " points" if share else ""
    more, fewer = ("more", "fewer") if share else ("higher", "lower")
    if not (math.isfinite(dlo) and math.isfinite(dhi)):
        return f"{text}; {_num(d, share)}{points} against {versus}, with no interval."
    if dlo > 0:
        size = f"{_num(d, share)}{points} {_interval(dlo, dhi, share)}"
        return f"{text}, {size} {more} than {versus}."
    if dhi < 0:  # "fewer" carries the sign: the size and its interval are positive
        size = f"{_num(-d, share)}{points} {_interval(-dhi, -dlo, share)}"
        return f"{text}, {size} {fewer} than {versus}."
    size = _num(abs(d), share)
    sign = "" if float(size) == 0 else ("+" if d > 0 else "-")  # no "-0.0"
    signed = f"{sign}{size}{points} {_interval(dlo, dhi, share)}"
    return f"{text}, no clear difference from {versus} ({signed}: the interval holds 0)."


def readings(table: pd.DataFrame, baseline: str) -> list[str]:
    """The top-k sentences of every run other than ``baseline``, each compared with it.

    Parameters
    ----------
    table
        A :func:`rankdist.analysis.findings.findings_table`.
    baseline
        The run compared against (e.g. the ``pearson`` run).

    Returns
    -------
    list of str
        Per run (in table order), per question of :data:`READ` that the table holds.
    """
    topk = table[table["scope"] == "top-k"]
    values = topk[topk["statistic"] == "value"]
    diffs = topk[topk["statistic"] == "difference"]
    out = []
    runs = [r for r in dict.fromkeys(values["run"]) if r != baseline]
    for run in runs:
        for metric in READ:
            row = values[(values["run"] == run) & (values["metric"] == metric)]
            if row.empty:
                continue
            r = row.iloc[0]
            out.append(
                reading(
                    metric,
                    run,
                    (r.value, r.ci_low, r.ci_high),
                    baseline,
                    _diff(diffs, run, baseline, metric),
                )
            )
        row = topk[(topk["run"] == run) & (topk["metric"] == "overlap")]
        row = row[row["versus"] == baseline]
        if not row.empty:
            r = row.iloc[0]
            out.append(
                f"{run} shares {_num(r.value, False)} {_interval(r.ci_low, r.ci_high, False)} "
                f"of its top-k neighbourhood with {baseline} (mean Jaccard index; 1: the same "
                "neighbours)."
            )
    return out


def _diff(diffs: pd.DataFrame, run: str, baseline: str, metric: str):
    """``run - baseline`` from the table, whichever way round the pair was written."""
    for a, b, sign in ((run, baseline, 1.0), (baseline, run, -1.0)):
        row = diffs[(diffs["run"] == a) & (diffs["versus"] == b) & (diffs["metric"] == metric)]
        if not row.empty:
            r = row.iloc[0]
            lo, hi = (r.ci_low, r.ci_high) if sign > 0 else (-r.ci_high, -r.ci_low)
            return sign * r.value, lo, hi
    return None


def findings_table(stats: Sequence[RunStatistics], level: float = 0.95) -> pd.DataFrame:
    """Each run's values with intervals, then the paired difference of every pair of runs.

    Parameters
    ----------
    stats
        :func:`run_statistics` of runs of one store (same cells, units, seed and number
        of resamples), and any :func:`overlap_statistics`.
    level
        Interval coverage (percentile bootstrap).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`. ``statistic`` is ``'value'`` (a run's metric; for
        ``overlap``, against the run ``versus``) or ``'difference'`` (``run`` minus
        ``versus``, over the same resamples). ``n``: cells that contribute (for a
        difference, the fewer of the two runs').

    Raises
    ------
    ValueError
        Two runs cannot be paired: different cells, units, seed or resamples.
    """
    rows = []
    for st in stats:
        rows += _rows(st, st.versus, "value", st.value, st.replicates, st.cells, level)
    plain = [st for st in stats if not st.versus]
    for i, a in enumerate(plain):
        for bst in plain[i + 1 :]:
            _check_paired(a, bst)
            common = [key for key in a.keys if key in bst.keys]
            ja = [a.keys.index(key) for key in common]
            jb = [bst.keys.index(key) for key in common]
            diff = a.value[ja] - bst.value[jb]
            reps = a.replicates[:, ja] - bst.replicates[:, jb]
            cells = np.minimum(a.cells[ja], bst.cells[jb])
            sub = dataclasses.replace(a, keys=common)
            rows += _rows(sub, bst.run, "difference", diff, reps, cells, level)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _rows(st, versus, statistic, value, replicates, cells, level) -> list[dict]:
    low, high = percentile_interval(replicates, level)
    return [
        {
            "run": st.run,
            "encoding": st.encoding,
            "versus": versus,
            "statistic": statistic,
            "metric": metric,
            "scope": scope,
            "value": float(value[j]),
            "ci_low": float(low[j]),
            "ci_high": float(high[j]),
            "n": int(cells[j]),
            "resampled_over": st.over,
            "units": st.n_units,
            "resamples": replicates.shape[0],
            "seed": st.seed,
        }
        for j, (metric, scope) in enumerate(st.keys)
    ]


def _check_paired(a: RunStatistics, b: RunStatistics) -> None:
    mine = (a.n_cells, a.over, a.n_units, a.seed, a.replicates.shape[0])
    theirs = (b.n_cells, b.over, b.n_units, b.seed, b.replicates.shape[0])
    if mine != theirs:
        msg = (
            f"runs {a.run!r} and {b.run!r} cannot be paired: (cells, units, n_units, seed, "
            f"resamples) {mine} vs {theirs}; compute both on one store with the same seed"
        )
        raise ValueError(msg)
