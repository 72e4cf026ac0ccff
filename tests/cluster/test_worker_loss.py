"""A worker killed mid-run: Dask recomputes what it held, and the result is unchanged."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from distributed import Client, LocalCluster

import rankdist
from rankdist.datasets.toy import synthetic_counts


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    adata = synthetic_counts(n_cells=8_000, n_genes=400, seed=12)
    return rankdist.ingest(
        adata, tmp_path_factory.mktemp("loss") / "w.zarr", cell_type="cell_type", progress=False
    )


def test_worker_killed_mid_run(store, client):
    kw = dict(k=10, cutoffs=(0.45,), block_size=512, progress=False)
    reference = rankdist.neighbors(store, client=client, name="ref", **kw)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0")
    with cluster as lc, Client(lc) as c:
        pids = c.run(os.getpid)
        outcome = {}

        def run():
            try:
                outcome["res"] = rankdist.neighbors(store, client=c, name="lossy", **kw)
            except Exception as err:  # noqa: BLE001  (reported by the assertion below)
                outcome["err"] = err

        thread = threading.Thread(target=run)
        thread.start()
        ckpt = store.path / "results" / ".lossy.partial" / "checkpoint"
        deadline = time.monotonic() + 120
        while not (ckpt.exists() and len(list(ckpt.glob("b*.npz"))) >= 4):
            assert thread.is_alive(), f"run ended before the kill: {outcome}"
            assert time.monotonic() < deadline, "no checkpoints after 120 s"
            time.sleep(0.02)
        victim_addr, victim_pid = sorted(pids.items())[0]
        os.kill(victim_pid, signal.SIGKILL)
        thread.join(timeout=300)
        assert not thread.is_alive()
        assert "err" not in outcome, outcome.get("err")
        # the nanny restarted the killed worker: a new process took its place
        assert victim_pid not in c.run(os.getpid).values()
    res = outcome["res"]
    assert res.metadata["tiles_computed"] == res.metadata["n_tiles"]
    assert np.array_equal(res.indices, reference.indices)
    assert np.array_equal(res.similarities.view(np.int32), reference.similarities.view(np.int32))
    assert res.counts.identical(reference.counts)
