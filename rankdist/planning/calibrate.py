"""Measure the capacity model's per-core constants on a real tile workload.

``rankdist plan --calibrate`` runs :func:`calibrate` on this machine and writes the
constants (:class:`rankdist.planning.calibration.Calibration`) to a JSON file, by default
the user's (:func:`rankdist.planning.calibration.user_calibration_path`), which
``rankdist plan`` then reads. Calibrate on a compute node of the cluster you plan for:
its cores, not this machine's, set the tile rate.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from rankdist.cluster.client import available_cores
from rankdist.planning.calibration import Calibration, user_calibration_path

#: Cells and genes of the calibration workload, and its block size.
CAL_CELLS, CAL_GENES, CAL_BLOCK_ROWS = 12288, 2000, 2048
#: Passes of each timing; the fastest counts (the one least disturbed by other work).
PASSES = 3
#: Blocks of 512 cells in the scheduler measurement (300 tiles, about 500 tasks).
SCHED_BLOCKS = 24


def calibrate(
    out: str | os.PathLike | None = None,
    *,
    cells: int = CAL_CELLS,
    genes: int = CAL_GENES,
    block_rows: int = CAL_BLOCK_ROWS,
    workdir: str | os.PathLike | None = None,
    log=print,
) -> Calibration:
    """Measure the model's constants on this machine (:func:`measure`) and write them.

    Parameters
    ----------
    out
        Where to write the JSON; default: the user's calibration file
        (:func:`~rankdist.planning.calibration.user_calibration_path`), which
        ``rankdist plan`` reads first. The file shipped with rankdist is never written.
    cells, genes, block_rows, workdir, log
        As for :func:`measure`.
    """
    out = Path(out) if out is not None else user_calibration_path()
    cal = measure(cells=cells, genes=genes, block_rows=block_rows, workdir=workdir, log=log)
    cal.save(out)
    log(f"wrote {out}")
    return cal


def measure(
    *,
    cells: int = CAL_CELLS,
    genes: int = CAL_GENES,
    block_rows: int = CAL_BLOCK_ROWS,
    workdir: str | os.PathLike | None = None,
    log=print,
) -> Calibration:
    """Measure the model's constants on this machine.

    Synthetic counts (:func:`rankdist.datasets.toy.synthetic_counts`) are ingested and encoded
    on a local cluster (one worker, a thread per core, as ``rankdist neighbors``); then

    1. the real scheduler runs every tile of a ``block_rows`` plan and of a 512-cell-block
       plan with the real tile task; each tile's compute time gives the time per pair
       and a fixed cost per tile; the first plan's GEMM calls alone, one per core at a
       time, split the time per pair into GFLOP/s per core and the rest (fused pass);
    2. chunks of X go through the spearman encoding, one per core at a time: ns per value;
    3. the real scheduler runs :data:`SCHED_BLOCKS` blocks with a stand-in tile of no
       cost (:mod:`rankdist.planning.simulate`): CPU per task of the process holding the
       scheduler and the driver loop, and of the worker; then merges (with their
       checkpoint) and block writes of real-layout partials are timed: seconds per MB;
    4. ``rankdist.neighbors`` on 1,536 cells gives the fixed start-up cost (its wall time
       less what the model expects for the work).

    Each timing is repeated :data:`PASSES` times and the fastest kept, so that other
    work on the machine disturbs it less; the raw timings are kept under ``measured``.

    Parameters
    ----------
    cells, genes, block_rows
        Size of the workload; takes about a minute at the defaults on two cores.
    workdir
        Scratch directory (default: a temporary one, removed after).
    log
        Called with one line per step.
    """
    import rankdist
    from rankdist.datasets.toy import synthetic_counts

    with tempfile.TemporaryDirectory(prefix="rankdist-calibrate-", dir=workdir) as tmp:
        tmp = Path(tmp)
        log(f"calibrating on {available_cores()} cores: {cells} synthetic cells x {genes} genes")
        store = rankdist.ingest(
            synthetic_counts(cells, genes, n_coarse=4, types_per_coarse=3, n_batches=4),
            tmp / "cal.zarr",
            cell_type="cell_type",
            coarse_type="coarse_type",
            batch="batch",
            progress=False,
        )
        tiny = rankdist.ingest(
            synthetic_counts(1536, genes, seed=1),
            tmp / "tiny.zarr",
            cell_type="cell_type",
            progress=False,
        )
        rankdist.neighbors(tiny, k=30, progress=False)  # numba's on-disk cache, warm
        measured: dict = {}
        tiles = _tile_rates(store, block_rows, tmp, measured)
        log(
            f"tiles: GEMM {tiles['gemm_gflops_per_core']:.1f} GFLOP/s per core, fused pass "
            f"{tiles['fused_ns_per_pair']:.2f} ns per pair"
        )
        encode_ns = _encode_rate(store, measured)
        log(f"encode: {encode_ns:.2f} ns per value")
        overhead = _task_overheads(tmp, SCHED_BLOCKS, measured)
        overhead |= _reduce_costs(tmp, block_rows, measured)
        log("tasks: " + ", ".join(f"{k} {v:.3g}" for k, v in overhead.items()))
        partial = Calibration(**tiles, encode_ns_per_value=encode_ns, **overhead, startup_s=0.0)
        startup = _startup(tiny, partial, measured)
        log(f"start-up: {startup:.2f} s")
    measured.update(
        date=time.strftime("%Y-%m-%d %H:%M"),
        host=platform.node(),
        cores=available_cores(),
        cpu=platform.processor() or platform.machine(),
        rankdist=rankdist.__version__,
        workload={"cells": cells, "genes": genes, "block_rows": block_rows},
    )
    return Calibration(**{**asdict(partial), "startup_s": startup, "measured": measured})


def _tile_rates(store, block_rows: int, tmp: Path, measured: dict) -> dict:
    """Real tiles through the real scheduler on a local cluster, at two block sizes.

    A tile costs ``fixed + pairs * per_pair`` (its compute time on the worker, as Dask's
    task stream records it): every tile of ``block_rows`` blocks and of 512-cell blocks
    (over the first 4,096 cells) gives the two unknowns. The same GEMM calls alone, one
    per core at a time in this process, split ``per_pair`` into GEMM and the rest.
    """
    import dataclasses

    import numpy as np
    from distributed import get_task_stream
    from threadpoolctl import threadpool_limits

    from rankdist.encode.cache import encode
    from rankdist.io.verified import open_group
    from rankdist.layout import SUBTILE
    from rankdist.planning.simulate import prepare_simulation
    from rankdist.reduce.runstore import checkpoint_path
    from rankdist.tiles.blocks import forget_floors
    from rankdist.tiles.grid import TilePlan
    from rankdist.tiles.scheduler import run_tiles

    roles = tuple(store.labels)
    sizes = tuple(len(store.labels[r].categories) for r in roles)
    plans = [
        TilePlan(store.n_cells, block_rows),
        TilePlan(min(8 * SUBTILE, store.n_cells), SUBTILE),
    ]
    tile_passes: list[list[float]] = [[], []]
    with _local_client() as client:
        enc = encode(store, "spearman", None, client, progress=False)

        def jobs(plan, name):
            sim, out = prepare_simulation(plan, tmp / name, roles=roles, role_sizes=sizes)
            job = dataclasses.replace(sim, store_path=str(store.path), z_path=str(enc.path))
            return job, out

        for n in range(PASSES + 1):  # the first pass compiles or loads numba's cache
            for passes, plan in zip(tile_passes, plans, strict=True):
                job, out = jobs(plan, f"tiles-{n}-{plan.block_rows}")
                client.run(forget_floors)  # each pass learns its floors afresh
                with get_task_stream(client) as ts:
                    run_tiles(client, job, str(out), str(checkpoint_path(out)), progress=False)
                busy = [
                    s["stop"] - s["start"]
                    for r in ts.data
                    if r["key"].startswith("rankdist-tile")
                    for s in r["startstops"]
                    if s["action"] == "compute"
                ]
                if n:
                    passes.append(sum(busy))

    z = open_group(enc.path, mode="r")["Z"]

    def timed_gemm(ij):
        zi, zj = (np.ascontiguousarray(z[slice(*plans[0].block_range(b))]) for b in ij)
        t0 = time.perf_counter()
        flop = 0
        for p in range(0, len(zi), SUBTILE):
            for q in range(p if ij[0] == ij[1] else 0, len(zj), SUBTILE):
                a, b = zi[p : p + SUBTILE], zj[q : q + SUBTILE]
                np.matmul(a, b.T)
                flop += 2 * len(a) * len(b) * zi.shape[1]
        return time.perf_counter() - t0, flop

    gemm_passes = []
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(available_cores()) as pool:
        for _ in range(PASSES):
            gemm = list(pool.map(timed_gemm, plans[0].tiles()))
            gemm_passes.append((sum(t for t, _ in gemm), sum(f for _, f in gemm)))
    gemm_s, gemm_flop = min(gemm_passes)
    gemm_rate = gemm_flop / gemm_s
    lhs = np.array([[p.n_tiles, sum(p.tile_pairs(i, j) for i, j in p.tiles())] for p in plans])
    fixed, per_pair = np.linalg.solve(lhs, [min(t) for t in tile_passes])
    if fixed < 0:  # noise: all of it per pair
        fixed, per_pair = 0.0, min(tile_passes[0]) / lhs[0, 1]
    measured["tiles"] = {
        "block_rows": [p.block_rows for p in plans],
        "n_tiles": [p.n_tiles for p in plans],
        "pairs": [int(x) for x in lhs[:, 1]],
        "tile_thread_s": [[round(t, 3) for t in ts] for ts in tile_passes],
        "gemm_thread_s": [round(t, 3) for t, _ in gemm_passes],
    }
    return {
        "gemm_gflops_per_core": gemm_rate / 1e9,
        "fused_ns_per_pair": max(0.0, per_pair - 2 * store.n_genes / gemm_rate) * 1e9,
        "tile_fixed_s": float(fixed),
    }


def _encode_rate(store, measured: dict) -> float:
    """ns per cell x gene of the spearman encoding, one chunk per core at a time."""
    import numpy as np

    from rankdist.encode.registry import get_encoding
    from rankdist.io.verified import open_group

    fn = get_encoding("spearman").fn
    root = open_group(store.path, mode="r")
    rows = store.chunk_cells
    starts = list(range(0, store.n_cells, rows))

    def timed(start):
        t0 = time.perf_counter()
        x = np.asarray(root["X"][start : start + rows], dtype=np.float64)
        totals = np.asarray(root["obs/total_counts"][start : start + rows], dtype=np.float64)
        z, _ = fn(x, totals)
        return time.perf_counter() - t0, z.size

    timed(0)
    passes = []
    for _ in range(PASSES):
        with ThreadPoolExecutor(available_cores()) as pool:
            runs = list(pool.map(timed, starts))
        passes.append(sum(t for t, _ in runs))
    measured["encode"] = {"chunks": len(runs), "thread_s": [round(t, 3) for t in passes]}
    return min(passes) / sum(n for _, n in runs) * 1e9


def _task_overheads(tmp: Path, n_blocks: int, measured: dict) -> dict:
    """CPU per task of the driver process and of the worker, with stand-in tiles of no cost.

    The real scheduler runs ``n_blocks`` blocks of 512 cells on the local cluster (its
    scheduler in this process, as in ``rankdist neighbors``); partials are tiny, so the
    worker's CPU is Dask's and rankdist's per-task work, not merging.
    """
    import psutil

    from rankdist.layout import SUBTILE
    from rankdist.planning.model import n_tasks
    from rankdist.planning.simulate import SimulatedTile, prepare_simulation
    from rankdist.reduce.runstore import checkpoint_path
    from rankdist.tiles.grid import TilePlan
    from rankdist.tiles.scheduler import run_tiles

    me = psutil.Process()
    real = TilePlan(n_blocks * SUBTILE, SUBTILE)
    tiny = {"roles": ("cell_type",), "role_sizes": (1,)}
    with _local_client() as client:
        workers = [psutil.Process(p) for p in client.run(os.getpid).values()]
        for name in ("warm", "sim"):
            job, out = prepare_simulation(real, tmp / name, **tiny)
            cpu = [_cpu(p) for p in (me, *workers)]
            t0 = time.perf_counter()
            run_tiles(
                client,
                job,
                str(out),
                str(checkpoint_path(out)),
                progress=False,
                tile_fn=SimulatedTile(real, 0.0),
            )
            wall = time.perf_counter() - t0
            used = [_cpu(p) - c for p, c in zip((me, *workers), cpu, strict=True)]
    tasks = n_tasks(real)
    measured["scheduler"] = {
        "blocks": n_blocks,
        "tasks": tasks,
        "wall_s": round(wall, 3),
        "driver_cpu_s": round(used[0], 3),
        "worker_cpu_s": round(sum(used[1:]), 3),
    }
    return {"driver_s_per_task": used[0] / tasks, "worker_s_per_task": sum(used[1:]) / tasks}


def _reduce_costs(tmp: Path, block_rows: int, measured: dict) -> dict:
    """A merge of four partials (with its checkpoint) and a block write: fixed + per MB.

    Timed at 512 and at ``block_rows`` rows, with the atlas's per-row layout (k = 30, 489
    label values, one cutoff).
    """
    from rankdist.layout import SUBTILE
    from rankdist.planning.simulate import SimulatedTile, prepare_simulation
    from rankdist.reduce.runstore import checkpoint_path
    from rankdist.tiles.grid import TilePlan
    from rankdist.tiles.scheduler import merge_task, write_task

    points = []
    for rows in (SUBTILE, block_rows):
        real = TilePlan(4 * rows, rows)
        job, out = prepare_simulation(real, tmp / f"reduce-{rows}")
        stand_in = SimulatedTile(real, 0.0)
        sides = [stand_in(job, 0, j) for j in range(1, 4)] + [stand_in(job, 0, 0)]
        merge_s, write_s = [], []
        for _ in range(PASSES):
            t0 = time.perf_counter()
            merged = merge_task(str(checkpoint_path(out)), *[(s, 0) for s in sides])
            t1 = time.perf_counter()
            write_task(job, str(out), str(checkpoint_path(out)), merged, None)
            merge_s.append(t1 - t0)
            write_s.append(time.perf_counter() - t1)
        points.append((sides[0][0].nbytes / 1e6, min(merge_s), min(write_s)))
    (mb0, m0, w0), (mb1, m1, w1) = points
    merge_per_mb = max(0.0, (m1 - m0) / (mb1 - mb0))
    write_per_mb = max(0.0, (w1 - w0) / (mb1 - mb0))
    measured["reduce"] = {
        "partial_mb": [round(p[0], 3) for p in points],
        "merge_s": [round(p[1], 4) for p in points],
        "write_s": [round(p[2], 4) for p in points],
    }
    return {
        "merge_fixed_s": max(0.0, m0 - merge_per_mb * mb0),
        "merge_s_per_mb": merge_per_mb,
        "write_fixed_s": max(0.0, w0 - write_per_mb * mb0),
        "write_s_per_mb": write_per_mb,
    }


def _startup(tiny, partial: Calibration, measured: dict) -> float:
    """Best wall time of ``neighbors`` on a tiny store, less the model's time for its work."""
    import rankdist
    from rankdist.planning.model import Layout, RunSpec, wall_time_model

    walls = []
    for _ in range(PASSES):
        shutil.rmtree(tiny.path / "encodings", ignore_errors=True)  # encode each time, too
        t0 = time.perf_counter()
        res = rankdist.neighbors(tiny, k=30, progress=False, name="startup")
        walls.append(time.perf_counter() - t0)
    wall = min(walls)
    meta = res.metadata
    sizes = tuple(len(tiny.labels[r].categories) for r in tiny.labels)
    spec = RunSpec(tiny.n_cells, tiny.n_genes, k=30, label_values=sizes)
    layout = Layout(1, available_cores(), 1e12, scheduler="local")
    work = wall_time_model(spec, layout, meta["block_rows"], partial).total
    measured["startup"] = {
        "cells": tiny.n_cells,
        "wall_s": [round(w, 3) for w in walls],
        "work_s": round(work, 3),
    }
    return max(0.0, wall - work)


def _cpu(proc) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _local_client():
    from rankdist.cluster.client import cluster_client

    return cluster_client("local", quiet=True, dashboard_address=":0")
