"""A worker killed mid-run: Dask recomputes what it held, and the result is unchanged.

The kill point is fixed, not timed: the 4th merge task pauses once its merged partial is
checkpointed (tests/faults/_hooks.py: ``paused_merge``), so when the worker running it is
killed, at least 4 merges are on disk and the run cannot have finished.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading

import numpy as np
import pytest
from distributed import Client, LocalCluster
from faults import _hooks

import rankdist
from rankdist.cluster.stealing import own_scheduler, steals
from rankdist.datasets.toy import synthetic_counts
from rankdist.tiles import scheduler


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    adata = synthetic_counts(n_cells=8_000, n_genes=400, seed=12)
    return rankdist.ingest(
        adata, tmp_path_factory.mktemp("loss") / "w.zarr", cell_type="cell_type", progress=False
    )


@pytest.mark.parametrize("stealing", ["on", "off"])
def test_worker_killed_mid_run(store, client, tmp_path, monkeypatch, stealing):
    """Off is how rankdist starts its own schedulers: the tasks a lost worker owned must
    still run elsewhere, by their restrictions' ``allow_other_workers``, not by stealing."""
    kw = dict(k=10, cutoffs=(0.45,), block_size=512, progress=False)
    reference = rankdist.neighbors(store, client=client, name="ref", **kw)
    hook = tmp_path / "hook"
    hook.mkdir()
    monkeypatch.setattr(
        scheduler, "merge_task", functools.partial(_hooks.paused_merge, str(hook), 4)
    )
    config = own_scheduler() if stealing == "off" else contextlib.nullcontext()
    with config:
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0")
    with cluster as lc, Client(lc) as c:
        assert steals(c) is (stealing == "on")
        pids = c.run(os.getpid)
        outcome = {}

        def run():
            try:
                outcome["res"] = rankdist.neighbors(store, client=c, name="lossy", **kw)
            except Exception as err:  # noqa: BLE001  (reported by the assertion below)
                outcome["err"] = err

        thread = threading.Thread(target=run)
        thread.start()
        try:
            victim_pid = _hooks.wait_ready(hook)  # the worker paused in the 4th merge
        except BaseException:
            _hooks.release(hook)  # let the run end before its cluster closes
            raise
        assert thread.is_alive(), f"run ended before the kill: {outcome}"
        ckpt = store.path / "results" / ".lossy.partial" / "checkpoint"
        assert list(ckpt.glob("b*.npz"))  # merged partials on disk at the kill
        assert victim_pid in pids.values()
        os.kill(victim_pid, signal.SIGKILL)
        _hooks.release(hook)
        thread.join(timeout=300)
        assert not thread.is_alive()
        assert "err" not in outcome, outcome.get("err")
        # the nanny restarted the killed worker: a new process took its place
        assert victim_pid not in c.run(os.getpid).values()
    res = outcome["res"]
    assert res.metadata["work_stealing"] is (stealing == "on")
    assert res.metadata["tiles_computed"] == res.metadata["n_tiles"]
    assert np.array_equal(res.indices, reference.indices)
    assert np.array_equal(res.similarities.view(np.int32), reference.similarities.view(np.int32))
    assert res.counts.identical(reference.counts)
