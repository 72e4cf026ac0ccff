"""Who can reach a batch-system run: its security mode, the dashboard, the SSH tunnel.

A run speaks TLS with per-run credentials unless it is ``insecure``
(:mod:`rankdist.cluster.credentials`), and its dashboard listens on the loopback interface
of the machine that runs rankdist, which a user reaches through an SSH tunnel. This module
says so: the warnings a run prints when it exposes more, the lines ``rankdist doctor``
prints (:func:`security_report`), the dashboard's URL and the tunnel command.
"""

from __future__ import annotations

import getpass
import os
import socket
from urllib.parse import urlsplit

from rankdist.cluster.credentials import credentials_root, describe_mode, filesystem_of
from rankdist.cluster.profile import SYSTEMS, BatchSystem, JobqueueProfile, dashboard_on_loopback

__all__ = [
    "dashboard_link",
    "default_login_host",
    "scheduler_machine",
    "security_report",
    "start_warnings",
    "tunnel_command",
]


def security_report(profile: JobqueueProfile, insecure: bool = False) -> list[str]:
    """Lines for ``rankdist doctor``: the security mode, the credentials, the dashboard.

    Parameters
    ----------
    profile
        From :func:`resolve_profile`; its ``insecure`` and ``credentials-directory`` count.
    insecure
        ``--insecure`` was given.

    Returns
    -------
    list[str]
        The mode (TLS or plain TCP), where each run's credentials directory is made, that
        directory's permissions, owner and filesystem, and where the dashboard listens.
    """
    dashboard = profile.options["scheduler_options"].get("dashboard_address")
    if dashboard_on_loopback(dashboard):
        dashboard_line = (
            f"dashboard binding: {dashboard}, the loopback interface of the machine that "
            "runs rankdist: reached through the SSH tunnel below"
        )
    else:
        dashboard_line = f"dashboard binding: WARNING: {_dashboard_warning(profile)}"
    if insecure or profile.insecure:
        return [
            f"security: NONE, plain tcp:// ({_insecure_source(profile, insecure)}): anyone "
            "who can reach the scheduler can connect, read your data and run code as you",
            "credentials: none",
            dashboard_line,
        ]
    root = credentials_root(profile.credentials_directory)
    lines = [
        "security: TLS (tls://) with per-run credentials: the scheduler, the workers and "
        "rankdist present this run's certificate; a connection without it is refused",
        f"credentials: a new directory per run under {root} (<host>-<pid>-<random>, 0700, "
        "cert.pem and key.pem 0600), removed when the run ends",
        f"  {root}: {describe_mode(root)}; {filesystem_of(root)}",
    ]
    if root.exists() and root.stat().st_mode & 0o022:
        lines.append(
            f"  WARNING: {root} is writable by others, who could remove a run's credentials; "
            "set credentials-directory: to a directory of your own"
        )
    return [*lines, dashboard_line]


def dashboard_link(cluster, profile: JobqueueProfile) -> str:
    """The dashboard's URL as seen on the scheduler's machine.

    dask-jobqueue's ``cluster.dashboard_link`` names the scheduler's address, where a
    dashboard bound to loopback does not listen; this names the loopback address then.
    """
    link = cluster.dashboard_link
    address = profile.options["scheduler_options"].get("dashboard_address")
    url = urlsplit(link)
    if not link or not dashboard_on_loopback(address) or url.port is None:
        return link
    host = str(address).rpartition(":")[0].strip("[]")
    host = "127.0.0.1" if host == "localhost" else host
    netloc = f"[{host}]:{url.port}" if ":" in host else f"{host}:{url.port}"
    return url._replace(netloc=netloc).geturl()


def tunnel_command(dashboard_link: str, login_host: str, scheduler_host: str | None = None) -> str:
    """``ssh -N -L`` command that brings a dashboard on a cluster machine to localhost.

    Parameters
    ----------
    dashboard_link
        The dashboard's URL on the scheduler's machine.
    login_host
        The machine the user SSHes into.
    scheduler_host
        The machine the scheduler runs on when that is not ``login_host`` (rankdist runs
        inside a batch job). A dashboard on that machine's loopback interface is then
        reached by jumping through ``login_host`` (``ssh -J``).
    """
    url = urlsplit(dashboard_link)
    port = url.port or 8787
    host = url.hostname or "localhost"
    user = getpass.getuser()
    forward = f"ssh -N -L {port}:{host}:{port}"
    if scheduler_host and scheduler_host != login_host and dashboard_on_loopback(f"{host}:0"):
        return f"{forward} -J {user}@{login_host} {user}@{scheduler_host}"
    return f"{forward} {user}@{login_host}"


def default_login_host(system: BatchSystem | None = None) -> str:
    """The submit host when running inside a batch job, else a placeholder to replace."""
    systems = [system] if system else list(SYSTEMS.values())
    for s in systems:
        if os.environ.get(s.submit_host_env):
            return os.environ[s.submit_host_env]
    return "<login-host>"


def scheduler_machine(system: BatchSystem) -> str | None:
    """This machine's name when rankdist runs inside a batch job (not on the login host)."""
    return socket.gethostname() if default_login_host(system) != "<login-host>" else None


def start_warnings(profile: JobqueueProfile, insecure: bool, address: str) -> list[str]:
    """One line per thing a run exposes that it need not: plain TCP, an open dashboard."""
    lines = []
    if insecure or profile.insecure:
        lines.append(
            f"rankdist: warning: insecure run ({_insecure_source(profile, insecure)}): the "
            f"Dask scheduler at {address} speaks plain TCP; anyone who can reach it (other "
            "users of the cluster network) can connect, read your data and run code as you"
        )
    if not dashboard_on_loopback(profile.options["scheduler_options"].get("dashboard_address")):
        lines.append(f"rankdist: warning: {_dashboard_warning(profile)}")
    return lines


def _insecure_source(profile: JobqueueProfile, insecure: bool) -> str:
    return "--insecure" if insecure else f"insecure: true in {profile.source}"


def _dashboard_warning(profile: JobqueueProfile) -> str:
    address = profile.options["scheduler_options"].get("dashboard_address")
    return (
        f"the dashboard listens on {address!r} ({profile.source}, scheduler-options "
        "dashboard_address), not only on loopback: anyone who can reach this machine can "
        "watch the run (plain HTTP); set it to '127.0.0.1:8787' and use the SSH tunnel"
    )
