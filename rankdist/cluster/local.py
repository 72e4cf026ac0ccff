"""The embedded cluster: a LocalCluster of worker processes on this machine.

Its scheduler, workers and client speak TLS on 127.0.0.1 with credentials made for the
run and held in memory (``Security.temporary()``; distributed writes the key only while
it loads it, into a temporary folder only the user can read): another process, another
user's included, cannot connect to it. ``insecure=True`` gives plain TCP on 127.0.0.1, which
any user of the machine can reach, and warns so. The dashboard is served on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

from distributed import Client, LocalCluster
from distributed.security import Security

from rankdist.cluster.describe import describe_client
from rankdist.cluster.security import InsecureClusterWarning

__all__ = ["LOOPBACK", "available_cores", "local_client"]

#: The only interface the LocalCluster and its dashboard listen on.
LOOPBACK = "127.0.0.1"


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
    dashboard_address: str | None = f"{LOOPBACK}:8787",
    insecure: bool = False,
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
        Where the dashboard is served (another port is taken if busy); a port alone
        (``':8787'``) is on 127.0.0.1. None: no dashboard.
    insecure
        Plain TCP without credentials instead of TLS with per-run credentials: any user
        of this machine can then connect and run code as you. Warns.
    quiet
        Do not print the workers and the dashboard link.

    Yields
    ------
    distributed.Client
        Connected to the LocalCluster.

    Warns
    -----
    InsecureClusterWarning
        With ``insecure=True``.
    """
    n_workers = workers or 1
    threads = threads_per_worker or max(1, available_cores() // n_workers)
    if insecure:
        warnings.warn(
            f"insecure: the LocalCluster listens in plain TCP on {LOOPBACK} without "
            "credentials; any user of this machine can connect to it and run code as you "
            "(without --insecure it uses TLS with credentials made for the run)",
            InsecureClusterWarning,
            stacklevel=3,
        )
    if dashboard_address is not None and dashboard_address.startswith(":"):
        dashboard_address = LOOPBACK + dashboard_address
    with (
        _quiet_distributed_logs(),
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads,
            processes=True,
            memory_limit=memory_limit,
            host=LOOPBACK,
            protocol="tcp://" if insecure else "tls://",
            security=None if insecure else Security.temporary(),
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
