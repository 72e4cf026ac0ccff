"""The report page: one self-contained HTML file (inline CSS, figures as base64 PNG).

Figures and tables are also linked as files (``figures/*.svg``, ``tables/*.csv``) next to
the page, but the page itself needs nothing else to be read: it can be mailed or archived
on its own.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rankdist.report.figures import SavedFigure

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1d2330;
       max-width: 1180px; margin: 0 auto; padding: 0 28px 60px; line-height: 1.45; }
header { border-bottom: 3px solid #4c72b0; padding: 18px 0 10px; margin-bottom: 18px; }
h1 { margin: 0 0 4px; font-size: 28px; }
h2 { margin-top: 38px; border-bottom: 1px solid #d8dde6; padding-bottom: 4px; }
h3 { margin-bottom: 6px; }
.sub { color: #5a6476; }
nav a { margin-right: 14px; }
.explain { background: #f3f6fb; border-left: 4px solid #4c72b0; padding: 8px 14px;
           margin: 10px 0; }
.note { background: #fff6e0; border-left: 4px solid #e0a800; padding: 8px 14px; margin: 10px 0; }
figure { margin: 12px 0; }
figure img { max-width: 100%; border: 1px solid #e3e6ec; }
figcaption { font-size: 13px; color: #5a6476; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13px; }
th, td { border: 1px solid #d8dde6; padding: 3px 8px; text-align: right; }
th { background: #eef1f6; }
td.text, th.text { text-align: left; }
.scroll { overflow-x: auto; }
code { background: #eef1f6; padding: 1px 4px; border-radius: 3px; }
footer { margin-top: 40px; color: #5a6476; font-size: 13px; }
"""


@dataclass
class Section:
    """One part of the page: a heading, an anchor and its HTML fragments in order."""

    title: str
    anchor: str
    parts: list[str] = field(default_factory=list)

    def add(self, fragment: str) -> None:
        self.parts.append(fragment)


def esc(text) -> str:
    """Text escaped for HTML."""
    return html.escape(str(text), quote=True)


def explanation(text: str) -> str:
    """A plain-language paragraph block (``text`` is trusted HTML written by rankdist)."""
    return f'<div class="explain">{text}</div>'


def note(text: str) -> str:
    """A highlighted note: something missing, and how to get it (``text`` is escaped)."""
    return f'<div class="note">{esc(text)}</div>'


def figure(saved: SavedFigure, alt: str, caption: str = "") -> str:
    """The figure embedded as a base64 PNG, with links to its PNG and SVG files.

    Parameters
    ----------
    saved
        The figure's files (see :func:`rankdist.report.figures.save_figure`).
    alt
        Alternative text.
    caption
        Optional caption (escaped).

    Returns
    -------
    str
        An HTML ``<figure>`` whose ``img`` needs no file; the links are relative to the
        page, which sits in the parent of the figures' directory.
    """
    data = base64.b64encode(saved.png_bytes).decode("ascii")
    png = f"{saved.png.parent.name}/{saved.png.name}"
    svg = f"{saved.svg.parent.name}/{saved.svg.name}"
    text = f"{esc(caption)} " if caption else ""
    return (
        f'<figure id="fig-{esc(saved.stem)}">'
        f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}" data-file="{esc(png)}">'
        f'<figcaption>{text}Files: <a href="{esc(png)}">PNG</a> \u00b7 '
        f'<a href="{esc(svg)}">SVG</a></figcaption></figure>'
    )


def table(frame: pd.DataFrame, *, digits: int = 3, index: bool = True) -> str:
    """A DataFrame as an HTML table; floats rounded to ``digits``, NaN shown as a dash."""

    def cell(value) -> tuple[str, bool]:
        if isinstance(value, float | np.floating):
            return ("\u2013" if not np.isfinite(value) else f"{value:.{digits}f}"), False
        if isinstance(value, int | np.integer):
            return f"{int(value):,}", False
        return esc(value), True

    head = []
    if index:
        head.append(f'<th class="text">{esc(frame.index.name or "")}</th>')
    head += [f"<th>{esc(c)}</th>" for c in frame.columns]
    rows = []
    for label, values in zip(frame.index, frame.itertuples(index=False), strict=True):
        cells = [f'<th class="text">{esc(label)}</th>'] if index else []
        for value in values:
            text, is_text = cell(value)
            cells.append(f'<td class="text">{text}</td>' if is_text else f"<td>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        '<div class="scroll"><table><thead><tr>'
        + "".join(head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div>"
    )


def key_values(pairs: dict) -> str:
    """A two-column table of names and values (values escaped)."""
    rows = "".join(
        f'<tr><th class="text">{esc(k)}</th><td class="text">{esc(v)}</td></tr>'
        for k, v in pairs.items()
    )
    return f'<div class="scroll"><table><tbody>{rows}</tbody></table></div>'


def file_links(paths: list[Path], base: Path) -> str:
    """A list of links to files, relative to the page's directory ``base``."""
    items = "".join(
        f'<li><a href="{esc(p.relative_to(base).as_posix())}">'
        f"{esc(p.relative_to(base).as_posix())}</a></li>"
        for p in paths
    )
    return f"<ul>{items}</ul>"


def page(title: str, subtitle: str, sections: list[Section], footer: str) -> str:
    """The whole page.

    Parameters
    ----------
    title, subtitle, footer
        Plain text (escaped).
    sections
        In order; each gets an entry in the navigation bar.

    Returns
    -------
    str
        A complete HTML5 document with inline CSS and no external resources.
    """
    nav = " ".join(f'<a href="#{esc(s.anchor)}">{esc(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{esc(s.anchor)}"><h2>{esc(s.title)}</h2>{"".join(s.parts)}</section>'
        for s in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>{esc(title)}</h1><div class="sub">{esc(subtitle)}</div>'
        f"<nav>{nav}</nav></header>{body}<footer>{esc(footer)}</footer></body></html>\n"
    )


# The page's plain-language explanations, written for a biologist reading the report. The
# constants are trusted HTML; the functions return plain text for :func:`note`.

OVERVIEW = (
    "rankdist compared every cell with every other cell, exactly (no sampling, no "
    "approximate search), and kept for each cell its <b>k nearest cells</b> and how many "
    "cells of each type correlate with it above each <b>cutoff</b>. A <i>run</i> is one such "
    "computation: <b>spearman</b> correlates the cells' genes <i>ranked</i> by expression "
    "(the rank-value encoding of single-cell foundation models such as Geneformer), "
    "<b>pearson</b> correlates log-normalised expression (the usual raw-expression "
    "baseline). The sections below ask: do cells find their own type (purity), which types "
    "resemble each other (similarity), do neighbours come from the cell's own batch (batch "
    "effects), and how much the two encodings agree."
)
PURITY = (
    "A cell's <i>relations</i> are its k nearest cells (<b>top-k</b>) or every cell whose "
    "correlation with it is at least a cutoff (<b>&ge;c</b>). Each line shows, for one cell "
    "type, the share of its cells' relations that are cells of the <b>same annotated "
    "type</b>; the thick black line pools all cells, and the dashed line is what random "
    "partners would give (chance). A line far above chance means the encoding places cells "
    "of that type together; a line near chance means the encoding does not separate that "
    "type from the others, or the annotation is not supported by expression. Raising the "
    "cutoff keeps only closer pairs. Compare the panels to see which encoding separates "
    "the types better."
)
PURITY_TABLE = (
    "<b>chance</b>: share of the other cells that have the type (what random partners "
    "give); <b>top-k</b>, <b>&ge;c</b>: observed same-type share; <b>sibling type</b>: share "
    "with another fine type of the same coarse class (only with a hierarchy); <b>no "
    "relation</b>: cells with no partner at the highest cutoff, left out of that column. "
    "The CSV files hold every variable of <code>rankdist.analysis.purity</code> in long form."
)
SIMILARITY = (
    "During the run every pair of cells was counted by the two cells' types and their "
    "correlation (in bins of 0.005). Each square is the <b>median correlation</b> between "
    "cells of the row type and cells of the column type; the diagonal is pairs within one "
    "type. A diagonal brighter than its row means cells resemble their own type more than "
    "others; bright off-diagonal squares show types the encoding hardly tells apart (often "
    "sibling types of one lineage). The title gives the median over all within-type pairs "
    "and over all between-type pairs. Values are exact to within one bin (0.005)."
)
BATCH = (
    "For each cell type: the share of a cell's k nearest cells that come from the cell's "
    "<b>own batch</b> (donor, sample, chemistry...; y axis) against the share expected if "
    "neighbours ignored batches (x axis: the fraction of that type's cells that are in the "
    "cell's batch). On the dashed diagonal, batches mix as well as they can; <b>above it</b>, "
    "cells prefer neighbours from their own batch: a batch effect the encoding keeps. A "
    "star is all cells of a run. An encoding whose points sit nearer the diagonal is less "
    "sensitive to this batch effect."
)
BATCH_METRICS = (
    "<b>kbet_acceptance</b>: share of neighbourhoods (a cell and its k neighbours) whose "
    "batch mix is consistent with the whole dataset's (kBET, 1 = perfectly mixed); "
    "<b>graph_connectivity</b>: per cell type, share of its cells in the largest connected "
    "part of the type's neighbour graph, averaged (1 = every type is one connected group); "
    "<b>ilisi_scaled</b>: effective number of batches around a cell, scaled to 0 (one "
    "batch) .. 1 (all batches); <b>clisi_scaled</b>: 1 when a cell's neighbourhood holds one "
    "cell type. Per-type table: <b>same_batch</b> observed, <b>expected_same_batch</b> "
    "chance, <b>excess_same_batch</b> their difference."
)
COMPARE = (
    "For each cell, the <b>overlap</b> (Jaccard index) of its k nearest cells under the rank "
    "(spearman) and the log-expression (pearson) encoding: 1 means the same neighbours, 0 "
    "none in common. Most mass near 1: the rank encoding keeps the neighbourhoods of raw "
    "expression; mass near 0: it reorganises them."
)
COMPARE_TABLE = (
    "<b>jaccard_mean</b>: mean overlap of the type's cells; <b>batch-driven</b>: share of "
    "neighbours from the same batch but another cell type, under each encoding (neighbours "
    "that only the batch explains); <b>more batch-driven</b>: the encoding with the larger "
    "share."
)
FINDINGS = (
    "Each number is a share of the cells' <b>k nearest cells</b> (top-k; the CSV also "
    "has every cutoff), pooled over all cells: <b>same_type</b> (same annotated type), "
    "<b>similar_type</b> (another type of the same coarse class), <b>other_class</b>, "
    "<b>same_batch</b> against <b>expected_same_batch</b> (the share that each type's own "
    "batch mix gives), their difference <b>excess_same_batch</b>, <b>batch_driven</b> (same "
    "batch, other type: neighbours only the batch explains), the mean <b>iLISI</b> "
    "(effective number of batches around a cell) and the <b>kBET</b> acceptance, and the "
    "<b>overlap</b> (mean Jaccard index) of each run's neighbours with the baseline's. A "
    "sentence says <i>more</i> or <i>fewer</i> only when the 95 % interval of the "
    "difference excludes 0; otherwise it says there is no clear difference."
)
SPARSITY = (
    "The fraction of the stored genes with a zero count in each cell. Single-cell data are "
    "mostly zeros. Under the rank encoding all of a cell's zeros tie at the lowest rank, so "
    "a cell that detected few genes carries little rank information and may correlate "
    "weakly even with its own type. Computed from the store's matrix, one chunk of cells "
    "at a time."
)
RUNS = (
    "The parameters and the computing record of each run: the encoding, k, the cutoffs, "
    "the label columns, the block size and tiles, the Dask workers and the wall time."
)
NO_CELL_TYPE = (
    "This store has no cell-type labels, so purity and the cell type x cell type similarity "
    "cannot be computed. Ingest again with --cell-type COLUMN "
    "(rankdist.ingest(..., cell_type=COLUMN))."
)


def excluded_note(excluded: dict[str, int]) -> str:
    """Cells excluded per run (constant over the genes: no defined correlation)."""
    runs = ", ".join(f"{name}: {n}" for name, n in excluded.items())
    return (
        f"Cells excluded ({runs}): they are constant over the selected genes (an empty cell, "
        "for example), have no defined correlation and appear in no figure or table."
    )


def no_histogram(store_path, run: str, res) -> str:
    """How to get the type x type heatmap for a run computed without the histogram."""
    enc = res.metadata.get("encoding", "spearman")
    cutoffs = ",".join(f"{c:g}" for c in res.cutoffs)
    return (
        f"Run {run!r} was computed without the cell type x cell type histogram. Run neighbors "
        f"with --type-hist to get this heatmap: rankdist neighbors {store_path} --encoding "
        f"{enc} --k {res.k} --cutoffs {cutoffs} --name {run} --type-hist "
        "(Python: rankdist.neighbors(..., type_hist=True))."
    )


def no_labels(missing: list[str], what: str) -> str:
    """Labels a section needs that the store lacks, and the ingest option that adds them."""
    flags = " ".join(f"--{role.replace('_', '-')} COLUMN" for role in missing)
    return (
        f"This store has no {' and no '.join(missing)} labels, which {what} needs. Ingest "
        f"again with {flags}."
    )


def no_pair(store_path, encodings: dict) -> str:
    """Why the rank-vs-raw comparison is missing: no spearman + pearson pair of runs."""
    return (
        "The rank-vs-raw comparison needs a spearman and a pearson run of this store; the "
        f"runs reported here have encodings {encodings}. Add the missing one with: rankdist "
        f"neighbors {store_path} --encoding pearson (or spearman), with the same --k, or "
        "name the run to compare with by --baseline RUN."
    )


def k_differs(a: str, b: str, k_a: int, k_b: int) -> str:
    """Why two runs cannot be compared: different k."""
    return (
        f"Runs {a!r} (k={k_a}) and {b!r} (k={k_b}) differ in k, so their neighbour sets "
        "cannot be compared; run both with the same --k."
    )
