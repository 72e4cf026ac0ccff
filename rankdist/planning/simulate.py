"""Run the real tile scheduler at atlas scale with a stand-in for the tile kernel.

The stand-in (:class:`SimulatedTile`) sleeps for a time proportional to the pair count
of the tile it replaces and returns partials of the real per-row layout, so everything
else a run does is real: the futures, the tree merges with their checkpoint files, the
block writes into result arrays, and the scheduler's bookkeeping. ``benchmarks/
bench_scale.py`` uses it to measure the scheduler at 2.3 M cells on a small machine.

Sleeping, not spinning: a sleeping stand-in leaves the CPU to the scheduler, the client
and the real merges and writes (which are what is measured), and lets a few processes
with many threads produce the completion rate of a large cluster. On a real cluster
the tiles run on other nodes than the scheduler, so they do not compete with it either.

Two sizes can be scaled independently: the time of a tile (``seconds_per_pair``) and
the rows of a block's partials (``partial_rows``). With ``partial_rows`` below the real
block size the task graph is the real one (same blocks, tiles, merges and writes) while
the partials, checkpoints and result arrays are smaller by the same factor; their
per-row layout (k, cutoffs, label values) is the real one.

With ``z_genes`` the simulation also writes a stand-in Z of ``partial_rows`` rows per block
and ``z_genes`` genes, and each stand-in tile reads its two blocks through the real block
reader (:func:`rankdist.tiles.blocks.read_block`, with its per-process cache), so the
store reads the tiles make can be counted (:func:`rankdist.tiles.blocks.read_counts`); a
count scales to the real size by ``(block_rows * genes) / (partial_rows * z_genes)``.
With ``blocks='resident'`` the blocks are Dask data, as in a real run where Z fits the
workers' memory: one ``rankdist-block`` task reads each, and Dask moves them between
workers to the tiles that need them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rankdist.datasets.atlas.taxonomy import ATLAS_LABEL_SIZES, ATLAS_ROLES
from rankdist.layout import SUBTILE
from rankdist.reduce import runstore
from rankdist.reduce.partial import Partial
from rankdist.tiles.grid import TilePlan
from rankdist.tiles.scheduler import TileJob, TileStats, run_tiles


@dataclass(frozen=True)
class SimulatedTile:
    """Stand-in for :func:`rankdist.tiles.scheduler.tile_task` with the same signature.

    Attributes
    ----------
    real_plan
        The plan being simulated; its block indices are those of ``job.plan``, its block
        sizes give each tile's pair count and so its cost.
    seconds_per_pair
        Sleep per cell pair of the real tile (the real per-pair time divided by the
        simulation's scale factor).
    log_dir
        If set, each call writes one file ``<i>-<j>-<pid>-<ns>`` there holding the number
        of tile results in its worker's memory when it started, so that a test can count
        how often every tile ran and how long results are kept.
    read_blocks
        Read blocks i and j through ``job.block`` (the simulation's stand-in Z) first.
    """

    real_plan: TilePlan
    seconds_per_pair: float
    log_dir: str | None = None
    read_blocks: bool = False

    def __call__(self, job: TileJob, i: int, j: int) -> tuple[Partial, Partial | None]:
        started = time.perf_counter()
        if self.log_dir is not None:
            name = f"{i}-{j}-{os.getpid()}-{time.monotonic_ns()}"
            Path(self.log_dir, name).write_text(str(tile_results_held()))
        if self.read_blocks:
            job.block(i)
            job.block(j)
        diag = i == j
        sides = [(i, j, "row"), (i, j, "col")] if diag else [(i, j, "row")]
        pi = _stand_in_partial(job, i, j, sides)
        pj = None if diag else _stand_in_partial(job, j, i, [(i, j, "col")])
        rest = self.real_plan.tile_pairs(i, j) * self.seconds_per_pair
        rest -= time.perf_counter() - started
        if rest > 0:
            time.sleep(rest)
        return pi, pj


def tile_results_held() -> int:
    """Tile results (``rankdist-tile-*`` keys) in this Dask worker's memory; -1 elsewhere."""
    from distributed import get_worker

    try:
        data = get_worker().data
    except ValueError:  # not in a worker
        return -1
    for _ in range(10):  # the worker's event loop may change it while we count
        try:
            return sum(1 for key in list(data.keys()) if str(key).startswith("rankdist-tile"))
        except RuntimeError:
            continue
    return -1


def _stand_in_partial(job: TileJob, block: int, other: int, sides) -> Partial:
    """A partial of ``block`` with one candidate per row (the first cell of ``other``).

    Its similarity is a fixed function of the tile, so merges reorder real lists; each
    row also counts one relation, at the lowest cutoff, with value 0 of the first role.
    After all tiles a row holds one candidate per block and counts ``n_blocks``.
    """
    start, stop = job.plan.block_range(block)
    n_cut = max(len(job.cutoffs), 1)
    part = Partial.empty(block, stop - start, job.k, n_cut, job.n_values, tiles=sides)
    pair = (min(block, other), max(block, other))
    part.top_sim[:, 0] = ((pair[0] * 7919 + pair[1] * 104729) % 2000) / 1000.0 - 1.0
    part.top_idx[:, 0] = job.plan.block_range(other)[0]
    part.counts[:, 0, 0] = 1
    return part


#: Name of the simulated run: its work directory is ``<workdir>/results/.simulation.partial``.
SIMULATED_RUN = "simulation"


def prepare_simulation(
    real_plan: TilePlan,
    workdir: str | os.PathLike,
    *,
    partial_rows: int | None = None,
    k: int = 30,
    n_cutoffs: int = 1,
    roles: tuple[str, ...] = ATLAS_ROLES,
    role_sizes: tuple[int, ...] = ATLAS_LABEL_SIZES,
    z_genes: int = 0,
) -> tuple[TileJob, Path]:
    """The job and the work directory of a simulated run of ``real_plan``'s tiles.

    ``workdir`` stands in for a store: it holds the validity mask of a stand-in encoding
    (``enc/``) and the run's work directory, created by
    :func:`rankdist.reduce.runstore.create_work_dir` as for a real run (empty result
    arrays, ``checkpoint/``, ``job.json``), so the simulated scheduler writes the real
    results layout.

    Parameters
    ----------
    real_plan
        Cells and block size of the run to simulate.
    workdir
        Directory of the simulation; created if missing.
    partial_rows
        Rows of each block's partials and result rows (a multiple of 512); default: the
        real block size. The task graph does not depend on it.
    k, n_cutoffs, roles, role_sizes
        Per-row layout of the partials: top-k, cutoff bins, label values per role.
    z_genes
        If positive, write a stand-in Z of this many genes (and label codes of each role,
        all 0) for the tiles to read (:class:`SimulatedTile` ``read_blocks``).

    Returns
    -------
    TileJob, Path
        The job (``job.plan`` has ``partial_rows`` rows per block, ``real_plan``'s
        blocks) and the run's work directory
        (:func:`rankdist.reduce.runstore.work_path`; its checkpoints are in
        :func:`rankdist.reduce.runstore.checkpoint_path`).
    """
    from rankdist.io.verified import open_group

    rows = partial_rows or real_plan.block_rows
    plan = TilePlan(real_plan.n_blocks * rows, rows)
    workdir = Path(workdir)
    enc_path = workdir / "enc"
    enc = open_group(enc_path, mode="w")
    enc.create_array("valid", shape=(plan.n_cells,), dtype="bool", chunks=(rows,))
    enc["valid"][:] = True
    if z_genes:
        shape, chunks = (plan.n_cells, z_genes), (rows, z_genes)
        enc.create_array("Z", shape=shape, dtype="float32", chunks=chunks)
        enc["Z"][:] = np.float32(1.0 / np.sqrt(z_genes))
        obs = open_group(workdir, mode="a").require_group("obs")
        for role in roles:
            obs.create_array(role, shape=(plan.n_cells,), dtype="int32", chunks=(rows,))
            obs[role][:] = 0
    cutoffs = tuple(float(c) for c in np.linspace(0.5, 0.9, n_cutoffs))
    spec = {
        "content_id": "simulated",
        "encoding_key": "simulated",
        "form": "dense",
        "k": k,
        "cutoffs": cutoffs,
        "labels": {role: role for role in roles},
        "subtile": SUBTILE,
        "n_cells": plan.n_cells,
        "type_hist": False,
    }
    work = runstore.work_path(workdir, SIMULATED_RUN)
    work.parent.mkdir(parents=True, exist_ok=True)
    runstore.create_work_dir(
        work,
        runstore.resume_fingerprint(spec),
        block_rows=rows,
        role_sizes=dict(zip(roles, role_sizes, strict=True)),
        hist_bins=0,
    )
    job = TileJob(
        store_path=str(workdir),
        z_path=str(enc_path),
        plan=plan,
        k=k,
        cutoffs=cutoffs,
        roles=roles,
        role_sizes=role_sizes,
    )
    return job, work


def simulate_run(
    client,
    real_plan: TilePlan,
    workdir: str | os.PathLike,
    *,
    seconds_per_pair: float,
    log_dir: str | os.PathLike | None = None,
    read_blocks: bool = False,
    blocks: str = "streamed",
    **layout,
) -> tuple[TileStats, TileJob, Path]:
    """Run :func:`run_tiles` over ``real_plan``'s tiles with :class:`SimulatedTile`.

    Parameters
    ----------
    client
        Dask client (or anything with its ``submit`` and ``map``, such as a timing
        wrapper of one).
    real_plan, workdir
        As for :func:`prepare_simulation`.
    seconds_per_pair
        Stand-in sleep per pair of the real tile.
    log_dir, read_blocks
        Passed to :class:`SimulatedTile`; ``read_blocks`` needs ``z_genes``.
    blocks
        ``'streamed'`` or ``'resident'`` (:func:`run_tiles`); ``'resident'`` needs
        ``z_genes``.
    **layout
        ``partial_rows``, ``k``, ``n_cutoffs``, ``roles``, ``role_sizes``, ``z_genes`` of
        :func:`prepare_simulation`.

    Returns
    -------
    TileStats, TileJob, Path
        The scheduler's statistics, the job it ran and the run's work directory, every
        block written (the run is not published).
    """
    job, work = prepare_simulation(real_plan, workdir, **layout)
    if (read_blocks or blocks == "resident") and not layout.get("z_genes"):
        msg = "simulate_run(read_blocks=True or blocks='resident') needs z_genes > 0: a Z to read"
        raise ValueError(msg)
    log = None if log_dir is None else str(log_dir)
    tile_fn = SimulatedTile(real_plan, seconds_per_pair, log, read_blocks)
    ckpt = str(runstore.checkpoint_path(work))
    stats = run_tiles(client, job, str(work), ckpt, progress=False, tile_fn=tile_fn, blocks=blocks)
    return stats, job, work
