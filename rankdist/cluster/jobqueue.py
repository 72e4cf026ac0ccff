"""Dask on a batch system (SLURM, PBS, SGE, LSF) through dask-jobqueue, from one profile.

A profile is a YAML file in dask-jobqueue's own schema (``jobqueue: slurm: cores: ...``,
see ``deploy/``). :func:`resolve_profile` reads it once into a :class:`JobqueueProfile`:
dask-jobqueue's configuration for the system (its defaults, ``~/.config/dask/jobqueue.yaml``
and ``DASK_JOBQUEUE__*`` variables) overlaid with the profile's section. Its ``options`` are
the keyword arguments of the dask-jobqueue cluster class, so nothing is looked up later.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from distributed import Client
from distributed.core import Status

START_TIMEOUT_S = 600.0
"""How long to wait for the first worker: jobs can sit in the queue."""

OTHERS_GRACE_S = 30.0
"""After the first worker, how long to wait for the other jobs' workers before starting,
so the block size is chosen for all of them."""


@dataclass(frozen=True)
class BatchSystem:
    """What rankdist tells a user about one batch system; dask-jobqueue does the rest."""

    name: str
    cluster_class: str  # in dask_jobqueue
    submit_command: str
    status_command: str
    default_output: str  # where a job's output goes when the profile sets no log-directory
    submit_host_env: str  # set inside a batch job: the host the job was submitted from


# fmt: off
SYSTEMS: Mapping[str, BatchSystem] = MappingProxyType({s.name: s for s in (
    BatchSystem("slurm", "SLURMCluster", "sbatch", "squeue -u $USER",
                "slurm-<jobid>.out in the directory rankdist was started from",
                "SLURM_SUBMIT_HOST"),
    BatchSystem("pbs", "PBSCluster", "qsub", "qstat -u $USER",
                "<name>.o<jobid> in the directory rankdist was started from", "PBS_O_HOST"),
    BatchSystem("sge", "SGECluster", "qsub", "qstat -u $USER",
                "<name>.o<jobid> in your home directory", "SGE_O_HOST"),
    BatchSystem("lsf", "LSFCluster", "bsub", "bjobs -w",
                "the e-mail LSF sends you at the end of the job", "LSB_SUB_HOST"),
)})
# fmt: on

# Keyword arguments the cluster classes take that dask-jobqueue's YAML does not list.
_EXTRA_KEYS = frozenset({"nanny", "protocol"})


@dataclass(frozen=True)
class JobqueueProfile:
    """One resolved configuration of a batch-system cluster.

    Attributes
    ----------
    system
        The batch system.
    options
        Keyword arguments of the dask-jobqueue cluster class (snake_case; the YAML's
        ``name`` is ``job_name`` here), complete: dask-jobqueue's configuration for the
        system overlaid with the profile.
    path
        The profile file, or None where dask-jobqueue's configuration alone applies.
    """

    system: BatchSystem
    options: Mapping[str, Any]
    path: Path | None

    @property
    def source(self) -> str:
        """Where the options came from, for messages."""
        return str(self.path) if self.path else "dask-jobqueue's configuration"

    @property
    def section(self) -> str:
        """The profile section, e.g. ``jobqueue.slurm``."""
        return f"jobqueue.{self.system.name}"

    def output_hint(self) -> str:
        """Where a worker job's output (and the reason it died) can be read."""
        log_dir = self.options.get("log_directory")
        if log_dir:
            return f"the job's output files in {log_dir}/"
        return f"the job's output file ({self.system.default_output})"


def resolve_profile(system: str, profile: str | os.PathLike | None = None) -> JobqueueProfile:
    """Read a dask-jobqueue profile into the cluster's keyword arguments, once.

    Parameters
    ----------
    system
        ``'slurm'``, ``'pbs'``, ``'sge'`` or ``'lsf'``.
    profile
        YAML file with a ``jobqueue: <system>:`` section (see ``deploy/``). Keys may be
        written ``local-directory`` or ``local_directory``. None: dask-jobqueue's own
        configuration alone.

    Returns
    -------
    JobqueueProfile
        The options, checked: known keys only, ``cores`` and ``memory`` set, ``walltime``
        a string, and a worker ``--lifetime`` that ends before the walltime.
    """
    import dask
    import dask_jobqueue  # noqa: F401  (registers its defaults under jobqueue.*)

    if system not in SYSTEMS:
        msg = f"unknown batch system {system!r}; use one of {', '.join(SYSTEMS)}"
        raise ValueError(msg)
    batch = SYSTEMS[system]
    defaults = {_snake(k): v for k, v in dask.config.get(f"jobqueue.{system}").items()}
    path = None if profile is None else Path(profile)
    given: dict[str, Any] = {}
    if path is not None:
        given = {_snake(k): v for k, v in _read_section(path, system).items()}
        unknown = sorted(set(given) - set(defaults) - _EXTRA_KEYS)
        if unknown:
            msg = (
                f"{profile}: unknown key(s) {unknown} in jobqueue.{system}; dask-jobqueue's "
                f"{batch.cluster_class} takes {sorted(set(defaults) | _EXTRA_KEYS)}"
            )
            raise ValueError(msg)
    options = {**defaults, **given}
    options["job_name"] = options.pop("name")
    if options.get("log_directory"):  # used at submission, here: make it absolute now
        log_dir = Path(os.path.expandvars(str(options["log_directory"]))).expanduser()
        options["log_directory"] = str(log_dir.resolve())
    resolved = JobqueueProfile(batch, MappingProxyType(options), path)
    _check_options(resolved)
    return resolved


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


def walltime_seconds(system: str, walltime: str) -> float | None:
    """A walltime in seconds, or None for a format not read here.

    Reads ``HH:MM:SS`` (all), ``D-HH:MM:SS`` (SLURM) and ``[HH:]MM`` (LSF).
    """
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d+):(\d+)", walltime.strip())
    if m and system != "lsf" and (m.group(1) is None or system == "slurm"):
        days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
        return ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    m = re.fullmatch(r"(?:(\d+):)?(\d+)", walltime.strip())
    if m and system == "lsf":
        return (int(m.group(1) or 0) * 60 + int(m.group(2))) * 60
    return None


def worker_lifetime(worker_extra_args) -> tuple[str | None, str | None]:
    """The ``--lifetime`` and ``--lifetime-stagger`` values among a worker's extra args."""
    found: dict[str, str] = {}
    args = [str(a) for a in worker_extra_args or ()]
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag in ("--lifetime", "--lifetime-stagger"):
            found[flag] = value if eq else (args[i + 1] if i + 1 < len(args) else "")
    return found.get("--lifetime"), found.get("--lifetime-stagger")


def _snake(key: str) -> str:
    return key.replace("-", "_")


def _read_section(path: Path, system: str) -> Mapping[str, Any]:
    import yaml

    if not path.is_file():
        msg = (
            f"profile {path} not found; pass a dask-jobqueue YAML profile such as "
            f"deploy/{system}.yaml"
        )
        raise FileNotFoundError(msg)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        msg = f"profile {path} is not valid YAML: {err}"
        raise ValueError(msg) from err
    queues = doc.get("jobqueue") if isinstance(doc, dict) else None
    section = queues.get(system) if isinstance(queues, dict) else None
    if not isinstance(section, dict):
        has = sorted(queues) if isinstance(queues, dict) else []
        msg = (
            f"profile {path} has no 'jobqueue: {system}:' section"
            + (f" (it has: {', '.join(map(str, has))})" if has else "")
            + f"; start from deploy/{system}.yaml, or pick the --cluster the profile is for"
        )
        raise ValueError(msg)
    return section


def _check_options(profile: JobqueueProfile) -> None:
    opts, where = profile.options, f"{profile.source} ({profile.section})"
    missing = [k for k in ("cores", "memory") if opts.get(k) is None]
    if missing:
        msg = (
            f"{where} does not set {' and '.join(missing)}: how much one job asks for, "
            "e.g. cores: 16 and memory: 64GB"
            + ("" if profile.path else f"; pass --profile deploy/{profile.system.name}.yaml")
        )
        raise ValueError(msg)
    walltime = opts.get("walltime")
    if walltime is None:
        return
    if not isinstance(walltime, str):
        msg = (
            f"{where}: walltime is {walltime!r}, not a string (YAML reads an unquoted "
            "12:00:00 as a number of seconds); quote it: walltime: '12:00:00'"
        )
        raise ValueError(msg)
    _check_lifetime(profile, walltime)


def _check_lifetime(profile: JobqueueProfile, walltime: str) -> None:
    """A worker must retire before the batch system kills its job at the walltime."""
    from dask.utils import parse_timedelta

    lifetime, stagger = worker_lifetime(profile.options.get("worker_extra_args"))
    wall_s = walltime_seconds(profile.system.name, walltime)
    if lifetime is None or wall_s is None:
        return
    where = f"{profile.source} ({profile.section})"
    try:
        end_s = parse_timedelta(lifetime) + (parse_timedelta(stagger) if stagger else 0)
    except (ValueError, KeyError) as err:
        msg = (
            f"{where}: cannot read worker --lifetime {lifetime!r} / --lifetime-stagger "
            f"{stagger!r} ({err}); write them like '55m' and '4m'"
        )
        raise ValueError(msg) from None
    if end_s >= wall_s:
        msg = (
            f"{where}: worker --lifetime {lifetime} (+ --lifetime-stagger {stagger or '0'}) "
            f"reaches the walltime {walltime}, so the batch system would kill workers in "
            "mid-task; make lifetime + stagger a few minutes shorter than the walltime, "
            "e.g. --lifetime 55m --lifetime-stagger 4m for 01:00:00"
        )
        raise ValueError(msg)


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
