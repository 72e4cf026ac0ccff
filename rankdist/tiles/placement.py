"""Where blocks and tiles run: blocks resident in worker memory, tiles placed by owner.

With blocks resident (:func:`rankdist.tiles.grid.choose_residence`), a ``rankdist-block``
task reads each block from the store once and Dask holds it; each tile task depends on
its two blocks' futures (:func:`resident_tile`). On two or more workers each tile has an
owner (:class:`rankdist.tiles.grid.OwnerLayout`, a 2D cyclic layout over groups of
blocks), and a worker's blocks and tiles are submitted restricted to it with
``allow_other_workers``, so that a worker needs only the blocks of its own units while a
lost or busy worker's tasks still run elsewhere. The merges of
:func:`rankdist.tiles.scheduler.run_tiles` follow the same owners.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from rankdist.encode import cache
from rankdist.tiles.blocks import blocks_in_memory, read_codes
from rankdist.tiles.grid import OwnerLayout

if TYPE_CHECKING:
    from distributed import Client


def block_task(job, b: int):
    """Read block ``b`` of a :class:`~rankdist.tiles.scheduler.TileJob` from the store.

    Once for the run: Dask then holds it (resident).
    """
    return job.block(b, cache=False)


def encoding_block_task(job, b: int, encoding: dict):
    """Encode block ``b``'s cells from X, write them into the encoding being computed, and
    return the block as :func:`block_task` does (the encoding pipelined into the tiles).

    ``encoding``: :meth:`rankdist.encode.cache.PendingEncoding.task_args`.
    """
    start, stop = job.plan.block_range(b)
    z, valid = cache.encode_chunk(start, rows=stop - start, keep=True, **encoding)
    return z, valid, read_codes(job.store_path, job.roles, job.offsets, start, stop)


def encode_only_task(job, b: int, encoding: dict) -> int:
    """Encode block ``b``'s cells into the encoding being computed (no tile needs them)."""
    start, stop = job.plan.block_range(b)
    return cache.encode_chunk(start, rows=stop - start, **encoding)


def resident_tile(tile_fn, job, i: int, j: int, block_i, block_j):
    """Run ``tile_fn(job, i, j)`` on the blocks Dask delivered to this task.

    The tile function reads its blocks through ``job.block`` as when they are streamed;
    here the block reader hands it these (:func:`rankdist.tiles.blocks.blocks_in_memory`).
    """
    with blocks_in_memory({job.block_key(i): block_i, job.block_key(j): block_j}):
        return tile_fn(job, i, j)


def owners_of(client: Client, needs: dict, blocks: str) -> dict | None:
    """Tile -> the worker address that owns it (:class:`~rankdist.tiles.grid.OwnerLayout`).

    None where placement buys nothing: blocks streamed from the store, or one worker.
    """
    workers = sorted(client.scheduler_info().get("workers", {}))
    if blocks != "resident" or len(workers) < 2:
        return None
    layout = OwnerLayout(len(workers))
    return {(i, j): workers[layout.owner(i, j)] for i, j in needs}


def submit_resident(
    client: Client, job, run: str, needs: dict, owners, tile_fn, encoding: dict | None = None
) -> tuple[list, list]:
    """Submit a block task per block the tiles need, then the tiles on their blocks' futures.

    Returns the tiles' futures (in the order of ``needs``) and, with ``encoding`` (an
    encoding still being computed: :meth:`~rankdist.encode.cache.PendingEncoding.task_args`),
    a future per block of the encoding's tasks: the block tasks, which then encode their
    cells from X (:func:`encoding_block_task`) instead of reading Z, and a task for each
    block no tile needs (a resumed run's), so that every cell is encoded. Without
    ``encoding`` the second list is empty.

    With ``owners``, each worker's blocks and tiles go in one graph restricted to it
    (``allow_other_workers``: a lost or busy worker's tasks still run elsewhere); a block
    is read by one of the workers that owns a tile of it. The client keeps no block future:
    Dask keeps a block while a tile waits for it, frees it after its last tile, and
    recomputes it from the store if its worker is lost while a tile (or a lost tile's
    recomputation) needs it.
    """
    users: dict = {}  # block -> the workers whose tiles need it
    for i, j in needs:
        for b in (i, j):
            users.setdefault(b, set()).add(None if owners is None else owners[(i, j)])
    # each block is read by one of its users, in turn, so the reads spread over the workers
    home = {b: sorted(ws, key=str)[b % len(ws)] for b, ws in users.items()}
    place = {} if owners is None else {"allow_other_workers": True}
    block_of: dict = {}
    for worker in dict.fromkeys(home.values()):
        mine = sorted(b for b, w in home.items() if w == worker)
        futures = client.map(
            block_task if encoding is None else encoding_block_task,
            [job] * len(mine),
            mine,
            *([] if encoding is None else [[encoding] * len(mine)]),
            key=[f"rankdist-block-{run}-{b}" for b in mine],
            pure=False,
            **({} if worker is None else {"workers": [worker], **place}),
        )
        block_of.update(zip(mine, futures, strict=True))
    encoded = []
    if encoding is not None:
        encoded = list(block_of.values())
        rest = [b for b in range(job.plan.n_blocks) if b not in block_of]
        encoded += client.map(
            encode_only_task,
            [job] * len(rest),
            rest,
            [encoding] * len(rest),
            key=[f"rankdist-encode-{run}-{b}" for b in rest],
            pure=False,
        )
    tile_of: dict = {}
    for worker in dict.fromkeys([None] if owners is None else owners.values()):
        mine = [t for t in needs if owners is None or owners[t] == worker]
        futures = client.map(
            functools.partial(resident_tile, tile_fn),
            [job] * len(mine),
            [i for i, _ in mine],
            [j for _, j in mine],
            [block_of[i] for i, _ in mine],
            [block_of[j] for _, j in mine],
            key=[f"rankdist-tile-{run}-{i}-{j}" for i, j in mine],
            pure=False,
            **({} if worker is None else {"workers": [worker], **place}),
        )
        tile_of.update(zip(mine, futures, strict=True))
    return [tile_of[t] for t in needs], encoded
