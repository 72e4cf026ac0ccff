"""Per-run TLS credentials: made for one run, readable only by the user, removed after it.

A Dask scheduler runs whatever a connected client submits, as the user who started it.
A batch-system run therefore speaks TLS with mutual authentication: the scheduler, the
workers and rankdist's client each present a certificate of this run, and a connection
without one is refused. :func:`run_credentials` makes a self-signed key and certificate
(what ``distributed.security.Security.temporary()`` makes) and writes them into a fresh
directory, mode 0700 with files 0600, on a filesystem the worker jobs share (default
:data:`DEFAULT_ROOT`), because a worker job reads them when it starts. The directory is
named ``<host>-<pid>-<random>`` and removed when the run ends; one left behind by a run
whose process is gone from this host (a crash, a ``kill -9``) is removed at the next start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from distributed.security import Security

__all__ = [
    "DEFAULT_ROOT",
    "RunCredentials",
    "credentials_root",
    "describe_mode",
    "filesystem_of",
    "remove_stale",
    "run_credentials",
]

DEFAULT_ROOT = "~/.rankdist/credentials"
"""Where each run's credentials directory is made unless a profile says otherwise: the home
directory is on the filesystem that the compute nodes of an HPC system share."""

CERT_FILE = "cert.pem"  # the certificate, also the CA every party checks the others against
KEY_FILE = "key.pem"


@dataclass(frozen=True)
class RunCredentials:
    """One run's credentials.

    Attributes
    ----------
    directory
        The run's directory (mode 0700), holding ``cert.pem`` and ``key.pem`` (0600).
    security
        For the scheduler, the workers and the client: the files by path, so that a worker
        job's command line names them (dask-jobqueue passes ``--tls-cert`` and so on).
    """

    directory: Path
    security: Security


def credentials_root(configured: str | os.PathLike | None = None) -> Path:
    """The directory under which each run's credentials directory is made, absolute."""
    root = os.path.expandvars(str(configured if configured is not None else DEFAULT_ROOT))
    return Path(root).expanduser().absolute()


@contextlib.contextmanager
def run_credentials(root: str | os.PathLike | None = None) -> Iterator[RunCredentials]:
    """Make this run's credentials under ``root``; remove them when the block is left.

    Parameters
    ----------
    root
        Directory under which the run's own directory is made (created if missing); None:
        :data:`DEFAULT_ROOT`. It must be on a filesystem the worker jobs can read.

    Yields
    ------
    RunCredentials
        The directory and the ``Security`` that names its files. The directory is removed
        when the block ends, by an error or an interrupt too.
    """
    root = credentials_root(root)
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        remove_stale(root)
        directory = Path(
            tempfile.mkdtemp(prefix=f"{socket.gethostname()}-{os.getpid()}-", dir=root)
        )
    except OSError as err:
        msg = (
            f"cannot make the run's TLS credentials directory under {root} ({err}); set "
            "credentials-directory: in the profile to a directory of yours on a filesystem "
            "the compute nodes share"
        )
        raise OSError(msg) from err
    try:
        key_pem, cert_pem = _self_signed_pair()
        cert, key = directory / CERT_FILE, directory / KEY_FILE
        _write_private(cert, cert_pem)
        _write_private(key, key_pem)
        paths = {"tls_ca_file": str(cert)}
        for role in ("client", "scheduler", "worker"):
            paths |= {f"tls_{role}_cert": str(cert), f"tls_{role}_key": str(key)}
        yield RunCredentials(directory, Security(require_encryption=True, **paths))
    finally:
        _remove(directory)


def remove_stale(root: Path) -> list[Path]:
    """Remove the credentials directories under ``root`` of runs on this host that are gone.

    A directory counts as stale when it is the user's own, is named for this host, and no
    process with its pid is running, or the one running started after the directory was
    made (the pid was reused). Directories of other hosts are left alone: whether their run
    is alive cannot be told from here.

    Returns
    -------
    list[pathlib.Path]
        The directories removed.
    """
    import psutil

    host, removed = socket.gethostname(), []
    for entry in os.scandir(root):
        parts = entry.name.rsplit("-", 2)  # host names may hold "-"; pids and mkdtemp's suffix not
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        info = entry.stat(follow_symlinks=False)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        try:
            alive = psutil.Process(int(parts[1])).create_time() <= info.st_mtime + 1.0
        except psutil.NoSuchProcess:
            alive = False
        except psutil.AccessDenied:
            alive = True
        if not alive:
            _remove(Path(entry.path))
            removed.append(Path(entry.path))
    return removed


def describe_mode(path: Path) -> str:
    """``drwx------ (0700), owner alice`` for ``path``, or that it does not exist yet."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return "does not exist yet"
    try:
        import pwd

        owner = pwd.getpwuid(info.st_uid).pw_name
    except (ImportError, KeyError):
        owner = str(info.st_uid)
    return f"{stat.filemode(info.st_mode)} ({stat.S_IMODE(info.st_mode):04o}), owner {owner}"


def filesystem_of(path: Path) -> str:
    """``filesystem nfs4 mounted at /home`` for the mount ``path`` (or its nearest existing
    parent) is on: a user checks that the compute nodes mount it too."""
    import psutil

    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    real = os.path.realpath(path)
    mounts = [p for p in psutil.disk_partitions(all=True) if _under(real, p.mountpoint)]
    if not mounts:
        return "filesystem unknown"
    mount = max(mounts, key=lambda p: len(p.mountpoint))
    return f"filesystem {mount.fstype} mounted at {mount.mountpoint}"


def _under(path: str, mountpoint: str) -> bool:
    return path == mountpoint or path.startswith(mountpoint.rstrip("/") + "/")


def _self_signed_pair() -> tuple[str, str]:
    """A fresh private key and self-signed certificate, PEM text: ``(key, cert)``.

    Made by ``Security.temporary()`` (the ``cryptography`` package, a dependency of
    rankdist); Dask checks the certificate against itself as the CA, not the host name.
    """
    temporary = Security.temporary()
    return temporary.tls_client_key, temporary.tls_client_cert


def _write_private(path: Path, text: str) -> None:
    """Write a new file that only the user can read (0600 whatever the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def _remove(directory: Path) -> None:
    """Remove a credentials directory; say so if it cannot be, rather than fail the run."""
    try:
        shutil.rmtree(directory)
    except FileNotFoundError:
        pass
    except OSError as err:
        print(
            f"rankdist: warning: could not remove the TLS credentials in {directory} ({err}); "
            "delete that directory",
            file=sys.stderr,
            flush=True,
        )
