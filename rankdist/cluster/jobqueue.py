"""Dask on a batch system (SLURM, PBS, SGE, LSF) through dask-jobqueue, from one profile.

The profile is read once by :func:`rankdist.cluster.profile.resolve_profile` (re-exported
here); this module starts the cluster from it, submits and watches the jobs, and reports
on them (``rankdist doctor``). The scheduler, the workers and the client speak TLS with
credentials made for the run (:mod:`rankdist.cluster.credentials`) unless the run is
``insecure``; the dashboard listens on the scheduler machine's loopback interface.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

from distributed import Client
from distributed.core import Status

from rankdist.cluster.access import (
    dashboard_link,
    default_login_host,
    scheduler_machine,
    security_report,
    start_warnings,
    tunnel_command,
)
from rankdist.cluster.credentials import run_credentials
from rankdist.cluster.profile import (
    SYSTEMS,
    BatchSystem,
    JobqueueProfile,
    resolve_profile,
    walltime_seconds,
    worker_lifetime,
)
from rankdist.cluster.stealing import own_scheduler

__all__ = [
    "OTHERS_GRACE_S",
    "START_TIMEOUT_S",
    "SYSTEMS",
    "BatchSystem",
    "JobqueueProfile",
    "check_jobs",
    "dashboard_link",
    "default_login_host",
    "describe_jobqueue",
    "doctor_report",
    "job_ids",
    "jobqueue_client",
    "make_cluster",
    "resolve_profile",
    "security_report",
    "tunnel_command",
    "walltime_seconds",
    "worker_lifetime",
]

START_TIMEOUT_S = 600.0
"""How long to wait for the first worker: jobs can sit in the queue."""

OTHERS_GRACE_S = 30.0
"""After the first worker, how long to wait for the other jobs' workers before starting,
so the block size is chosen for all of them."""


def make_cluster(profile: JobqueueProfile, *, security=None):
    """Start the dask-jobqueue cluster (its scheduler runs here; no job is submitted yet).

    Parameters
    ----------
    profile
        From :func:`resolve_profile`.
    security
        ``distributed.security.Security`` with the run's TLS credentials as files the
        worker jobs can read (:func:`rankdist.cluster.credentials.run_credentials`): the
        scheduler, the workers and a ``Client(cluster)`` then speak ``tls://``. None:
        plain TCP.

    Returns
    -------
    dask_jobqueue.JobQueueCluster
        E.g. a ``SLURMCluster``; close it (or use it as a context manager) to cancel its jobs.
    """
    import dask_jobqueue

    cls = getattr(dask_jobqueue, profile.system.cluster_class)
    options = dict(profile.options)
    if security is not None:
        protocol = options.pop("protocol", None)
        if protocol not in (None, "tls", "tls://"):
            msg = (
                f"{profile.source} ({profile.section}): protocol {protocol!r} is not "
                "encrypted; remove protocol: (a run speaks tls://) or set insecure: true"
            )
            raise ValueError(msg)
        options |= {"security": security, "protocol": "tls://"}
    try:
        with own_scheduler():  # its scheduler starts here (cluster/stealing.py)
            return cls(**options)
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
    insecure: bool = False,
) -> Iterator[Client]:
    """A client of a batch-system cluster of ``jobs`` jobs; the jobs are cancelled after.

    The scheduler, the workers and the client speak TLS with credentials made for this run
    (readable only by the user, on the shared filesystem; see ``docs/security.md``),
    removed when the block ends, by an error, Ctrl-C or SIGTERM too.

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
        Do not print the jobs, the dashboard link and the SSH tunnel command (warnings
        are printed all the same).
    insecure
        Plain TCP, as the profile's ``insecure: true``: anyone who can reach the
        scheduler can run code as you. A warning line on stderr says so.
    """
    jobs = check_jobs(jobs)
    resolved = resolve_profile(system, profile)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_sigterm_ends_the_run())
        security = _run_security(stack, resolved, insecure)
        cluster = stack.enter_context(make_cluster(resolved, security=security))
        for line in start_warnings(resolved, insecure, cluster.scheduler_address):
            print(line, file=sys.stderr, flush=True)
        client = stack.enter_context(Client(cluster))
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
    insecure: bool = False,
) -> str:
    """What ``--cluster <system>`` would submit and where to watch it; submits nothing.

    Starts the cluster's scheduler here as a run would, with TLS credentials made and
    removed again (so a wrong ``interface`` or a credentials directory that cannot be
    made fails now, as it would at run time), reads the job script and addresses from it,
    and closes it.

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
    insecure
        Report on a run with plain TCP (``--insecure``).

    Returns
    -------
    str
        A report ending with the job script.
    """
    jobs = check_jobs(jobs)
    resolved = resolve_profile(system, profile)
    batch, opts = resolved.system, resolved.options
    login = login_host or default_login_host(batch)
    with contextlib.ExitStack() as stack:
        security = _run_security(stack, resolved, insecure)
        cluster = stack.enter_context(make_cluster(resolved, security=security))
        script = cluster.job_script()
        address = cluster.scheduler_address
        link = dashboard_link(cluster, resolved)
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
        *security_report(resolved, insecure=insecure),
        f"dashboard: {link}",
        f"SSH tunnel (run on your laptop, then open http://localhost:{port}/status):",
        f"  {tunnel_command(link, login, scheduler_machine(batch))}",
    ]
    if login == "<login-host>":
        lines.append("  (replace <login-host> with the machine you ssh into, or pass --login-host)")
    lines += [
        f"worker logs: {resolved.output_hint()}; jobs: {batch.status_command}",
        "",
        f"job script ({batch.submit_command} gets one per job; each gets its own worker name"
        + ("" if security is None else "; each run makes its own --tls-* files")
        + "):",
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
    link = dashboard_link(cluster, profile)
    tunnel = tunnel_command(link, login, scheduler_machine(profile.system))
    return (
        f"Dask on {profile.system.name.upper()} ({urlsplit(cluster.scheduler_address).scheme}): "
        f"jobs {ids}; {len(workers)} worker(s), {threads} thread(s) so far; dashboard: {link}\n"
        f"from your laptop: {tunnel}"
    )


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


def _run_security(stack: contextlib.ExitStack, profile: JobqueueProfile, insecure: bool):
    """This run's TLS ``Security``, its credentials removed when ``stack`` closes; None
    for an insecure run."""
    if insecure or profile.insecure:
        return None
    return stack.enter_context(run_credentials(profile.credentials_directory)).security


@contextlib.contextmanager
def _sigterm_ends_the_run() -> Iterator[None]:
    """SIGTERM (``scancel``, a walltime) ends the run as Ctrl-C does: the ``with`` blocks
    close, so the jobs are cancelled and the credentials removed. Exit status 143."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield  # someone else handles SIGTERM here
        return
    received = []

    def end_run(signum, frame):
        if received:  # already closing: let it finish
            return
        received.append(signum)
        print("rankdist: SIGTERM: cancelling the jobs", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, end_run)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
