"""The report's Findings section (first on the page): sentences, the table, every run ranked.

It is built last, from what the other sections computed while each run was read once
(:func:`rankdist.analysis.findings.run_statistics` in the run's own pass, the neighbour
overlaps in the comparison with the baseline), and placed first. See docs/report.md.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankdist.analysis.readings import QUESTIONS, findings_table, readings
from rankdist.report import figures as figs
from rankdist.report import html as markup

#: Colour of the findings box (the Chromium test finds it in the first screen).
BOX = "#eaf5ec"
#: Metrics ranked in the side-by-side table and figure (top-k), where the runs have them.
RANKED = (
    "same_type",
    "similar_type",
    "other_class",
    "excess_same_batch",
    "batch_driven",
    "ilisi",
    "kbet_acceptance",
    "overlap",
)
#: Per ranked metric, whether the ranking lists the highest value first: the order in
#: which the question reads well (most same-type neighbours, fewest batch-driven ones).
HIGHEST_FIRST = {
    "same_type": True,
    "similar_type": True,
    "other_class": False,
    "excess_same_batch": False,
    "batch_driven": False,
    "ilisi": True,
    "kbet_acceptance": True,
    "overlap": True,
}


def findings_section(rep, baseline: str | None) -> markup.Section:
    """The Findings section: sentences, the value table, and with > 2 runs the ranking.

    Parameters
    ----------
    rep
        The :class:`rankdist.report.sections.ReportContext` after the other sections ran
        (its runs' statistics and the overlaps with the baseline are computed).
    baseline
        The run every other run is compared with in words, or None.

    Returns
    -------
    rankdist.report.html.Section
    """
    sec = markup.Section("Findings", "findings")
    stats = [rep.run_tables(name).findings for name in rep.runs]
    stats = [st for st in stats if st is not None]
    if not stats:
        sec.add(markup.note(markup.NO_CELL_TYPE))
        return sec
    table = findings_table([*stats, *rep.overlaps])
    paths = rep.tables_frame({"findings": table})
    first = stats[0]
    if baseline is not None:
        sentences = readings(table, baseline)
    else:
        sentences = _plain_readings(table)
    items = "".join(f"<li>{markup.esc(s)}</li>" for s in sentences)
    over = "batches (a cluster bootstrap)" if first.over == "batches" else "cells"
    against = f" Differences are against <b>{markup.esc(baseline)}</b>." if baseline else ""
    sec.add(
        f'<div class="findings" style="background:{BOX}; border-left:4px solid #2e8b57; '
        f'padding:6px 14px; margin:8px 0"><ul>{items}</ul>'
        f"<p>In brackets: 95 % intervals from {first.replicates.shape[0]:,} bootstrap "
        f"resamples of the {first.n_units:,} {over}, seed {first.seed}; a difference "
        f"between two runs is resampled paired, over the same draws.{against}</p></div>"
    )
    sec.add(markup.table(_value_frame(table)))
    runs = [st.run for st in stats]
    if len(runs) > 2:  # side by side: with two runs the value table already is
        sec.add("<h3>Every run side by side, ranked on each metric</h3>")
        ranked = _ranking_frame(table, runs)
        sec.add(markup.table(ranked, index=True))
        saved = rep.figure(_ranking_figure(table, runs), "findings_ranking")
        sec.add(markup.figure(saved, "every run on each metric, with 95 % intervals"))
    sec.add(markup.explanation(markup.FINDINGS))
    sec.add(markup.file_links(paths, rep.out))
    return sec


def _plain_readings(table: pd.DataFrame) -> list[str]:
    """Without a baseline: each run's top-k values in words, no comparison."""
    from rankdist.analysis.readings import READ, reading

    rows = table[(table["statistic"] == "value") & (table["scope"] == "top-k")]
    out = []
    for run in dict.fromkeys(rows["run"]):
        for metric in READ:
            row = rows[(rows["run"] == run) & (rows["metric"] == metric)]
            if not row.empty:
                r = row.iloc[0]
                out.append(reading(metric, run, (r.value, r.ci_low, r.ci_high)))
    return out


def _cell(value: float, low: float, high: float, metric: str) -> str:
    """``'81.2 % [80.1, 82.3]'`` for a share, ``'1.52 [1.40, 1.61]'`` for a plain number."""
    share = metric in QUESTIONS and QUESTIONS[metric][1]
    scale, fmt = (100.0, "{:.1f}") if share else (1.0, "{:.2f}")
    if not np.isfinite(value):
        return "\u2013"
    unit = (" points" if metric == "excess_same_batch" else " %") if share else ""
    text = fmt.format(scale * value) + unit
    if np.isfinite(low) and np.isfinite(high):
        text += f" [{fmt.format(scale * low)}, {fmt.format(scale * high)}]"
    return text


def _value_frame(table: pd.DataFrame) -> pd.DataFrame:
    """One row per metric and scope, one column per run: ``value [ci_low, ci_high]``."""
    rows = table[table["statistic"] == "value"]
    out: dict[str, dict[str, str]] = {}
    for r in rows.itertuples(index=False):
        label = f"{r.metric} ({r.scope})"
        if r.metric == "overlap":
            label = f"overlap with {r.versus} (top-k)"
        out.setdefault(r.run, {})[label] = _cell(r.value, r.ci_low, r.ci_high, r.metric)
    frame = pd.DataFrame(out).fillna("\u2013")
    frame.index.name = "metric (scope)"
    return frame


def _ranking_frame(table: pd.DataFrame, runs: list[str]) -> pd.DataFrame:
    """Per top-k metric, the runs from best to worst, each with its value and interval."""
    rows = table[(table["statistic"] == "value") & (table["scope"] == "top-k")]
    out = {}
    for metric in RANKED:
        part = rows[rows["metric"] == metric]
        if part.empty:
            continue
        part = part.sort_values("value", ascending=not HIGHEST_FIRST[metric])
        out[metric] = [
            f"{r.run}: {_cell(r.value, r.ci_low, r.ci_high, metric)}"
            for r in part.itertuples(index=False)
        ]
    width = max((len(v) for v in out.values()), default=0)
    frame = pd.DataFrame(
        {m: v + [""] * (width - len(v)) for m, v in out.items()},
        index=pd.Index([f"#{i + 1}" for i in range(width)], name="rank"),
    ).T
    frame.index.name = "metric (top-k)"
    return frame


def _ranking_figure(table: pd.DataFrame, runs: list[str]):
    """One panel per top-k metric: every run's value with its 95 % interval, best on top."""
    rows = table[(table["statistic"] == "value") & (table["scope"] == "top-k")]
    metrics = [m for m in RANKED if (rows["metric"] == m).any()]
    ncols = min(4, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig = figs.new_figure(3.2 * ncols, 0.35 * len(runs) * nrows + 1.2 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, metric in zip(axes, metrics, strict=False):
        part = rows[rows["metric"] == metric].sort_values("value", ascending=HIGHEST_FIRST[metric])
        y = np.arange(len(part))
        value = part["value"].to_numpy()
        low = np.where(np.isfinite(part["ci_low"]), value - part["ci_low"], 0)
        high = np.where(np.isfinite(part["ci_high"]), part["ci_high"] - value, 0)
        ax.errorbar(value, y, xerr=[low, high], fmt="o", color="#4c72b0", capsize=3)
        labels = part["run"].tolist()
        if metric == "overlap":
            labels = [f"{r} vs {v}" for r, v in zip(part["run"], part["versus"], strict=True)]
        ax.set_yticks(y, labels, fontsize=8)
        order = "highest" if HIGHEST_FIRST[metric] else "lowest"
        ax.set_title(f"{metric} ({order} on top)", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    return fig
