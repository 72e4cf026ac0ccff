"""The embedded cluster: a LocalCluster of worker processes on this machine."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from distributed import Client, LocalCluster

from rankdist.cluster.describe import describe_client

__all__ = ["available_cores", "local_client"]


def available_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS has one, e.g. a batch job)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def local_client(
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | float | None = "auto",
    dashboard_address: str = ":8787",
    quiet: bool = False,
) -> Iterator[Client]:
    """A client of a LocalCluster started for the block and closed after it.

    Parameters
    ----------
    workers
        Worker processes (default 1, sharing one block cache).
    threads_per_worker
        Threads per worker (default: this machine's cores divided among the workers).
        Each thread runs one tile with single-threaded BLAS.
    memory_limit
        Per-worker memory limit (Dask's syntax, e.g. ``'4GB'``).
    dashboard_address
        Where the dashboard is served (another port is taken if busy).
    quiet
        Do not print the workers and the dashboard link.

    Yields
    ------
    distributed.Client
        Connected to the LocalCluster.
    """
    n_workers = workers or 1
    threads = threads_per_worker or max(1, available_cores() // n_workers)
    with (
        _quiet_distributed_logs(),
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads,
            processes=True,
            memory_limit=memory_limit,
            dashboard_address=dashboard_address,
        ) as cluster,
        Client(cluster) as client,
    ):
        if not quiet:
            print(describe_client(client), file=sys.stderr, flush=True)
        yield client


@contextlib.contextmanager
def _quiet_distributed_logs():
    """Keep LocalCluster start/stop chatter out of the user's terminal (warnings still show)."""
    loggers = [
        logging.getLogger(n) for n in ("distributed", "distributed.nanny", "distributed.scheduler")
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)
