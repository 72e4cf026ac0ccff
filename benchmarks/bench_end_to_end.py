"""The acceptance run: every step a user runs, from a synthetic atlas to a report and a file.

Each step is the ``rankdist`` command a user types, run in a process of its own on the
embedded default cluster, timed (wall clock) and watched for peak RSS over its whole
process tree (the larger of ``ru_maxrss`` from ``wait4`` and the sampled tree sum)::

    synth      rankdist synth --cells N --genes G STORE
    neighbors  rankdist neighbors STORE --encoding spearman --cutoffs C
    neighbors  rankdist neighbors STORE --encoding pearson --cutoffs C
    report     rankdist report STORE --out DIR          (both runs)
    export     rankdist export STORE --run spearman --h5ad OUT

Usage::

    python benchmarks/bench_end_to_end.py --cells 1000000 --genes 100 --cutoffs 0.7 \\
        --workdir /scratch/e2e --json e2e.json

Prints a table, appends one JSON line per step to ``results/end_to_end.jsonl``; ``--json
FILE`` also writes the rows as one JSON list. A step that fails stops the run (the later
steps need its output) and is recorded with its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_analysis import GB, TreeWatch

from _common import machine, versions

HERE = Path(__file__).resolve().parent


def steps(store: Path, out: Path, *, cells: int, genes: int, cutoffs: str, k: int) -> list:
    """(name, command) of every step, in order."""
    rd = [sys.executable, "-m", "rankdist.cli"]
    nb = ["--k", str(k), "--cutoffs", cutoffs, "--quiet"]
    synth = ["synth", "--cells", str(cells), "--genes", str(genes), "--quiet", str(store)]
    h5ad = str(out / "spearman.h5ad")
    return [
        ("synth", [*rd, *synth]),
        ("neighbors spearman", [*rd, "neighbors", str(store), "--encoding", "spearman", *nb]),
        ("neighbors pearson", [*rd, "neighbors", str(store), "--encoding", "pearson", *nb]),
        ("report", [*rd, "report", str(store), "--out", str(out / "report")]),
        ("export", [*rd, "export", str(store), "--run", "spearman", "--h5ad", h5ad]),
    ]


def measure(name: str, cmd: list, cap_gb: float) -> dict:
    """Run one command; its wall seconds, peak RSS over its process tree and status."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    started = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        watch = TreeWatch(proc.pid, cap_gb * GB, interval=0.5)
        watch.start()
        _, status, usage = os.wait4(proc.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        watch.done.set()
        watch.join()
        log.seek(0)
        text = log.read().decode(errors="replace").strip()
    seconds = time.perf_counter() - started
    peak = max(usage.ru_maxrss * 1024, watch.peak) / GB
    if watch.killed:
        state = f"out of memory (> {cap_gb:g} GB)"
    elif code != 0:
        state = f"failed (exit {code}): {text.splitlines()[-1:] or ''}"
    else:
        state = "ok"
    return {
        "step": name,
        "seconds": round(seconds, 1),
        "peak_rss_gb": round(peak, 2),
        "status": state,
    }


def run_metadata(store: Path, name: str) -> dict:
    """What the run recorded of itself: block size, kernel, wall time."""
    from rankdist.io.verified import open_group

    attrs = open_group(str(store / "results" / name), mode="r").attrs.asdict()["run"]
    keys = ("block_rows", "n_tiles", "kernel", "kernel_reason", "blocks", "wall_time_s")
    return {key: attrs.get(key) for key in keys}


def table(rows: list[dict]) -> str:
    lines = ["| step | seconds | peak RSS (GB) | status |", "|---|---|---|---|"]
    for r in rows:
        cells = (r["step"], f"{r['seconds']:.1f}", f"{r['peak_rss_gb']:.2f}", r["status"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", type=int, default=1_000_000)
    p.add_argument("--genes", type=int, default=100, help="synth --genes (default 100)")
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--cutoffs", default="0.7")
    p.add_argument("--cap-gb", type=float, default=22.0, help="kill a step past this RSS (GB)")
    p.add_argument("--workdir", type=Path, help="keep the store here (default: a temporary folder)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as a JSON list")
    p.add_argument("--results", type=Path, default=HERE / "results", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="bench_e2e-")
    work = Path(args.workdir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    store, out = work / f"atlas-{args.cells}.zarr", work / "out"
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    common = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cells": args.cells,
        "genes": args.genes,
        "k": args.k,
        "cutoffs": [float(c) for c in args.cutoffs.split(",")],
        "machine": machine(),
        "versions": versions(),
    }
    rows = []
    try:
        todo = steps(store, out, cells=args.cells, genes=args.genes, cutoffs=args.cutoffs, k=args.k)
        for name, cmd in todo:
            row = measure(name, cmd, args.cap_gb)
            if row["status"] == "ok" and name.startswith("neighbors"):
                row["run"] = run_metadata(store, name.split()[1])
            said = f"{row['seconds']} s, {row['peak_rss_gb']:.2f} GB ({row['status']})"
            print(f"{name}: {said}", flush=True)
            rows.append(common | row)
            if row["status"] != "ok":
                break
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(table(rows))
    args.results.mkdir(parents=True, exist_ok=True)
    with open(args.results / "end_to_end.jsonl", "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
