"""Benchmark suite: exact rankdist self-kNN against faiss, scikit-learn and scanpy.

Usage::

    python benchmarks/bench_suite.py [--cells 10000,30000,100000] [--genes 2000] [--k 30]
        [--methods rankdist,faiss,sklearn,scanpy] [--max-seconds 900] [--workdir DIR]

For each number of cells, one process ingests the same synthetic counts and runs:

- rankdist: ``rankdist.neighbors(store, k=k, cutoffs=(0.5,))`` from the ingested store to
  the stored result (encoding and LocalCluster start-up included; numba's one-off JIT
  excluded by a warm-up run on a small store first). Its result is the exact answer.
- faiss: ``IndexFlatIP`` exact search on the standardised ranks (read from rankdist's
  encoding cache before the clock starts), k+1 with each cell itself removed.
- sklearn: ``NearestNeighbors(metric="correlation", algorithm="brute")`` on the same
  standardised ranks (correlation of ranks = Spearman; scipy's cdist in float64). Its time
  is first estimated from a probe of a few query cells and the method is skipped (and
  shown as skipped) when the estimate exceeds ``--max-seconds``.
- scanpy: ``sc.pp.neighbors(use_rep=..., metric="cosine", n_neighbors=k+1)`` on an AnnData
  whose obsm holds the standardised ranks (cosine = correlation on rows of mean 0). From
  4096 cells scanpy searches with pynndescent (approximate), below with exact brute force.

Each method is timed and its peak RSS sampled (this process and its children, the Dask
workers included) while it runs. Recall@k compares each method with rankdist. The float32
matmul rate of the machine is measured in the same run. The tables go to stdout, a JSON
line per method and size is appended to benchmarks/results/suite.jsonl and
benchmarks/results/suite.md is rewritten. Columns are described in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import (
    cached_spearman,
    clear_encodings,
    faiss_knn,
    machine,
    matmul_rate,
    measure,
    synthetic_store,
    versions,
    warm_up_rankdist,
)

METHODS = ("rankdist", "faiss", "sklearn", "scanpy")
RESULTS = Path(__file__).parent / "results"
#: scanpy's sc.pp.neighbors searches with pynndescent from this many cells, brute force below.
SCANPY_NNDESCENT_FROM = 4096
#: Query cells x indexed cells that sklearn's probe computes (a few seconds at G=2000).
SKLEARN_PROBE_PAIRS = 4e6
#: A neighbour counts for recall if its exact similarity is within this of the k-th best.
TIE_TOL = 1e-5


def run_suite(
    cells=(10_000, 30_000, 100_000),
    genes: int = 2000,
    k: int = 30,
    methods=METHODS,
    max_seconds: float = 900.0,
    workdir: str | Path | None = None,
    results_dir: str | Path | None = RESULTS,
    block_size: int | None = None,
    matmul_seconds: float = 3.0,
    echo=print,
) -> list[dict]:
    """Run every method at every size and write the results.

    Parameters
    ----------
    cells
        Numbers of cells, one benchmark each.
    genes
        Genes per cell.
    k
        Neighbours per cell, the cell itself excluded.
    methods
        Subset of ``METHODS``; ``'rankdist'`` is required (it is the exact answer).
    max_seconds
        Skip sklearn where its estimated time exceeds this.
    workdir
        Where the stores go (kept); default a temporary folder, removed afterwards.
    results_dir
        Folder for suite.jsonl and suite.md; None writes nothing.
    block_size
        rankdist's block size (default: its own choice).
    matmul_seconds
        How long to measure the matmul rate.
    echo
        Called with each progress line and table.

    Returns
    -------
    list of dict
        One row per size and method: ``method``, ``label``, ``wall_s``,
        ``peak_rss_mb``, ``start_rss_mb``, ``recall``, ``set_overlap``, ``skipped``
        (None or the reason), and the run's context.
    """
    methods = tuple(methods)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or "rankdist" not in methods:
        msg = (
            f"methods {list(methods)}: unknown {unknown}, or 'rankdist' missing (it gives the "
            f"exact answer); choose from {list(METHODS)}, e.g. --methods rankdist,faiss"
        )
        raise ValueError(msg)
    own_work = workdir is None
    work = Path(workdir or tempfile.mkdtemp(prefix="rankdist-suite-"))
    work.mkdir(parents=True, exist_ok=True)
    context = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine()}
    context["versions"] = versions()
    cores = context["machine"]["cores"]

    echo(f"warming up (imports, numba JIT) in {work}")
    warm_up_rankdist(work, genes, k)
    warm_up_baselines(methods, k, cores, nndescent=max(cells) >= SCANPY_NNDESCENT_FROM)
    context["matmul_gflops"] = matmul_rate(g=genes, seconds=matmul_seconds)
    echo(
        f"float32 matmul rate: {context['matmul_gflops']:.1f} GFLOP/s on {cores} cores "
        f"(load average at the start {context['machine']['load_avg_1min']})"
    )

    rows, sections = [], []
    try:
        for n in cells:
            echo(f"\n{n} cells x {genes} genes, k={k}: ingesting")
            store = synthetic_store(work / f"suite-{n}.zarr", n, genes, seed=0)
            size_rows = _one_size(store, n, genes, k, methods, max_seconds, cores, block_size, echo)
            size_rows = [{**r, **context, "cells": n, "genes": genes, "k": k} for r in size_rows]
            rows += size_rows
            sections.append(format_section(size_rows, markdown=True))
            echo(format_section(size_rows, markdown=False))
            if results_dir is not None:
                write_results(Path(results_dir), size_rows, sections, context)
            if own_work:
                shutil.rmtree(store.path, ignore_errors=True)
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    return rows


def _one_size(store, n, genes, k, methods, max_seconds, cores, block_size, echo) -> list[dict]:
    import rankdist

    clear_encodings(store)
    echo("  rankdist ...")
    run = measure(
        rankdist.neighbors, store, k=k, cutoffs=(0.5,), block_size=block_size, progress=False
    )
    exact = run.pop("value")
    meta = exact.metadata
    flops = 2 * genes * n * (n + 1) / 2
    rows = [
        {
            "method": "rankdist",
            "label": "rankdist neighbors (exact)",
            **run,
            "block_rows": meta["block_rows"],
            "n_tiles": meta["n_tiles"],
            "workers": meta["workers"],
            "gflops": flops / run["wall_s"] / 1e9,
        }
    ]
    z_all, valid = cached_spearman(store)
    cell_ids = np.flatnonzero(valid)  # baselines see only cells with a defined correlation
    z = np.ascontiguousarray(z_all[cell_ids])
    del z_all
    exact_idx = np.searchsorted(cell_ids, exact.indices[cell_ids])  # into z's rows
    exact_sim = exact.similarities[cell_ids]
    results = {"rankdist": exact_idx}

    if "faiss" in methods:
        echo("  faiss IndexFlatIP ...")
        run = measure(faiss_knn, z, k, cores)
        f_idx, f_sim = run.pop("value")
        results["faiss"] = f_idx
        rows.append(
            {
                "method": "faiss",
                "label": "faiss IndexFlatIP (exact)",
                **run,
                "max_abs_sim_diff": float(np.max(np.abs(f_sim - exact_sim))),
            }
        )
    if "sklearn" in methods:
        row, found = sklearn_row(z, k, max_seconds, echo)
        rows.append(row)
        if found is not None:
            results["sklearn"] = found
    if "scanpy" in methods:
        backend = "pynndescent, approx." if len(z) >= SCANPY_NNDESCENT_FROM else "brute, exact"
        echo(f"  scanpy ({backend}) ...")
        run = measure(scanpy_knn, z, k, cores)
        results["scanpy"] = run.pop("value")
        rows.append({"method": "scanpy", "label": f"scanpy pp.neighbors ({backend})", **run})

    for row in rows:
        row.setdefault("skipped", None)
        if row["method"] in results:
            got = results[row["method"]]
            row["recall"] = recall_at_k(z, got, exact_sim[:, -1])
            row["set_overlap"] = set_overlap(got, exact_idx)
    t_rankdist = rows[0]["wall_s"]
    for row in rows:
        if row.get("wall_s"):
            row["vs_rankdist"] = row["wall_s"] / t_rankdist
    return rows


def warm_up_baselines(methods, k: int, cores: int, nndescent: bool) -> None:
    """Import the baselines and compile their numba code on small random data.

    Like rankdist's JIT, these one-off costs stay out of the timings: importing scanpy
    alone takes seconds, and pynndescent and umap (scanpy's connectivities) compile on
    their first call.
    """
    rng = np.random.default_rng(2)
    sizes = [max(4 * k, 64)] + ([SCANPY_NNDESCENT_FROM] if nndescent else [])
    for n in sizes:
        z = rng.standard_normal((n, 16), dtype=np.float32)
        z -= z.mean(axis=1, keepdims=True)
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        if n == sizes[0]:
            if "faiss" in methods:
                faiss_knn(z, k, cores)
            if "sklearn" in methods:
                sklearn_knn(z, k)
        if "scanpy" in methods:
            scanpy_knn(z, k, cores)


def sklearn_row(z: np.ndarray, k: int, max_seconds: float, echo=print):
    """sklearn's row of the table and its neighbours, or a skipped row (neighbours None).

    Skipped where :func:`sklearn_estimate` exceeds ``max_seconds``.
    """
    label = "sklearn brute, correlation (exact)"
    est = sklearn_estimate(z, k)
    if est > max_seconds:
        return {
            "method": "sklearn",
            "label": label,
            "skipped": f"est. {est:.0f} s",
            "est_s": est,
        }, None
    echo(f"  sklearn (est. {est:.0f} s) ...")
    run = measure(sklearn_knn, z, k)
    found = run.pop("value")
    return {"method": "sklearn", "label": label, **run, "est_s": est, "skipped": None}, found


def sklearn_knn(z: np.ndarray, k: int) -> np.ndarray:
    """``(n, k)`` exact neighbours by correlation distance, scikit-learn brute force."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, metric="correlation", algorithm="brute", n_jobs=-1)
    return nn.fit(z).kneighbors(return_distance=False)  # X=None: each cell itself left out


def sklearn_estimate(z: np.ndarray, k: int) -> float:
    """Seconds ``sklearn_knn(z, k)`` would take, from a timed probe of a few query cells."""
    from sklearn.neighbors import NearestNeighbors

    n = len(z)
    m = int(min(n, max(8, SKLEARN_PROBE_PAIRS // n)))
    nn = NearestNeighbors(n_neighbors=k + 1, metric="correlation", algorithm="brute", n_jobs=-1)
    t0 = time.perf_counter()
    nn.fit(z).kneighbors(z[:m])
    return (time.perf_counter() - t0) * n / m


def scanpy_knn(z: np.ndarray, k: int, cores: int) -> np.ndarray:
    """``(n, k)`` neighbours from ``sc.pp.neighbors`` on the standardised ranks.

    ``n_neighbors=k+1`` because scanpy counts the cell itself; the k nearest other cells
    are read from ``obsp['distances']`` (-1 where a row has fewer).
    """
    import anndata as ad
    import pandas as pd
    import scanpy as sc

    n = len(z)
    adata = ad.AnnData(obs=pd.DataFrame(index=np.arange(n).astype(str)), obsm={"X_ranks": z})
    jobs, sc.settings.n_jobs = sc.settings.n_jobs, cores
    try:
        sc.pp.neighbors(
            adata, n_neighbors=k + 1, use_rep="X_ranks", metric="cosine", random_state=0
        )
    finally:
        sc.settings.n_jobs = jobs
    dist = adata.obsp["distances"].tocsr()
    out = np.full((n, k), -1, dtype=np.int64)
    for i in range(n):
        span = slice(dist.indptr[i], dist.indptr[i + 1])
        cols, vals = dist.indices[span], dist.data[span]
        keep = cols != i
        best = cols[keep][np.argsort(vals[keep], kind="stable")[:k]]
        out[i, : len(best)] = best
    return out


def recall_at_k(z: np.ndarray, got: np.ndarray, kth_sim: np.ndarray, rows: int = 256) -> float:
    """Mean share of the k returned neighbours that are among the exact top k, ties allowed.

    A returned neighbour j of cell i counts if it is another cell, not returned twice,
    and its exact similarity ``z[i] @ z[j]`` is at least the exact k-th best similarity
    of i minus ``TIE_TOL``; so a method that picks a different one of several tied cells
    is not penalised.
    """
    n, k = got.shape
    hits = 0
    for start in range(0, n, rows):
        idx = np.sort(got[start : start + rows], axis=1)
        own = np.arange(start, start + len(idx))[:, None]
        ok = (idx >= 0) & (idx != own)
        ok[:, 1:] &= idx[:, 1:] != idx[:, :-1]
        sim = np.matmul(z[np.where(ok, idx, 0)], z[start : start + len(idx), :, None])[..., 0]
        hits += int((ok & (sim >= kth_sim[start : start + len(idx), None] - TIE_TOL)).sum())
    return hits / (n * k)


def set_overlap(got: np.ndarray, exact: np.ndarray, rows: int = 1024) -> float:
    """Mean share of the exact top-k indices that a method returned (ties not allowed)."""
    n, k = exact.shape
    found = 0
    for start in range(0, n, rows):
        g, e = got[start : start + rows], exact[start : start + rows]
        found += int((e[:, :, None] == g[:, None, :]).any(axis=2).sum())
    return found / (n * k)


def format_section(rows: list[dict], markdown: bool) -> str:
    """One size's table and its summary lines (plain text or markdown)."""
    first = rows[0]
    n, g, k = first["cells"], first["genes"], first["k"]
    head = ["method", "wall (s)", "x rankdist", "peak RSS (MB)", "RSS added (MB)", f"recall@{k}"]
    body = []
    for r in rows:
        if r["skipped"]:
            body.append([r["label"], f"skipped: {r['skipped']}", "-", "-", "-", "-"])
            continue
        body.append(
            [
                r["label"],
                f"{r['wall_s']:.3g}",
                f"{r['vs_rankdist']:.3g}",
                f"{r['peak_rss_mb']:.0f}",
                f"{r['peak_rss_mb'] - r['start_rss_mb']:.0f}",
                f"{r['recall']:.4f}",
            ]
        )
    title = f"{n} cells x {g} genes, k={k}"
    lines = [f"### {title}" if markdown else title, ""]
    if markdown:
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(b) + " |" for b in body]
    else:
        widths = [max(len(str(c)) for c in col) for col in zip(head, *body, strict=True)]
        for cells in [head, *body]:
            lines.append("  ".join(f"{c:<{w}}" for c, w in zip(cells, widths, strict=True)))
    rd = first
    rate = rd["matmul_gflops"]
    notes = [
        f"rankdist: {rd['gflops']:.3g} GFLOP/s on 2GN(N+1)/2 = {rd['gflops'] / rate:.1%} of the "
        f"float32 matmul rate ({rate:.1f} GFLOP/s); {rd['n_tiles']} tiles of "
        f"{rd['block_rows']} cells",
    ]
    faiss_row = next((r for r in rows if r["method"] == "faiss"), None)
    if faiss_row:
        notes.append(
            f"rankdist / faiss wall time: {rd['wall_s'] / faiss_row['wall_s']:.2f}; faiss vs "
            f"rankdist: recall {faiss_row['recall']:.4f}, same indices "
            f"{faiss_row['set_overlap']:.4f}, max |similarity difference| "
            f"{faiss_row['max_abs_sim_diff']:.1e}"
        )
    lines += [""] + [f"- {s}" if markdown else s for s in notes]
    return "\n".join(lines) + "\n"


def write_results(out: Path, rows: list[dict], sections: list[str], context: dict) -> None:
    """Append ``rows`` to out/suite.jsonl; rewrite out/suite.md with every section so far."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "suite.jsonl", "a") as fh:
        for row in rows:
            fh.write(json.dumps(row, default=float) + "\n")
    m, v = context["machine"], context["versions"]
    header = [
        "# rankdist benchmark suite",
        "",
        f"Run {context['date']} on {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB "
        f"memory, {m['os']}, Python {m['python']}; 1-minute load average at the start: "
        f"{m['load_avg_1min']}. float32 matmul rate: {context['matmul_gflops']:.1f} GFLOP/s.",
        "",
        "Versions: " + ", ".join(f"{p} {ver}" for p, ver in v.items()) + ".",
        "",
        "Written by `python benchmarks/bench_suite.py`; columns are explained in "
        "benchmarks/README.md.",
        "",
    ]
    (out / "suite.md").write_text("\n".join(header) + "\n" + "\n".join(sections))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="10000,30000,100000", help="comma-separated sizes")
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--k", type=int, default=30)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=900.0,
        help="skip sklearn where its estimated time exceeds this (default 900)",
    )
    parser.add_argument("--workdir", default=None, help="keep the stores here (default: temp)")
    parser.add_argument("--block-size", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        cells = [int(c) for c in args.cells.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--cells {args.cells!r}: give whole numbers, e.g. --cells 10000,30000")
    run_suite(
        cells,
        args.genes,
        args.k,
        [m.strip() for m in args.methods.split(",")],
        args.max_seconds,
        args.workdir,
        RESULTS,
        args.block_size,
        echo=lambda s: print(s, flush=True),
    )


if __name__ == "__main__":
    sys.exit(main())
