"""The scheduler at scale, with the stand-in tile of rankdist.planning.simulate.

The real ``run_tiles`` (futures, tree merges with checkpoints, block writes) runs a
plan of a few hundred tiles whose kernel is replaced by a short sleep; every tile must
run exactly once and every block be written with every tile folded in once.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import zarr

from rankdist.planning.simulate import SimulatedTile, simulate_run
from rankdist.reduce.partial import EMPTY
from rankdist.tiles.grid import TilePlan

#: 24 blocks of the atlas's real size: 300 tiles, 168 merges, 24 writes.
REAL = TilePlan(24 * 16384, 16384)
#: A full tile sleeps 2 ms.
PAIR_S = 2e-3 / 16384**2


def _ran(log_dir) -> Counter:
    return Counter(tuple(int(x) for x in p.name.split("-")[:2]) for p in log_dir.iterdir())


def _stand_in_sim(a: int, b: int) -> float:
    lo, hi = min(a, b), max(a, b)
    return ((lo * 7919 + hi * 104729) % 2000) / 1000.0 - 1.0


def test_every_tile_runs_once_and_every_block_is_written(client, tmp_path):
    log = tmp_path / "ran"
    log.mkdir()
    stats, job, out = simulate_run(
        client, REAL, tmp_path / "sim", seconds_per_pair=PAIR_S, partial_rows=512, log_dir=log
    )
    assert stats.tiles_computed == REAL.n_tiles == 300
    assert _ran(log) == Counter(REAL.tiles())  # each tile once, no other
    n_blocks = REAL.n_blocks
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == sorted(
        f"written-{b}" for b in range(n_blocks)
    )  # every block written; no checkpoint left behind
    res = zarr.open_group(out, mode="r")
    counts = np.asarray(res["counts/cell_type"][:])
    assert counts.shape == (n_blocks * 512, 1, 54)
    # each tile side adds one relation per row: a row meets each of the n_blocks blocks once
    assert (counts[:, 0, 0] == n_blocks).all() and counts[:, 0, 1:].sum() == 0
    assert (np.asarray(res["counts/batch"][:]) == 0).all()  # only value 0 of the first role
    idx = np.asarray(res["indices"][:])
    sim = np.asarray(res["similarities"][:])
    starts = np.arange(n_blocks) * 512
    for row in (0, 511, 512 * 7 + 3, n_blocks * 512 - 1):
        b = row // 512
        real = idx[row] != EMPTY
        # one candidate per block (k = 30 >= 24 blocks), best first, as the merges ordered them
        assert sorted(idx[row][real]) == list(starts) and real.sum() == n_blocks
        expected = [_stand_in_sim(b, c // 512) for c in idx[row][real]]
        np.testing.assert_allclose(sim[row][real], np.float32(expected))
        assert (np.diff(sim[row][real]) <= 0).all()


def test_tiles_run_in_plan_order(client_one, tmp_path):
    """One thread runs the tiles in plan order: row-major, the diagonal last in a row."""
    log = tmp_path / "ran"
    log.mkdir()
    real = TilePlan(8 * 16384, 16384)
    simulate_run(
        client_one, real, tmp_path / "sim", seconds_per_pair=0.0, partial_rows=512, log_dir=log
    )
    runs = sorted(log.iterdir(), key=lambda p: int(p.name.split("-")[3]))
    assert [tuple(int(x) for x in p.name.split("-")[:2]) for p in runs] == real.tiles()


def test_tile_results_are_freed_once_merged(client_one, tmp_path):
    """When the last tile runs, only the tiles still pending a merge are in memory.

    One thread runs the tiles in order, so by the last tile every other block has been
    merged and written; a driver that kept every tile's future alive would hold all 77.
    """
    log = tmp_path / "ran"
    log.mkdir()
    real = TilePlan(12 * 16384, 16384)
    simulate_run(
        client_one, real, tmp_path / "sim", seconds_per_pair=0.0, partial_rows=512, log_dir=log
    )
    held = {tuple(int(x) for x in p.name.split("-")[:2]): int(p.read_text()) for p in log.iterdir()}
    assert min(held.values()) >= 0  # counted inside the worker
    assert held[real.tiles()[-1]] <= 12, held[real.tiles()[-1]]


class _CountingClient:
    """A client that counts how tasks reach the scheduler."""

    def __init__(self, client):
        self._client = client
        self.submitted: list[str] = []
        self.mapped: list[list[str]] = []
        self.restricted: list[list[str] | None] = []  # the workers= of each map

    def submit(self, *args, key, **kwargs):
        self.submitted.append(key)
        return self._client.submit(*args, key=key, **kwargs)

    def map(self, *args, key, **kwargs):
        self.mapped.append(list(key))
        self.restricted.append(kwargs.get("workers"))
        return self._client.map(*args, key=key, **kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_tiles_reach_the_scheduler_in_one_graph(client, tmp_path):
    """One submit per tile cost the driver ~1 ms each (10 s at 2.3 M cells) before it
    handled any finished tile; all tiles now go in one graph."""
    counting = _CountingClient(client)
    real = TilePlan(10 * 16384, 16384)
    simulate_run(counting, real, tmp_path / "sim", seconds_per_pair=0.0, partial_rows=512)
    (keys,) = [keys for keys in counting.mapped if keys[0].startswith("rankdist-tile")]
    (run,) = {k.split("-")[2] for k in keys}  # one token per run, so runs never share keys
    assert keys == [f"rankdist-tile-{run}-{i}-{j}" for i, j in real.tiles()]
    assert not [k for k in counting.submitted if k.startswith("rankdist-tile")]
    # the merges a batch of completions decides go together, one map per owner
    merges = [keys for keys in counting.mapped if keys[0].startswith("rankdist-merge")]
    assert len(merges) + 1 == len(counting.mapped)
    assert all(k.startswith(f"rankdist-merge-{run}-") for keys in merges for k in keys)
    kinds = Counter(k.split("-")[1] for k in counting.submitted + sum(merges, []))
    assert kinds == {"merge": 10 * 3, "write": 10}  # ceil(9 / 3) merges per block


@pytest.mark.parametrize("n_cells", [16384 * 5, 16384 * 5 - 1000, 700])
def test_tile_pairs_add_up_to_the_flop_model(n_cells):
    plan = TilePlan(n_cells, 16384 if n_cells > 1000 else 512)
    assert sum(plan.tile_pairs(i, j) for i, j in plan.tiles()) == n_cells * (n_cells + 1) // 2


def test_stand_in_partials_have_the_real_layout(tmp_path):
    """The stand-in returns partials of the real per-row layout; pairs count short blocks."""
    from rankdist.planning.simulate import prepare_simulation

    real = TilePlan(3 * 16384 - 4096, 16384)
    job, _ = prepare_simulation(real, tmp_path / "sim", partial_rows=512)
    pi, pj = SimulatedTile(real, 0.0)(job, 0, 2)
    assert pi.top_sim.shape == (512, 30) and pi.counts.shape == (512, 1, 54 + 8 + 427)
    assert pi.tiles == {(0, 2, "row")} and pj.tiles == {(0, 2, "col")}
    diag, none = SimulatedTile(real, 0.0)(job, 1, 1)
    assert none is None and diag.tiles == {(1, 1, "row"), (1, 1, "col")}
    assert real.tile_pairs(0, 2) == 16384 * 12288  # the last block is short
    assert real.tile_pairs(1, 1) == 16384 * 16385 // 2


def test_the_simulation_lays_out_a_real_work_directory(tmp_path):
    """The simulated run's arrays, checkpoints and job.json are runstore's, in its place."""
    from rankdist.planning.simulate import SIMULATED_RUN, prepare_simulation
    from rankdist.reduce import runstore

    real = TilePlan(3 * 16384, 16384)
    job, work = prepare_simulation(real, tmp_path / "sim", partial_rows=512, n_cutoffs=2)
    assert work == runstore.work_path(tmp_path / "sim", SIMULATED_RUN)
    assert runstore.checkpoint_path(work).is_dir()
    fingerprint = json.loads((work / "job.json").read_text())
    assert fingerprint.pop("block_rows") == 512
    assert runstore.resumable_block_rows(work, fingerprint, None) == 512  # a job runstore reads
    assert (fingerprint["n_cells"], fingerprint["k"]) == (3 * 512, job.k)
    assert fingerprint["cutoffs"] == list(job.cutoffs) and len(job.cutoffs) == 2
    res = zarr.open_group(work, mode="r")
    assert all(key in res for key in ("indices", "similarities"))
    assert "excluded" not in res  # written when a run is published (the encoding known)
    assert "pair_hist_blocks" not in res  # no type histogram in the simulation
    assert {role: res[f"counts/{role}"].shape for role in job.roles} == {
        role: (3 * 512, 2, size) for role, size in zip(job.roles, job.role_sizes, strict=True)
    }


@pytest.fixture(params=["stealing on", "stealing off"])
def two_workers(request, client):
    """Dask's default (the session's cluster), and a scheduler as rankdist starts it."""
    if request.param == "stealing on":
        yield client
        return
    from distributed import Client, LocalCluster

    from rankdist.cluster.stealing import own_scheduler

    with own_scheduler():
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0")
    with cluster, Client(cluster) as own:
        yield own


def test_resident_blocks_are_read_once_and_every_tile_runs_once(two_workers, tmp_path):
    """Blocks resident: one ``rankdist-block`` task reads each block; tiles get it from Dask.

    On two workers each tile is owned by one (tiles/grid.py: OwnerLayout), its graph
    restricted to it, and runs there unless the other worker stole it: never, without
    work stealing.
    """
    import os

    from rankdist.cluster.stealing import steals
    from rankdist.tiles.blocks import read_counts, start_counting
    from rankdist.tiles.grid import OwnerLayout

    client = two_workers

    log = tmp_path / "ran"
    log.mkdir()
    real = TilePlan(10 * 16384, 16384)
    client.run(start_counting)
    counting = _CountingClient(client)
    stats, job, _ = simulate_run(
        counting,
        real,
        tmp_path / "sim",
        seconds_per_pair=PAIR_S,
        partial_rows=512,
        log_dir=log,
        z_genes=16,
        read_blocks=True,
        blocks="resident",
    )
    assert stats.tiles_computed == real.n_tiles
    assert _ran(log) == Counter(real.tiles())
    reads = Counter()
    for per_worker in client.run(read_counts).values():
        for (_, start, _), (n, _) in per_worker.items():
            reads[start // 512] += n
    assert reads == dict.fromkeys(range(real.n_blocks), 1)  # each block once, in all workers
    kinds = [{k.split("-")[1] for k in keys} for keys in counting.mapped]
    assert kinds[:4] == [{"block"}] * 2 + [{"tile"}] * 2  # per worker, every block first
    assert all(kind == {"merge"} for kind in kinds[4:])  # then each batch's merges
    workers = sorted(client.scheduler_info()["workers"])
    owner = OwnerLayout(len(workers)).owner
    mapped = zip(counting.mapped, counting.restricted, strict=True)
    tile_graphs = [(keys, where) for keys, where in mapped if "-tile-" in keys[0]]
    for keys, where in tile_graphs:
        tiles = [tuple(int(x) for x in k.split("-")[-2:]) for k in keys]
        assert where == [workers[owner(*tiles[0])]] and len({owner(i, j) for i, j in tiles}) == 1
    assert sum(len(keys) for keys, _ in tile_graphs) == real.n_tiles
    pid_of = client.run(os.getpid)
    ran = [
        (tuple(int(x) for x in p.name.split("-")[:2]), int(p.name.split("-")[2]))
        for p in log.iterdir()
    ]
    at_owner = sum(pid_of[workers[owner(i, j)]] == pid for (i, j), pid in ran)
    if steals(client):
        assert at_owner >= 0.75 * real.n_tiles  # the rest stolen by an idle worker, if any
    else:
        assert at_owner == real.n_tiles
