"""The report's figures: one function per figure, each returning a matplotlib Figure.

matplotlib is imported inside the functions, and figures are built on
``matplotlib.figure.Figure`` with an Agg canvas: no pyplot state, no GUI backend, nothing
configured at import time. :func:`save_figure` writes each figure as PNG and SVG.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

#: Above this many cell types, per-type lines and labels are drawn without a legend.
MAX_LABELLED_TYPES = 12
#: Above this many cell types, heatmap cells carry no number.
MAX_ANNOTATED_TYPES = 16
PNG_DPI = 110


@dataclass(frozen=True)
class SavedFigure:
    """A figure written to disk: ``png`` and ``svg`` paths and the PNG's bytes."""

    stem: str
    png: Path
    svg: Path
    png_bytes: bytes


def new_figure(width: float, height: float):
    """A Figure on an Agg canvas (``width`` x ``height`` inches), outside pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, out_dir: str | os.PathLike, stem: str) -> SavedFigure:
    """Write ``fig`` as ``<out_dir>/<stem>.png`` and ``.svg``.

    Parameters
    ----------
    fig
        A matplotlib Figure.
    out_dir
        Directory (made if missing).
    stem
        File name without extension.

    Returns
    -------
    SavedFigure
        The two paths and the PNG bytes (for embedding in the page).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png, svg = out / f"{stem}.png", out / f"{stem}.svg"
    fig.savefig(png, dpi=PNG_DPI, metadata={"Software": None})
    fig.savefig(svg, metadata={"Date": None})
    return SavedFigure(stem=stem, png=png, svg=svg, png_bytes=png.read_bytes())


def _type_colours(n: int) -> list:
    """One colour per cell type: tab10 / tab20, then a continuous map."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["viridis"](i / max(n - 1, 1)) for i in range(n)]


def purity_panels(purity_by_run: dict[str, xr.Dataset]):
    """Same-type share against cutoff per cell type, one panel per run.

    Parameters
    ----------
    purity_by_run
        Run name -> :func:`rankdist.analysis.purity` Dataset.

    Returns
    -------
    matplotlib.figure.Figure
        Position 0 of the x axis is the top-k scope, then the cutoffs ascending. Thin
        lines are cell types, the thick black line all cells, the dashed line the
        chance level of all cells.
    """
    n = len(purity_by_run)
    fig = new_figure(4.6 * n + 1.6, 4.0)
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    for ax, (run, ds) in zip(axes, purity_by_run.items(), strict=True):
        types = [str(t) for t in ds["cell_type"].to_numpy() if str(t) != "all"]
        scopes = [str(s) for s in ds["scope"].to_numpy()]
        x = np.arange(len(scopes))
        colours = _type_colours(len(types))
        labelled = len(types) <= MAX_LABELLED_TYPES
        for t, colour in zip(types, colours, strict=True):
            ax.plot(
                x,
                ds["same_type"].sel(cell_type=t).to_numpy(),
                marker="o",
                ms=3,
                lw=1.2,
                color=colour if labelled else (0.55, 0.55, 0.55, 0.6),
                label=t if labelled else None,
            )
        ax.plot(
            x,
            ds["same_type"].sel(cell_type="all").to_numpy(),
            marker="o",
            lw=2.6,
            color="black",
            label="all cells",
        )
        ax.plot(
            x,
            ds["expected_same_type"].sel(cell_type="all").to_numpy(),
            ls="--",
            lw=1.2,
            color="black",
            label="chance (all)",
        )
        ax.set_xticks(x, [s.replace(">=", "\u2265") for s in scopes])
        if len(scopes) > 1:
            ax.axvline(0.5, color="0.8", lw=0.8, ls=":")
        ax.set_title(f"{_run_label(run, ds.attrs.get('encoding', ''))}, k={ds.attrs.get('k', '')}")
        ax.set_xlabel("top-k neighbours, then similarity cutoff")
        ax.set_ylim(0, 1.02)
        ax.grid(axis="y", color="0.92")
    axes[0].set_ylabel("share of relations with the same cell type")
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    return fig


def similarity_heatmap(sim: xr.Dataset, run: str):
    """Median similarity of every pair of cell types, with within/between medians.

    Parameters
    ----------
    sim
        :func:`rankdist.analysis.similarity.type_similarity` Dataset.
    run
        Run name, for the title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    types = [str(t) for t in sim["type_a"].to_numpy()]
    med = sim["similarity"].sel(quantile=0.5).to_numpy()
    n = len(types)
    side = float(np.clip(0.42 * n + 2.5, 4.5, 16))
    fig = new_figure(side + 1.2, side)
    ax = fig.subplots()
    finite = med[np.isfinite(med)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    image = ax.imshow(med, cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1e-3)
    fig.colorbar(image, ax=ax, shrink=0.8, label="median correlation of cell pairs")
    fontsize = 9 if n <= 10 else max(4, 9 - (n - 10) // 6)
    ax.set_xticks(range(n), types, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), types, fontsize=fontsize)
    if n <= MAX_ANNOTATED_TYPES:
        mid = (lo + hi) / 2
        for i in range(n):
            for j in range(n):
                if np.isfinite(med[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{med[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="black" if med[i, j] > mid else "white",
                    )
    within = sim["within"].to_numpy()
    between = sim["between"].to_numpy()
    ax.set_title(
        f"{_run_label(run, sim.attrs.get('encoding', ''))}: median similarity by cell type\n"
        f"within types {_fmt(within[1])} (IQR {_fmt(within[0])}\u2013{_fmt(within[2])}), "
        f"between types {_fmt(between[1])} (IQR {_fmt(between[0])}\u2013{_fmt(between[2])})",
        fontsize=10,
    )
    return fig


def batch_scatter(summary_by_run: dict[str, xr.Dataset]):
    """Observed against expected same-batch share of the neighbours, per cell type.

    Parameters
    ----------
    summary_by_run
        Run name -> :func:`rankdist.analysis.batch_summary` Dataset.

    Returns
    -------
    matplotlib.figure.Figure
        One point per cell type and run (a star for all cells); the diagonal is where
        neighbours are drawn from the batches as often as the type's cells are.
    """
    from matplotlib import colormaps

    fig = new_figure(6.4, 5.4)
    ax = fig.subplots()
    markers = ["o", "s", "^", "D", "v", "P"]
    n_points = sum(ds.sizes["cell_type"] for ds in summary_by_run.values())
    placed: list[tuple[float, float]] = []
    for r, (run, ds) in enumerate(summary_by_run.items()):
        colour = colormaps["tab10"](r % 10)
        names = [str(t) for t in ds["cell_type"].to_numpy()]
        exp = ds["expected_same_batch"].to_numpy()
        obs = ds["same_batch"].to_numpy()
        types = np.array([t != "all" for t in names])
        ax.scatter(
            exp[types],
            obs[types],
            s=36,
            marker=markers[r % len(markers)],
            color=colour,
            alpha=0.85,
            label=f"{run}: cell types",
        )
        ax.scatter(
            exp[~types],
            obs[~types],
            s=max(220 - 90 * r, 80),
            marker="*",
            color=colour,
            edgecolor="black",
            label=f"{run}: all cells",
            zorder=3 + r,
        )
        if n_points <= 3 * MAX_LABELLED_TYPES:
            for name, x, y in zip(names, exp, obs, strict=True):
                if name == "all" or not (np.isfinite(x) and np.isfinite(y)):
                    continue
                # label a point only where no label sits yet: overlapping text is unreadable
                if all(abs(x - px) > 0.04 or abs(y - py) > 0.025 for px, py in placed):
                    placed.append((x, y))
                    ax.annotate(name, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7)
    ax.plot([0, 1], [0, 1], color="0.4", lw=1, ls="--", label="no batch effect")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("expected same-batch share (the type's cells in the cell's batch)")
    ax.set_ylabel("observed same-batch share of the k neighbours")
    ax.set_title("Batch: neighbours from the cell's own batch", fontsize=10)
    ax.grid(color="0.92")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def jaccard_histogram(comparison: xr.Dataset):
    """Histogram of the per-cell neighbour overlap (Jaccard) of two encodings.

    Parameters
    ----------
    comparison
        :func:`rankdist.analysis.compare_encodings` Dataset.

    Returns
    -------
    matplotlib.figure.Figure
    """
    values = comparison["jaccard"].to_numpy()
    values = values[np.isfinite(values)]
    k = int(comparison.attrs.get("k", 0))
    a, b = comparison.attrs.get("a", "a"), comparison.attrs.get("b", "b")
    fig = new_figure(6.4, 3.8)
    ax = fig.subplots()
    if k:
        # Jaccard takes the values s / (2k - s), s = shared neighbours: one bar per value
        shared = np.arange(k + 1)
        centres = shared / (2 * k - shared)
        counts = np.bincount(np.rint(2 * k * values / (1 + values)).astype(int), minlength=k + 1)
        ax.bar(centres, counts[: k + 1], width=0.8 / (k + 1), color="#4c72b0")
    else:
        ax.hist(values, bins=20, range=(0, 1), color="#4c72b0")
    if values.size:
        mean = float(values.mean())
        ax.axvline(mean, color="black", ls="--", lw=1.2)
        ax.text(mean, ax.get_ylim()[1] * 0.95, f" mean {mean:.2f}", va="top", fontsize=9)
    ax.set_xlim(-0.03, 1.03)
    ax.set_xlabel(f"Jaccard overlap of the {k} nearest cells: {a} vs {b}")
    ax.set_ylabel("cells")
    ax.set_title(f"How much do {a} and {b} agree on each cell's neighbours?", fontsize=10)
    return fig


def sparsity_histogram(zero_fraction: np.ndarray, n_genes: int):
    """Histogram of the fraction of the selected genes that are zero in each cell.

    Parameters
    ----------
    zero_fraction
        ``(n_cells,)`` float64 in [0, 1].
    n_genes
        Genes in the store, for the axis label.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = new_figure(6.4, 3.8)
    ax = fig.subplots()
    ax.hist(zero_fraction, bins=50, range=(0, 1), color="#55a868")
    if zero_fraction.size:
        median = float(np.median(zero_fraction))
        ax.axvline(median, color="black", ls="--", lw=1.2)
        ax.text(median, ax.get_ylim()[1] * 0.95, f" median {median:.2f}", va="top", fontsize=9)
    ax.set_xlabel(f"fraction of the {n_genes} genes with zero counts")
    ax.set_ylabel("cells")
    ax.set_title("Sparsity: how many genes each cell did not detect", fontsize=10)
    return fig


def _fmt(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.3f}"


def _run_label(run: str, encoding: str) -> str:
    """``'run (encoding)'``, or just the run where it is named after its encoding."""
    return run if not encoding or encoding == run else f"{run} ({encoding})"
