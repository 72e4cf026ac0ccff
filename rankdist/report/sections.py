"""The report's sections: each runs its analysis, writes its tables and figures, returns HTML.

A section that lacks what it needs (labels, a type histogram, a second encoding) returns a
note that says how to get it instead.

Runs are read when a section needs them and not kept: each run's own analyses (purity,
type similarity, batch mixing) are computed in one pass over that run
(:meth:`ReportContext.run_tables`), which keeps only their per-type tables; the
comparison reads the two runs it compares. So the report never holds more than one run,
or the two compared.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import xarray as xr

from rankdist.analysis import (
    Hierarchy,
    batch_mixing,
    batch_summary,
    purity,
    write_tables,
)
from rankdist.analysis.bootstrap import RunStatistics
from rankdist.analysis.findings import run_statistics
from rankdist.analysis.similarity import type_similarity
from rankdist.io.store import Store
from rankdist.reduce.result import NeighborResult, load
from rankdist.report import figures as figs
from rankdist.report import html as markup
from rankdist.report.comparison import compare_section
from rankdist.report.findings import findings_section
from rankdist.report.runs import RunInfo
from rankdist.report.sparsity import sparsity_table, zero_fraction

#: batch_mixing's graph-level scalars, written to ``batch_graph_<run>.csv``.
GRAPH_SCALARS = ("kbet_acceptance", "graph_connectivity", "ilisi_scaled", "clisi_scaled")


@dataclass
class RunTables:
    """One run's per-type tables, computed while the run was read (None: not computable)."""

    purity: xr.Dataset | None = None
    similarity: xr.Dataset | None = None
    batch: xr.Dataset | None = None
    batch_graph: xr.Dataset | None = None
    findings: RunStatistics | None = None


@dataclass
class ReportContext:
    """What the sections share: the store, the runs, where files go and the files written."""

    store: Store
    runs: dict[str, RunInfo]
    out: Path
    hierarchy: Hierarchy | None = None
    files: list[Path] = field(default_factory=list)
    #: Where the report will be once complete (``out`` may be a temporary folder).
    shown_out: Path | None = None
    #: The run the others are compared with (``--baseline``, else the first pearson run).
    baseline: str | None = None
    #: Bootstrap resamples and seed of the findings.
    resamples: int = 1000
    seed: int = 0
    #: Each run's neighbour overlap with the baseline (filled by the comparison).
    overlaps: list[RunStatistics] = field(default_factory=list)
    _tables: dict[str, RunTables] = field(default_factory=dict)

    def load(self, name: str) -> NeighborResult:
        """The run ``name``, read from the store (not kept)."""
        return load(self.store, name)

    def run_tables(self, name: str) -> RunTables:
        """The run's purity, type similarity and batch tables: the run is read once."""
        if name not in self._tables:
            self._tables[name] = _analyse(self.load(name), self)
        return self._tables[name]

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

    def tables_frame(self, frames: dict[str, pd.DataFrame]) -> list[Path]:
        """Write pandas tables as ``tables/<key>.csv`` (no index)."""
        self.tables_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for key, frame in frames.items():
            paths.append(self.tables_dir / f"{key}.csv")
            frame.to_csv(paths[-1], index=False)
        self.files += paths
        return paths

    def figure(self, fig, stem: str) -> figs.SavedFigure:
        saved = figs.save_figure(fig, self.figures_dir, stem)
        self.files += [saved.png, saved.svg]
        return saved


def _analyse(res: NeighborResult, rep: ReportContext) -> RunTables:
    """Every per-run table the sections show, from one read of the run."""
    tables = RunTables()
    if "cell_type" not in rep.store.labels:
        return tables
    tables.purity = purity(res, hierarchy=rep.hierarchy)
    if res.pair_hist is not None:
        tables.similarity = type_similarity(res)
    mixing = None
    if "batch" in rep.store.labels:
        mixing = batch_mixing(res)
        tables.batch = batch_summary(res, mixing=mixing)
        tables.batch_graph = xr.Dataset(
            {v: mixing[v].variable for v in GRAPH_SCALARS}, attrs=mixing.attrs
        )
    tables.findings = run_statistics(
        res, hierarchy=rep.hierarchy, mixing=mixing, resamples=rep.resamples, seed=rep.seed
    )
    tables.findings.run = str(res.metadata.get("name") or tables.findings.run)
    return tables


def overview_section(rep: ReportContext) -> markup.Section:
    """The runs reported: encoding, k, cutoffs and excluded cells, one line each."""
    sec = markup.Section("Overview", "overview")
    sec.add(markup.explanation(markup.OVERVIEW))
    rows = {
        name: (
            f"{run.metadata.get('encoding')}, k={run.k}, cutoffs "
            f"{', '.join(f'{c:g}' for c in run.cutoffs)}, {run.n_excluded} cells excluded"
        )
        for name, run in rep.runs.items()
    }
    sec.add(markup.key_values(rows))
    excluded = {n: run.n_excluded for n, run in rep.runs.items() if run.n_excluded}
    if excluded:
        sec.add(markup.note(markup.excluded_note(excluded)))
    return sec


def purity_section(rep: ReportContext) -> markup.Section:
    """Same-type share per cell type and scope: a figure, one table per run, the CSVs."""
    sec = markup.Section("Cell-type purity", "purity")
    if "cell_type" not in rep.store.labels:
        sec.add(markup.note(markup.NO_CELL_TYPE))
        return sec
    sec.add(markup.explanation(markup.PURITY))
    by_run = {name: rep.run_tables(name).purity for name in rep.runs}
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


def similarity_section(rep: ReportContext) -> markup.Section:
    """Per run with a type histogram: the cell type x cell type median similarity."""
    sec = markup.Section("Cell type x cell type similarity", "similarity")
    if "cell_type" not in rep.store.labels:
        sec.add(markup.note(markup.NO_CELL_TYPE))
        return sec
    sec.add(markup.explanation(markup.SIMILARITY))
    for name, run in rep.runs.items():
        sec.add(f"<h3>{markup.esc(name)}</h3>")
        sim = rep.run_tables(name).similarity
        if sim is None:
            sec.add(markup.note(markup.no_histogram(rep.store.path, name, run)))
            continue
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
                )
            )
        )
        sec.add(markup.file_links(paths, rep.out))
    return sec


def batch_section(rep: ReportContext) -> markup.Section:
    """Observed against expected same-batch share, and the whole-graph batch metrics."""
    sec = markup.Section("Batch effects", "batch")
    missing = [r for r in ("cell_type", "batch") if r not in rep.store.labels]
    if missing:
        sec.add(markup.note(markup.no_labels(missing, "the batch-mixing figure")))
        return sec
    sec.add(markup.explanation(markup.BATCH))
    summaries = {name: rep.run_tables(name).batch for name in rep.runs}
    graph = {name: rep.run_tables(name).batch_graph for name in rep.runs}
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


def sparsity_section(rep: ReportContext) -> markup.Section:
    """The share of zero counts per cell: a histogram and a table per cell type."""
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


def runs_section(rep: ReportContext) -> markup.Section:
    """Every run's parameters and computing record, one column per run."""
    sec = markup.Section("Runs", "runs")
    sec.add(markup.explanation(markup.RUNS))
    keys = (
        "encoding",
        "encoding_params",
        "k",
        "cutoffs",
        "labels",
        "type_hist",
        "n_cells",
        "n_genes",
        "n_excluded",
        "block_rows",
        "n_blocks",
        "n_tiles",
        "tiles_computed",
        "tiles_resumed",
        "workers",
        "threads",
        "wall_time_s",
        "finished",
        "versions",
    )
    frame = pd.DataFrame(
        {name: [_plain(r.metadata.get(k, "")) for k in keys] for name, r in rep.runs.items()},
        index=pd.Index(list(keys), name="run"),
    )
    sec.add(markup.table(frame))
    return sec


def provenance_section(rep: ReportContext, names, hierarchy, started: float) -> markup.Section:
    """Where the store came from, what wrote the report, and how to reproduce it."""
    sec = markup.Section("Provenance", "provenance")
    prov = rep.store.provenance
    runs_arg = ",".join(names)
    hier_arg = f" --hierarchy {hierarchy}" if hierarchy is not None else ""
    if rep.baseline is not None and rep.baseline != next(
        (n for n, r in rep.runs.items() if r.metadata.get("encoding") == "pearson"), None
    ):
        hier_arg += f" --baseline {rep.baseline}"
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
                "reproduce with": f"rankdist report {rep.store.path} "
                f"--out {rep.shown_out or rep.out} "
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


def page_sections(
    rep: ReportContext, names: list[str], hierarchy, started: float
) -> list[markup.Section]:
    """Every section of the page, in page order.

    Parameters
    ----------
    rep
        The store, the runs and the output directory.
    names
        The run names, in report order (for the reproducing command).
    hierarchy
        The ``--hierarchy`` CSV given, or ``None``.
    started
        ``time.perf_counter()`` when the report began (for the report time).

    Returns
    -------
    list of rankdist.report.html.Section
        Findings first (built from what the others computed); provenance last: it
        lists the files the other sections wrote.
    """
    sections = [
        overview_section(rep),
        purity_section(rep),
        similarity_section(rep),
        batch_section(rep),
        compare_section(rep),
        sparsity_section(rep),
        runs_section(rep),
    ]
    # built after the analyses it reads, shown first (the page opens with the answers)
    sections.insert(0, findings_section(rep, rep.baseline))
    sections.append(provenance_section(rep, names, hierarchy, started))
    return sections
