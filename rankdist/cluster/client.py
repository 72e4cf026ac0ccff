"""Where the work runs: a LocalCluster, a running scheduler or a batch system; where to watch it."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from distributed import Client, LocalCluster

from rankdist.cluster._docs import CLUSTER_PARAMS, doc_params
from rankdist.cluster.jobqueue import SYSTEMS, default_login_host, jobqueue_client, tunnel_command
from rankdist.cluster.jobqueue import doctor_report as jobqueue_doctor_report


def available_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS has one, e.g. a batch job)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@doc_params(**CLUSTER_PARAMS)
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
    """A Dask client for the duration of the block; a cluster started for it is closed after.

    Parameters
    ----------
    %(cluster)s
    %(workers)s
    threads_per_worker
        ``cluster='local'`` only: threads per worker (default: this machine's cores
        divided among the workers). Each thread runs one tile with single-threaded BLAS.
    memory_limit
        ``cluster='local'`` only: per-worker memory limit (Dask's syntax, e.g. ``'4GB'``).
    dashboard_address
        ``cluster='local'`` only: where the dashboard is served (another port is taken
        if busy).
    %(jobs)s
    %(profile)s
    quiet
        Do not print the dashboard link (and, for a batch system, the jobs and the SSH
        tunnel command).

    Yields
    ------
    distributed.Client
        Connected to a cluster with at least one worker.
    """
    batch_system = cluster in SYSTEMS
    if not batch_system and (jobs is not None or profile is not None):
        msg = (
            f"--jobs/--profile apply to {', '.join(SYSTEMS)} clusters, not to {cluster!r}; "
            "use e.g. --cluster slurm --jobs 4 --profile deploy/slurm.yaml"
        )
        raise ValueError(msg)
    if batch_system:
        if workers is not None or threads_per_worker is not None:
            msg = (
                f"--workers/threads apply only to --cluster local; a {cluster} job runs the "
                "workers its profile describes (cores, processes); use --jobs for more"
            )
            raise ValueError(msg)
        with jobqueue_client(
            cluster, jobs=1 if jobs is None else jobs, profile=profile, quiet=quiet
        ) as client:
            yield client
    elif cluster == "local":
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
        msg = (
            f"unknown --cluster {cluster!r}; use 'local', a batch system "
            f"({', '.join(SYSTEMS)}) or a scheduler address like tcp://host:8786"
        )
        raise ValueError(msg)


@doc_params(**CLUSTER_PARAMS)
def doctor_report(
    cluster: str = "local",
    *,
    jobs: int | None = None,
    profile: str | os.PathLike | None = None,
    login_host: str | None = None,
) -> str:
    """How ``--cluster`` would run, checked by starting its scheduler; nothing is submitted.

    Parameters
    ----------
    %(cluster)s
    %(jobs)s
    %(profile)s
    login_host
        The machine a user SSHes into, for the tunnel command (default: the submit host
        inside a batch job, else a placeholder).

    Returns
    -------
    str
        For a batch system: the job script, the scheduler's interface and address, the
        dashboard URL and the SSH tunnel command. Otherwise the workers, the scheduler,
        the dashboard URL and the tunnel command.
    """
    if cluster in SYSTEMS:
        return jobqueue_doctor_report(
            cluster, jobs=1 if jobs is None else jobs, profile=profile, login_host=login_host
        )
    login = login_host or default_login_host()
    with cluster_client(cluster, jobs=jobs, profile=profile, quiet=True) as client:
        link = client.dashboard_link
        lines = [
            f"rankdist doctor: --cluster {cluster}; nothing is submitted",
            describe_client(client),
            f"scheduler: {client.scheduler.address}",
            "SSH tunnel (run on your laptop, then open the dashboard on localhost):",
            f"  {tunnel_command(link, login)}",
        ]
    if login == "<login-host>":
        lines.append("  (replace <login-host> with the machine you ssh into, or pass --login-host)")
    lines.append(
        "no job script: --cluster local runs on this machine"
        if cluster == "local"
        else f"no job script: the scheduler at {cluster} has the workers it has"
    )
    return "\n".join(lines)


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
