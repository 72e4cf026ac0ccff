"""Benchmark: the tile scheduler at atlas scale (2.3 M cells), with a stand-in tile kernel.

Usage::

    nice -n 10 python benchmarks/bench_scale.py [--cells 575k,1.15M,2.3M] [--block-rows 16384]
        [--partial-rows 512] [--workers 2] [--threads 16] [--real-threads 640]
        [--full-size-blocks 8] [--z-genes 16] [--blocks resident|streamed] [--workdir DIR]
        [--json FILE]

``rankdist.tiles.scheduler.run_tiles`` runs the real task graph of each size (one future
per tile, tree merges with checkpoints, block writes) on a real Dask cluster started
here: a scheduler process and ``--workers`` worker processes of ``--threads`` threads.
Each tile is ``rankdist.planning.simulate.SimulatedTile``: it sleeps for the real tile's
pair count times the calibrated per-pair time (``--calibration``, or the file ``rankdist
plan`` reads) divided by a scale factor ``--real-threads / (workers * threads)``, so that
the scheduler sees tiles completing at the rate of a ``--real-threads`` cluster. The merges,
writes and the scheduler itself are real and need CPU in proportion to that rate: at
the rate of 50 nodes x 32 cores they need about two cores, all this machine has (and it
is shared), so the default is the rate of 20 such nodes (640 threads); the per-task
costs measured there carry over to 50 nodes. Partials have the real per-row layout (k =
30, one cutoff, 54 + 8 + 427 label values) but ``--partial-rows`` rows per block: at
16,384 rows they are 38 MB each, and the ~20 k partials of the 2.3 M graph would neither
fit this machine's memory nor its disk bandwidth. A last run keeps the real block size
for ``--full-size-blocks`` blocks, to measure merges, checkpoints and writes at their
real size.

Measured per run: tasks and bytes of their specs, time to submit, the driver loop's
wall time against the stand-ins' ideal makespan, CPU per task of the client (driver
loop) and of the scheduler process, RSS of the scheduler, the client and the workers
(sampled), peak partial bytes in worker memory and on disk (checkpoints), task
durations, and the latencies around each merge and write: from its inputs finishing to
its submission (the driver reacting) and from submission to start (scheduler and
worker). It prints a table and appends JSON lines to benchmarks/results/scale.jsonl.

Bytes: each stand-in tile reads its two blocks of a stand-in Z (``--partial-rows`` rows x
``--z-genes`` genes per block) through the real block reader: with ``--blocks resident``
(the default, what a run does where Z fits the workers' memory) one ``rankdist-block``
task per block reads it and Dask moves it to the tiles; with ``--blocks streamed`` each
tile reads its blocks, with the per-process cache. The reader counts the reads that reach
the store (``rankdist.tiles.blocks.read_counts``, read from every worker with
``client.run``); each block read is scaled to the bytes of the real block (``block_rows x
(4 genes + 1 + 4 roles)``). Worker-to-worker bytes are the sum over workers of Dask's
``Worker.transfer_outgoing_bytes_total`` (the ``sizeof`` of every result sent to a
peer): the part that is blocks (``rankdist-block`` keys in each worker's
``transfer_outgoing_log``) is scaled by the ratio of real to simulated block bytes, the
rest (partials) by ``block_rows / partial_rows``, the ratio of real to simulated partial
sizes. Next to them stand the planner's figures for the simulated
layout (``rankdist.planning.model.data_movement`` with ``--workers`` nodes of
``--threads`` cores), and ``--json FILE`` writes the largest ``--cells`` run's record.
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
from collections import defaultdict
from pathlib import Path

import numpy as np

MB = 1e6
#: How the simulation's byte counts become full size (written into --json's record).
SCALING = (
    "store_bytes_read: each block read counted by the block reader, times the real block's "
    "bytes, block_rows x (4 genes + 1 + 4 roles); peer_bytes: Dask's "
    "transfer_outgoing_bytes_total summed over workers, its rankdist-block part (from "
    "transfer_outgoing_log) times real / simulated block bytes, the rest times "
    "block_rows / partial_rows"
)


class TimedClient:
    """A Dask client whose ``submit`` records when each task was submitted, and from what."""

    def __init__(self, client):
        self._client = client
        self.submits: list[tuple[str, float, float, list[str]]] = []
        self.spec_bytes: dict[str, list[int]] = defaultdict(list)

    def submit(self, fn, *args, key, **kwargs):
        import cloudpickle
        from distributed import Future

        t0 = time.time()
        fut = self._client.submit(fn, *args, key=key, **kwargs)
        t1 = time.time()
        flat = [x for a in args for x in (a if isinstance(a, tuple) else (a,))]
        deps = [x.key for x in flat if isinstance(x, Future)]
        self.submits.append((key, t0, t1, deps))
        kind = key.split("-")[1]
        if len(self.spec_bytes[kind]) < 20:
            plain = [x.key if isinstance(x, Future) else x for x in flat]
            self.spec_bytes[kind].append(len(cloudpickle.dumps((fn, plain, kwargs))))
        return fut

    def map(self, fn, *iterables, key, **kwargs):
        """Tiles and blocks in one graph per worker, a batch's merges in one per owner."""
        import cloudpickle
        from distributed import Future

        from rankdist.tiles.scheduler import tile_task

        def flat(x):  # the futures a task's argument holds (a merge's list of pairs)
            if isinstance(x, list | tuple):
                return [y for item in x for y in flat(item)]
            return [x]

        def plain(x):
            if isinstance(x, list | tuple):
                return type(x)(plain(item) for item in x)
            return x.key if isinstance(x, Future) else x

        t0 = time.time()
        futs = self._client.map(fn, *iterables, key=key, **kwargs)
        t1 = time.time()
        for n, k in enumerate(key):
            deps = [x.key for it in iterables for x in flat(it[n]) if isinstance(x, Future)]
            self.submits.append((k, t0, t1, deps if k.startswith("rankdist-merge") else []))
        # what a real run sends: a tile's kernel by reference (not the stand-in)
        task = tile_task if key and key[0].startswith("rankdist-tile") else fn
        blob = cloudpickle.dumps((task, plain(list(iterables)), list(key), kwargs))
        if key:
            self.spec_bytes[key[0].split("-")[1]].append(len(blob) / len(key))
        return futs

    def __getattr__(self, name):
        return getattr(self._client, name)


def _scheduler_state(dask_scheduler=None):
    workers = list(dask_scheduler.workers.values())
    return (
        len(dask_scheduler.tasks),
        sum(w.nbytes for w in workers),
        max((w.nbytes for w in workers), default=0),
    )


class Sampler(threading.Thread):
    """Every ``interval`` s: RSS of each process, checkpoint files; scheduler state each 1 s."""

    def __init__(self, client, pids: dict[str, list[int]], ckpt_dir: Path, interval=0.5):
        super().__init__(name="sampler", daemon=True)
        import psutil

        self.client, self.ckpt_dir, self.interval = client, ckpt_dir, interval
        self.procs = {role: [psutil.Process(p) for p in ps] for role, ps in pids.items()}
        self.peak: dict[str, float] = defaultdict(float)
        self.managed: list[int] = []
        self._stop_event = threading.Event()

    def _max(self, name: str, value: float) -> None:
        self.peak[name] = max(self.peak[name], value)

    def sample(self, with_scheduler: bool) -> None:
        import psutil

        for role, procs in self.procs.items():
            rss = []
            for p in procs:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.Error:
                    continue
            self._max(f"{role}_rss", sum(rss))
            if role == "workers" and rss:
                self._max("worker_rss_max", max(rss))
        files = total = 0
        try:
            for entry in os.scandir(self.ckpt_dir):
                if entry.name.endswith(".npz"):
                    files += 1
                    total += entry.stat().st_size
        except OSError:  # being replaced
            pass
        self._max("ckpt_files", files)
        self._max("ckpt_bytes", total)
        if with_scheduler:
            tasks, managed, worker_managed = self.client.run_on_scheduler(_scheduler_state)
            self._max("scheduler_tasks", tasks)
            self._max("managed_bytes", managed)
            self.managed.append(managed)
            self._max("worker_managed_bytes", worker_managed)

    def run(self) -> None:
        n = 0
        while not self._stop_event.is_set():
            self.sample(with_scheduler=n % 2 == 0)
            n += 1
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _cpu(pids: list[int]) -> float:
    """CPU seconds of the processes still running (a restarted worker's are lost)."""
    import psutil

    out = 0.0
    for p in pids:
        try:
            t = psutil.Process(p).cpu_times()
        except psutil.NoSuchProcess:
            continue
        out += t.user + t.system
    return out


def _stats(values) -> dict:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return {"n": 0}
    return {
        "n": int(v.size),
        "median_ms": round(float(np.median(v)) * 1e3, 2),
        "p95_ms": round(float(np.percentile(v, 95)) * 1e3, 2),
        "mean_ms": round(float(v.mean()) * 1e3, 2),
    }


def _outgoing_bytes(dask_worker=None) -> tuple[int, int, int]:
    """Bytes this worker sent to peers: all, those of blocks, and the log's length."""
    log = dask_worker.transfer_outgoing_log
    blocks = sum(
        n for entry in log for key, n in entry["keys"].items() if "rankdist-block" in str(key)
    )
    return dask_worker.transfer_outgoing_bytes_total, blocks, len(log)


def _sent(client) -> tuple[int, int, int]:
    """Bytes all workers sent to peers, those of blocks, and the longest log."""
    per_worker = list(client.run(_outgoing_bytes).values())
    return (
        sum(t for t, _, _ in per_worker),
        sum(b for _, b, _ in per_worker),
        max((n for _, _, n in per_worker), default=0),
    )


def _store_reads(client, real_plan, partial_rows: int, genes: int, n_roles: int) -> dict:
    """Block reads counted by every worker's block reader, scaled to the real blocks."""
    from rankdist.planning.traffic import block_read_bytes
    from rankdist.tiles.blocks import read_counts

    reads = nbytes = sim_bytes = 0
    for counts in client.run(read_counts).values():
        for (_, start, _), (n, b) in counts.items():
            b0, b1 = real_plan.block_range(start // partial_rows)
            reads += n
            sim_bytes += b
            nbytes += n * block_read_bytes(b1 - b0, genes, n_roles)
    return {"store_reads": reads, "store_bytes_read": nbytes, "store_bytes_read_sim": sim_bytes}


def _planned(real_plan, workers: int, threads: int, genes: int, cal) -> dict:
    """The planner's bytes for the simulated layout: ``workers`` nodes of ``threads`` cores."""
    from rankdist.planning.model import Layout, RunSpec, data_movement, storage_bytes

    spec = RunSpec(cells=real_plan.n_cells, genes=genes)
    layout = Layout(workers, threads, 1e12)
    moved = data_movement(spec, layout, real_plan.block_rows, cal)
    return {
        "plan_store_bytes_read": moved.store_read_bytes,
        "plan_store_reads": moved.store_reads,
        "plan_peer_bytes": moved.peer_bytes,
        "z_bytes": storage_bytes(spec, real_plan.block_rows)["encoded Z"],
    }


def run_one(
    client,
    pids,
    real_plan,
    *,
    partial_rows,
    seconds_per_pair,
    workdir,
    threads,
    z_genes,
    genes,
    blocks="resident",
):
    """One simulated run; returns its measurements."""
    import psutil
    from distributed import get_task_stream

    from rankdist.planning.model import tile_makespan
    from rankdist.planning.simulate import SIMULATED_RUN, simulate_run
    from rankdist.planning.traffic import block_read_bytes
    from rankdist.reduce.runstore import checkpoint_path, work_path
    from rankdist.tiles.blocks import start_counting

    timed = TimedClient(client)
    ckpt = checkpoint_path(work_path(workdir, SIMULATED_RUN))
    sampler = Sampler(client, pids, ckpt)
    cpu0 = {role: _cpu(ps) for role, ps in pids.items()}
    machine0 = psutil.cpu_times()
    client.run(start_counting)
    sent0, block_sent0, _ = _sent(client)
    sampler.start()
    t0 = time.time()
    with get_task_stream(client) as ts:
        stats, job, _ = simulate_run(
            timed,
            real_plan,
            workdir,
            seconds_per_pair=seconds_per_pair,
            partial_rows=partial_rows,
            z_genes=z_genes,
            read_blocks=True,
            blocks=blocks,
        )
    wall = time.time() - t0
    sent1, block_sent1, log_len = _sent(client)
    peer_sim, block_sim = sent1 - sent0, block_sent1 - block_sent0
    moved = _store_reads(client, real_plan, job.plan.block_rows, genes, len(job.roles))
    sampler.stop()
    cpu = {role: _cpu(ps) - cpu0[role] for role, ps in pids.items()}
    restarted = sorted(client.run(os.getpid).values()) != sorted(pids["workers"])
    if restarted:  # e.g. killed from outside; Dask recomputed what they held
        pids["workers"][:] = list(client.run(os.getpid).values())
    machine1 = psutil.cpu_times()
    machine_busy = sum(machine1) - sum(machine0) - (machine1.idle - machine0.idle)
    cores = len(os.sched_getaffinity(0))

    recs = {r["key"]: r for r in ts.data}
    compute = {}
    for key, r in recs.items():
        (c,) = [s for s in r["startstops"] if s["action"] == "compute"]
        compute[key] = (c["start"], c["stop"], f"{r['worker']}-{r['thread']}")
    kinds: dict[str, list[str]] = defaultdict(list)
    for key, *_ in timed.submits:
        kinds[key.split("-")[1]].append(key)
    durations = {
        kind: [compute[k][1] - compute[k][0] for k in keys if k in compute]
        for kind, keys in kinds.items()
    }
    overrun = [
        compute[k][1]
        - compute[k][0]
        - real_plan.tile_pairs(*map(int, k.split("-")[-2:])) * seconds_per_pair
        for k in kinds["tile"]
        if k in compute
    ]
    react, dispatch = defaultdict(list), defaultdict(list)
    for key, t_sub, t_done, deps in timed.submits:
        kind = key.split("-")[1]
        if key in compute:
            dispatch[kind].append(compute[key][0] - t_done)
        if deps and all(d in compute for d in deps):
            react[kind].append(t_sub - max(compute[d][1] for d in deps))
    by_thread = defaultdict(list)
    for start, stop, thread in compute.values():
        by_thread[thread].append((start, stop))
    gaps = []
    for spans in by_thread.values():
        spans.sort()
        gaps += [b[0] - a[1] for a, b in zip(spans, spans[1:], strict=False)]
    tile_submits = [(t0, t1) for key, t0, t1, _ in timed.submits if key.startswith("rankdist-t")]
    ideal, _ = tile_makespan(real_plan, threads, seconds_per_pair, 0.0)
    n_tasks = len(timed.submits)
    spec = {k: float(np.mean(v)) for k, v in timed.spec_bytes.items()}
    partial_bytes = job.plan.block_rows * (job.k * 12 + len(job.cutoffs) * job.n_values * 4)
    n_roles = len(job.roles)
    block_scale = block_read_bytes(real_plan.block_rows, genes, n_roles) / block_read_bytes(
        job.plan.block_rows, z_genes, n_roles
    )
    return {
        "cells": real_plan.n_cells,
        "block_rows": real_plan.block_rows,
        "partial_rows": job.plan.block_rows,
        "n_blocks": real_plan.n_blocks,
        "tiles": len(kinds["tile"]),
        "merges": len(kinds["merge"]),
        "writes": len(kinds["write"]),
        "tasks": n_tasks,
        "tasks_recorded": len(recs),
        "spec_bytes_per_task": {k: round(v) for k, v in spec.items()},
        "graph_bytes": round(sum(spec[k] * len(kinds[k]) for k in spec)),
        "submit_tiles_s": round(max(t for _, t in tile_submits) - tile_submits[0][0], 3),
        "wall_s": round(wall, 2),
        "ideal_tile_makespan_s": round(ideal, 2),
        "efficiency": round(ideal / wall, 3),
        "client_cpu_s": round(cpu["client"], 2),
        "scheduler_cpu_s": round(cpu["scheduler"], 2),
        "workers_cpu_s": round(cpu["workers"], 2),
        "machine_cpu_busy": round(machine_busy / (wall * cores), 3),
        "this_run_cpu_share": round(sum(cpu.values()) / (wall * cores), 3),
        "client_cpu_ms_per_task": round(cpu["client"] / n_tasks * 1e3, 3),
        "scheduler_cpu_ms_per_task": round(cpu["scheduler"] / n_tasks * 1e3, 3),
        "peak_rss_mb": {k: round(v / MB) for k, v in sampler.peak.items() if k.endswith("rss")}
        | {"worker_max": round(sampler.peak["worker_rss_max"] / MB)},
        "peak_scheduler_tasks": int(sampler.peak["scheduler_tasks"]),
        "partial_mb": round(partial_bytes / MB, 2),
        "peak_managed_mb": round(sampler.peak["managed_bytes"] / MB, 1),
        "median_managed_mb": round(float(np.median(sampler.managed or [0])) / MB, 1),
        "peak_worker_managed_mb": round(sampler.peak["worker_managed_bytes"] / MB, 1),
        "peak_ckpt_files": int(sampler.peak["ckpt_files"]),
        "peak_ckpt_mb": round(sampler.peak["ckpt_bytes"] / MB, 1),
        "duration": {k: _stats(v) for k, v in durations.items()},
        "tile_overrun": _stats(overrun),
        "react_latency": {k: _stats(v) for k, v in react.items()},
        "dispatch_latency": {k: _stats(v) for k, v in dispatch.items()},
        "thread_gap": _stats(gaps),
        "tiles_computed": stats.tiles_computed,
        "workers_restarted": restarted,
        "tile_phase_s": round(wall, 2),
        **moved,
        "blocks": blocks,
        "peer_bytes": (
            (peer_sim - block_sim) * real_plan.block_rows / job.plan.block_rows
            + block_sim * block_scale
        ),
        "peer_block_bytes": block_sim * block_scale,
        "peer_bytes_sim": peer_sim,
        "transfer_log_longest": log_len,
    }


def start_cluster(workdir: Path, workers: int, threads: int, memory_limit: str, stealing: bool):
    """A scheduler process and a ``dask worker`` process with ``workers`` worker processes.

    Without ``stealing`` the scheduler is configured as the ones rankdist starts
    (``rankdist.cluster.stealing.OWN_SCHEDULER``: no work stealing).
    """
    from distributed import Client

    from rankdist.cluster.stealing import OWN_SCHEDULER

    sched_file = workdir / "scheduler.json"
    py = sys.executable
    env = dict(os.environ)
    if not stealing:  # Dask reads DASK_A__B_C as the key a.b-c
        for key, value in OWN_SCHEDULER.items():
            env["DASK_" + key.upper().replace(".", "__").replace("-", "_")] = str(value)
    sched = subprocess.Popen(
        [
            py,
            "-m",
            "distributed.cli.dask_scheduler",
            "--scheduler-file",
            str(sched_file),
            "--port",
            "0",
            "--dashboard-address",
            ":0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "scheduler.log", "w"),
        env=env,
    )
    while not sched_file.exists():
        time.sleep(0.2)
        if sched.poll() is not None:
            msg = f"the scheduler exited; see {workdir / 'scheduler.log'}"
            raise RuntimeError(msg)
    work = subprocess.Popen(
        [
            py,
            "-m",
            "distributed.cli.dask_worker",
            "--scheduler-file",
            str(sched_file),
            "--nworkers",
            str(workers),
            "--nthreads",
            str(threads),
            "--memory-limit",
            memory_limit,
            "--no-dashboard",
            "--local-directory",
            str(workdir / "dask-worker-space"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "workers.log", "w"),
    )
    client = Client(scheduler_file=str(sched_file))
    client.wait_for_workers(workers, timeout=120)
    worker_pids = list(client.run(os.getpid).values())
    pids = {"client": [os.getpid()], "scheduler": [sched.pid], "workers": worker_pids}
    return client, pids, (sched, work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="575k,1.15M,2.3M", help="comma-separated sizes")
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--block-rows", type=int, default=16384)
    parser.add_argument("--partial-rows", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--memory-limit", default="5GB", help="per worker process")
    parser.add_argument("--real-threads", type=int, default=20 * 32, help="cluster simulated")
    parser.add_argument("--full-size-blocks", type=int, default=8, help="0: skip that run")
    parser.add_argument(
        "--calibration",
        default=None,
        help="default: yours (rankdist plan --calibrate) if written, else the packaged file",
    )
    parser.add_argument(
        "--z-genes", type=int, default=16, help="genes of the stand-in Z the tiles read"
    )
    parser.add_argument(
        "--blocks",
        default="resident",
        choices=("resident", "streamed"),
        help="blocks in worker memory (a run's default where Z fits) or read by each tile",
    )
    parser.add_argument(
        "--fan-in",
        type=int,
        default=None,
        help="partials merged per merge task (default: rankdist's FAN_IN)",
    )
    parser.add_argument(
        "--stealing",
        default="off",
        choices=("off", "on"),
        help="Dask work stealing: off (default), as on the clusters rankdist starts, or on",
    )
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    parser.add_argument("--json", default=None, metavar="FILE", help="the largest run's record")
    args = parser.parse_args()

    import rankdist.tiles.scheduler as tile_scheduler
    from rankdist.planning.calibration import load_calibration
    from rankdist.planning.describe import parse_count
    from rankdist.tiles.grid import TilePlan

    if args.fan_in is not None:  # read by run_tiles at each merge decision
        tile_scheduler.FAN_IN = args.fan_in
    cal = load_calibration(args.calibration)
    sim_threads = args.workers * args.threads
    scale = args.real_threads / sim_threads
    real_pair_s = cal.seconds_per_pair(args.genes)
    pair_s = real_pair_s / scale
    work = Path(args.workdir or tempfile.mkdtemp(prefix="rankdist-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    full_tile = args.block_rows**2
    print(
        f"stand-in tiles sleep: real {real_pair_s * 1e9:.1f} ns per pair per core (calibration "
        f"of {cal.measured.get('date', '?')}) / scale {scale:g} = {full_tile * pair_s:.3f} s "
        f"per full {args.block_rows}-row tile (real {full_tile * real_pair_s:.1f} s); "
        f"{args.workers} workers x {args.threads} threads simulate {args.real_threads} threads"
    )
    sizes = [(parse_count(c), args.partial_rows) for c in args.cells.split(",")]
    if args.full_size_blocks:
        sizes.append((args.full_size_blocks * args.block_rows, args.block_rows))

    client, pids, procs = start_cluster(
        work, args.workers, args.threads, args.memory_limit, args.stealing == "on"
    )
    from rankdist.cluster.stealing import steals

    print(f"work stealing: {'on' if steals(client) else 'off'}")
    results = []
    try:
        warm = TilePlan(8 * args.block_rows, args.block_rows)
        run_one(
            client,
            pids,
            warm,
            partial_rows=512,
            seconds_per_pair=0.0,
            workdir=work / "warm",
            threads=sim_threads,
            z_genes=args.z_genes,
            genes=args.genes,
            blocks=args.blocks,
        )
        for n, rows in sizes:
            plan = TilePlan(n, args.block_rows)
            print(f"{n} cells: {plan.n_blocks} blocks, {plan.n_tiles} tiles, {rows}-row partials")
            res = run_one(
                client,
                pids,
                plan,
                partial_rows=rows,
                seconds_per_pair=pair_s,
                workdir=work / f"run-{n}-{rows}",
                threads=sim_threads,
                z_genes=args.z_genes,
                genes=args.genes,
                blocks=args.blocks,
            )
            res |= _planned(plan, args.workers, args.threads, args.genes, cal)
            shutil.rmtree(work / f"run-{n}-{rows}", ignore_errors=True)
            results.append(res)
            print(f"  wall {res['wall_s']} s, ideal {res['ideal_tile_makespan_s']} s", flush=True)
    finally:
        client.shutdown()
        client.close()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.terminate()
    print_table(results)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    config = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cores": len(os.sched_getaffinity(0)),
        "workers": args.workers,
        "threads_per_worker": args.threads,
        "real_threads": args.real_threads,
        "scale": scale,
        "real_seconds_per_pair": real_pair_s,
        "stand_in": "sleep",
        "work_stealing": args.stealing == "on",
        "fan_in": tile_scheduler.FAN_IN,
        "commit": _commit(),
        "calibration_date": cal.measured.get("date"),
    }
    with open(out / "scale.jsonl", "a") as fh:
        for res in results:
            fh.write(json.dumps(config | res) + "\n")
    if args.json:
        main_run = max(
            results[: len(results) - bool(args.full_size_blocks)] or results,
            key=lambda r: r["cells"],
        )
        record = config | main_run | {"scaling": SCALING}
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


def _commit() -> str | None:
    """The checkout's commit, to tell results of different scheduler versions apart."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).parent,
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def print_table(results: list[dict]) -> None:
    def med(d, kind, what="duration"):
        s = d[what].get(kind, {})
        return f"{s.get('median_ms', '-')}/{s.get('p95_ms', '-')}"

    rows = {
        "cells": lambda r: f"{r['cells']:,}",
        "blocks / partial rows": lambda r: f"{r['n_blocks']} / {r['partial_rows']}",
        "tiles / merges / writes": lambda r: f"{r['tiles']} / {r['merges']} / {r['writes']}",
        "task spec bytes tile/merge/write": lambda r: "/".join(
            str(r["spec_bytes_per_task"].get(k, "-")) for k in ("tile", "merge", "write")
        ),
        "graph bytes (MB)": lambda r: f"{r['graph_bytes'] / MB:.2f}",
        "submit all tiles (s)": lambda r: r["submit_tiles_s"],
        "driver loop wall (s)": lambda r: r["wall_s"],
        "ideal tile makespan (s)": lambda r: r["ideal_tile_makespan_s"],
        "efficiency (ideal / wall)": lambda r: r["efficiency"],
        "CPU busy: machine / this run": lambda r: (
            f"{r['machine_cpu_busy']:.0%}/{r['this_run_cpu_share']:.0%}"
        ),
        "client CPU per task (ms)": lambda r: r["client_cpu_ms_per_task"],
        "scheduler CPU per task (ms)": lambda r: r["scheduler_cpu_ms_per_task"],
        "peak RSS client/sched (MB)": lambda r: (
            f"{r['peak_rss_mb']['client_rss']}/{r['peak_rss_mb']['scheduler_rss']}"
        ),
        "peak RSS workers sum/max (MB)": lambda r: (
            f"{r['peak_rss_mb']['workers_rss']}/{r['peak_rss_mb']['worker_max']}"
        ),
        "peak tasks on scheduler": lambda r: r["peak_scheduler_tasks"],
        "partial size (MB)": lambda r: r["partial_mb"],
        "partials in memory peak/median (MB)": lambda r: (
            f"{r['peak_managed_mb']}/{r['median_managed_mb']}"
        ),
        "peak partials on one worker (MB)": lambda r: r["peak_worker_managed_mb"],
        "peak checkpoints files/MB": lambda r: f"{r['peak_ckpt_files']}/{r['peak_ckpt_mb']}",
        "tile stand-in overrun med/p95 (ms)": lambda r: (
            f"{r['tile_overrun'].get('median_ms')}/{r['tile_overrun'].get('p95_ms')}"
        ),
        "merge duration med/p95 (ms)": lambda r: med(r, "merge"),
        "write duration med/p95 (ms)": lambda r: med(r, "write"),
        "merge: inputs done -> submitted (ms)": lambda r: med(r, "merge", "react_latency"),
        "merge: submitted -> started (ms)": lambda r: med(r, "merge", "dispatch_latency"),
        "write: input done -> submitted (ms)": lambda r: med(r, "write", "react_latency"),
        "write: submitted -> started (ms)": lambda r: med(r, "write", "dispatch_latency"),
        "store reads: blocks / GB (plan GB)": lambda r: (
            f"{r['store_reads']} / {r['store_bytes_read'] / 1e9:.0f} "
            f"({r.get('plan_store_bytes_read', 0) / 1e9:.0f})"
        ),
        "peer bytes GB (plan GB)": lambda r: (
            f"{r['peer_bytes'] / 1e9:.0f} ({r.get('plan_peer_bytes', 0) / 1e9:.0f})"
        ),
        "thread gap between tasks med/p95 (ms)": lambda r: (
            f"{r['thread_gap'].get('median_ms')}/{r['thread_gap'].get('p95_ms')}"
        ),
    }
    width = max(map(len, rows))
    print()
    for name, fn in rows.items():
        print(f"{name:<{width}}  " + "  ".join(f"{fn(r)!s:>14}" for r in results))


if __name__ == "__main__":
    main()
