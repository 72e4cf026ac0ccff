"""Dask on a batch system (SLURM, PBS, SGE, LSF) through dask-jobqueue, from one profile.

The profile is read once by :func:`rankdist.cluster.profile.resolve_profile` (re-exported
here); this module starts the cluster from it, submits and watches the jobs, and reports
on them (``rankdist doctor``).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import sys
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

from distributed import Client
from distributed.core import Status

from rankdist.cluster.profile import (
    SYSTEMS,
    BatchSystem,
    JobqueueProfile,
    resolve_profile,
    walltime_seconds,
    worker_lifetime,
)

__all__ = [
    "OTHERS_GRACE_S",
    "START_TIMEOUT_S",
    "SYSTEMS",
    "BatchSystem",
    "JobqueueProfile",
    "check_jobs",
    "default_login_host",
    "describe_jobqueue",
    "doctor_report",
    "job_ids",
    "jobqueue_client",
    "make_cluster",
    "resolve_profile",
    "tunnel_command",
    "walltime_seconds",
    "worker_lifetime",
]

START_TIMEOUT_S = 600.0
"""How long to wait for the first worker: jobs can sit in the queue."""

OTHERS_GRACE_S = 30.0
"""After the first worker, how long to wait for the other jobs' workers before starting,
so the block size is chosen for all of them."""


def make_cluster(profile: JobqueueProfile):
    """Start the dask-jobqueue cluster (its scheduler runs here; no job is submitted yet).

    Parameters
    ----------
    profile
        From :func:`resolve_profile`.

    Returns
    -------
    dask_jobqueue.JobQueueCluster
        E.g. a ``SLURMCluster``; close it (or use it as a context manager) to cancel its jobs.
    """
    import dask_jobqueue

    cls = getattr(dask_jobqueue, profile.system.cluster_class)
    try:
        return cls(**profile.options)
    except RuntimeError as err:  # "Cluster failed to start", from a ValueError
        if not isinstance(err.__cause__, ValueError):
            raise
        cause = err.__cause__
    except ValueError as err:
        cause = err
    msg = f"{profile.source} ({profile.section}): {cause}"
    if "interface" in str(cause):
        msg += "; set interface: to one that exists here and on the compute nodes"
    raise ValueError(msg) from cause


@contextlib.contextmanager
def jobqueue_client(
    system: str,
    *,
    jobs: int = 1,
    profile: str | os.PathLike | None = None,
    start_timeout: float = START_TIMEOUT_S,
    quiet: bool = False,
) -> Iterator[Client]:
    """A client of a batch-system cluster of ``jobs`` jobs; the jobs are cancelled after.

    Parameters
    ----------
    system
        ``'slurm'``, ``'pbs'``, ``'sge'`` or ``'lsf'``.
    jobs
        Jobs to keep running, each with the workers its profile describes. A job whose
        worker retires at its ``--lifetime`` is replaced by a new one.
    profile
        dask-jobqueue YAML profile (see ``deploy/``); None: dask-jobqueue's configuration.
    start_timeout
        Seconds to wait for the first worker to connect.
    quiet
        Do not print the jobs, the dashboard link and the SSH tunnel command.
    """
    jobs = check_jobs(jobs)
    resolved = resolve_profile(system, profile)
    with make_cluster(resolved) as cluster, Client(cluster) as client:
        try:
            _submit(cluster, resolved, jobs)
            # Adaptive with a fixed size resubmits a job whose worker left (at --lifetime,
            # before the walltime); a fixed scale() would leave the cluster one job short.
            cluster.adapt(minimum_jobs=jobs, maximum_jobs=jobs)
            _wait_for_workers(cluster, client, resolved, start_timeout)
            if not quiet:
                print(describe_jobqueue(cluster, client, resolved), file=sys.stderr, flush=True)
            yield client
        finally:
            _fail_refused(cluster)


def doctor_report(
    system: str,
    *,
    jobs: int = 1,
    profile: str | os.PathLike | None = None,
    login_host: str | None = None,
) -> str:
    """What ``--cluster <system>`` would submit and where to watch it; submits nothing.

    Starts the cluster's scheduler here (so a wrong ``interface`` fails now, as it would
    at run time), reads the job script and addresses from it, and closes it.

    Parameters
    ----------
    system
        ``'slurm'``, ``'pbs'``, ``'sge'`` or ``'lsf'``.
    jobs
        Jobs a run would keep.
    profile
        dask-jobqueue YAML profile; None: dask-jobqueue's configuration.
    login_host
        The machine a user SSHes into (default: the submit host inside a batch job,
        else a placeholder).

    Returns
    -------
    str
        A report ending with the job script.
    """
    jobs = check_jobs(jobs)
    resolved = resolve_profile(system, profile)
    batch, opts = resolved.system, resolved.options
    login = login_host or default_login_host(batch)
    with make_cluster(resolved) as cluster:
        script = cluster.job_script()
        address = cluster.scheduler_address
        link = cluster.dashboard_link
    interface = (opts.get("scheduler_options") or {}).get("interface") or opts.get("interface")
    submit = shutil.which(batch.submit_command)
    lifetime, stagger = worker_lifetime(opts.get("worker_extra_args"))
    port = urlsplit(link).port
    lines = [
        f"rankdist doctor: {batch.name.upper()} from {resolved.source} ({resolved.section}); "
        "nothing is submitted",
        "submit command: "
        + (submit or f"{batch.submit_command} NOT FOUND: run rankdist where jobs can be submitted"),
        f"jobs: {jobs} x ({opts['cores']} cores, {opts['memory']}, "
        f"{opts.get('processes') or 'auto'} worker process(es)), walltime {opts.get('walltime')}, "
        f"worker lifetime {lifetime or 'not set'}" + (f" +/- {stagger}" if stagger else ""),
        f"scheduler: interface {interface or '(not set: Dask picks one)'}, address "
        f"{urlsplit(address).hostname} (this check bound {address}; the port differs per run)",
        f"dashboard: {link}",
        f"SSH tunnel (run on your laptop, then open http://localhost:{port}/status):",
        f"  {tunnel_command(link, login)}",
    ]
    if login == "<login-host>":
        lines.append("  (replace <login-host> with the machine you ssh into, or pass --login-host)")
    lines += [
        f"worker logs: {resolved.output_hint()}; jobs: {batch.status_command}",
        "",
        f"job script ({batch.submit_command} gets one per job; each gets its own worker name):",
        script,
    ]
    return "\n".join(lines)


def check_jobs(jobs) -> int:
    """``jobs`` as a positive int, or a ValueError that says what to pass."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        msg = f"jobs must be a positive integer (--jobs 4 submits 4 batch jobs), got {jobs!r}"
        raise ValueError(msg)
    return jobs


def job_ids(cluster) -> list[str]:
    """Batch-system ids of the cluster's submitted jobs."""
    return [str(j.job_id) for j in cluster.workers.values() if getattr(j, "job_id", None)]


def describe_jobqueue(cluster, client: Client, profile: JobqueueProfile) -> str:
    """Jobs, workers, the dashboard link and the SSH tunnel command to reach it."""
    workers = client.scheduler_info()["workers"]
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    ids = ", ".join(job_ids(cluster)) or "none yet"
    login = default_login_host(profile.system)
    return (
        f"Dask on {profile.system.name.upper()}: jobs {ids}; {len(workers)} worker(s), "
        f"{threads} thread(s) so far; dashboard: {cluster.dashboard_link}\n"
        f"from your laptop: {tunnel_command(cluster.dashboard_link, login)}"
    )


def tunnel_command(dashboard_link: str, login_host: str) -> str:
    """``ssh -N -L`` command that brings a dashboard on a cluster node to localhost."""
    url = urlsplit(dashboard_link)
    port = url.port or 8787
    return f"ssh -N -L {port}:{url.hostname}:{port} {getpass.getuser()}@{login_host}"


def default_login_host(system: BatchSystem | None = None) -> str:
    """The submit host when running inside a batch job, else a placeholder to replace."""
    systems = [system] if system else list(SYSTEMS.values())
    for s in systems:
        if os.environ.get(s.submit_host_env):
            return os.environ[s.submit_host_env]
    return "<login-host>"


def _submit(cluster, profile: JobqueueProfile, jobs: int) -> None:
    """Submit the jobs here and now, so that a refusal raises the batch system's error."""
    # cluster.scale() would submit in the background, where a refused job is only logged
    # and the run then waits for workers that never come. Grow the spec as scale() does
    # and run the step it schedules (SpecCluster's docstring offers _correct_state for
    # aligning a cluster with its spec), here, where its error can be caught.
    while len(cluster.worker_spec) < jobs:
        cluster.worker_spec.update(cluster.new_worker_spec())
    try:
        cluster.sync(cluster._correct_state)
    except RuntimeError as err:  # dask-jobqueue: "Command exited with non-zero exit code"
        _fail_refused(cluster)
        text = str(err)
        stderr = text.partition("stderr:")[2].strip() or text
        msg = (
            f"{profile.system.submit_command} refused the worker job: {stderr}\n"
            f"Check queue, account, cores, memory and walltime in {profile.source} "
            f"({profile.section}); `rankdist doctor --cluster {profile.system.name}"
            + (f" --profile {profile.path}" if profile.path else "")
            + "` prints the job script without submitting it"
        )
        raise ChildProcessError(msg) from None


def _fail_refused(cluster) -> None:
    """Mark jobs the batch system refused as failed: the cluster cannot close otherwise."""
    for job in cluster.workers.values():
        if job.job_id is None and job.status == Status.created:
            job.status = Status.failed


def _wait_for_workers(cluster, client: Client, profile: JobqueueProfile, timeout) -> None:
    """Wait for the first worker (or fail saying where to look), then briefly for the rest."""
    expected = len(cluster.plan)  # worker names: jobs x processes per job
    started = time.monotonic()
    first_seen = None
    while True:
        n = len(client.scheduler_info()["workers"])
        now = time.monotonic()
        if n and first_seen is None:
            first_seen = now
        if n >= expected or (first_seen is not None and now - first_seen > OTHERS_GRACE_S):
            return
        if first_seen is None and now - started > timeout:
            break
        time.sleep(0.5)
    msg = (
        f"no Dask worker joined within {timeout:.0f} s of submitting "
        f"{profile.system.name.upper()} job(s) {', '.join(job_ids(cluster))}. Check "
        f"`{profile.system.status_command}` (still pending? the queue may be busy, or a job "
        f"asks for more than its queue allows) and {profile.output_hint()}: a worker that "
        f"cannot reach the scheduler at {cluster.scheduler_address} (interface "
        f"{profile.options.get('interface')!r}) says so there"
    )
    raise TimeoutError(msg)
