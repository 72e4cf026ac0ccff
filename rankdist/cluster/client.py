"""Where the work runs: choose the kind of cluster; where to watch it (``rankdist doctor``).

Each kind has its own module: the embedded LocalCluster (``local.py``), a running
scheduler joined by address (``address.py``) and a batch system through dask-jobqueue
(``jobqueue.py``). :func:`cluster_client` only checks the options against the kind and
hands over.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from concurrent.futures import CancelledError

from distributed import Client
from distributed.security import Security

from rankdist.cluster._docs import CLUSTER_PARAMS, doc_params
from rankdist.cluster.address import scheduler_client
from rankdist.cluster.describe import describe_client
from rankdist.cluster.jobqueue import SYSTEMS, default_login_host, jobqueue_client, tunnel_command
from rankdist.cluster.jobqueue import doctor_report as jobqueue_doctor_report
from rankdist.cluster.local import LOOPBACK, available_cores, local_client
from rankdist.cluster.security import security_lines

__all__ = ["available_cores", "cluster_client", "describe_client", "doctor_report"]

#: ``rankdist doctor``'s security line for the in-process default.
IN_PROCESS_SECURITY = (
    "security: in-process: the scheduler and the worker are threads of this process and "
    "speak inproc://; nothing listens on the network but the dashboard on 127.0.0.1, so no "
    "other process can connect"
)


@doc_params(**CLUSTER_PARAMS)
def cluster_client(
    cluster: str = "local",
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | float | None = "auto",
    dashboard_address: str = f"{LOOPBACK}:8787",
    jobs: int | None = None,
    profile: str | os.PathLike | None = None,
    insecure: bool = False,
    security: str | os.PathLike | Security | None = None,
    quiet: bool = False,
) -> contextlib.AbstractContextManager[Client]:
    """A Dask client for a ``with`` block; a cluster started for it is closed after it.

    Parameters
    ----------
    %(cluster)s
    %(workers)s
    threads_per_worker
        ``cluster='local'`` only: threads per worker (default: this machine's cores
        divided among the workers). Each thread runs one tile with single-threaded BLAS.
        With one worker (the default) they are threads of this process.
    memory_limit
        ``cluster='local'`` only: per-worker memory limit (Dask's syntax, e.g. ``'4GB'``).
    dashboard_address
        ``cluster='local'`` only: where the dashboard is served (another port is taken
        if busy; a port alone, ``':8787'``, is on 127.0.0.1).
    %(jobs)s
    %(profile)s
    %(insecure)s
    %(security)s
    quiet
        Do not print the dashboard link (and, for a batch system, the jobs and the SSH
        tunnel command).

    Returns
    -------
    contextlib.AbstractContextManager[distributed.Client]
        Entering it starts or joins the cluster and gives a client connected to at least
        one worker. A scheduler joined by address that is lost during the block (it
        stopped, or its machine became unreachable) raises one ``ConnectionError`` naming
        its address.
    """
    _check_security(cluster, insecure=insecure, security=security)
    if cluster in SYSTEMS:
        if workers is not None or threads_per_worker is not None:
            msg = (
                f"--workers/threads apply only to --cluster local; a {cluster} job runs the "
                "workers its profile describes (cores, processes); use --jobs for more"
            )
            raise ValueError(msg)
        return jobqueue_client(
            cluster,
            jobs=1 if jobs is None else jobs,
            profile=profile,
            quiet=quiet,
            insecure=insecure,
        )
    if jobs is not None or profile is not None:
        msg = (
            f"--jobs/--profile apply to {', '.join(SYSTEMS)} clusters, not to {cluster!r}; "
            "use e.g. --cluster slurm --jobs 4 --profile deploy/slurm.yaml"
        )
        raise ValueError(msg)
    if cluster == "local":
        return local_client(
            workers=workers,
            threads_per_worker=threads_per_worker,
            memory_limit=memory_limit,
            dashboard_address=dashboard_address,
            insecure=insecure,
            quiet=quiet,
        )
    if "://" in cluster:
        if workers is not None or threads_per_worker is not None:
            msg = (
                "--workers/threads apply only to --cluster local; a running scheduler "
                f"({cluster}) has the workers it has"
            )
            raise ValueError(msg)
        return _joined_scheduler(cluster, security=security, quiet=quiet)
    msg = (
        f"unknown --cluster {cluster!r}; use 'local', a batch system "
        f"({', '.join(SYSTEMS)}) or a scheduler address like tls://host:8786"
    )
    raise ValueError(msg)


@doc_params(**CLUSTER_PARAMS)
def doctor_report(
    cluster: str = "local",
    *,
    jobs: int | None = None,
    profile: str | os.PathLike | None = None,
    insecure: bool = False,
    security: str | os.PathLike | Security | None = None,
    login_host: str | None = None,
) -> str:
    """How ``--cluster`` would run, checked by starting its scheduler; nothing is submitted.

    Parameters
    ----------
    %(cluster)s
    %(jobs)s
    %(profile)s
    %(insecure)s
    %(security)s
    login_host
        The machine a user SSHes into, for the tunnel command (default: the submit host
        inside a batch job, else a placeholder).

    Returns
    -------
    str
        For a batch system: the job script, the scheduler's interface and address, the
        dashboard URL and the SSH tunnel command. Otherwise the workers, the scheduler,
        who can connect to it (TLS or not, where the credentials are), the dashboard URL
        and the tunnel command.
    """
    if cluster in SYSTEMS:
        _check_security(cluster, insecure=insecure, security=security)
        return jobqueue_doctor_report(
            cluster,
            jobs=1 if jobs is None else jobs,
            profile=profile,
            login_host=login_host,
            insecure=insecure,
        )
    login = login_host or default_login_host()
    with cluster_client(
        cluster, jobs=jobs, profile=profile, insecure=insecure, security=security, quiet=True
    ) as client:
        link = client.dashboard_link
        address = client.scheduler.address
        source = None if security is None or isinstance(security, Security) else str(security)
        lines = [
            f"rankdist doctor: --cluster {cluster}; nothing is submitted",
            describe_client(client),
            f"scheduler: {address}",
            *(
                [IN_PROCESS_SECURITY]
                if address.startswith("inproc://")
                else security_lines(address, client.security, source)
            ),
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


#: The reason Dask gives a future cancelled because the client lost its scheduler.
_CONNECTION_LOST = "scheduler-connection-lost"


@contextlib.contextmanager
def _joined_scheduler(address: str, *, security, quiet: bool) -> Iterator[Client]:
    """:func:`scheduler_client`, with a scheduler lost during the block as one error.

    When the scheduler stops or becomes unreachable, Dask cancels every future (the
    block then raises a ``CancelledError`` naming one task key) and, closing the
    client, logs the traceback of its reconnection attempt. Both become one
    ``ConnectionError`` naming the address and what to do.

    Raises
    ------
    ConnectionError
        The scheduler was lost while the block ran.
    """
    logger = logging.getLogger("distributed.client")
    level = logger.level
    logger.addFilter(_handler_tracebacks)
    try:
        with scheduler_client(address, security=security, quiet=quiet) as client:
            try:
                yield client
            except (CancelledError, OSError, TimeoutError) as err:
                lost = getattr(err, "reason", None) == _CONNECTION_LOST
                if not lost and client.status == "running":
                    raise
                logger.setLevel(logging.CRITICAL)  # the reconnection the close cuts short
                msg = (
                    f"lost the Dask scheduler at {address} while the work ran (it stopped or "
                    "became unreachable); check that it runs (restart it and its workers if "
                    "not), then rerun the same command: a neighbors run resumes from the tiles "
                    "it finished"
                )
                raise ConnectionError(msg) from err
    finally:
        logger.setLevel(level)
        logger.removeFilter(_handler_tracebacks)


def _handler_tracebacks(record: logging.LogRecord) -> bool:
    """Drop the tracebacks Dask's client logs when one of its message handlers fails.

    As a scheduler dies, its last messages can reach the client half-made (a task error
    without its traceback), and the client logs the failed handling with a traceback.
    What follows surfaces as the block's own error, in one line.
    """
    return record.funcName != "_handle_report"


def _check_security(cluster: str, *, insecure: bool, security) -> None:
    """``--insecure`` for a cluster rankdist starts, ``--security`` for an address only."""
    joins = "://" in cluster
    if security is not None and not joins:
        msg = (
            f"--security joins a running tls:// scheduler; --cluster {cluster} starts its "
            "own cluster with credentials made for the run (leave out --security)"
        )
        raise ValueError(msg)
    if insecure and joins:
        msg = (
            f"--insecure applies to the clusters rankdist starts; the address {cluster} "
            "says how to join a running one (tls:// with --security, or tcp://)"
        )
        raise ValueError(msg)
