"""``rankdist plan``: size a run before submitting it, and say how to run it.

The arithmetic is in :mod:`rankdist.planning.model` and the measured constants in
:mod:`rankdist.planning.calibration`; this module reads the user's sizes (``2.3M``,
``128GB``) and writes the plan as text, ending with the ``rankdist neighbors`` command.
"""

from __future__ import annotations

import os
from decimal import Decimal, InvalidOperation

from rankdist.datasets.atlas.taxonomy import ATLAS_LABEL_SIZES
from rankdist.planning.calibration import Calibration, load_calibration
from rankdist.planning.model import CapacityPlan, Layout, RunSpec, format_bytes, plan_run
from rankdist.tiles.grid import MAX_BLOCK_ROWS

__all__ = ["describe_plan", "parse_count", "parse_memory", "plan_capacity"]

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


def parse_count(text: str | int, what: str = "--cells") -> int:
    """A whole number written as ``2300000``, ``2,300,000``, ``2.3M``, ``500k`` or ``2.3e6``."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    raw = str(text).strip().replace(",", "").replace("_", "")
    suffix = raw[-1:].lower() if raw[-1:].isalpha() and raw[-1:].lower() in _SUFFIX else ""
    try:
        value = Decimal(raw[: len(raw) - len(suffix)]) * _SUFFIX[suffix]
    except InvalidOperation:
        msg = f"{what} takes a count such as 2300000, 2.3M or 500k; got {text!r}"
        raise ValueError(msg) from None
    if not value.is_finite() or value != value.to_integral_value():
        msg = f"{what} {text!r} is not a whole number of cells or genes"
        raise ValueError(msg)
    return int(value)


def parse_memory(text: str | float, what: str = "--mem-per-node") -> float:
    """Bytes from ``128GB`` (128e9) or ``96GiB`` (96 * 2**30), as dask-jobqueue reads them."""
    from dask.utils import parse_bytes

    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    try:
        return float(parse_bytes(str(text)))
    except (ValueError, KeyError, TypeError):
        msg = f"{what} takes a size such as 128GB or 96GiB; got {text!r}"
        raise ValueError(msg) from None


def plan_capacity(
    cells: str | int,
    genes: str | int,
    *,
    nodes: int = 1,
    cores_per_node: int | None = None,
    mem_per_node: str | float | None = None,
    scheduler: str = "slurm",
    k: int = 30,
    cutoffs=(0.5,),
    label_values=ATLAS_LABEL_SIZES,
    encoding: str = "spearman",
    block_size: int | None = None,
    calibration: str | os.PathLike | Calibration | None = None,
) -> CapacityPlan:
    """Plan a run from the sizes a user knows.

    Parameters
    ----------
    cells, genes
        Cells and selected genes (``'2.3M'``, ``2000``).
    nodes
        Batch jobs, one per node.
    cores_per_node, mem_per_node
        What each job asks for: threads of its worker, and memory (``'128GB'``). With
        ``scheduler='local'`` they default to this machine's.
    scheduler
        ``'slurm'``, ``'pbs'``, ``'sge'``, ``'lsf'`` or ``'local'``.
    k, cutoffs, label_values, encoding
        As in ``rankdist neighbors``; ``label_values`` is the number of values of each
        label role (cell types, coarse classes, batches), which sizes the counts.
    block_size
        Cells per block (default: what ``rankdist neighbors`` would choose).
    calibration
        Calibration file or object (default: the one shipped with rankdist).

    Returns
    -------
    rankdist.planning.model.CapacityPlan
    """
    if scheduler == "local":
        import psutil

        cores_per_node = cores_per_node or len(os.sched_getaffinity(0))
        mem_per_node = mem_per_node or psutil.virtual_memory().total
    missing = [
        n for n, v in (("--cores-per-node", cores_per_node), ("--mem-per-node", mem_per_node))
        if v is None
    ]  # fmt: skip
    if missing:
        msg = (
            f"{' and '.join(missing)} needed for --scheduler {scheduler}: what one job asks "
            "for, e.g. --cores-per-node 32 --mem-per-node 128GB"
        )
        raise ValueError(msg)
    cal = calibration if isinstance(calibration, Calibration) else load_calibration(calibration)
    spec = RunSpec(
        cells=parse_count(cells, "--cells"), genes=parse_count(genes, "--genes"), k=k,
        n_cutoffs=len(tuple(cutoffs)), label_values=tuple(label_values), encoding=encoding,
    )  # fmt: skip
    layout = Layout(nodes, cores_per_node, parse_memory(mem_per_node), scheduler=scheduler)
    return plan_run(spec, layout, cal, block_rows=block_size)


def neighbors_command(plan: CapacityPlan, store: str, cutoffs, profile: str | None = None) -> str:
    """The ``rankdist neighbors`` command that runs the plan."""
    s, lay = plan.spec, plan.layout
    parts = ["rankdist neighbors", store]
    if lay.scheduler != "local":
        profile = profile or f"deploy/{lay.scheduler}.yaml"
        parts += [f"--cluster {lay.scheduler}", f"--jobs {lay.nodes}", f"--profile {profile}"]
    parts += [
        f"--block-size {plan.block_rows}", f"--encoding {s.encoding}", f"--k {s.k}",
        "--cutoffs " + ",".join(f"{c:g}" for c in cutoffs),
    ]  # fmt: skip
    return " ".join(parts)


def describe_plan(
    plan: CapacityPlan, *, store: str = "STORE", cutoffs=(0.5,), profile: str | None = None
) -> str:
    """The plan as text: sizes, expected wall time, storage and the command."""
    s, lay, w = plan.spec, plan.layout, plan.wall
    cal = plan.calibration
    per_pair = cal.seconds_per_pair(s.genes)
    n = s.cells
    values = "+".join(map(str, s.label_values))
    if lay.scheduler == "local":
        where = [
            f"this machine: one Dask worker of {lay.cores_per_node} threads, {_b(lay.mem_per_node)}"
        ]
    else:
        mem = _b(lay.mem_per_node).replace(" ", "")
        where = [
            f"{lay.nodes} {lay.scheduler} jobs (one per node), each one Dask worker of "
            f"{lay.cores_per_node} threads with a {mem} limit: {lay.threads:,} threads",
            f"(the layout of deploy/{lay.scheduler}.yaml: processes: 1, cores: "
            f"{lay.cores_per_node}, memory: {mem})",
        ]
    how = (
        "as rankdist neighbors would choose it for "
        f"{lay.threads:,} threads and {_b(lay.mem_per_node)} per worker"
        if plan.block_rows_chosen
        else "as given"
    )
    tile_s = plan.block_rows**2 * per_pair
    partial = plan.block_rows * s.partial_bytes_per_row
    results = {
        "indices": n * s.k * 8,
        "similarities": n * s.k * 4,
        "counts": n * s.n_cutoffs * sum(s.label_values) * 4,
    }
    tile_phase = w.tiles + w.tail + w.reduce + w.scheduler
    driver_s = plan.n_tasks * cal.driver_s_per_task
    sched_note = (
        f"{plan.n_tasks:,} tasks x {cal.driver_s_per_task * 1e3:.1f} ms of scheduler CPU"
        + (
            f" = {_t(driver_s)}: the scheduler is the bottleneck"
            if w.driver_bound
            else (
                f" = {_t(driver_s)}, {driver_s / max(tile_phase, 1e-9):.0%} of the tile phase"
                if lay.scheduler != "local"
                else ", on the same cores"
            )
        )
    )
    flops_text = f"{plan.flops:.3g}".replace("e+", "e")
    startup_note = "cluster, work directory, result" + (
        "" if lay.scheduler == "local" else ", 30 s for every job to join"
    )
    tiles_note = (
        f"{per_pair * 1e9:.1f} ns per pair per core (GEMM {cal.gemm_gflops_per_core:.0f} "
        f"GFLOP/s + fused pass {cal.fused_ns_per_pair:.1f} ns)"
    )
    rows = [
        f"rankdist plan: {n:,} cells x {s.genes:,} genes, {s.encoding}, k={s.k}, "
        f"{s.n_cutoffs} cutoff(s), {sum(s.label_values)} label values ({values})",
        f"cluster      {where[0]}",
        *[f"             {line}" for line in where[1:]],
        f"blocks       {plan.block_rows:,} cells per block ({how})",
        f"             {plan.n_blocks:,} blocks, {plan.n_tiles:,} tiles, {plan.n_merges:,} "
        f"merges, {plan.n_blocks:,} block writes: {plan.n_tasks:,} tasks",
        f"work         {flops_text} FLOPs (2 G N(N+1)/2); a full tile takes "
        f"{_t(tile_s)} on one core",
        f"wall time    {_t(w.total)} (queue wait not included)",
        _part("start-up", w.startup, startup_note),
        _part("encode", w.encode, f"{s.encoding}, one task per chunk of X"),
        _part("tiles", w.tiles, tiles_note),
        _part("load-imbalance tail", w.tail, "the last tiles end at different times"),
        _part("merges, block writes", w.reduce, f"partials of {_b(partial)}"),
        _part("scheduler", w.scheduler, sched_note),
        f"storage      store X (float32, before zstd)  {_b(plan.storage['store X']):>9}",
        f"             encoded Z (float32)             {_b(plan.storage['encoded Z']):>9}",
        f"             results (before zstd)           {_b(plan.storage['results']):>9}   "
        + ", ".join(f"{k} {_b(v)}" for k, v in results.items()),
        f"             checkpoints at peak             "
        f"{_b(plan.storage['checkpoints at peak']):>9}   4 partials per block",
        f"             Z read by the tiles, at most    {_b(plan.z_read_bytes):>9}   "
        f"{_b(plan.z_read_bytes / max(tile_phase, 1e-9))}/s from the shared filesystem",
        f"run it       {neighbors_command(plan, store, cutoffs, profile)}",
    ]
    if lay.scheduler != "local":
        rows.append(
            f"             with cores: {lay.cores_per_node} and memory: "
            f"{_b(lay.mem_per_node).replace(' ', '')} in the profile; the job that runs "
            "rankdist (deploy/run_rankdist.sbatch) needs a walltime above this plan's"
        )
    if w.driver_bound and plan.block_rows_chosen and plan.block_rows < MAX_BLOCK_ROWS:
        big = plan_run(s, lay, cal, block_rows=MAX_BLOCK_ROWS)
        rows.append(
            f"hint         with --block-size {MAX_BLOCK_ROWS}: {big.n_tasks:,} tasks, wall time "
            f"{_t(big.wall.total)}" + (" (still scheduler-bound)" if big.wall.driver_bound else "")
        )
    src = cal.measured
    rows.append(
        f"calibration  {src.get('date', '?')} on {src.get('host', '?')} "
        f"({src.get('cores', '?')} cores); for your nodes' rate run `rankdist plan --calibrate "
        f"--calibration FILE` on one, then pass --calibration FILE"
    )
    return "\n".join(rows)


def _part(name: str, seconds: float, note: str) -> str:
    return f"             {name:<22} {_t(seconds):>9}   {note}"


def _b(n: float) -> str:
    return format_bytes(n)


def _t(s: float) -> str:
    if s < 90:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"
