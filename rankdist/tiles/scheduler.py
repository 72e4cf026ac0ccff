"""Drive the tiles on Dask: submit tiles, tree-merge partials per row block, write blocks.

The client submits every tile (row-major) and reacts to completions: each finished tile
hands one partial to each of its two row blocks; a block with ``FAN_IN`` waiting
partials gets a merge task (the merges one batch of completions decides go to Dask in one
call per owner); a block whose tiles are all folded into one partial gets a write task.
With blocks resident (``blocks='resident'``), one ``rankdist-block`` task per block
reads it from the store and Dask holds it in worker memory; each tile depends on
its two blocks' futures and, on two or more workers, runs on its owner in a 2D layout
(:mod:`rankdist.tiles.placement`); partials merge on the worker that holds them, and
once a block's tiles are all in, each worker folds its share before one merge gathers
them. With blocks streamed, tasks carry block coordinates and read their inputs from
the store. Either way no large array passes through the scheduler. Task
keys start with ``rankdist-block``, ``rankdist-tile``, ``rankdist-merge`` and
``rankdist-write``, which is what the dashboard shows.
"""

from __future__ import annotations

import itertools
import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from distributed import Client, as_completed

from rankdist import _progress
from rankdist.cluster.local import blas_limited_here
from rankdist.cluster.stealing import steals
from rankdist.encode.cache import PendingEncoding
from rankdist.io.atomic import naming_path
from rankdist.reduce.checkpoint import load_partial, mark_written, save_partial, scan
from rankdist.reduce.partial import EMPTY, Partial, merge_partials
from rankdist.reduce.runstore import write_block
from rankdist.tiles.blocks import raise_floors, read_valid, row_floors
from rankdist.tiles.job import TileJob
from rankdist.tiles.kernel import tile_partials
from rankdist.tiles.placement import owners_of, submit_resident
from rankdist.tiles.screen import quantised_block

#: Partials merged per merge task.
FAN_IN = 4

_blas_limited = False  # this worker process's BLAS is limited for good


def _single_threaded_blas() -> None:
    """Each task thread runs its own tile, so BLAS must not spawn threads of its own.

    In the calling process, an in-process cluster already holds the limit for its
    lifetime and restores it after (:func:`rankdist.cluster.local.single_threaded_blas`).
    Elsewhere (a worker process) it is set once per process, not per task: a per-task
    context would be undone by a neighbouring thread's exit.
    """
    global _blas_limited
    if not _blas_limited and not blas_limited_here():
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")
        _blas_limited = True


def tile_task(job: TileJob, i: int, j: int) -> tuple[Partial, Partial | None]:
    _single_threaded_blas()
    si, ei = job.plan.block_range(i)
    sj, ej = job.plan.block_range(j)
    cutoffs = np.asarray(job.cutoffs, dtype=np.float64)
    floors = (
        row_floors(job.z_path, job.k, job.plan.n_cells, si, ei),
        row_floors(job.z_path, job.k, job.plan.n_cells, sj, ej),
    )
    bi, bj = job.block(i), job.block(j)
    quantised = None
    if job.kernel == "screen":
        quantised = (
            quantised_block((job.z_path, si, ei), bi[0]),
            quantised_block((job.z_path, sj, ej), bj[0]),
        )
    pi, pj = tile_partials(
        bi,
        bj,
        i,
        j,
        si,
        sj,
        job.k,
        cutoffs,
        job.n_values,
        floors,
        hist_types=job.hist_types,
        quantised=quantised,
    )
    n = job.plan.n_cells
    raise_floors(job.z_path, job.k, n, si, pi.top_sim, pi.top_idx, EMPTY)
    if pj is not None:
        raise_floors(job.z_path, job.k, n, sj, pj.top_sim, pj.top_idx, EMPTY)
    return pi, pj


def merge_task(ckpt_dir: str, *sources) -> Partial:
    """Merge partials given as (tile result, side) or (partial, None) pairs; checkpoint it.

    The merged partial is written before the checkpoints it supersedes are deleted, so a
    kill at any instant leaves every durable tile on disk (see reduce/checkpoint.py).
    """
    parts = [src if side is None else src[side] for src, side in sources]
    merged = merge_partials(*parts)
    merged.checkpoint = save_partial(ckpt_dir, merged)
    for part in parts:
        if part.checkpoint is not None:
            Path(part.checkpoint).unlink(missing_ok=True)
    return merged


def merge_sources(merge_fn, ckpt_dir: str, sources: list) -> Partial:
    """``merge_fn(ckpt_dir, *sources)``: the merges of a batch go to Dask in one call."""
    return merge_fn(ckpt_dir, *sources)


def load_task(path: str, block: int) -> Partial:
    """Read a checkpointed partial of a resumed run."""
    return load_partial(path, block)


def write_task(job: TileJob, out_path: str, ckpt_dir: str, source, side: int | None) -> int:
    """Write one block's final top-k and cutoff counts into the run (reduce/runstore.py)."""
    part = source if side is None else source[side]
    start, stop = job.plan.block_range(part.block)
    role_sizes = dict(zip(job.roles, job.role_sizes, strict=True))
    write_block(out_path, part, start, read_valid(job.z_path, start, stop), role_sizes)
    mark_written(ckpt_dir, part.block)
    return part.block


def _abandon(client: Client, ac: as_completed, held: list) -> None:
    """Cancel what a failed run still has in flight or holds, and stop tracking it.

    The futures are copied and ``ac`` cleared first: cancelling while iterating
    ``ac.futures`` lets the completion callbacks change it under the loop ("dictionary
    changed size during iteration"), which would replace the task's own error. The
    failed task and the results waiting for a merge (``held``) are cancelled too, so
    that their keys are forgotten: a new run on the same client submits the same keys.
    """
    in_flight = list(ac.futures)
    ac.clear()
    client.cancel(in_flight + held)


@dataclass
class TileStats:
    """How much of a run was computed now and how much was resumed from checkpoints."""

    tiles_computed: int = 0
    tiles_resumed: int = 0
    blocks_resumed: int = 0


def run_tiles(
    client: Client,
    job: TileJob,
    out_path: str,
    ckpt_dir: str,
    *,
    progress: bool = True,
    tile_fn=tile_task,
    blocks: str = "streamed",
    encoding: PendingEncoding | None = None,
    on_encoded=None,
) -> TileStats:
    """Compute the tiles of ``job.plan`` not yet durable in ``ckpt_dir``; write every block.

    Parameters
    ----------
    client
        Dask client.
    job
        What to compute.
    out_path
        Zarr group with the result arrays (created by the caller).
    ckpt_dir
        Checkpoint directory of this run; what it holds is reused (see
        :mod:`rankdist.reduce.checkpoint`).
    progress
        Show a progress bar of tiles (resumed tiles count as done).
    tile_fn
        The tile task, ``tile_fn(job, i, j) -> (partial of i, partial of j or None)``.
        The default computes the tile; a stand-in of the same signature runs the scheduler
        without the kernel (``rankdist.planning.simulate``).
    blocks
        ``'resident'``: a ``rankdist-block`` task reads each block the tiles need once and
        Dask holds it in worker memory until its last tile has run; ``'streamed'``: each
        tile reads its blocks from the store (:func:`rankdist.tiles.grid.choose_residence`
        decides for a run).
    encoding, on_encoded
        An encoding still being computed (resident blocks only): the block tasks encode
        their cells (:func:`rankdist.tiles.placement.submit_resident`), so that a tile
        starts as soon as its two blocks are encoded; once every block is, ``on_encoded()``
        runs in this thread (it publishes the encoding) before any block is written. A
        write error of an encoding task that names no file names the encoding.
    """
    if blocks not in ("resident", "streamed"):
        msg = f"run_tiles blocks must be 'resident' or 'streamed', not {blocks!r}"
        raise ValueError(msg)
    if encoding is not None and blocks != "resident":
        raise ValueError("run_tiles encodes in its block tasks only with blocks='resident'")
    plan = job.plan
    resume = scan(ckpt_dir)
    stats = TileStats(blocks_resumed=len(resume.written))
    expected = plan.n_blocks  # tiles touching each row block
    todo = [b for b in range(plan.n_blocks) if b not in resume.written]
    pending: dict[int, list] = {b: [] for b in todo}  # (future, side, n_tiles, owner)
    folded = dict.fromkeys(todo, 0)  # tiles in completed pending items
    merging = dict.fromkeys(todo, 0)  # tiles in merge tasks in flight
    covered = {b: resume.covered(b) for b in todo}
    role_of: dict[str, tuple] = {}
    counter = itertools.count()
    # Keys are unique per call: Dask hands a key's existing result to whoever submits the
    # same key, so two runs on one client (a notebook, or a rerun after an error) must
    # never share one. key_split still gives the prefixes the dashboard groups by.
    run = uuid.uuid4().hex[:8]
    futures = []

    for b in todo:
        for path, tiles in resume.files.get(b, []):
            fut = client.submit(
                load_task, path, b, key=f"rankdist-resume-{run}-{b}-{next(counter)}"
            )
            role_of[fut.key] = ("partial", b, len({(i, j) for i, j, _ in tiles}), None)
            futures.append(fut)
    needs: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i, j in plan.tiles():
        sides = [(i, 0, "row")] if i == j else [(i, 0, "row"), (j, 1, "col")]
        need = [
            (b, side) for b, side, name in sides if b in covered and (i, j, name) not in covered[b]
        ]
        if not need:
            stats.tiles_resumed += 1
            continue
        needs[(i, j)] = need
    # All tiles in one graph, in plan order (their priority): a submit per tile costs the
    # driver about a millisecond (10 s for the 10k tiles of 2.3 M cells), time in which no
    # finished tile is merged (benchmarks/bench_scale.py).
    owners = owners_of(client, needs, blocks)
    encoding_futures: list = []
    if blocks == "resident":
        args = None if encoding is None else encoding.task_args()
        tile_futures, encoding_futures = submit_resident(
            client, job, run, needs, owners, tile_fn, args
        )
    else:
        tile_futures = client.map(
            tile_fn,
            [job] * len(needs),
            [i for i, _ in needs],
            [j for _, j in needs],
            key=[f"rankdist-tile-{run}-{i}-{j}" for i, j in needs],
            pure=False,
        )
    role_of.update({f.key: ("tile", i, j) for (i, j), f in zip(needs, tile_futures, strict=True)})
    role_of.update({f.key: ("encoded",) for f in encoding_futures})
    place = {} if owners is None else {"allow_other_workers": True}
    futures += tile_futures + encoding_futures
    ac = as_completed(futures)
    unencoded = len(encoding_futures)  # blocks not yet encoded; none are written before
    # writes waiting for the encoding to be published (they read ``valid`` from it). This
    # costs nothing: a block is complete only once its tile with every other block has run,
    # so all blocks are encoded before any is written (bar a resumed run's untiled blocks)
    deferred: list = []
    # so that a tile's result is freed once both sides are merged, a block after its tiles
    del futures, tile_futures, encoding_futures
    written = 0
    queued: list = []  # the merges decided while handling one batch of completions
    # where results lie matters only where tiles can leave their owner unasked
    stolen = owners is not None and steals(client) is not False

    def merge(b: int, items: list, owner: str | None) -> None:
        n = sum(t for _, _, t, _ in items)
        key = f"rankdist-merge-{run}-{b}-{next(counter)}"
        queued.append((key, ("partial", b, n, owner), [(f, s) for f, s, _, _ in items]))
        merging[b] += n
        folded[b] -= n

    def submit_merges() -> None:
        """One ``client.map`` per owner for the batch's merges (one graph, not one each)."""
        by_owner: dict = {}
        for item in queued:
            by_owner.setdefault(item[1][3], []).append(item)
        queued.clear()
        for owner, items in by_owner.items():
            futures = client.map(
                merge_sources,
                [merge_task] * len(items),
                [ckpt_dir] * len(items),
                [sources for _, _, sources in items],
                key=[key for key, _, _ in items],
                pure=False,
                priority=1,  # before the owner's queued tiles
                **({} if owner is None else {"workers": [owner], **place}),
            )
            for (_, role, _), m in zip(items, futures, strict=True):
                role_of[m.key] = role
                ac.add(m)

    def write(b: int, fut, side) -> None:
        if unencoded:
            deferred.append((b, fut, side))
            return
        w = client.submit(
            write_task, job, out_path, ckpt_dir, fut, side, key=f"rankdist-write-{run}-{b}"
        )
        role_of[w.key] = ("write", b)
        ac.add(w)

    def settle(b: int) -> None:
        items = pending[b]
        complete = folded[b] == expected  # every tile in, no merge in flight
        by_owner: dict = {}
        for item in items:
            by_owner.setdefault(item[3], []).append(item)
        # once every tile is in, each owner first folds what it holds into one partial,
        # so that the last merge fetches one partial per owner, not its tile results
        last = folded[b] + merging[b] == expected and owners is not None
        local = {w: mine for w, mine in by_owner.items() if len(mine) > 1 and last}
        if complete and len(items) == 1:
            ((fut, side, _, _),) = items
            write(b, fut, side)
            pending[b] = []
        elif complete and len(items) > 1 and not (local and len(by_owner) > 1):
            merge(b, items, None)
            pending[b] = []
        else:  # FAN_IN partials from one owner's tiles merge there, so they seldom move
            for owner, mine in by_owner.items():
                if len(mine) >= FAN_IN or owner in local:
                    merge(b, mine, owner)
                    pending[b] = [item for item in pending[b] if item[3] != owner]

    blocks_to_encode = unencoded
    label = "tiles, encoding {} of {} blocks" if unencoded else "tiles"
    with _progress.bar(label.format(0, unencoded), plan.n_tiles, enabled=progress) as bar:
        bar.advance(stats.tiles_resumed)
        for batch in ac.batches():
            # where each result is: a tile an idle worker stole lies on the thief, so its
            # partials merge there (one who_has per batch of completions, not per task).
            # Without stealing, tiles run on their owners (or, after a worker is lost,
            # wherever Dask sent them: their merges then fetch them).
            where = client.who_has(batch) if stolen else {}
            for n_done, fut in enumerate(batch):
                if fut.status != "finished":
                    encoding_task = role_of[fut.key][0] == "encoded"
                    try:  # the task's own error, re-raised unchanged (an encoding's named)
                        with naming_path(encoding.path) if encoding_task else nullcontext():
                            fut.result()
                    except BaseException:
                        held = [*batch[n_done:], *(f for it in pending.values() for f, *_ in it)]
                        held += [f for _, _, sources in queued for f, _ in sources]
                        _abandon(client, ac, held + [f for _, f, _ in deferred])
                        raise
                kind, *info = role_of.pop(fut.key)
                at = (where.get(fut.key) or [None])[0]
                if kind == "tile":
                    bar.advance()
                    stats.tiles_computed += 1
                    owner = at or (None if owners is None else owners[tuple(info)])
                    for b, side in needs.pop(tuple(info)):
                        pending[b].append((fut, side, 1, owner))
                        folded[b] += 1
                        settle(b)
                elif kind == "partial":
                    b, n, owner = info
                    if fut.key.startswith("rankdist-merge"):
                        merging[b] -= n
                    pending[b].append((fut, None, n, at or owner))
                    folded[b] += n
                    settle(b)
                elif kind == "encoded":
                    unencoded -= 1
                    bar.describe(label.format(blocks_to_encode - unencoded, blocks_to_encode))
                    if not unencoded:
                        bar.describe("tiles")
                        try:
                            on_encoded()
                        except BaseException:
                            held = [f for it in pending.values() for f, *_ in it]
                            _abandon(client, ac, held + [f for _, f, _ in deferred])
                            raise
                        for args in deferred:
                            write(*args)
                        deferred.clear()
                else:
                    written += 1
            submit_merges()
    if written != len(todo):
        msg = f"internal error: {written} of {len(todo)} blocks written"
        raise RuntimeError(msg)
    return stats
