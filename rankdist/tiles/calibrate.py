"""Per-core throughput constants of the capacity model, measured on a real tile workload.

``rankdist plan --calibrate`` runs :func:`calibrate` on this machine and writes the
constants to a JSON file; the default one ships with the package
(``rankdist/data/calibration.json``) and is what ``rankdist plan`` reads unless given
``--calibration FILE``. Calibrate on a compute node of the cluster you plan for: its
cores, not this machine's, set the tile rate. What each constant is and how it enters
the wall time is in :func:`rankdist.tiles.capacity.wall_time_model` and docs/planning.md.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from importlib.resources import files
from pathlib import Path

#: Cells and genes of the calibration workload, and its block size.
CAL_CELLS, CAL_GENES, CAL_BLOCK_ROWS = 12288, 2000, 2048
#: Passes of each timing; the fastest counts (the one least disturbed by other work).
PASSES = 3
#: Blocks of 512 cells in the scheduler measurement (300 tiles, about 500 tasks).
SCHED_BLOCKS = 24


def default_calibration_path() -> Path:
    """The calibration file shipped inside the package."""
    return Path(str(files("rankdist").joinpath("data", "calibration.json")))


@dataclass(frozen=True)
class Calibration:
    """Per-core constants of the capacity model (all measured with every core busy).

    Attributes
    ----------
    gemm_gflops_per_core
        float32 GEMM rate of one thread in the kernel's 512 x 512 sub-tile calls.
    fused_ns_per_pair
        Nanoseconds per cell pair of a tile beyond its GEMM: the fused top-k/count pass,
        priming, block reads.
    encode_ns_per_value
        Nanoseconds per cell x gene of the spearman encoding (read X, rank, write Z).
    worker_s_per_task
        Worker CPU seconds per task beyond the task itself (Dask's bookkeeping,
        (de)serialising arguments and results).
    driver_s_per_task
        CPU seconds per task of the process running the scheduler and rankdist's driver
        loop (submit, react to completions).
    merge_s_per_mb, write_s_per_mb
        Seconds of one merge (with its checkpoint) or one block write, per MB of partial.
    startup_s
        Fixed cost of a ``rankdist neighbors`` call: cluster start-up, work directory,
        loading the result.
    measured
        Where, when and on what the constants were measured, and the raw timings.
    """

    gemm_gflops_per_core: float
    fused_ns_per_pair: float
    encode_ns_per_value: float
    worker_s_per_task: float
    driver_s_per_task: float
    merge_s_per_mb: float
    write_s_per_mb: float
    startup_s: float
    measured: dict = field(default_factory=dict)

    def seconds_per_pair(self, genes: int) -> float:
        """Thread seconds per cell pair of a tile: GEMM (2 G flops) plus the fused pass."""
        return 2.0 * genes / (self.gemm_gflops_per_core * 1e9) + self.fused_ns_per_pair * 1e-9

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, path)
        return path


def load_calibration(path: str | os.PathLike | None = None) -> Calibration:
    """Read a calibration file (default: the one shipped with rankdist)."""
    path = Path(path) if path is not None else default_calibration_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        msg = f"calibration file {path} not found; write one with `rankdist plan --calibrate`"
        raise FileNotFoundError(msg) from None
    except json.JSONDecodeError as err:
        msg = f"calibration file {path} is not valid JSON ({err}); rewrite it with --calibrate"
        raise ValueError(msg) from None
    names = {f.name for f in fields(Calibration)}
    missing = sorted(names - set(data) - {"measured"})
    if missing:
        msg = (
            f"calibration file {path} lacks {missing}; it is from another rankdist version, "
            "rewrite it with `rankdist plan --calibrate`"
        )
        raise ValueError(msg)
    return Calibration(**{k: v for k, v in data.items() if k in names})


def calibrate(
    out: str | os.PathLike | None = None,
    *,
    cells: int = CAL_CELLS,
    genes: int = CAL_GENES,
    block_rows: int = CAL_BLOCK_ROWS,
    workdir: str | os.PathLike | None = None,
    log=print,
) -> Calibration:
    """Measure the model's constants on this machine and write them to ``out``.

    Synthetic counts (:func:`rankdist.synth.synthetic_counts`) are ingested and encoded
    on a local cluster; then, with one tile per core running at once as on a worker:

    1. every tile of a ``block_rows`` plan goes through the real tile task, and the same
       tiles' GEMM calls alone: GFLOP/s per core, and the rest per pair (fused pass);
    2. chunks of X go through the spearman encoding: ns per value;
    3. the real scheduler runs :data:`SCHED_BLOCKS` blocks with a stand-in tile of no
       cost (:mod:`rankdist.tiles.simulate`): CPU per task of the process holding the
       scheduler and the driver loop, and of the worker; then merges (with their
       checkpoint) and block writes of real-layout partials are timed: seconds per MB;
    4. ``rankdist.neighbors`` on 1,536 cells gives the fixed start-up cost (its wall time
       less what the model expects for the work).

    Each timing is repeated :data:`PASSES` times and the fastest kept, so that other
    work on the machine disturbs it less; the raw timings are kept under ``measured``.

    Parameters
    ----------
    out
        Where to write the JSON (default: the packaged file, which ``rankdist plan`` reads).
    cells, genes, block_rows
        Size of the workload; takes about a minute at the defaults on two cores.
    workdir
        Scratch directory (default: a temporary one, removed after).
    log
        Called with one line per step.
    """
    import rankdist
    from rankdist.synth import synthetic_counts

    out = Path(out) if out is not None else default_calibration_path()
    with tempfile.TemporaryDirectory(prefix="rankdist-calibrate-", dir=workdir) as tmp:
        tmp = Path(tmp)
        log(f"calibrating on {_cores()} cores: {cells} synthetic cells x {genes} genes")
        store = rankdist.ingest(
            synthetic_counts(cells, genes, n_coarse=4, types_per_coarse=3, n_batches=4),
            tmp / "cal.zarr", cell_type="cell_type", coarse_type="coarse_type",
            batch="batch", progress=False,
        )  # fmt: skip
        tiny = rankdist.ingest(
            synthetic_counts(1536, genes, seed=1), tmp / "tiny.zarr", cell_type="cell_type",
            progress=False,
        )  # fmt: skip
        rankdist.neighbors(tiny, k=30, progress=False)  # numba's on-disk cache, warm
        measured: dict = {}
        tiles = _tile_rates(store, block_rows, measured)
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
        cores=_cores(),
        cpu=platform.processor() or platform.machine(),
        rankdist=rankdist.__version__,
        workload={"cells": cells, "genes": genes, "block_rows": block_rows},
    )
    cal = Calibration(**{**asdict(partial), "startup_s": startup, "measured": measured})
    cal.save(out)
    log(f"wrote {out}")
    return cal


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _tile_rates(store, block_rows: int, measured: dict) -> dict:
    """Real tiles and their GEMM calls alone, one per core at a time."""
    import numpy as np

    from rankdist.encode.cache import encode
    from rankdist.tiles import blocks
    from rankdist.tiles.plan import SUBTILE, TilePlan
    from rankdist.tiles.scheduler import TileJob, tile_task
    from rankdist.tiles.simulate import tile_pairs

    with _local_client() as client:
        enc = encode(store, "spearman", None, client, progress=False)
    roles = tuple(store.labels)
    sizes = tuple(len(store.labels[r].categories) for r in roles)
    plan = TilePlan(store.n_cells, block_rows)

    def job(k):
        return TileJob(
            store_path=str(store.path), z_path=str(enc.path), plan=plan, k=k,
            cutoffs=(0.5,), roles=roles, role_sizes=sizes,
        )  # fmt: skip

    tile_task(job(29), 0, 1)  # compile or load numba's cache; its floors are k=29's
    real = job(30)

    def timed_tile(ij):
        t0 = time.perf_counter()
        tile_task(real, *ij)
        return time.perf_counter() - t0

    def timed_gemm(ij):
        i, j = ij
        zi, zj = real.block(i)[0], real.block(j)[0].copy()
        t0 = time.perf_counter()
        flop = 0
        for p in range(0, len(zi), SUBTILE):
            for q in range(p if i == j else 0, len(zj), SUBTILE):
                a, b = zi[p : p + SUBTILE], zj[q : q + SUBTILE]
                np.matmul(a, b.T)
                flop += 2 * len(a) * len(b) * zi.shape[1]
        return time.perf_counter() - t0, flop

    tile_passes, gemm_passes = [], []
    for _ in range(PASSES):
        blocks._floors.clear()  # each pass learns its floors from nothing, as a run does
        with ThreadPoolExecutor(_cores()) as pool:
            tile_passes.append(sum(pool.map(timed_tile, plan.tiles())))
            gemm = list(pool.map(timed_gemm, plan.tiles()))
        gemm_passes.append((sum(t for t, _ in gemm), sum(f for _, f in gemm)))
    pairs = sum(tile_pairs(plan, i, j) for i, j in plan.tiles())
    gemm_s, gemm_flop = min(gemm_passes)
    gemm_rate = gemm_flop / gemm_s
    per_pair = min(tile_passes) / pairs
    measured["tiles"] = {
        "n_tiles": plan.n_tiles,
        "pairs": pairs,
        "tile_thread_s": [round(t, 3) for t in tile_passes],
        "gemm_thread_s": [round(t, 3) for t, _ in gemm_passes],
        "tile_gflops_per_core": round(2 * store.n_genes / per_pair / 1e9, 2),
    }
    return {
        "gemm_gflops_per_core": gemm_rate / 1e9,
        "fused_ns_per_pair": max(0.0, per_pair - 2 * store.n_genes / gemm_rate) * 1e9,
    }


def _encode_rate(store, measured: dict) -> float:
    """ns per cell x gene of the spearman encoding, one chunk per core at a time."""
    import numpy as np
    import zarr

    from rankdist.encode.registry import get_encoding

    fn = get_encoding("spearman").fn
    root = zarr.open_group(store.path, mode="r")
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
        with ThreadPoolExecutor(_cores()) as pool:
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

    from rankdist.tiles.capacity import n_merges
    from rankdist.tiles.plan import SUBTILE, TilePlan
    from rankdist.tiles.scheduler import run_tiles
    from rankdist.tiles.simulate import SimulatedTile, prepare_simulation

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
                client, job, str(out), str(out / "checkpoint"), progress=False,
                tile_fn=SimulatedTile(real, 0.0),
            )  # fmt: skip
            wall = time.perf_counter() - t0
            used = [_cpu(p) - c for p, c in zip((me, *workers), cpu, strict=True)]
    tasks = real.n_tiles + n_merges(real.n_blocks) + real.n_blocks
    measured["scheduler"] = {
        "blocks": n_blocks,
        "tasks": tasks,
        "wall_s": round(wall, 3),
        "driver_cpu_s": round(used[0], 3),
        "worker_cpu_s": round(sum(used[1:]), 3),
    }
    return {"driver_s_per_task": used[0] / tasks, "worker_s_per_task": sum(used[1:]) / tasks}


def _reduce_costs(tmp: Path, rows: int, measured: dict) -> dict:
    """Seconds per MB of a merge of four partials (with its checkpoint) and of a block write.

    Partials have the atlas's per-row layout (k = 30, 489 label values, one cutoff).
    """
    from rankdist.tiles.plan import TilePlan
    from rankdist.tiles.scheduler import merge_task, write_task
    from rankdist.tiles.simulate import SimulatedTile, prepare_simulation

    real = TilePlan(4 * rows, rows)
    job, out = prepare_simulation(real, tmp / "reduce")
    stand_in = SimulatedTile(real, 0.0)
    sides = [stand_in(job, 0, j) for j in range(1, 4)] + [stand_in(job, 0, 0)]
    mb = sides[0][0].nbytes / 1e6
    merge_s, write_s = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        merged = merge_task(str(out / "checkpoint"), *[(s, 0) for s in sides])
        t1 = time.perf_counter()
        write_task(job, str(out), str(out / "checkpoint"), merged, None)
        merge_s.append(t1 - t0)
        write_s.append(time.perf_counter() - t1)
    measured["reduce"] = {
        "partial_mb": round(mb, 3),
        "merge_s": round(min(merge_s), 4),
        "write_s": round(min(write_s), 4),
    }
    return {"merge_s_per_mb": min(merge_s) / mb, "write_s_per_mb": min(write_s) / mb}


def _startup(tiny, partial: Calibration, measured: dict) -> float:
    """Best wall time of ``neighbors`` on a tiny store, less the model's time for its work."""
    import rankdist
    from rankdist.tiles.capacity import Layout, RunSpec, wall_time_model

    walls = []
    for _ in range(PASSES):
        t0 = time.perf_counter()
        res = rankdist.neighbors(tiny, k=30, progress=False, name="startup")
        walls.append(time.perf_counter() - t0)
    wall = min(walls)
    meta = res.metadata
    sizes = tuple(len(tiny.labels[r].categories) for r in tiny.labels)
    spec = RunSpec(tiny.n_cells, tiny.n_genes, k=30, label_values=sizes)
    layout = Layout(1, _cores(), 1e12, scheduler="local")
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
    from rankdist.cluster.local import cluster_client

    return cluster_client("local", quiet=True, dashboard_address=":0")
