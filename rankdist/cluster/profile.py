"""Batch-system profiles: read a dask-jobqueue YAML profile once into a typed object.

A profile is a YAML file in dask-jobqueue's own schema (``jobqueue: slurm: cores: ...``,
see ``deploy/``). :func:`resolve_profile` reads it once into a :class:`JobqueueProfile`:
dask-jobqueue's configuration for the system (its defaults, ``~/.config/dask/jobqueue.yaml``
and ``DASK_JOBQUEUE__*`` variables) overlaid with the profile's section. Its ``options`` are
the keyword arguments of the dask-jobqueue cluster class, so nothing is looked up later.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = [
    "DASHBOARD_ADDRESS",
    "SYSTEMS",
    "BatchSystem",
    "JobqueueProfile",
    "dashboard_on_loopback",
    "resolve_profile",
    "walltime_seconds",
    "worker_lifetime",
]


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
# rankdist's own keys in a profile's section (snake_case): read into JobqueueProfile, never
# passed to dask-jobqueue.
_RANKDIST_KEYS = frozenset({"insecure", "credentials_directory"})

DASHBOARD_ADDRESS = "127.0.0.1:8787"
"""Where the scheduler's dashboard listens unless the profile's ``scheduler-options`` say:
the loopback interface of the machine that runs rankdist, reached through an SSH tunnel."""


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
    insecure
        The profile's ``insecure: true``: plain TCP instead of TLS.
    credentials_directory
        The profile's ``credentials-directory`` (absolute), under which each run's TLS
        credentials are made; None: ``~/.rankdist/credentials``.
    """

    system: BatchSystem
    options: Mapping[str, Any]
    path: Path | None
    insecure: bool = False
    credentials_directory: Path | None = None

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
        a string, and a worker ``--lifetime`` that ends before the walltime. The
        dashboard listens on :data:`DASHBOARD_ADDRESS` unless ``scheduler-options`` say.
        rankdist's own keys (``insecure``, ``credentials-directory``) are attributes.
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
        unknown = sorted(set(given) - set(defaults) - _EXTRA_KEYS - _RANKDIST_KEYS)
        if unknown:
            msg = (
                f"{profile}: unknown key(s) {unknown} in jobqueue.{system}; dask-jobqueue's "
                f"{batch.cluster_class} takes {sorted(set(defaults) | _EXTRA_KEYS)}, and "
                f"rankdist reads {sorted(k.replace('_', '-') for k in _RANKDIST_KEYS)}"
            )
            raise ValueError(msg)
    own = {key: given.pop(key) for key in _RANKDIST_KEYS & set(given)}
    options = {**defaults, **given}
    options["job_name"] = options.pop("name")
    if options.get("log_directory"):  # used at submission, here: make it absolute now
        log_dir = Path(os.path.expandvars(str(options["log_directory"]))).expanduser()
        options["log_directory"] = str(log_dir.resolve())
    scheduler_options = dict(options.get("scheduler_options") or {})
    scheduler_options.setdefault("dashboard_address", DASHBOARD_ADDRESS)
    options["scheduler_options"] = scheduler_options
    resolved = JobqueueProfile(
        batch, MappingProxyType(options), path, **_own_keys(own, path, system)
    )
    _check_options(resolved)
    return resolved


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


def dashboard_on_loopback(address) -> bool:
    """Whether a ``dashboard_address`` (``'127.0.0.1:8787'``, ``':8787'``, ``8787``) listens
    only on the loopback interface, which other machines cannot reach."""
    import ipaddress

    if isinstance(address, int) or not address:
        return False
    host = str(address).rpartition(":")[0].strip("[]") if ":" in str(address) else ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "" (every interface) or a host name
        return False


def _own_keys(own: Mapping[str, Any], path: Path | None, system: str) -> dict[str, Any]:
    """rankdist's keys of a profile section, checked, as JobqueueProfile's attributes."""
    insecure = own.get("insecure", False)
    if not isinstance(insecure, bool):
        msg = f"{path} (jobqueue.{system}): insecure is {insecure!r}; write true or false"
        raise ValueError(msg)
    directory = own.get("credentials_directory")
    if directory is not None:
        if not isinstance(directory, str) or not directory.strip():
            msg = (
                f"{path} (jobqueue.{system}): credentials-directory is {directory!r}; write "
                "a directory on a filesystem the compute nodes share, e.g. ~/.rankdist/credentials"
            )
            raise ValueError(msg)
        directory = Path(os.path.expandvars(directory)).expanduser().resolve()
    return {"insecure": insecure, "credentials_directory": directory}


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
