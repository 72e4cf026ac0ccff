"""``rankdist plan``: size a run before submitting it, and say how to run it.

The arithmetic is in :mod:`rankdist.planning.model` and the measured constants in
:mod:`rankdist.planning.calibration`; this module reads the user's sizes (``2.3M``,
``128GB``) and writes the plan as text, ending with the ``rankdist neighbors`` command.
"""

from __future__ import annotations

import os
from decimal import Decimal, InvalidOperation

from rankdist.cluster.jobqueue import OTHERS_GRACE_S
from rankdist.datasets.atlas.taxonomy import ATLAS_LABEL_SIZES
from rankdist.planning.calibration import Calibration, load_calibration
from rankdist.planning.model import (
    CapacityPlan,
    Layout,
    RunSpec,
    format_bytes,
    plan_run,
    result_bytes,
)
from rankdist.planning.traffic import DEFAULT_FS_BANDWIDTH, DEFAULT_NET_BANDWIDTH
from rankdist.tiles.grid import CACHED_BLOCKS, MAX_BLOCK_ROWS
from rankdist.tiles.scheduler import FAN_IN

__all__ = [
    "describe_plan",
    "format_seconds",
    "parse_bandwidth",
    "parse_count",
    "parse_memory",
    "plan_capacity",
]

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
#: The result arrays whose sizes the plan lists (the excluded mask is too small to matter).
RESULT_ARRAYS_SHOWN = ("indices", "similarities", "counts")


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


def parse_bandwidth(text: str | float, what: str = "--fs-bandwidth") -> float:
    """Bytes/s from ``2GB/s``, ``500MB/s``, ``2GB`` (read as per second) or a number."""
    msg = f"{what} takes a positive rate such as 2GB/s or 500MB/s; got {text!r}"
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    else:
        raw = str(text).strip()
        raw = raw[:-2] if raw.lower().endswith("/s") else raw
        try:
            value = parse_memory(raw, what) if raw else float("nan")
        except ValueError:
            raise ValueError(msg) from None
    if not value > 0:
        raise ValueError(msg)
    return value


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
    fs_bandwidth: str | float = DEFAULT_FS_BANDWIDTH,
    net_bandwidth: str | float = DEFAULT_NET_BANDWIDTH,
) -> CapacityPlan:
    """Plan a run from the sizes a user knows.

    Parameters
    ----------
    cells, genes
        Cells and selected genes (``'2.3M'``, ``2000``).
    nodes
        Batch jobs, one per node (``rankdist plan --jobs``).
    cores_per_node, mem_per_node
        What each job asks for: threads of its worker, and memory (``'128GB'``). With
        ``scheduler='local'`` they default to this machine's.
    scheduler
        The batch system (``rankdist plan --cluster``): ``'slurm'``, ``'pbs'``, ``'sge'``,
        ``'lsf'``, or ``'local'`` for this machine.
    k, cutoffs, label_values, encoding
        As in ``rankdist neighbors``; ``label_values`` is the number of values of each
        label role (cell types, coarse classes, batches), which sizes the counts.
    block_size
        Cells per block (default: what ``rankdist neighbors`` would choose).
    calibration
        Calibration file or object (default: the user's file written by
        ``rankdist plan --calibrate`` if there is one, else the one shipped with rankdist;
        see :func:`rankdist.planning.calibration.load_calibration`).
    fs_bandwidth
        Bytes/s the whole run reads from the store (``'5GB/s'``, the default).
    net_bandwidth
        Bytes/s of each node's network link (``'1.25GB/s'``, 10 Gb/s, the default).

    Returns
    -------
    rankdist.planning.model.CapacityPlan
    """
    if scheduler == "local":
        import psutil

        cores_per_node = cores_per_node or len(os.sched_getaffinity(0))
        mem_per_node = mem_per_node or psutil.virtual_memory().total
    missing = [
        n
        for n, v in (("--cores-per-node", cores_per_node), ("--mem-per-node", mem_per_node))
        if v is None
    ]
    if missing:
        msg = (
            f"{' and '.join(missing)} needed for --cluster {scheduler}: what one job asks "
            "for, e.g. --cores-per-node 32 --mem-per-node 128GB"
        )
        raise ValueError(msg)
    cal = calibration if isinstance(calibration, Calibration) else load_calibration(calibration)
    spec = RunSpec(
        cells=parse_count(cells, "--cells"),
        genes=parse_count(genes, "--genes"),
        k=k,
        n_cutoffs=len(tuple(cutoffs)),
        label_values=tuple(label_values),
        encoding=encoding,
    )
    layout = Layout(
        nodes,
        cores_per_node,
        parse_memory(mem_per_node),
        scheduler=scheduler,
        fs_bandwidth=parse_bandwidth(fs_bandwidth, "--fs-bandwidth"),
        net_bandwidth=parse_bandwidth(net_bandwidth, "--net-bandwidth"),
    )
    return plan_run(spec, layout, cal, block_rows=block_size)


def neighbors_command(plan: CapacityPlan, store: str, cutoffs, profile: str | None = None) -> str:
    """The ``rankdist neighbors`` command that runs the plan."""
    s, lay = plan.spec, plan.layout
    parts = ["rankdist neighbors", store]
    if lay.scheduler != "local":
        profile = profile or f"deploy/{lay.scheduler}.yaml"
        parts += [f"--cluster {lay.scheduler}", f"--jobs {lay.nodes}", f"--profile {profile}"]
    parts += [
        f"--block-size {plan.block_rows}",
        f"--encoding {s.encoding}",
        f"--k {s.k}",
        "--cutoffs " + ",".join(f"{c:g}" for c in cutoffs),
    ]
    return " ".join(parts)


def describe_plan(
    plan: CapacityPlan, *, store: str = "STORE", cutoffs=(0.5,), profile: str | None = None
) -> str:
    """The plan as text: sizes, expected wall time, storage and the command.

    Parameters
    ----------
    plan
        What :func:`plan_capacity` returned.
    store, cutoffs, profile
        Put into the printed ``rankdist neighbors`` command.

    Returns
    -------
    str
        One section per topic (cluster, blocks, work, wall time, storage, the command, a
        hint if larger blocks would help, the calibration), each line labelled.
    """
    rows = [
        _summary(plan.spec),
        *_cluster_rows(plan.layout),
        *_block_rows(plan),
        _work_row(plan),
        *_wall_time_rows(plan),
        *_data_rows(plan),
        *_storage_rows(plan),
        *_command_rows(plan, store, cutoffs, profile),
        *_hint_rows(plan),
        _calibration_row(plan.calibration),
    ]
    return "\n".join(rows)


def format_seconds(seconds: float) -> str:
    """``8.2 s``, ``42 s``, ``12.5 min`` or ``3.1 h``: the unit that reads best."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _row(label: str, text: str) -> str:
    """One line of the plan: a section label (or none, to continue one), then the text."""
    return f"{label:<12} {text}"


def _summary(spec: RunSpec) -> str:
    values = "+".join(map(str, spec.label_values))
    return (
        f"rankdist plan: {spec.cells:,} cells x {spec.genes:,} genes, {spec.encoding}, "
        f"k={spec.k}, {spec.n_cutoffs} cutoff(s), {sum(spec.label_values)} label values "
        f"({values})"
    )


def _profile_memory(layout: Layout) -> str:
    """The job's memory as a ``deploy/*.yaml`` profile writes it: ``128GB``."""
    return format_bytes(layout.mem_per_node).replace(" ", "")


def _cluster_rows(layout: Layout) -> list[str]:
    threads = layout.cores_per_node
    if layout.scheduler == "local":
        worker = f"one Dask worker of {threads} threads, {format_bytes(layout.mem_per_node)}"
        return [_row("cluster", f"this machine: {worker}")]
    mem = _profile_memory(layout)
    jobs = (
        f"{layout.nodes} {layout.scheduler} jobs (one per node), each one Dask worker of "
        f"{threads} threads with a {mem} limit: {layout.threads:,} threads"
    )
    profile = (
        f"(the layout of deploy/{layout.scheduler}.yaml: processes: 1, cores: {threads}, "
        f"memory: {mem})"
    )
    return [_row("cluster", jobs), _row("", profile)]


def _block_rows(plan: CapacityPlan) -> list[str]:
    lay = plan.layout
    if plan.block_rows_chosen:
        how = (
            f"as rankdist neighbors would choose it for {lay.threads:,} threads and "
            f"{format_bytes(lay.mem_per_node)} per worker"
        )
    else:
        how = "as given"
    tasks = (
        f"{plan.n_blocks:,} blocks, {plan.n_tiles:,} tiles, {plan.n_merges:,} merges, "
        f"{plan.n_blocks:,} block writes: {plan.n_tasks:,} tasks"
    )
    return [_row("blocks", f"{plan.block_rows:,} cells per block ({how})"), _row("", tasks)]


def _work_row(plan: CapacityPlan) -> str:
    flops_text = f"{plan.flops:.3g}".replace("e+", "e")
    full_tile_s = plan.block_rows**2 * plan.calibration.seconds_per_pair(plan.spec.genes)
    work = (
        f"{flops_text} FLOPs (2 G N(N+1)/2); a full tile takes "
        f"{format_seconds(full_tile_s)} on one core"
    )
    return _row("work", work)


def _wall_time_rows(plan: CapacityPlan) -> list[str]:
    spec, cal, wall = plan.spec, plan.calibration, plan.wall
    startup = "cluster, work directory, result"
    if plan.layout.scheduler != "local":
        startup += f", {OTHERS_GRACE_S:.0f} s for every job to join"
    tiles = (
        f"{cal.seconds_per_pair(spec.genes) * 1e9:.1f} ns per pair per core (GEMM "
        f"{cal.gemm_gflops_per_core:.0f} GFLOP/s + fused pass {cal.fused_ns_per_pair:.1f} ns)"
    )
    partial = format_bytes(spec.partial_bytes(plan.block_rows))
    parts = [
        ("start-up", wall.startup, startup),
        ("encode", wall.encode, f"{spec.encoding}, one task per chunk of X"),
        ("tiles", wall.tiles, tiles),
        ("load-imbalance tail", wall.tail, "the last tiles end at different times"),
        ("merges, block writes", wall.reduce, f"partials of {partial}"),
        ("scheduler", wall.scheduler, _scheduler_note(plan)),
        ("waiting for data", wall.io_wait, "store reads or transfers beyond the compute"),
    ]
    return [
        _row("wall time", f"{format_seconds(wall.total)} (queue wait not included)"),
        *[_row("", f"{name:<22} {format_seconds(s):>9}   {note}") for name, s, note in parts],
    ]


def _data_rows(plan: CapacityPlan) -> list[str]:
    """Bytes read from the store and moved between workers, and their times."""
    lay, wall = plan.layout, plan.wall
    z = plan.storage["encoded Z"]
    fs = f"at {format_bytes(lay.fs_bandwidth)}/s (--fs-bandwidth)"
    net = f"at {format_bytes(lay.net_bandwidth)}/s per node (--net-bandwidth)"
    rows = [
        ("read from the store", plan.store_read_bytes, wall.store_read, fs),
        ("moved between workers", plan.peer_bytes, wall.peer, net),
    ]
    out = [
        _row(
            "data" if n == 0 else "",
            f"{name:<22}{format_bytes(b):>9} ({b / z:.1f}x Z) {format_seconds(s):>9}   {note}",
        )
        for n, (name, b, s, note) in enumerate(rows)
    ]
    how = (
        "each block read once, then moved to the workers that own its tiles"
        if plan.byte_model == "resident"
        else f"tiles read blocks through a {CACHED_BLOCKS}-block cache per worker"
    )
    rule = (
        f"({plan.byte_model} model: {how}; both overlap the compute, the wall time adds "
        "what exceeds it)"
    )
    return [*out, _row("", rule)]


def _scheduler_note(plan: CapacityPlan) -> str:
    """The scheduler's CPU, and whether it bounds the run or how much of it it takes."""
    per_task = plan.calibration.driver_s_per_task
    driver_s = plan.n_tasks * per_task
    note = f"{plan.n_tasks:,} tasks x {per_task * 1e3:.1f} ms of scheduler CPU"
    if plan.wall.driver_bound:
        return f"{note} = {format_seconds(driver_s)}: the scheduler is the bottleneck"
    if plan.layout.scheduler == "local":
        return f"{note}, on the same cores"
    share = driver_s / max(plan.wall.tile_phase, 1e-9)
    return f"{note} = {format_seconds(driver_s)}, {share:.0%} of the tile phase"


def _storage_rows(plan: CapacityPlan) -> list[str]:
    def line(label: str, what: str, nbytes: float, note: str = "") -> str:
        text = f"{what:<32}{format_bytes(nbytes):>9}"
        return _row(label, f"{text}   {note}" if note else text)

    sizes = plan.storage
    results = result_bytes(plan.spec)
    arrays = ", ".join(f"{a} {format_bytes(results[a])}" for a in RESULT_ARRAYS_SHOWN)
    checkpoints = f"{FAN_IN} partials per block"
    z_rate = plan.z_read_bytes / max(plan.wall.tile_phase, 1e-9)
    z_note = f"{format_bytes(z_rate)}/s from the shared filesystem"
    return [
        line("storage", "store X (float32, before zstd)", sizes["store X"]),
        line("", "encoded Z (float32)", sizes["encoded Z"]),
        line("", "results (before zstd)", sizes["results"], arrays),
        line("", "checkpoints at peak", sizes["checkpoints at peak"], checkpoints),
        line("", "Z read by the tiles, at most", plan.z_read_bytes, z_note),
    ]


def _command_rows(plan: CapacityPlan, store: str, cutoffs, profile: str | None) -> list[str]:
    rows = [_row("run it", neighbors_command(plan, store, cutoffs, profile))]
    lay = plan.layout
    if lay.scheduler != "local":
        profile_note = (
            f"with cores: {lay.cores_per_node} and memory: {_profile_memory(lay)} in the "
            "profile; the job that runs rankdist (deploy/run_rankdist.sbatch) needs a "
            "walltime above this plan's"
        )
        rows.append(_row("", profile_note))
    return rows


def _hint_rows(plan: CapacityPlan) -> list[str]:
    """Larger blocks, when the scheduler bounds a run whose block size was chosen."""
    bound = plan.wall.driver_bound and plan.block_rows_chosen
    if not bound or plan.block_rows >= MAX_BLOCK_ROWS:
        return []
    big = plan_run(plan.spec, plan.layout, plan.calibration, block_rows=MAX_BLOCK_ROWS)
    still = " (still scheduler-bound)" if big.wall.driver_bound else ""
    hint = (
        f"with --block-size {MAX_BLOCK_ROWS}: {big.n_tasks:,} tasks, wall time "
        f"{format_seconds(big.wall.total)}{still}"
    )
    return [_row("hint", hint)]


def _calibration_row(cal: Calibration) -> str:
    src = cal.measured
    text = (
        f"{src.get('date', '?')} on {src.get('host', '?')} ({src.get('cores', '?')} cores); "
        "for your nodes' rate run `rankdist plan --calibrate --calibration FILE` on one, "
        "then pass --calibration FILE"
    )
    return _row("calibration", text)
