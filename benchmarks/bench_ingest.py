"""Benchmark: does ``rankdist ingest`` stream a large .h5ad with memory independent of N?

Usage::

    nice -n 10 python benchmarks/bench_ingest.py [--cells 50000,500000] [--genes hvg:2000]
        [--workers 2] [--workdir DIR] [--keep]

For each cell count, ``rankdist synth`` writes a synthetic prefrontal-cortex atlas as a
CSR .h5ad with all 33,538 genes (docs/synth.md), then ``rankdist ingest`` streams it into
a store with the gene selection ``--genes`` and the three label columns. Both run as
child processes of this script, so each is measured alone:

- generation: wall and CPU time, and peak RSS of the generating process and its Dask workers
  (psutil, sampled every 0.1 s, summed over the process tree);
- ingest: wall and CPU time, and its peak RSS from the kernel (``ru_maxrss`` of the ingest
  process, reported by it at exit) and from the sampler.

It prints a table (with the ratio of the largest to the smallest run's ingest peak RSS)
and appends one JSON line per cell count to benchmarks/results/ingest.jsonl. Disk space
is checked first (the .h5ad takes about 17 kB per cell); the files are deleted at the
end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from _common import RssSampler

MB = 1e6
#: Bytes of .h5ad per cell at 33,538 genes (about 2,100 nonzeros x 8 bytes: 16.8 kB measured).
H5AD_BYTES_PER_CELL = 17_000
RESULTS = Path(__file__).parent / "results" / "ingest.jsonl"
#: Runs ``rankdist ingest`` and reports the process's own peak RSS (kB on Linux) at exit.
INGEST_CHILD = """
import json, resource, sys
from rankdist.cli import main
rc = main(sys.argv[1:])
print("MAXRSS " + json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss), flush=True)
sys.exit(rc)
"""


def measured(cmd: list[str]) -> tuple[float, float, RssSampler, str]:
    """Run ``cmd``; return its wall time, CPU time (all descendants), RSS sampler, stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = RssSampler(interval=0.1, pid=proc.pid)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        msg = f"{' '.join(cmd)} failed ({proc.returncode}):\n{err}"
        raise RuntimeError(msg)
    return wall, cpu, sampler, out


def bench_one(n_cells: int, genes: str, workers: int, work: Path) -> dict:
    h5ad, store = work / f"atlas_{n_cells}.h5ad", work / f"atlas_{n_cells}.zarr"
    exe = str(Path(sys.executable).with_name("rankdist"))
    gen_cmd = [exe, "synth", str(h5ad), "--cells", str(n_cells), "--workers", str(workers)]
    gen_wall, gen_cpu, gen_rss, _ = measured([*gen_cmd, "--quiet", "--overwrite"])
    ingest_args = [
        "ingest",
        str(h5ad),
        str(store),
        "--cell-type",
        "cell_type",
        "--coarse-type",
        "coarse_type",
        "--batch",
        "batch",
        "--genes",
        genes,
        "--quiet",
        "--overwrite",
    ]
    ing_wall, ing_cpu, ing_rss, out = measured([sys.executable, "-c", INGEST_CHILD, *ingest_args])
    maxrss_kb = int(next(ln for ln in out.splitlines() if ln.startswith("MAXRSS")).split()[1])
    store_bytes = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    return {
        "cells": n_cells,
        "genes_model": 33_538,
        "ingest_genes": genes,
        "h5ad_bytes": h5ad.stat().st_size,
        "store_bytes": store_bytes,
        "generate_workers": workers,
        "generate_wall_s": round(gen_wall, 1),
        "generate_cpu_s": round(gen_cpu, 1),
        "generate_peak_rss_mb_tree": round(gen_rss.peak_total / MB),
        "generate_peak_rss_mb_client": round(gen_rss.peak.get(gen_rss.me.pid, 0) / MB),
        "ingest_wall_s": round(ing_wall, 1),
        "ingest_cpu_s": round(ing_cpu, 1),
        "ingest_peak_rss_mb": round(maxrss_kb * 1024 / MB),
        "ingest_peak_rss_mb_sampled": round(ing_rss.peak_total / MB),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="50000,500000", help="comma-separated cell counts")
    parser.add_argument("--genes", default="hvg:2000", help="ingest's --genes (default hvg:2000)")
    parser.add_argument("--workers", type=int, default=2, help="generation worker processes")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary dir")
    parser.add_argument("--keep", action="store_true", help="keep the .h5ad files and stores")
    args = parser.parse_args()
    sizes = [int(c) for c in args.cells.split(",")]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="rankdist-bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    need = max(sizes) * H5AD_BYTES_PER_CELL * 1.5  # the .h5ad plus its store
    free = shutil.disk_usage(work).free
    if free < need:
        msg = f"{work} has {free / 1e9:.1f} GB free; {need / 1e9:.1f} GB are needed"
        raise SystemExit(msg)
    print(f"working in {work} ({free / 1e9:.0f} GB free, about {need / 1e9:.1f} GB needed)")
    rows = []
    try:
        for n in sizes:
            row = bench_one(n, args.genes, args.workers, work)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if not args.keep:
                for p in work.glob(f"atlas_{n}.*"):
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    header = (
        f"{'cells':>9} {'h5ad GB':>8} {'gen s':>7} {'gen CPU s':>9} {'gen RSS MB':>10} "
        f"{'ingest s':>9} {'ingest CPU s':>12} {'ingest RSS MB':>13} {'store GB':>9}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['cells']:>9} {r['h5ad_bytes'] / 1e9:>8.2f} {r['generate_wall_s']:>7.1f} "
            f"{r['generate_cpu_s']:>9.1f} {r['generate_peak_rss_mb_tree']:>10} "
            f"{r['ingest_wall_s']:>9.1f} {r['ingest_cpu_s']:>12.1f} "
            f"{r['ingest_peak_rss_mb']:>13} {r['store_bytes'] / 1e9:>9.2f}"
        )
    if len(rows) > 1:
        lo, hi = rows[0], rows[-1]
        print(
            f"ingest peak RSS ratio {hi['cells']} / {lo['cells']} cells: "
            f"{hi['ingest_peak_rss_mb'] / lo['ingest_peak_rss_mb']:.2f} "
            f"(cells x{hi['cells'] / lo['cells']:.0f})"
        )
    versions = {p: version(p) for p in ("rankdist", "numpy", "h5py", "zarr", "anndata", "numba")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as fh:
        for r in rows:
            line = {
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": platform.node(),
                "cpus": len(os.sched_getaffinity(0)),
                **r,
                "versions": versions,
            }
            fh.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
