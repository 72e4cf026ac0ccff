"""Start a LocalCluster or join a running Dask scheduler, and say where to watch it."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from distributed import Client, LocalCluster


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def cluster_client(
    cluster: str = "local",
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | float | None = "auto",
    dashboard_address: str = ":8787",
    jobs: int | None = None,
    profile: str | os.PathLike | None = None,
    quiet: bool = False,
) -> Iterator[Client]:
    """A Dask client for the duration of the block; a started LocalCluster is closed after.

    Parameters
    ----------
    cluster
        ``'local'`` to start a LocalCluster on this machine, or a scheduler address
        (``tcp://host:port``) to join.
    workers
        Worker processes of the LocalCluster (default 1, sharing one block cache).
    threads_per_worker
        Threads per worker (default: this machine's cores divided among the workers).
        Each thread runs one tile with single-threaded BLAS.
    memory_limit
        Per-worker memory limit for the LocalCluster (Dask's syntax, e.g. ``'4GB'``).
    dashboard_address
        Where the LocalCluster serves its dashboard (another port is taken if busy).
    jobs, profile
        For batch-system clusters only (not implemented here yet): jobs to submit and the
        dask-jobqueue profile to read.
    quiet
        Do not print the dashboard link.
    """
    batch_system = cluster != "local" and "://" not in cluster
    if not batch_system and (jobs is not None or profile is not None):
        msg = f"--jobs/--profile apply to slurm, pbs, sge and lsf clusters, not to {cluster!r}"
        raise ValueError(msg)
    if cluster == "local":
        n_workers = workers or 1
        threads = threads_per_worker or max(1, _cores() // n_workers)
        with (
            _quiet_distributed_logs(),
            LocalCluster(
                n_workers=n_workers,
                threads_per_worker=threads,
                processes=True,
                memory_limit=memory_limit,
                dashboard_address=dashboard_address,
            ) as lc,
            Client(lc) as client,
        ):
            if not quiet:
                print(describe_client(client), file=sys.stderr, flush=True)
            yield client
    elif "://" in cluster:
        if workers is not None or threads_per_worker is not None:
            msg = (
                "--workers/threads apply only to --cluster local; a running scheduler "
                f"({cluster}) has the workers it has"
            )
            raise ValueError(msg)
        try:
            client = Client(cluster, timeout="30s")
        except OSError as err:
            msg = f"could not reach the Dask scheduler at {cluster} ({err}); is it running?"
            raise ConnectionError(msg) from err
        with client:
            if not quiet:
                print(describe_client(client), file=sys.stderr, flush=True)
            yield client
    else:
        msg = f"unknown --cluster {cluster!r}; use 'local' or a scheduler address like tcp://host:8786"
        raise ValueError(msg)


def describe_client(client: Client) -> str:
    """One line: workers, threads and the dashboard link."""
    info = client.scheduler_info()
    workers = info.get("workers", {})
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    return (
        f"Dask: {len(workers)} worker(s), {threads} thread(s); dashboard: {client.dashboard_link}"
    )


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
