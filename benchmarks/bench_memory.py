"""Benchmark: memory of ``rankdist.neighbors`` on a worker with a 2 GB memory limit.

Usage::

    python benchmarks/bench_memory.py [--cells 100000] [--genes 2000] [--k 30]
        [--memory-limit 2GB] [--threads 2] [--block-size B] [--workdir DIR]

Synthetic counts (``rankdist.datasets.toy.synthetic_counts``) are generated in a child process
and written to an .h5ad, so neither the generation nor a whole AnnData in memory counts
against this process; ``rankdist.ingest`` then streams the file into a store. After a
warm-up run on a small store (numba compiles once and caches on disk), a LocalCluster
with one worker process (``--threads`` threads, ``--memory-limit``) runs
``rankdist.neighbors`` with k neighbours and cutoffs (0.5,), and this script reports:

- the wall time of ``neighbors`` (encoding included, cluster start-up not);
- whether the worker was restarted: worker addresses and pids before and after, and the
  scheduler's and nanny's logs searched for restarts, KilledWorker and memory kills;
- peak RSS of every worker process (psutil, sampled every 0.2 s, and the worker's own
  ``ru_maxrss``), of the client process (which also hosts the scheduler) and of all of
  them together;
- the worker's memory warnings (spilling, pausing) from its log;
- the block size rankdist chose.

It prints a table and appends a JSON line to benchmarks/results/memory.jsonl.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import resource
import shutil
import tempfile
import time
from pathlib import Path

from _common import RssSampler

#: Log lines that mean a worker process died or was restarted.
RESTART_PATTERN = re.compile(
    r"restart|KilledWorker|killed|exceeded \d+% memory budget|Worker process \d+ was",
    re.IGNORECASE,
)
#: Log lines about the worker's memory management (spilling, pausing, unmanaged memory).
MEMORY_PATTERN = re.compile(r"memory us|spill|pausing|resuming", re.IGNORECASE)
MB = 1e6


def write_synthetic_h5ad(path: str, n_cells: int, n_genes: int, seed: int) -> None:
    """Generate counts and write them to ``path`` (runs in a child process)."""
    from rankdist.datasets.toy import synthetic_counts

    synthetic_counts(n_cells, n_genes, seed=seed).write_h5ad(path)


def worker_pids(client) -> dict[str, int]:
    """Worker address -> worker process id."""
    return client.run(os.getpid)


def matching_lines(logs, pattern: re.Pattern) -> list[str]:
    """Lines of Dask logs (a list of (level, message), or a dict of them) matching ``pattern``."""
    if isinstance(logs, dict):
        return [
            f"{who}: {line}" for who, ls in logs.items() for line in matching_lines(ls, pattern)
        ]
    return [f"{level} {msg}" for level, msg in logs if pattern.search(msg)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--genes", type=int, default=2_000)
    parser.add_argument("--k", type=int, default=30)
    parser.add_argument("--memory-limit", default="2GB", help="per worker (Dask syntax)")
    parser.add_argument("--threads", type=int, default=2, help="threads of the one worker")
    parser.add_argument("--block-size", type=int, default=None, help="default: rankdist's choice")
    parser.add_argument(
        "--workdir", default=None, help="where to put the .h5ad and store (default: a temp dir)"
    )
    args = parser.parse_args()

    import psutil
    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    import rankdist
    from rankdist.datasets.toy import synthetic_counts
    from rankdist.io.store import atomic_file

    work = Path(args.workdir or tempfile.mkdtemp(prefix="rankdist-bench-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    n, g, k = args.cells, args.genes, args.k
    print(
        f"data: {n} synthetic cells x {g} genes, k={k}; one worker, {args.threads} threads, "
        f"memory limit {args.memory_limit}; work dir {work}"
    )

    h5ad = work / f"synthetic-{n}x{g}.h5ad"
    if not h5ad.exists():
        t0 = time.perf_counter()
        with atomic_file(h5ad) as tmp:  # a failed child leaves no partial file behind
            child = multiprocessing.get_context("spawn").Process(
                target=write_synthetic_h5ad, args=(str(tmp), n, g, 0)
            )
            child.start()
            child.join()
            if child.exitcode != 0:
                msg = f"generating {h5ad} failed in a child process (exit code {child.exitcode})"
                raise RuntimeError(msg)
        print(f"generated {h5ad.name} in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    store = rankdist.ingest(
        h5ad,
        work / "bench.zarr",
        cell_type="cell_type",
        coarse_type="coarse_type",
        batch="batch",
        overwrite=True,
        progress=False,
    )
    t_ingest = time.perf_counter() - t0
    rss_after_ingest = psutil.Process().memory_info().rss
    print(f"ingested in {t_ingest:.1f} s")

    warm = rankdist.ingest(
        synthetic_counts(1200, g, seed=1),
        work / "warm.zarr",
        cell_type="cell_type",
        overwrite=True,
        progress=False,
    )
    rankdist.neighbors(warm, k=k, progress=False)  # numba JIT: compiled once, cached on disk
    shutil.rmtree(warm.path)

    sampler = RssSampler()
    error = None
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=args.threads,
            processes=True,
            memory_limit=args.memory_limit,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        before = worker_pids(client)
        sampler.start()
        t0 = time.perf_counter()
        try:
            res = rankdist.neighbors(
                store,
                k=k,
                cutoffs=(0.5,),
                client=client,
                block_size=args.block_size,
                progress=False,
            )
        except Exception as exc:  # a KilledWorker is a result here
            error = f"{type(exc).__name__}: {exc}"
            res = None
        t_neighbors = time.perf_counter() - t0
        sampler.stop()
        after = worker_pids(client)
        worker_maxrss = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        restart_lines = matching_lines(client.get_scheduler_logs(n=10_000), RESTART_PATTERN)
        restart_lines += matching_lines(
            client.get_worker_logs(n=10_000, nanny=True), RESTART_PATTERN
        )
        memory_lines = matching_lines(client.get_worker_logs(n=10_000), MEMORY_PATTERN)

    client_pid = os.getpid()
    worker_peaks = {
        pid: sampler.peak.get(pid, 0) for pid in sorted(set(before.values()) | set(after.values()))
    }
    other_peaks = {
        pid: rss
        for pid, rss in sampler.peak.items()
        if pid != client_pid and pid not in worker_peaks
    }
    restarted = before != after or bool(restart_lines) or error is not None
    meta = res.metadata if res is not None else {}
    rows = {
        "neighbors wall time (s)": f"{t_neighbors:.1f}",
        "ingest wall time (s)": f"{t_ingest:.1f}",
        "block size (cells)": meta.get("block_rows", "-"),
        "blocks / tiles": f"{meta.get('n_blocks', '-')} / {meta.get('n_tiles', '-')}",
        "worker memory limit (MB)": f"{parse_bytes(args.memory_limit) / MB:.0f}",
        **{
            f"worker pid {pid} peak RSS, sampled (MB)": f"{rss / MB:.0f}"
            for pid, rss in worker_peaks.items()
        },
        **{
            f"worker {addr} ru_maxrss (MB)": f"{kb * 1024 / MB:.0f}"
            for addr, kb in worker_maxrss.items()
        },
        **{
            f"other child pid {pid} peak RSS (MB)": f"{rss / MB:.0f}"
            for pid, rss in other_peaks.items()
        },
        "client+scheduler peak RSS during neighbors (MB)": (
            f"{sampler.peak.get(client_pid, 0) / MB:.0f}"
        ),
        "client+scheduler RSS after ingest (MB)": f"{rss_after_ingest / MB:.0f}",
        "client ru_maxrss, whole script (MB)": (
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB:.0f}"
        ),
        "all processes together, peak RSS (MB)": f"{sampler.peak_total / MB:.0f}",
        "worker restarted": "yes" if restarted else "no",
        "worker memory log lines": len(memory_lines),
        "error": error or "-",
    }
    width = max(map(len, rows))
    print()
    for name, value in rows.items():
        print(f"{name:<{width}}  {value}")
    for line in (restart_lines + memory_lines)[:10]:
        print("  log:", line[:200])

    record = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cells": n,
        "genes": g,
        "k": k,
        "cutoffs": [0.5],
        "cores": len(os.sched_getaffinity(0)),
        "threads": args.threads,
        "memory_limit": args.memory_limit,
        "block_rows": meta.get("block_rows"),
        "n_tiles": meta.get("n_tiles"),
        "neighbors_wall_s": round(t_neighbors, 2),
        "ingest_wall_s": round(t_ingest, 2),
        "worker_peak_rss_mb": {str(p): round(r / MB) for p, r in worker_peaks.items()},
        "worker_ru_maxrss_mb": {a: round(kb * 1024 / MB) for a, kb in worker_maxrss.items()},
        "client_peak_rss_during_neighbors_mb": round(sampler.peak.get(client_pid, 0) / MB),
        "client_ru_maxrss_mb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB
        ),
        "all_processes_peak_rss_mb": round(sampler.peak_total / MB),
        "worker_pids_before": before,
        "worker_pids_after": after,
        "restarted": restarted,
        "restart_log": restart_lines,
        "memory_log": memory_lines[:20],
        "error": error,
    }
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    with open(out / "memory.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
