"""Time and peak memory of every step after ``neighbors``, at atlas scale (issue 14).

Builds a store labelled like the prefrontal-cortex atlas (54 subtypes in 8 classes,
427 donors as batches; a tiny X of a few genes) and two runs, ``spearman`` and
``pearson``, whose neighbours, similarities, cutoff counts and type histogram are
fabricated with numpy but written through rankdist's own result writer
(``reduce/runstore.py``: create_work_dir, write_block, publish_run), so the runs are in
the real on-disk format. Then each step runs in a fresh process of its own, watched
and killed past ``--cap-gb``:

    load              rankdist.load(store, "spearman")
    purity cell_type  purity_table(res, "cell_type")
    purity batch      purity_table(res, "batch")
    batch mixing      batch_summary(res, mixing=batch_mixing(res))  (LISI, kBET, connectivity)
    compare           compare_encodings(spearman, pearson)
    export            rankdist export STORE --run spearman --h5ad OUT
    report            rankdist report STORE --out DIR  (both runs)

Seconds are the step's own (the child's clock around it, imports excluded); peak RSS is
the larger of the child's ``ru_maxrss`` (from ``wait4``) and the sampled sum of its
process tree's RSS. Usage::

    python benchmarks/bench_analysis.py --cells 2300000 --json analysis.json
    python benchmarks/bench_analysis.py --cells 20000 --steps load,report

Prints a table, appends one JSON line per step to ``results/analysis.jsonl``; ``--json
FILE`` also writes the rows as one JSON list.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from _common import machine, versions

GB = 1e9
HERE = Path(__file__).resolve().parent
STEPS = (
    "load",
    "purity cell_type",
    "purity batch",
    "batch mixing",
    "compare",
    "export",
    "report",
)
RUNS = ("spearman", "pearson")
#: Rows per fabricated result block (the result arrays' chunk rows).
BLOCK_ROWS = 32768


# -- the fixture -------------------------------------------------------------------------


def atlas_labels(n_cells: int, seed: int) -> dict[str, np.ndarray]:
    """Subtype, class and donor of each cell, drawn with the atlas's shares."""
    from rankdist.datasets.atlas.taxonomy import (
        CLASSES,
        N_DONORS,
        SUBTYPE_CLASS,
        SUBTYPES,
        subtype_shares,
    )

    rng = np.random.default_rng(seed)
    shares = np.asarray(subtype_shares())
    subtype = rng.choice(len(SUBTYPES), n_cells, p=shares / shares.sum())
    subtype[: len(SUBTYPES)] = np.arange(min(n_cells, len(SUBTYPES)))  # every subtype present
    donors = min(N_DONORS, max(2, n_cells // 50))
    donor = rng.integers(0, donors, n_cells)
    return {
        "cell_type": np.asarray(SUBTYPES, dtype=object)[subtype],
        "coarse_type": np.asarray([c.name for c in CLASSES], dtype=object)[
            np.asarray(SUBTYPE_CLASS)[subtype]
        ],
        "batch": np.asarray([f"donor{d:03d}" for d in range(donors)], dtype=object)[donor],
    }


def build_store(path: Path, n_cells: int, n_genes: int, seed: int):
    """A store of ``n_cells`` atlas-labelled cells with a tiny count matrix."""
    import anndata as ad
    import pandas as pd

    import rankdist

    rng = np.random.default_rng(seed)
    x = rng.poisson(2.0, (n_cells, n_genes)).astype(np.float32)
    x[:, 0] += 1 + np.arange(n_cells) % 7  # no constant cell: none is excluded
    obs = pd.DataFrame(
        {role: pd.Categorical(v) for role, v in atlas_labels(n_cells, seed).items()},
        index=pd.Index([f"cell{i:07d}" for i in range(n_cells)]),
    )
    adata = ad.AnnData(x, obs=obs)
    adata.var_names = [f"g{j}" for j in range(n_genes)]
    return rankdist.ingest(
        adata,
        path,
        cell_type="cell_type",
        coarse_type="coarse_type",
        batch="batch",
        overwrite=True,
        progress=False,
    )


def _distinct_neighbours(idx: np.ndarray, rows: np.ndarray, n: int, rng) -> np.ndarray:
    """``idx`` with repeats within a row and the row's own cell replaced by random cells."""
    while True:
        order = np.sort(idx, axis=1)
        bad_rows = np.flatnonzero(
            (order[:, 1:] == order[:, :-1]).any(axis=1) | (idx == rows[:, None]).any(axis=1)
        )
        if not len(bad_rows):
            return idx
        for r in bad_rows:
            _, first = np.unique(idx[r], return_index=True)
            redo = np.ones(idx.shape[1], dtype=bool)
            redo[first] = False
            redo |= idx[r] == rows[r]
            idx[r, redo] = rng.integers(0, n, int(redo.sum()))


def fabricate_block(store, start: int, stop: int, k: int, n_cutoffs: int, same: int, seed: int):
    """One block's top-k (mostly same-type neighbours) and per-bin label counts."""
    from rankdist.reduce.partial import Partial

    rng = np.random.default_rng(seed)
    labels = store.labels
    t = labels["cell_type"].codes.astype(np.int64)
    n = len(t)
    by_type = np.argsort(t, kind="stable")
    sizes = np.bincount(t, minlength=len(labels["cell_type"].categories))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rows = np.arange(start, stop)
    m = len(rows)
    tb = t[rows]
    pick = (rng.random((m, same)) * sizes[tb, None]).astype(np.int64)
    idx = np.hstack([by_type[starts[tb, None] + pick], rng.integers(0, n, (m, k - same))])
    idx = _distinct_neighbours(idx, rows, n, rng)
    sim = (0.95 - np.sort(rng.random((m, k)), axis=1) * 0.5).astype(np.float32)

    sizes_by_role = {role: len(lab.categories) for role, lab in labels.items()}
    counts = np.zeros((m, n_cutoffs, sum(sizes_by_role.values())), dtype=np.int32)
    offset = dict(zip(sizes_by_role, np.cumsum([0, *sizes_by_role.values()])[:-1], strict=False))
    own = {role: lab.codes[rows].astype(np.int64) for role, lab in labels.items()}
    rr = np.arange(m)
    for c in range(n_cutoffs):
        scale = 0.25**c
        counts[rr, c, offset["cell_type"] + own["cell_type"]] = rng.poisson(400 * scale, m)
        counts[rr, c, offset["coarse_type"] + own["coarse_type"]] = rng.poisson(600 * scale, m)
        counts[rr, c, offset["batch"] + own["batch"]] = rng.poisson(20 * scale, m)
        other_donors = rng.integers(0, sizes_by_role["batch"], (m, 8))
        counts[rr[:, None], c, offset["batch"] + other_donors] = rng.poisson(50 * scale, (m, 8))
    return Partial(
        block=start // BLOCK_ROWS,
        top_sim=sim,
        top_idx=idx,
        counts=counts,
        tiles=frozenset(),
    )


def fabricate_run(store, name: str, encoding: str, k: int, cutoffs, seed: int) -> None:
    """Write a fabricated run ``name`` through rankdist's result writer, then publish it."""
    from rankdist.layout import SUBTILE
    from rankdist.reduce import runstore
    from rankdist.tiles.kernel import HIST_BINS

    n = store.n_cells
    role_sizes = {role: len(lab.categories) for role, lab in store.labels.items()}
    spec = {
        "name": name,
        "encoding": encoding,
        "encoding_params": {},
        "encoding_key": f"{encoding}-fabricated",
        "content_id": store.content_id,
        "form": "dense",
        "k": k,
        "cutoffs": list(cutoffs),
        "labels": {role: lab.column for role, lab in store.labels.items()},
        "subtile": SUBTILE,
        "type_hist": True,
        "n_cells": n,
        "n_genes": store.n_genes,
        "n_excluded": 0,
    }
    work = runstore.work_path(store.path, name)
    shutil.rmtree(work, ignore_errors=True)
    work.parent.mkdir(parents=True, exist_ok=True)
    runstore.create_work_dir(
        work,
        runstore.resume_fingerprint(spec),
        block_rows=BLOCK_ROWS,
        role_sizes=role_sizes,
        hist_bins=HIST_BINS,
    )
    same = k - k // 10 if encoding == "spearman" else k - k // 4
    valid = np.ones(BLOCK_ROWS, dtype=bool)
    for start in range(0, n, BLOCK_ROWS):
        stop = min(n, start + BLOCK_ROWS)
        part = fabricate_block(store, start, stop, k, len(cutoffs), same, seed + start)
        if start == 0:  # one block's histogram stands for the whole run's
            rng = np.random.default_rng(seed)
            n_types = role_sizes["cell_type"]
            part.pair_hist = rng.poisson(50.0, (n_types, n_types, HIST_BINS)).astype(np.int64)
        runstore.write_block(work, part, start, valid[: stop - start], role_sizes)
    runstore.publish_run(
        work,
        runstore.run_path(store.path, name),
        spec | {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "fabricated": True},
        excluded=[],
    )


def build_fixture(store_path: Path, n_cells: int, *, k: int, cutoffs, genes: int, seed: int):
    """The store and its two fabricated runs; returns the store."""
    store = build_store(store_path, n_cells, genes, seed)
    for i, encoding in enumerate(RUNS):
        fabricate_run(store, encoding, encoding, k, cutoffs, seed=seed + 1000 * (i + 1))
    return store


# -- one step, in the child process ---------------------------------------------------------


def run_step(step: str, store_path: str, out: Path) -> None:
    """Run ``step`` on the fixture's store (in this process)."""
    import rankdist
    from rankdist.analysis import batch_mixing, batch_summary, compare_encodings, purity_table
    from rankdist.cli import main as cli

    if step == "load":
        res = rankdist.load(store_path, "spearman")
        assert res.n_cells > 0
    elif step.startswith("purity "):
        purity_table(rankdist.load(store_path, "spearman"), step.split()[1])
    elif step == "batch mixing":
        res = rankdist.load(store_path, "spearman")
        batch_summary(res, mixing=batch_mixing(res))
    elif step == "compare":
        a, b = (rankdist.load(store_path, run) for run in RUNS)
        compare_encodings(a, b)
    elif step == "export":
        argv = ["export", store_path, "--run", "spearman", "--h5ad", str(out / "spearman.h5ad")]
        if cli(argv) != 0:
            raise SystemExit(f"rankdist {' '.join(argv)} failed")
    elif step == "report":
        argv = ["report", store_path, "--out", str(out / "report")]
        if cli(argv) != 0:
            raise SystemExit(f"rankdist {' '.join(argv)} failed")
    else:
        raise SystemExit(f"unknown step {step!r}; steps: {', '.join(STEPS)}")


def child_main(step: str, store_path: str, out: str, fixture: dict) -> None:
    import rankdist.analysis  # noqa: F401  (imports are not the step's time)

    t0 = time.perf_counter()
    if step == "fixture":
        build_fixture(Path(store_path), **fixture)
    else:
        run_step(step, store_path, Path(out))
    print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)


# -- the parent: one process per step, watched -----------------------------------------------


class TreeWatch(threading.Thread):
    """Samples a process tree's summed RSS; kills the tree once it exceeds ``cap`` bytes."""

    def __init__(self, pid: int, cap: float, interval: float = 0.1):
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.cap, self.interval = cap, interval
        self.peak = 0
        self.killed = False
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.done.is_set():
            try:
                tree = [self.proc, *self.proc.children(recursive=True)]
                total = sum(p.memory_info().rss for p in tree)
            except psutil.Error:
                total = 0
            self.peak = max(self.peak, total)
            if total > self.cap and not self.killed:
                self.killed = True
                for p in reversed(tree):
                    try:
                        p.kill()
                    except psutil.Error:
                        pass
            self.done.wait(self.interval)


def measure_step(
    step: str, store_path: Path, out: Path, cap_gb: float, fixture: dict | None = None
) -> dict:
    """Run ``step`` in a child process; its seconds, peak RSS and whether it completed.

    This process stays small (it builds nothing itself): on Linux a child's ``ru_maxrss``
    starts from the RSS of the process it was forked from.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", step]
    cmd += ["--store", str(store_path), "--out", str(out)]
    cmd += ["--fixture", json.dumps(fixture or {})]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    started = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        watch = TreeWatch(proc.pid, cap_gb * GB)
        watch.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        watch.done.set()
        watch.join()
        log.seek(0)
        text = log.read().decode(errors="replace")
    wall = time.perf_counter() - started
    maxrss = usage.ru_maxrss * 1024  # kB on Linux
    peak = max(maxrss, watch.peak) / GB
    seconds = None
    for line in reversed(text.splitlines()):
        if line.startswith('{"seconds"'):
            seconds = json.loads(line)["seconds"]
            break
    if watch.killed:
        status_text = f"out of memory (> {cap_gb:g} GB)"
    elif proc.returncode != 0 or seconds is None:
        status_text = f"failed (exit {proc.returncode}): {text.strip().splitlines()[-1:]}"
    else:
        status_text = "ok"
    return {
        "step": step,
        "seconds": None if seconds is None else round(seconds, 2),
        "process_seconds": round(wall, 2),
        "peak_rss_gb": round(peak, 3),
        "status": status_text,
    }


def run_benchmark(
    cells: int,
    *,
    k: int = 30,
    cutoffs=(0.3, 0.5, 0.7),
    genes: int = 4,
    steps=STEPS,
    cap_gb: float = 20.0,
    workdir: Path | None = None,
    reuse: bool = False,
    seed: int = 0,
    echo=print,
) -> list[dict]:
    """Build the fixture, run and measure each step; the rows of the table.

    With ``reuse``, a fixture already in ``workdir`` built with the same parameters is
    used as it is.
    """
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_analysis-")
        workdir = Path(tmp.name)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        store_path = workdir / f"atlas-{cells}.zarr"
        spec = {"n_cells": cells, "k": k, "cutoffs": list(cutoffs), "genes": genes, "seed": seed}
        spec_file = store_path / "bench_fixture.json"
        if reuse and spec_file.is_file() and json.loads(spec_file.read_text()) == spec:
            fixture = {"step": "fixture", "seconds": None, "peak_rss_gb": 0.0, "status": "reused"}
        else:
            fixture = measure_step("fixture", store_path, workdir, cap_gb, spec)
            if fixture["status"] == "ok":
                spec_file.write_text(json.dumps(spec))
        echo(
            f"fixture: {cells:,} cells, 2 runs, k={k}: {fixture['seconds']} s, "
            f"{fixture['peak_rss_gb']:.2f} GB ({fixture['status']})"
        )
        rows = [fixture]
        for step in steps if fixture["status"] in ("ok", "reused") else ():
            out = workdir / "out"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            row = measure_step(step, store_path, out, cap_gb)
            echo(f"  {step}: {row['seconds']} s, {row['peak_rss_gb']:.2f} GB ({row['status']})")
            rows.append(row)
        common = {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "cells": cells,
            "k": k,
            "cutoffs": list(cutoffs),
            "cap_gb": cap_gb,
        }
        return [common | r for r in rows]
    finally:
        if tmp is not None:
            tmp.cleanup()


def table(rows: list[dict]) -> str:
    lines = ["| step | seconds | peak RSS (GB) | status |", "|---|---|---|---|"]
    for r in rows:
        secs = "-" if r["seconds"] is None else f"{r['seconds']:.1f}"  # killed, or reused
        lines.append(f"| {r['step']} | {secs} | {r['peak_rss_gb']:.2f} | {r['status']} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", type=int, default=2_300_000)
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--cutoffs", default="0.3,0.5,0.7")
    p.add_argument("--genes", type=int, default=4, help="genes of the tiny X (default 4)")
    p.add_argument(
        "--steps", default=",".join(STEPS), help="comma-separated, of: " + ", ".join(STEPS)
    )
    p.add_argument("--cap-gb", type=float, default=20.0, help="kill a step past this RSS (GB)")
    p.add_argument("--workdir", type=Path, help="keep the store here (default: a temporary folder)")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="use the fixture already in --workdir if built with the same parameters",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as a JSON list")
    p.add_argument("--results", type=Path, default=HERE / "results", help=argparse.SUPPRESS)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--fixture", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_main(args.child, args.store, args.out, json.loads(args.fixture))
        return
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        p.error(f"unknown step(s) {unknown}; steps: {', '.join(STEPS)}")
    rows = run_benchmark(
        args.cells,
        k=args.k,
        cutoffs=tuple(float(c) for c in args.cutoffs.split(",")),
        genes=args.genes,
        steps=steps,
        cap_gb=args.cap_gb,
        workdir=args.workdir,
        reuse=args.reuse,
    )
    info = {"machine": machine(), "versions": versions()}
    print(table(rows))
    args.results.mkdir(parents=True, exist_ok=True)
    with open(args.results / "analysis.jsonl", "a") as fh:
        for r in rows:
            fh.write(json.dumps(r | info) + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
