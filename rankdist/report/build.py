"""``build_report``: a store's runs -> CSV tables, PNG/SVG figures and one HTML page.

Layout of the output directory (see docs/report.md)::

    report.html                    the page: self-contained, figures embedded
    tables/purity_<run>.csv        rankdist.analysis.purity
    tables/batch_<run>.csv         rankdist.analysis.batch_summary        (with batch labels)
    tables/batch_graph_<run>.csv   batch_mixing's graph-level scalars     (with batch labels)
    tables/similarity_<run>.csv    type_similarity                        (runs with type_hist)
    tables/findings.csv            findings with 95 % intervals, paired differences (cell types)
    tables/compare_<a>_<b>.csv     compare_encodings of each run a with the baseline b
    tables/sparsity.csv            zero fraction of the cells per cell type
    figures/<name>.png, .svg       purity, similarity_<run>, batch, compare_<a>_<b>, sparsity,
                                   findings_ranking (more than two runs)
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

from rankdist.analysis import load_hierarchy
from rankdist.io.store import Store, atomic_directory
from rankdist.report import html as markup
from rankdist.report.runs import baseline_run, rank_encoding_first, run_info, select_runs
from rankdist.report.sections import ReportContext, page_sections

#: The page's file name inside the report folder.
PAGE = "report.html"


def build_report(
    store: str | os.PathLike | Store,
    out_dir: str | os.PathLike,
    runs: str | Sequence[str] | None = None,
    hierarchy: str | os.PathLike | None = None,
    baseline: str | None = None,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> Path:
    """Write the tables, figures and HTML page that summarise a store's runs.

    Parameters
    ----------
    store
        A store with at least one finished run (path or :class:`rankdist.Store`).
    out_dir
        Folder to write the report into. It appears only when the report is complete
        (written beside it under a temporary name, then renamed); an earlier report there
        is replaced as a whole. A folder holding other files and no ``report.html`` is
        refused.
    runs
        Run names (a list, or one comma-separated string); default: every run.
    hierarchy
        Optional CSV ``fine,coarse`` for :func:`rankdist.analysis.load_hierarchy`;
        default: the stored ``coarse_type`` labels, if any.
    baseline
        The run every other run is compared with (neighbour overlap, paired differences
        in the findings); default the first ``pearson`` run. It must be one of the runs
        reported.
    resamples, seed
        Bootstrap resamples and seed of the findings' 95 % intervals.

    Returns
    -------
    pathlib.Path
        ``<out_dir>/report.html``.

    Raises
    ------
    FileExistsError
        ``out_dir`` is a file, or a non-empty folder that holds no report.
    ValueError
        The store has no runs, ``runs`` names one it does not hold, or ``baseline`` is
        not one of the runs reported (the messages list the runs).
    """
    started = time.perf_counter()
    store = store if isinstance(store, Store) else Store(store)
    names = select_runs(store, runs)
    infos = {name: run_info(store, name) for name in names}  # metadata only: no run is held
    if runs is None:
        infos = rank_encoding_first(infos)
        names = list(infos)
    base = baseline_run(infos, baseline)
    final = Path(out_dir)
    _check_out_dir(final)
    hier = None
    if hierarchy is not None:  # read once, and fail before any file is written
        hier = load_hierarchy(next(iter(infos.values())), csv=hierarchy)
    with atomic_directory(final, replace=True) as tmp:
        rep = ReportContext(store=store, runs=infos, out=tmp, shown_out=final)
        rep.hierarchy, rep.baseline = hier, base
        rep.resamples, rep.seed = resamples, seed
        sections = page_sections(rep, names, hierarchy, started)
        (tmp / PAGE).write_text(
            markup.page(
                title=f"rankdist report: {store.path.name}",
                subtitle=(
                    f"{store.n_cells:,} cells x {store.n_genes:,} genes; runs: "
                    f"{', '.join(names)}; generated {time.strftime('%Y-%m-%d %H:%M')}"
                ),
                sections=sections,
                footer=f"rankdist {version('rankdist')}. Exact all-pairs correlation; "
                "no pair was sampled or approximated.",
            ),
            encoding="utf-8",
        )
    return final / PAGE


def _check_out_dir(out: Path) -> None:
    """Refuse an ``out`` that is not a folder, or a non-empty one that holds no report.

    The report replaces ``out`` as a whole, so a folder of other files (``--out .``) must
    not be taken for an earlier report.
    """
    if not out.exists():
        return
    if not out.is_dir():
        msg = f"--out {out} is a file; choose a folder for the report"
        raise FileExistsError(msg)
    if any(out.iterdir()) and not (out / PAGE).is_file():
        msg = (
            f"--out {out} holds other files and no {PAGE}; the report replaces its folder "
            "as a whole, so choose a new or empty folder"
        )
        raise FileExistsError(msg)
