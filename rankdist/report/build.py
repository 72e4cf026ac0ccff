"""``build_report``: a store's runs -> CSV tables, PNG/SVG figures and one HTML page.

Layout of the output directory (see docs/report.md)::

    report.html                    the page: self-contained, figures embedded
    tables/purity_<run>.csv        rankdist.analysis.purity
    tables/batch_<run>.csv         rankdist.analysis.batch_summary        (with batch labels)
    tables/batch_graph_<run>.csv   batch_mixing's graph-level scalars     (with batch labels)
    tables/similarity_<run>.csv    type_similarity                        (runs with type_hist)
    tables/compare_<a>_<b>.csv     compare_encodings                      (spearman + pearson)
    tables/sparsity.csv            zero fraction of the cells per cell type
    figures/<name>.png, .svg       purity, similarity_<run>, batch, compare_<a>_<b>, sparsity
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from rankdist.analysis import (
    Hierarchy,
    batch_mixing,
    batch_summary,
    compare_encodings,
    load_hierarchy,
    purity,
    write_tables,
)
from rankdist.analysis.similarity import type_similarity
from rankdist.io.store import Store
from rankdist.reduce.result import NeighborResult, list_runs, load
from rankdist.report import figures as figs
from rankdist.report import html as markup

#: batch_mixing's graph-level scalars, written to ``batch_graph_<run>.csv``.
GRAPH_SCALARS = ("kbet_acceptance", "graph_connectivity", "ilisi_scaled", "clisi_scaled")


@dataclass
class _Report:
    """What the section builders share: the store, the runs and where files go."""

    store: Store
    results: dict[str, NeighborResult]
    out: Path
    hierarchy: Hierarchy | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def tables_dir(self) -> Path:
        return self.out / "tables"

    @property
    def figures_dir(self) -> Path:
        return self.out / "figures"

    def tables(self, datasets: dict[str, xr.Dataset]) -> list[Path]:
        paths = write_tables(datasets, self.tables_dir)
        self.files += paths
        return paths

    def figure(self, fig, stem: str) -> figs.SavedFigure:
        saved = figs.save_figure(fig, self.figures_dir, stem)
        self.files += [saved.png, saved.svg]
        return saved


def build_report(
    store: str | os.PathLike | Store,
    out_dir: str | os.PathLike,
    runs: str | Sequence[str] | None = None,
    hierarchy: str | os.PathLike | None = None,
) -> Path:
    """Write the tables, figures and HTML page that summarise a store's runs.

    Parameters
    ----------
    store
        A store with at least one finished run (path or :class:`rankdist.Store`).
    out_dir
        Directory to write into (made if missing; files of the same names are replaced).
    runs
        Run names (a list, or one comma-separated string); default: every run.
    hierarchy
        Optional CSV ``fine,coarse`` for :func:`rankdist.analysis.load_hierarchy`;
        default: the stored ``coarse_type`` labels, if any.

    Returns
    -------
    pathlib.Path
        ``<out_dir>/report.html``.

    Raises
    ------
    ValueError
        The store has no runs, or ``runs`` names one it does not hold (the message lists
        the available runs).
    """
    started = time.perf_counter()
    store = store if isinstance(store, Store) else Store(store)
    names = select_runs(store, runs)
    results = {name: load(store, name) for name in names}
    if runs is None:  # rank encoding first, then its raw-expression baseline, then others
        order = {"spearman": 0, "pearson": 1}
        names = sorted(names, key=lambda n: order.get(results[n].metadata.get("encoding"), 2))
        results = {name: results[name] for name in names}
    rep = _Report(store=store, results=results, out=Path(out_dir))
    if hierarchy is not None:  # read once, and fail before any file is written
        rep.hierarchy = load_hierarchy(next(iter(results.values())), csv=hierarchy)
    rep.out.mkdir(parents=True, exist_ok=True)
    sections = [
        _overview_section(rep),
        _purity_section(rep),
        _similarity_section(rep),
        _batch_section(rep),
        _compare_section(rep),
        _sparsity_section(rep),
        _runs_section(rep),
    ]
    sections.append(_provenance_section(rep, names, hierarchy, started))
    page = rep.out / "report.html"
    page.write_text(
        markup.page(
            title=f"rankdist report: {store.path.name}",
            subtitle=(
                f"{store.n_cells:,} cells x {store.n_genes:,} genes; runs: {', '.join(names)}; "
                f"generated {time.strftime('%Y-%m-%d %H:%M')}"
            ),
            sections=sections,
            footer=f"rankdist {version('rankdist')}. Exact all-pairs correlation; "
            "no pair was sampled or approximated.",
        ),
        encoding="utf-8",
    )
    return page


def select_runs(store: Store, runs: str | Sequence[str] | None) -> list[str]:
    """The runs to report, in the order given (default: all, sorted); errors list the runs."""
    available = list_runs(store)
    if not available:
        msg = (
            f"{store.path} holds no finished runs; compute one first, e.g. "
            f"`rankdist neighbors {store.path} --encoding spearman` (Python: "
            "rankdist.neighbors(store, 'spearman', type_hist=True))"
        )
        raise ValueError(msg)
    if runs is None:
        return available
    if isinstance(runs, str):
        runs = [r.strip() for r in runs.split(",") if r.strip()]
    runs = list(dict.fromkeys(runs))
    if not runs:
        msg = f"no run names given; runs in {store.path}: {available}"
        raise ValueError(msg)
    unknown = [r for r in runs if r not in available]
    if unknown:
        msg = (
            f"no run(s) {unknown} in {store.path}; available runs: {available} "
            f"(e.g. --runs {','.join(available)})"
        )
        raise ValueError(msg)
    return runs


def zero_fraction(store: Store) -> np.ndarray:
    """``(n_cells,)`` float64: share of the stored genes with a zero count, per cell.

    X is read one stored chunk of cells at a time, never whole.
    """
    n, step = store.n_cells, max(store.chunk_cells, 1)
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, step):
        stop = min(n, start + step)
        out[start:stop] = (store.read_x(start, stop) == 0).mean(axis=1)
    return out


def sparsity_table(store: Store, zeros: np.ndarray) -> xr.Dataset:
    """Per cell type (and ``'all'``): cells and the mean, median, min, max zero fraction."""
    if "cell_type" in store.labels:
        lab = store.labels["cell_type"]
        groups = [lab.codes == t for t in range(len(lab.categories))]
        names = [*lab.categories, "all"]
    else:
        groups, names = [], ["all"]
    groups.append(np.ones(store.n_cells, dtype=bool))

    def stat(fn):
        return np.array([fn(zeros[m]) if m.any() else np.nan for m in groups])

    return xr.Dataset(
        {
            "cells": ("cell_type", np.array([int(m.sum()) for m in groups])),
            "zero_fraction_mean": ("cell_type", stat(np.mean)),
            "zero_fraction_median": ("cell_type", stat(np.median)),
            "zero_fraction_min": ("cell_type", stat(np.min)),
            "zero_fraction_max": ("cell_type", stat(np.max)),
        },
        coords={"cell_type": names},
        attrs={"n_genes": store.n_genes},
    )


def spearman_pearson_pair(results: dict[str, NeighborResult]) -> tuple[str, str] | None:
    """The first spearman run and the first pearson run, by name, if both are there."""
    by_encoding: dict[str, str] = {}
    for name, res in results.items():
        by_encoding.setdefault(str(res.metadata.get("encoding")), name)
    if "spearman" in by_encoding and "pearson" in by_encoding:
        return by_encoding["spearman"], by_encoding["pearson"]
    return None


def _overview_section(rep: _Report) -> markup.Section:
    sec = markup.Section("Overview", "overview")
    sec.add(markup.explanation(markup.OVERVIEW))
    rows = {
        name: (
            f"{res.metadata.get('encoding')}, k={res.k}, cutoffs "
            f"{', '.join(f'{c:g}' for c in res.cutoffs)}, {int(res.excluded.sum())} cells excluded"
        )
        for name, res in rep.results.items()
    }
    sec.add(markup.key_values(rows))
    excluded = {n: int(r.excluded.sum()) for n, r in rep.results.items() if r.excluded.any()}
    if excluded:
        sec.add(markup.note(markup.excluded_note(excluded)))
    return sec


def _purity_section(rep: _Report) -> markup.Section:
    sec = markup.Section("Cell-type purity", "purity")
    if "cell_type" not in rep.store.labels:
        sec.add(markup.note(markup.NO_CELL_TYPE))
        return sec
    sec.add(markup.explanation(markup.PURITY))
    by_run = {name: purity(res, hierarchy=rep.hierarchy) for name, res in rep.results.items()}
    paths = rep.tables({f"purity_{name}": ds for name, ds in by_run.items()})
    saved = rep.figure(figs.purity_panels(by_run), "purity")
    sec.add(markup.figure(saved, "same-type share against cutoff, per cell type"))
    for name, ds in by_run.items():
        sec.add(f"<h3>{markup.esc(name)}: share of relations with the same cell type</h3>")
        sec.add(markup.table(_purity_frame(ds)))
    sec.add(markup.explanation(markup.PURITY_TABLE))
    sec.add(markup.file_links(paths, rep.out))
    return sec


def _purity_frame(ds: xr.Dataset) -> pd.DataFrame:
    """The page's compact purity table: one row per cell type, same-type share per scope."""
    scopes = [str(s) for s in ds["scope"].to_numpy()]
    frame = pd.DataFrame(index=pd.Index([str(t) for t in ds["cell_type"].to_numpy()]))
    frame.index.name = "cell type"
    if ds.attrs.get("hierarchy", "none") != "none":
        frame["coarse"] = [str(c) for c in ds["coarse_type"].to_numpy()]
    first = scopes[0]
    frame["cells"] = ds["cells"].sel(scope=first).to_numpy()
    frame["chance"] = ds["expected_same_type"].sel(scope=first).to_numpy()
    for s in scopes:
        frame[s.replace(">=", "\u2265")] = ds["same_type"].sel(scope=s).to_numpy()
    if ds.attrs.get("hierarchy", "none") != "none":
        frame[f"sibling type ({first})"] = ds["similar_type"].sel(scope=first).to_numpy()
    if len(scopes) > 1:
        last = scopes[-1]
        frame[f"no relation {last.replace('>=', chr(0x2265))}"] = (
            ds["cells_without_relation"].sel(scope=last).to_numpy()
        )
    return frame


def _similarity_section(rep: _Report) -> markup.Section:
    sec = markup.Section("Cell type x cell type similarity", "similarity")
    if "cell_type" not in rep.store.labels:
        sec.add(markup.note(markup.NO_CELL_TYPE))
        return sec
    sec.add(markup.explanation(markup.SIMILARITY))
    for name, res in rep.results.items():
        sec.add(f"<h3>{markup.esc(name)}</h3>")
        if res.pair_hist is None:
            sec.add(markup.note(markup.no_histogram(rep.store.path, name, res)))
            continue
        sim = type_similarity(res)
        paths = rep.tables({f"similarity_{name}": sim})
        saved = rep.figure(figs.similarity_heatmap(sim, name), f"similarity_{name}")
        sec.add(markup.figure(saved, f"median similarity of cell types, {name}"))
        q = sim["within"].to_numpy(), sim["between"].to_numpy()
        sec.add(
            markup.table(
                pd.DataFrame(
                    {
                        "lower quartile": [q[0][0], q[1][0]],
                        "median": [q[0][1], q[1][1]],
                        "upper quartile": [q[0][2], q[1][2]],
                    },
                    index=pd.Index(["within a type", "between types"], name="pairs of cells"),
                )  # fmt: skip
            )
        )
        sec.add(markup.file_links(paths, rep.out))
    return sec


def _batch_section(rep: _Report) -> markup.Section:
    sec = markup.Section("Batch effects", "batch")
    missing = [r for r in ("cell_type", "batch") if r not in rep.store.labels]
    if missing:
        sec.add(markup.note(markup.no_labels(missing, "the batch-mixing figure")))
        return sec
    sec.add(markup.explanation(markup.BATCH))
    summaries, graph = {}, {}
    for name, res in rep.results.items():
        mixing = batch_mixing(res)
        summaries[name] = batch_summary(res, mixing=mixing)
        graph[name] = xr.Dataset({v: mixing[v].variable for v in GRAPH_SCALARS}, attrs=mixing.attrs)
    paths = rep.tables({f"batch_{n}": ds for n, ds in summaries.items()})
    paths += rep.tables({f"batch_graph_{n}": ds for n, ds in graph.items()})
    saved = rep.figure(figs.batch_scatter(summaries), "batch")
    sec.add(markup.figure(saved, "observed against expected same-batch share"))
    sec.add("<h3>Whole-graph batch metrics (scib-metrics definitions)</h3>")
    frame = pd.DataFrame(
        {name: [float(ds[v]) for v in GRAPH_SCALARS] for name, ds in graph.items()},
        index=pd.Index(list(GRAPH_SCALARS), name="metric"),
    )
    sec.add(markup.table(frame))
    sec.add(markup.explanation(markup.BATCH_METRICS))
    for name, ds in summaries.items():
        sec.add(f"<h3>{markup.esc(name)}: per cell type</h3>")
        sec.add(markup.table(ds.to_dataframe()))
    sec.add(markup.file_links(paths, rep.out))
    return sec


def _compare_section(rep: _Report) -> markup.Section:
    sec = markup.Section("Rank vs raw expression", "compare")
    pair = spearman_pearson_pair(rep.results)
    if pair is None:
        encodings = {n: r.metadata.get("encoding") for n, r in rep.results.items()}
        sec.add(markup.note(markup.no_pair(rep.store.path, encodings)))
        return sec
    a, b = pair
    missing = [r for r in ("cell_type", "batch") if r not in rep.store.labels]
    if missing:
        sec.add(markup.note(markup.no_labels(missing, "the rank-vs-raw comparison")))
        return sec
    if rep.results[a].k != rep.results[b].k:
        sec.add(markup.note(markup.k_differs(a, b, rep.results[a].k, rep.results[b].k)))
        return sec
    sec.add(markup.explanation(markup.COMPARE))
    cmp = compare_encodings(rep.results[a], rep.results[b])
    paths = rep.tables({f"compare_{a}_{b}": cmp})
    saved = rep.figure(figs.jaccard_histogram(cmp), f"compare_{a}_{b}")
    sec.add(markup.figure(saved, f"neighbour overlap {a} vs {b}", f"Runs compared: {a} and {b}."))
    per_type = cmp[["cells", "jaccard_mean", "batch_driven_a", "batch_driven_b"]]
    frame = per_type.to_dataframe().rename(
        columns={"batch_driven_a": f"batch-driven ({a})", "batch_driven_b": f"batch-driven ({b})"}
    )
    frame["more batch-driven"] = cmp["more_batch_driven"].to_numpy()
    sec.add(markup.table(frame))
    sec.add(markup.explanation(markup.COMPARE_TABLE))
    sec.add(markup.file_links(paths, rep.out))
    return sec


def _sparsity_section(rep: _Report) -> markup.Section:
    sec = markup.Section("Sparsity", "sparsity")
    sec.add(markup.explanation(markup.SPARSITY))
    zeros = zero_fraction(rep.store)
    table = sparsity_table(rep.store, zeros)
    paths = rep.tables({"sparsity": table})
    saved = rep.figure(figs.sparsity_histogram(zeros, rep.store.n_genes), "sparsity")
    sec.add(markup.figure(saved, "fraction of zero genes per cell"))
    sec.add(markup.table(table.to_dataframe()))
    sec.add(markup.file_links(paths, rep.out))
    return sec


def _runs_section(rep: _Report) -> markup.Section:
    sec = markup.Section("Runs", "runs")
    sec.add(markup.explanation(markup.RUNS))
    keys = (
        "encoding", "encoding_params", "k", "cutoffs", "labels", "type_hist", "n_cells",
        "n_genes", "n_excluded", "block_rows", "n_blocks", "n_tiles", "tiles_computed",
        "tiles_resumed", "workers", "threads", "wall_time_s", "finished", "versions",
    )  # fmt: skip
    frame = pd.DataFrame(
        {name: [_plain(r.metadata.get(k, "")) for k in keys] for name, r in rep.results.items()},
        index=pd.Index(list(keys), name="run"),
    )
    sec.add(markup.table(frame))
    return sec


def _provenance_section(rep: _Report, names, hierarchy, started: float) -> markup.Section:
    sec = markup.Section("Provenance", "provenance")
    prov = rep.store.provenance
    runs_arg = ",".join(names)
    hier_arg = f" --hierarchy {hierarchy}" if hierarchy is not None else ""
    sec.add(
        markup.key_values(
            {
                "store": rep.store.path.resolve(),
                "store content id": rep.store.content_id,
                "source": prov.get("source") or "an AnnData in memory",
                "source kind": prov.get("source_kind", ""),
                "source sha256": prov.get("sha256", ""),
                "source shape": prov.get("source_shape", ""),
                "ingest parameters": _plain(prov.get("parameters", "")),
                "ingested by": f"rankdist {prov.get('rankdist_version', '?')}",
                "hierarchy": hierarchy
                if hierarchy is not None
                else "stored coarse_type labels"
                if "coarse_type" in rep.store.labels
                else "none",
                "report by": f"rankdist {version('rankdist')}, Python {platform.python_version()}"
                f", matplotlib {version('matplotlib')}",
                "report generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "report time": f"{time.perf_counter() - started:.1f} s",
                "reproduce with": f"rankdist report {rep.store.path} --out {rep.out} "
                f"--runs {runs_arg}{hier_arg}",
            }
        )
    )
    sec.add("<h3>All files written</h3>")
    sec.add(markup.file_links(rep.files, rep.out))
    return sec


def _plain(value) -> str:
    """Metadata values (dicts, lists) as short text."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
