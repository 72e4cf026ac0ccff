"""Capacity planning: block size, tiles, FLOPs, wall time and storage of a run, beforehand.

``rankdist plan`` (and :func:`plan_run`) sizes a run on a batch system from the numbers
a user knows: cells, genes, nodes, cores and memory per node. The worker layout is the
one ``deploy/*.yaml`` and :mod:`rankdist.cluster.jobqueue` use: one batch job per node,
running one Dask worker process with one thread per core, whose memory limit is the
job's memory. The block size is then :func:`rankdist.tiles.grid.choose_block_rows` for
that worker, as ``rankdist neighbors`` would choose it. Times come from
:func:`wall_time_model` and the constants of a
:class:`~rankdist.planning.calibration.Calibration`, measured on a real tile workload (see
docs/planning.md).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from rankdist.cluster.profile import SYSTEMS
from rankdist.datasets.atlas.taxonomy import ATLAS_LABEL_SIZES
from rankdist.layout import SUBTILE
from rankdist.planning.calibration import Calibration
from rankdist.planning.traffic import BYTE_MODELS, CURRENT_MODEL, DataMovement, byte_model
from rankdist.planning.traffic import DEFAULT_FS_BANDWIDTH as FS_BW
from rankdist.planning.traffic import DEFAULT_NET_BANDWIDTH as NET_BW
from rankdist.reduce.partial import partial_bytes_per_row
from rankdist.tiles.grid import TilePlan, choose_block_rows, worker_memory_needed
from rankdist.tiles.scheduler import FAN_IN

#: Batch systems ``rankdist neighbors --cluster`` submits to, and ``local``: the choices of
#: ``rankdist plan --cluster`` (the CLI builds the same tuple without importing this module).
SCHEDULERS: tuple[str, ...] = (*SYSTEMS, "local")


@dataclass(frozen=True)
class Layout:
    """Where a run's Dask workers run, laid out as ``deploy/*.yaml`` does.

    Attributes
    ----------
    nodes
        Batch jobs, one per node (``--jobs``); 1 for a local run.
    cores_per_node
        Threads of each job's one worker process (the profile's ``cores``).
    mem_per_node
        Bytes of each job's memory (the profile's ``memory``), the worker's limit.
    scheduler
        The batch system (``--cluster``): one of :data:`SCHEDULERS`, ``'slurm'``,
        ``'pbs'``, ``'sge'``, ``'lsf'`` or ``'local'``.
    fs_bandwidth
        Bytes/s the whole job can read from the store (``--fs-bandwidth``).
    net_bandwidth
        Bytes/s of each node's network link (``--net-bandwidth``).
    """

    nodes: int
    cores_per_node: int
    mem_per_node: float
    scheduler: str = "slurm"
    fs_bandwidth: float = FS_BW
    net_bandwidth: float = NET_BW

    def __post_init__(self):
        for name, option in (("nodes", "--jobs"), ("cores_per_node", "--cores-per-node")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                msg = f"{option} must be a positive integer, got {value!r}"
                raise ValueError(msg)
        if not self.mem_per_node > 0:
            msg = f"--mem-per-node must be positive (e.g. 128GB), got {self.mem_per_node!r}"
            raise ValueError(msg)
        for name in ("fs_bandwidth", "net_bandwidth"):
            if not getattr(self, name) > 0:
                option = "--" + name.replace("_", "-")
                msg = f"{option} must be positive (e.g. 2GB/s), got {getattr(self, name)!r}"
                raise ValueError(msg)
        if self.scheduler not in SCHEDULERS:
            msg = f"--cluster {self.scheduler!r} is not one of {', '.join(SCHEDULERS)}"
            raise ValueError(msg)
        if self.scheduler == "local" and self.nodes != 1:
            msg = (
                f"--cluster local runs on one machine; got --jobs {self.nodes}: leave --jobs "
                "out, or plan for a batch system (--cluster slurm, ...)"
            )
            raise ValueError(msg)

    @property
    def threads(self) -> int:
        """Worker threads in the whole cluster: one tile each at a time."""
        return self.nodes * self.cores_per_node


@dataclass(frozen=True)
class RunSpec:
    """What is computed: cells x genes, k neighbours, cutoff counts over label values."""

    cells: int
    genes: int
    k: int = 30
    n_cutoffs: int = 1
    label_values: tuple[int, ...] = ATLAS_LABEL_SIZES
    encoding: str = "spearman"

    def __post_init__(self):
        for name in ("cells", "genes", "k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                msg = f"--{name} must be a positive integer, got {value!r}"
                raise ValueError(msg)
        if self.k >= self.cells:
            msg = f"--k {self.k} must be smaller than --cells {self.cells}"
            raise ValueError(msg)
        if self.n_cutoffs < 1 or any(v < 1 for v in self.label_values):
            msg = (
                f"need at least one cutoff and positive label value counts; got "
                f"{self.n_cutoffs} cutoff(s) and label values {list(self.label_values)}"
            )
            raise ValueError(msg)

    @property
    def partial_bytes_per_row(self) -> int:
        """One row of a partial: top-k (float32 + int64) and int32 counts per cutoff/value."""
        return partial_bytes_per_row(self.k, self.n_cutoffs, sum(self.label_values))

    def partial_bytes(self, block_rows: int) -> int:
        """Bytes of one partial of a block of ``block_rows`` cells."""
        return block_rows * self.partial_bytes_per_row


@dataclass(frozen=True)
class WallTime:
    """Parts of the expected wall time of ``rankdist neighbors``, in seconds."""

    startup: float
    encode: float
    tiles: float
    tail: float
    reduce: float
    scheduler: float
    driver_bound: bool
    store_read: float = 0.0
    peer: float = 0.0
    io_wait: float = 0.0

    @property
    def total(self) -> float:
        compute = self.startup + self.encode + self.tiles + self.tail + self.reduce
        return compute + self.scheduler + self.io_wait

    @property
    def tile_phase(self) -> float:
        """From the first tile to the last block write: what the scheduler's tasks span."""
        return self.tiles + self.tail + self.reduce + self.scheduler + self.io_wait


def tile_makespan(plan: TilePlan, threads: int, seconds_per_pair: float, per_task: float):
    """Finish time of the tiles handed out in submission order to the first free thread.

    This is how Dask's scheduler queue hands out tiles (in priority order, to a thread as
    it frees up). A tile costs its pairs times ``seconds_per_pair`` plus ``per_task``.

    Returns
    -------
    float, float
        The makespan, and the total thread time divided by ``threads`` (the makespan of
        a perfect balance); their difference is the load-imbalance tail.
    """
    free = [0.0] * min(threads, plan.n_tiles)
    total = 0.0
    for i, j in plan.tiles():
        cost = plan.tile_pairs(i, j) * seconds_per_pair + per_task
        total += cost
        heapq.heapreplace(free, free[0] + cost)
    return max(free), total / threads


def n_merges(n_blocks: int) -> int:
    """Merge tasks of a run: each block folds ``n_blocks`` tile sides, ``FAN_IN`` at a time."""
    return n_blocks * math.ceil((n_blocks - 1) / (FAN_IN - 1))


def n_tasks(plan: TilePlan) -> int:
    """Tasks of a run: one per tile, :func:`n_merges` merges, one write per block."""
    return plan.n_tiles + n_merges(plan.n_blocks) + plan.n_blocks


def data_movement(spec: RunSpec, layout: Layout, block_rows: int, cal: Calibration) -> DataMovement:
    """Bytes read from the store and moved between workers, by the model a run would use.

    ``resident`` where the blocks a worker holds fit its memory budget, else ``streamed``
    (:func:`rankdist.planning.traffic.byte_model`).
    """
    return BYTE_MODELS[byte_model(spec, layout, block_rows)](spec, layout, block_rows, cal)


def wall_time_model(
    spec: RunSpec,
    layout: Layout,
    block_rows: int,
    cal: Calibration,
    movement: DataMovement | None = None,
) -> WallTime:
    """Expected wall time of ``rankdist neighbors`` (queue wait not included).

    With W worker threads, G genes, and the calibration's per-core constants:

    * start-up: ``cal.startup_s`` (cluster start, work directory, loading the result),
      plus, on a batch system, the 30 s rankdist waits for the other jobs' workers;
    * encode: one task per X chunk of ``chunk`` cells, each ``chunk * G * encode_ns``,
      in ``ceil(chunks / W)`` waves;
    * tiles: ``2 G / gemm_rate + fused_ns`` per pair of cells, plus ``tile_fixed_s`` and
      ``worker_s_per_task`` per tile, list-scheduled over W threads in submission order;
      what exceeds a perfect balance is the tail;
    * reduce: each merge ``merge_fixed_s + merge_s_per_mb * MB``, each block write
      ``write_fixed_s + write_s_per_mb * MB`` (MB: one partial), plus
      ``worker_s_per_task`` each, over W threads;
    * scheduler: ``cal.driver_s_per_task`` of scheduler and client CPU per task. On a
      local cluster that CPU is taken from the same cores (added, over W); on a batch
      system the scheduler has its own machine and only bounds the tile phase from
      below (``tasks * driver_s_per_task``);
    * data movement (``movement``, default :func:`data_movement`): the store reads take
      ``store_read_bytes / layout.fs_bandwidth`` (the job's share), the transfers
      between workers ``peer_bytes / (nodes * layout.net_bandwidth)`` (each node's link).
      Both overlap the tiles, merges and writes (other threads compute while one waits),
      so they add only what the longer of them exceeds that compute: ``io_wait``.
    """
    from rankdist.cluster.jobqueue import OTHERS_GRACE_S
    from rankdist.layout import chunk_rows

    w = layout.threads
    plan = TilePlan(spec.cells, block_rows)
    startup = cal.startup_s + (0.0 if layout.scheduler == "local" else OTHERS_GRACE_S)
    chunk = chunk_rows(spec.genes, spec.cells)
    n_chunks = -(-spec.cells // chunk)
    encode = math.ceil(n_chunks / w) * chunk * spec.genes * cal.encode_ns_per_value * 1e-9
    per_task = cal.worker_s_per_task
    makespan, balanced = tile_makespan(
        plan, w, cal.seconds_per_pair(spec.genes), cal.tile_fixed_s + per_task
    )
    mb = spec.partial_bytes(block_rows) / 1e6
    merges = n_merges(plan.n_blocks)
    merge_s = cal.merge_fixed_s + cal.merge_s_per_mb * mb + per_task
    write_s = cal.write_fixed_s + cal.write_s_per_mb * mb + per_task
    reduce = (merges * merge_s + plan.n_blocks * write_s) / w
    driver = n_tasks(plan) * cal.driver_s_per_task
    if layout.scheduler == "local":
        scheduler, bound = driver / w, False
    else:
        bound = driver > makespan + reduce
        scheduler = max(0.0, driver - makespan - reduce)
    movement = movement or data_movement(spec, layout, block_rows, cal)
    store_read = movement.store_read_bytes / layout.fs_bandwidth
    peer = movement.peer_bytes / (layout.nodes * layout.net_bandwidth)
    io_wait = max(0.0, max(store_read, peer) - (makespan + reduce))
    return WallTime(
        startup=startup,
        encode=encode,
        tiles=balanced,
        tail=makespan - balanced,
        reduce=reduce,
        scheduler=scheduler,
        driver_bound=bound,
        store_read=store_read,
        peer=peer,
        io_wait=io_wait,
    )


@dataclass
class CapacityPlan:
    """Everything ``rankdist plan`` prints: sizes, times, storage and the command."""

    spec: RunSpec
    layout: Layout
    block_rows: int
    block_rows_chosen: bool
    n_blocks: int
    n_tiles: int
    n_merges: int
    n_tasks: int
    flops: float
    wall: WallTime
    storage: dict[str, float] = field(default_factory=dict)
    z_read_bytes: float = 0.0
    calibration: Calibration | None = None
    store_read_bytes: float = 0.0
    peer_bytes: float = 0.0
    byte_model: str = CURRENT_MODEL


def flops(cells: int, genes: int) -> float:
    """Multiply-adds of the upper triangle, diagonal included: ``2 G N (N + 1) / 2``."""
    return 2.0 * genes * cells * (cells + 1) / 2


def result_bytes(spec: RunSpec) -> dict[str, float]:
    """Bytes of each array of a run's results, before compression.

    Keys: ``indices`` (int64, N x k), ``similarities`` (float32, N x k), ``counts`` (int32,
    N x cutoffs x label values) and ``excluded`` (the bool mask of constant cells).
    """
    n = spec.cells
    return {
        "indices": float(n * spec.k * 8),
        "similarities": float(n * spec.k * 4),
        "counts": float(n * spec.n_cutoffs * sum(spec.label_values) * 4),
        "excluded": float(n),
    }


def storage_bytes(spec: RunSpec, block_rows: int, x_itemsize: int = 4) -> dict[str, float]:
    """Bytes on disk, before compression (zstd shrinks X and the counts a lot).

    Keys: ``store X`` (cells x genes in the source dtype), ``encoded Z`` (float32, stored
    uncompressed, and its validity mask), ``results`` (all of :func:`result_bytes`) and
    ``checkpoints at peak`` (``FAN_IN`` merged partials per row block, the most a block
    keeps between merges).
    """
    n, g = spec.cells, spec.genes
    n_blocks = TilePlan(n, block_rows).n_blocks
    return {
        "store X": float(n * g * x_itemsize),
        "encoded Z": float(n * g * 4 + n),
        "results": sum(result_bytes(spec).values()),
        "checkpoints at peak": float(n_blocks * FAN_IN * spec.partial_bytes(block_rows)),
    }


def min_memory_per_node(spec: RunSpec, cores_per_node: int) -> float:
    """The least job memory that holds one block of ``SUBTILE`` cells per thread.

    The memory model of :func:`rankdist.tiles.grid.choose_block_rows`
    (:func:`rankdist.tiles.grid.worker_memory_needed`) for the job's one worker.
    """
    return worker_memory_needed(
        SUBTILE,
        spec.genes,
        threads_per_worker=cores_per_node,
        bytes_per_row_partial=spec.partial_bytes_per_row,
    )


def plan_run(
    spec: RunSpec,
    layout: Layout,
    cal: Calibration,
    *,
    block_rows: int | None = None,
) -> CapacityPlan:
    """Size a run: block size, tiles, FLOPs, wall time and storage.

    Parameters
    ----------
    spec
        Cells, genes, k, cutoffs and label values.
    layout
        Nodes, cores and memory per node, batch system.
    cal
        Per-core throughput constants (:func:`rankdist.planning.calibration.load_calibration`).
    block_rows
        Cells per block; default: what ``rankdist neighbors`` would choose.

    Returns
    -------
    CapacityPlan
    """
    need = min_memory_per_node(spec, layout.cores_per_node)
    if layout.mem_per_node < need:
        msg = (
            f"--mem-per-node {format_bytes(layout.mem_per_node)} cannot hold one block of "
            f"{SUBTILE} cells for {layout.cores_per_node} threads at {spec.genes} genes; "
            f"give at least {format_bytes(need)} per node, or fewer --cores-per-node"
        )
        raise ValueError(msg)
    chosen = block_rows is None
    if chosen:
        block_rows = choose_block_rows(
            spec.cells,
            spec.genes,
            threads=layout.threads,
            worker_memory=layout.mem_per_node,
            threads_per_worker=layout.cores_per_node,
            bytes_per_row_partial=spec.partial_bytes_per_row,
        )
    plan = TilePlan(spec.cells, block_rows)
    z_block = block_rows * spec.genes * 4
    movement = data_movement(spec, layout, block_rows, cal)
    return CapacityPlan(
        spec=spec,
        layout=layout,
        block_rows=block_rows,
        block_rows_chosen=chosen,
        n_blocks=plan.n_blocks,
        n_tiles=plan.n_tiles,
        n_merges=n_merges(plan.n_blocks),
        n_tasks=n_tasks(plan),
        flops=flops(spec.cells, spec.genes),
        wall=wall_time_model(spec, layout, block_rows, cal, movement),
        storage=storage_bytes(spec, block_rows),
        z_read_bytes=float(2 * plan.n_tiles * z_block),
        calibration=cal,
        store_read_bytes=movement.store_read_bytes,
        peer_bytes=movement.peer_bytes,
        byte_model=movement.model,
    )


def format_bytes(n: float) -> str:
    """Decimal units, as batch systems and dask-jobqueue print them."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}" if n / scale < 100 else f"{n / scale:.0f} {unit}"
    return f"{n:.0f} B"
