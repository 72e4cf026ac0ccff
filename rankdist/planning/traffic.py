"""Bytes a run moves: Z read from the store by the tiles, and partials moved between workers.

One function per execution model (:data:`BYTE_MODELS`); the planner calls the one that
describes how ``rankdist neighbors`` runs today. ``streamed``: every tile task reads its
two Z blocks from the store through :func:`rankdist.tiles.blocks.read_block`, which keeps
an LRU cache of :data:`~rankdist.tiles.grid.CACHED_BLOCKS` blocks per worker process; a
tile's result (its two partials, one Dask datum) stays on the worker that computed it,
and each merge task runs on one worker and fetches the inputs held elsewhere
(:mod:`rankdist.tiles.scheduler`); a block write runs where its last partial is.
``resident`` (where Z fits the workers' memory, :func:`rankdist.tiles.grid.choose_residence`):
each block is read from the store once, by a ``rankdist-block`` task; each tile runs on
its owner in a 2D layout (:class:`rankdist.tiles.grid.OwnerLayout`), which fetches the
blocks of its tiles from peers, and merges a block's partials from its own tiles before
one last merge gathers what each owner holds (:mod:`rankdist.tiles.placement`).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass

from rankdist.tiles.grid import CACHED_BLOCKS, OwnerLayout, TilePlan, choose_residence
from rankdist.tiles.scheduler import FAN_IN

#: Default store bandwidth of the whole job, bytes/s (``--fs-bandwidth 5GB/s``).
DEFAULT_FS_BANDWIDTH = 5e9
#: Default network bandwidth of each node, bytes/s (``--net-bandwidth 1.25GB/s``: 10 Gb/s).
DEFAULT_NET_BANDWIDTH = 1.25e9


@dataclass(frozen=True)
class DataMovement:
    """What a run moves, in bytes, under one execution model.

    Attributes
    ----------
    store_read_bytes
        Bytes the tiles read from the store (Z, validity mask, label codes).
    store_reads
        Block reads from the store (cache misses).
    peer_bytes
        Bytes moved between worker processes (Dask's transfers of task results).
    model
        The name of the model in :data:`BYTE_MODELS`.
    """

    store_read_bytes: float
    store_reads: int
    peer_bytes: float
    model: str


def block_read_bytes(rows: int, genes: int, n_roles: int) -> int:
    """Bytes of one block read: float32 Z, its bool validity mask, int32 codes per role."""
    return rows * (4 * genes + 1 + 4 * n_roles)


def store_block_reads(
    plan: TilePlan, workers: int, threads_per_worker: int, tile_seconds, *, cached=CACHED_BLOCKS
) -> int:
    """Block reads that miss the per-process cache, tiles handed out as Dask does.

    Tiles start in submission order (:meth:`TilePlan.tiles`), each on the thread that
    frees first; at the start the threads are taken round-robin over the workers (Dask
    queues root tasks to the least-busy worker). Each worker process keeps an LRU cache
    of ``cached`` blocks; a tile reads block i, then block j. Two threads that miss the
    same block at once both read it in a real run; here the second one hits.

    Parameters
    ----------
    plan
        Blocks and tiles.
    workers, threads_per_worker
        Worker processes (each with its own cache) and threads in each.
    tile_seconds
        ``tile_seconds(i, j)``: the time a tile holds its thread.

    Returns
    -------
    int
    """
    threads = workers * threads_per_worker
    free = [(0.0, t) for t in range(threads)]  # thread t runs on worker t % workers
    caches = [OrderedDict() for _ in range(workers)]
    reads = 0
    for i, j in plan.tiles():
        start, thread = heapq.heappop(free)
        cache = caches[thread % workers]
        for b in (i, j) if i != j else (i,):
            if b in cache:
                cache.move_to_end(b)
                continue
            reads += 1
            cache[b] = None
            if len(cache) > cached:
                cache.popitem(last=False)
        heapq.heappush(free, (start + tile_seconds(i, j), thread))
    return reads


def _merge_transfer(sizes: list[float], workers: int) -> float:
    """Expected bytes a merge fetches: its inputs lie on random workers; it runs on the one
    holding the largest input (Dask places a task where most of its input bytes are)."""
    if workers < 2 or len(sizes) < 2:
        return 0.0
    distinct = 1.0
    for k in range(1, len(sizes)):
        distinct *= (workers - k) / workers
    total, largest = sum(sizes), max(sizes)
    rest = (total - largest) / (len(sizes) - 1)
    return distinct * (total - largest) + (1 - distinct) * max(0.0, total - largest - rest)


def merge_peer_bytes(plan: TilePlan, partial_bytes_per_row: int, workers: int) -> float:
    """Expected bytes moved to merges between ``workers`` worker processes.

    A tile's result is one Dask datum, both its partials, so each of the merges of its
    two blocks that runs elsewhere fetches both. Tiles finish in submission order and a
    merge returns before the next tile of its block (the merge tree of
    :func:`rankdist.tiles.scheduler.run_tiles`: ``FAN_IN`` waiting items, then the rest).
    """
    ranges = map(plan.block_range, range(plan.n_blocks))
    part = [(b1 - b0) * partial_bytes_per_row for b0, b1 in ranges]
    pending: list[list[float]] = [[] for _ in range(plan.n_blocks)]
    moved = 0.0
    for i, j in plan.tiles():
        result = part[i] + (part[j] if i != j else 0)
        for b in (i, j) if i != j else (i,):
            pending[b].append(result)
            if len(pending[b]) >= FAN_IN:
                moved += _merge_transfer(pending[b], workers)
                pending[b] = [part[b]]
    for items in pending:
        if len(items) > 1:
            moved += _merge_transfer(items, workers)
    return moved


def streamed_movement(spec, layout, block_rows: int, cal) -> DataMovement:
    """Today's model (``streamed``): see the module docstring.

    Parameters
    ----------
    spec, layout
        :class:`rankdist.planning.model.RunSpec` and :class:`~rankdist.planning.model.Layout`
        (one worker process per node).
    block_rows
        Cells per block.
    cal
        :class:`rankdist.planning.calibration.Calibration`: the tiles' times, which decide
        which worker runs which tile.
    """
    plan = TilePlan(spec.cells, block_rows)
    pair_s = cal.seconds_per_pair(spec.genes)
    fixed = cal.tile_fixed_s + cal.worker_s_per_task

    def tile_seconds(i: int, j: int) -> float:
        return plan.tile_pairs(i, j) * pair_s + fixed

    reads = store_block_reads(plan, layout.nodes, layout.cores_per_node, tile_seconds)
    full = block_read_bytes(block_rows, spec.genes, len(spec.label_values))
    last_rows = plan.block_range(plan.n_blocks - 1)
    last = block_read_bytes(last_rows[1] - last_rows[0], spec.genes, len(spec.label_values))
    # Blocks are read about equally often; the last block may be shorter.
    mean_block = (full * (plan.n_blocks - 1) + last) / plan.n_blocks
    return DataMovement(
        store_read_bytes=reads * mean_block,
        store_reads=reads,
        peer_bytes=merge_peer_bytes(plan, spec.partial_bytes_per_row, layout.nodes),
        model="streamed",
    )


def resident_movement(spec, layout, block_rows: int, cal) -> DataMovement:
    """Blocks resident on workers, tiles and merges placed by owner (``resident``).

    Each block is read from the store once. Each tile runs on its owner
    (:class:`rankdist.tiles.grid.OwnerLayout`), which fetches every block of its tiles
    from a peer but one: each block is read by one of the workers that use it, and
    reaches each other user once. Partials: :func:`owner_merge_peer_bytes`. Tiles an
    idle worker steals from a busy one (Dask's work stealing) move more; the model
    leaves them out. Parameters as for :func:`streamed_movement`.
    """
    plan = TilePlan(spec.cells, block_rows)
    roles = len(spec.label_values)
    sizes = [block_read_bytes(b1 - b0, spec.genes, roles) for b0, b1 in _ranges(plan)]
    peer = 0.0
    if layout.nodes > 1:
        owner = OwnerLayout(layout.nodes).owner
        users: list[set] = [set() for _ in range(plan.n_blocks)]
        for i, j in plan.tiles():
            users[i].add(owner(i, j))
            users[j].add(owner(i, j))
        peer = sum((len(u) - 1) * size for u, size in zip(users, sizes, strict=True))
        peer += owner_merge_peer_bytes(plan, spec.partial_bytes_per_row, owner)
    return DataMovement(
        store_read_bytes=float(sum(sizes)),
        store_reads=plan.n_blocks,
        peer_bytes=peer,
        model="resident",
    )


def _ranges(plan: TilePlan):
    return map(plan.block_range, range(plan.n_blocks))


def owner_merge_peer_bytes(plan: TilePlan, partial_bytes_per_row: int, owner) -> float:
    """Bytes moved to merges when each owner merges its own tiles' partials first.

    A tile's result (both partials, one datum) stays on its owner, ``owner(i, j)``; every
    ``FAN_IN`` items of a block from one owner merge there (no transfer). When all of a
    block's tiles are in, each owner folds what it still holds into one partial (a tile
    result alone stays as it is), and one merge gathers them, placed where most of their
    bytes are: the others' bytes move.
    """
    part = [(b1 - b0) * partial_bytes_per_row for b0, b1 in _ranges(plan)]
    left: list[dict] = [{} for _ in range(plan.n_blocks)]  # block -> owner -> item sizes
    for i, j in plan.tiles():
        result = part[i] + (part[j] if i != j else 0)
        for b in (i, j) if i != j else (i,):
            items = left[b].setdefault(owner(i, j), [])
            items.append(result)
            if len(items) >= FAN_IN:
                items[:] = [part[b]]
    moved = 0.0
    for b, per_owner in enumerate(left):
        held = [items[0] if len(items) == 1 else part[b] for items in per_owner.values()]
        moved += sum(held) - max(held)
    return moved


def z_bytes(spec, plan: TilePlan) -> int:
    """Bytes of every block once: Z, validity and label codes of all cells."""
    return plan.n_cells * block_read_bytes(1, spec.genes, len(spec.label_values))


#: Execution models by name; the planner picks one with :func:`byte_model`.
BYTE_MODELS = {"streamed": streamed_movement, "resident": resident_movement}
CURRENT_MODEL = "resident"


def byte_model(spec, layout, block_rows: int) -> str:
    """``resident`` where a worker's blocks fit its memory, as a run decides; else ``streamed``."""
    plan = TilePlan(spec.cells, block_rows)
    return choose_residence(z_bytes(spec, plan), [layout.mem_per_node] * layout.nodes).mode
