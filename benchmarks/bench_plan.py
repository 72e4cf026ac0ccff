"""Benchmark: the capacity model's wall time against real ``rankdist.neighbors`` runs.

Usage::

    nice -n 10 python benchmarks/bench_plan.py [--cells 5000,10000,20000] [--genes 2000]
        [--repeats 3] [--calibration FILE | --calibrate] [--workdir DIR]

For each size, synthetic counts (``rankdist.datasets.toy.synthetic_counts``, 6 cell types in 3
classes, 2 batches) are ingested, then ``rankdist.neighbors`` runs on its own local
cluster (one worker, one thread per core: the default), k = 30, one cutoff. Its wall
time, cluster start-up and encoding included (the fastest of ``--repeats`` runs, as the
calibration keeps its fastest pass), is compared with what
``rankdist.planning.model.plan_run`` predicts for the same machine (``--cluster local``,
one node with this machine's cores and memory) from the calibration file (``--calibration``,
or the one ``rankdist plan`` reads). A warm-up run on a small store first fills numba's
on-disk cache, as on any machine after the first run. It prints a table and appends a
JSON line to benchmarks/results/plan.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="5000,10000,20000", help="comma-separated sizes")
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--k", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3, help="runs per size (fastest kept)")
    parser.add_argument(
        "--calibration",
        default=None,
        help="default: yours (rankdist plan --calibrate) if written, else the packaged file",
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="calibrate first (into a temporary file), so both run under the same load",
    )
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    args = parser.parse_args()

    import numpy as np
    import psutil

    import rankdist
    from rankdist.datasets.toy import synthetic_counts
    from rankdist.planning.calibration import load_calibration
    from rankdist.planning.model import Layout, RunSpec, plan_run

    cores = len(os.sched_getaffinity(0))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="rankdist-bench-plan-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.calibrate:
        from rankdist.planning.calibrate import calibrate

        args.calibration = work / "calibration.json"
        calibrate(args.calibration, workdir=work)
    cal = load_calibration(args.calibration)
    load_before = os.getloadavg()
    g, k = args.genes, args.k
    print(
        f"{cores} cores; calibration of {cal.measured.get('date', '?')} on "
        f"{cal.measured.get('host', '?')}; work dir {work}"
    )
    warm = rankdist.ingest(
        synthetic_counts(1200, g, seed=1),
        work / "warm.zarr",
        cell_type="cell_type",
        overwrite=True,
        progress=False,
    )
    rankdist.neighbors(warm, k=k, progress=False)

    layout = Layout(1, cores, float(psutil.virtual_memory().total), scheduler="local")
    rows = []
    for n in [int(c) for c in args.cells.split(",")]:
        store = rankdist.ingest(
            synthetic_counts(n, g, seed=0),
            work / f"s{n}.zarr",
            cell_type="cell_type",
            coarse_type="coarse_type",
            batch="batch",
            overwrite=True,
            progress=False,
        )
        sizes = tuple(len(store.labels[r].categories) for r in store.labels)
        walls = []
        for rep in range(args.repeats):
            shutil.rmtree(store.path / "encodings", ignore_errors=True)  # encode every time
            t0 = time.perf_counter()
            res = rankdist.neighbors(store, k=k, cutoffs=(0.5,), progress=False, name=f"r{rep}")
            walls.append(time.perf_counter() - t0)
        meta = res.metadata
        plan = plan_run(RunSpec(n, g, k=k, n_cutoffs=1, label_values=sizes), layout, cal)
        measured = min(walls)  # the run least disturbed by other work, as the calibration
        w = plan.wall
        rows.append(
            {
                "cells": n,
                "genes": g,
                "block_rows": meta["block_rows"],
                "block_rows_planned": plan.block_rows,
                "n_tiles": meta["n_tiles"],
                "measured_s": round(measured, 2),
                "measured_runs_s": [round(x, 2) for x in walls],
                "measured_median_s": round(float(np.median(walls)), 2),
                "predicted_s": round(w.total, 2),
                "predicted_parts_s": {
                    "startup": round(w.startup, 2),
                    "encode": round(w.encode, 2),
                    "tiles": round(w.tiles, 2),
                    "tail": round(w.tail, 2),
                    "reduce": round(w.reduce, 2),
                    "scheduler": round(w.scheduler, 2),
                },
                "predicted_over_measured": round(w.total / measured, 3),
            }
        )
        shutil.rmtree(store.path)

    print()
    head = f"{'cells':>7} {'block':>6} {'tiles':>5} {'predicted':>10} {'measured':>9} {'ratio':>6}"
    print(head + "   predicted parts (s)")
    for r in rows:
        parts = " ".join(f"{k}={v}" for k, v in r["predicted_parts_s"].items())
        print(
            f"{r['cells']:>7} {r['block_rows']:>6} {r['n_tiles']:>5} {r['predicted_s']:>9.1f}s "
            f"{r['measured_s']:>8.1f}s {r['predicted_over_measured']:>6.2f}   {parts}"
        )
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cores": cores,
        "calibration": {k: v for k, v in cal.__dict__.items() if k != "measured"},
        "calibration_date": cal.measured.get("date"),
        "calibrated_here": bool(args.calibrate),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "runs": rows,
    }
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    with open(out / "plan.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")
    print(f"load average before / after: {record['load_average_before_after']}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
