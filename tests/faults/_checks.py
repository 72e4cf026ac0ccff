"""Checks the fault tests share: the dataset's size and commands, results, stderr lines."""

from __future__ import annotations

import time

import numpy as np

import rankdist

N_CELLS, N_GENES = 1500, 100
INGEST_ARGS = ["--cell-type", "cell_type", "--quiet"]
NEIGHBORS_ARGS = ["--k", "5", "--cutoffs", "0.5", "--block-size", "512", "--quiet"]
NEIGHBORS_KW = dict(k=5, cutoffs=(0.5,), block_size=512, progress=False)

#: What Dask prints when its default dashboard port is taken (another cluster on this
#: machine), even with ``--quiet``: not the command's own output, so not counted as a line.
_DASK_PORT_NOTICE = (
    "warning: Port 8787 is already in use.",
    "Perhaps you already have a cluster running?",
    "Hosting the HTTP server on port",
)


#: Worker task states that may still run (and write): all but in memory, erred, released.
_MAY_RUN = {"waiting", "ready", "constrained", "executing", "long-running", "cancelled", "resumed"}


def wait_idle(client) -> None:
    """Wait until no worker of the client may still run a task (a condition, not a duration).

    After a failed run, its cancelled tasks leave the workers once they are released or,
    if one was already running, once it has returned: until then it may still write.
    A task the scheduler sent just before the run was cancelled may still be on its way
    to a worker, so a no-op task is first run on every worker: the scheduler's messages
    to a worker arrive in order, so once it has run, every earlier one has arrived.
    """

    def may_run(dask_worker) -> int:
        return sum(ts.state in _MAY_RUN for ts in dask_worker.state.tasks.values())

    for address in client.run(_noop):  # every worker's address
        barrier = client.submit(_noop, workers=[address], allow_other_workers=False, pure=False)
        barrier.result(timeout=120)
        del barrier
    deadline = time.monotonic() + 120
    while any(client.run(may_run).values()):
        assert time.monotonic() < deadline, "the cluster still runs tasks after 120 s"
        time.sleep(0.02)


def _noop() -> None:
    """A task that does nothing: its completion orders a worker's earlier messages."""


def same_result(res: rankdist.NeighborResult, ref: rankdist.NeighborResult) -> bool:
    """Bit-identical neighbours, similarities and counts."""
    return (
        np.array_equal(res.indices, ref.indices)
        and np.array_equal(res.similarities.view(np.int32), ref.similarities.view(np.int32))
        and res.counts.identical(ref.counts)
    )


def stderr_lines(err: str) -> list[str]:
    """Every line of a command's stderr but Dask's dashboard-port notice; no traceback."""
    assert "Traceback (most recent call last)" not in err, err
    return [
        line for line in err.strip().splitlines() if not any(n in line for n in _DASK_PORT_NOTICE)
    ]


def error_lines(err: str, command: str) -> list[str]:
    """The error lines of ``rankdist COMMAND`` run in this process; no traceback.

    Workers in this process log a failed task ("Compute Failed") to the same stderr, so
    only the command's own ``rankdist COMMAND: error:`` lines are kept.
    """
    assert "Traceback (most recent call last)" not in err, err
    return [line for line in err.splitlines() if line.startswith(f"rankdist {command}: error")]
