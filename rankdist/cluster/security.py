"""Who may connect to a cluster: Dask TLS settings read from a file, and what is exposed.

A Dask scheduler runs whatever a connected client submits, as the user who started it.
Clusters rankdist starts speak TLS with per-run credentials (``local.py``; the batch
systems in ``jobqueue.py``). A running scheduler is joined by address (``address.py``):
``tls://`` with credentials from a ``--security`` file (:func:`security_from_file`) or
from Dask's configuration, or plain ``tcp://``, which warns when the address is not on
the loopback interface (:func:`is_loopback`). :func:`security_lines` is what
``rankdist doctor`` prints about a client's connection.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from collections.abc import Mapping
from pathlib import Path

import dask.config
import yaml
from distributed.comm.addressing import get_address_host
from distributed.security import Security

__all__ = [
    "SECURITY_FILE_EXAMPLE",
    "InsecureClusterWarning",
    "is_loopback",
    "security_from_file",
    "security_lines",
]

#: The layout of a ``--security`` file: Dask's own configuration keys.
SECURITY_FILE_EXAMPLE = (
    "distributed: {comm: {tls: {ca-file: ca.pem, client: {cert: client.pem, key: client.key}}}}"
)

#: The file-valued keys of ``distributed.comm.tls`` a client uses, and Security's names.
_TLS_FILES = {
    "ca-file": "tls_ca_file",
    "client.cert": "tls_client_cert",
    "client.key": "tls_client_key",
}
_REQUIRED = ("ca-file", "client.cert")  # the key may be in the certificate's file


class InsecureClusterWarning(UserWarning):
    """A cluster runs, or is joined, in plain TCP: others who reach it can run code as you."""


def security_from_file(path: str | os.PathLike) -> Security:
    """A Dask ``Security`` for joining a ``tls://`` scheduler, from a YAML file.

    The file holds Dask's own configuration keys (as in ``~/.config/dask/``)::

        distributed:
          comm:
            tls:
              ca-file: ca.pem        # the CA that signed the scheduler's certificate
              client:
                cert: client.pem     # this client's certificate, signed by that CA
                key: client.key      # its private key (omit if it is in client.pem)

    Relative paths are read from the file's folder. Other ``distributed.comm.tls``
    settings (``ciphers``, ``min-version``) come from the file where it has them, else
    from Dask's configuration.

    Parameters
    ----------
    path
        The YAML file.

    Returns
    -------
    distributed.security.Security
        With ``require_encryption=True`` and the client's files.

    Raises
    ------
    FileNotFoundError
        The file, or a file it names, does not exist.
    ValueError
        The file is not YAML, or lacks ``ca-file`` or ``client: cert:``.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        msg = f"--security file {path} does not exist; it holds {SECURITY_FILE_EXAMPLE}"
        raise FileNotFoundError(msg) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where else ""
        msg = f"--security file {path} is not YAML{line}: {getattr(err, 'problem', err)}"
        raise ValueError(msg) from None
    tls = _get(doc, "distributed.comm.tls")
    if not isinstance(tls, Mapping):
        msg = (
            f"--security file {path} has no distributed: comm: tls: section; "
            f"write {SECURITY_FILE_EXAMPLE}"
        )
        raise ValueError(msg)
    for key in _REQUIRED:
        if _get(tls, key) is None:
            msg = (
                f"--security file {path} has no distributed.comm.tls.{key}; "
                f"write {SECURITY_FILE_EXAMPLE}"
            )
            raise ValueError(msg)
    settings = {f"distributed.comm.tls.{key}": value for key, value in _flatten(tls)}
    for key in _TLS_FILES:
        value = _get(tls, key)
        if value is None:
            continue
        named = path.parent / Path(str(value)).expanduser()
        if not named.is_file():
            msg = (
                f"--security file {path}: distributed.comm.tls.{key} names {named}, "
                "which is not a file"
            )
            raise FileNotFoundError(msg)
        settings[f"distributed.comm.tls.{key}"] = str(named.resolve())
    try:
        with dask.config.set(settings):
            return Security(require_encryption=True)
    except ValueError as err:  # e.g. min-version: 1.1
        msg = f"--security file {path}: {err}"
        raise ValueError(msg) from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an IP address) is this machine's loopback interface.

    A name is resolved; one that does not resolve counts as not loopback.
    """
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def security_lines(address: str, security: Security, source: str | None = None) -> list[str]:
    """``rankdist doctor``'s lines on how a client reaches its scheduler, and who else can.

    Parameters
    ----------
    address
        The scheduler's address (``tls://`` or ``tcp://``).
    security
        The client's ``distributed.security.Security``.
    source
        Where its credentials come from (a ``--security`` file); None: in memory when
        they are, else Dask's configuration.

    Returns
    -------
    list[str]
        The mode, where the credentials live and the permissions of their files.
    """
    if not address.startswith("tls://"):
        who = (
            "any user of that machine"
            if is_loopback(get_address_host(address))
            else "anyone who reaches that port"
        )
        return [
            f"security: NONE: plain TCP to {address}, no credentials; {who} can connect "
            "and run code as the scheduler's user"
        ]
    files = {key: getattr(security, attr) for key, attr in _TLS_FILES.items()}
    if "\n" in (files["ca-file"] or ""):
        return [
            f"security: TLS ({address}): scheduler, workers and client hold per-run "
            "credentials in memory: no other process can connect",
            "  (distributed writes the key only while it loads it, into a temporary folder "
            "only you can read)",
        ]
    lines = [f"security: TLS ({address}); credentials from {source or 'Dask configuration'}:"]
    for key, name in files.items():
        if name:
            lines.append(f"  {key}: {name} ({_mode(name)})")
    key_file = files["client.key"] or files["client.cert"]
    if key_file and _readable_by_others(key_file):
        lines.append(f"  WARNING: other users can read the key in {key_file}: chmod 600 it")
    return lines


def _get(mapping, dotted: str):
    """``mapping['a']['b']`` for ``'a.b'``; None where a level is missing."""
    for part in dotted.split("."):
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(part)
    return mapping


def _flatten(mapping: Mapping, prefix: str = ""):
    """``(dotted key, value)`` of every leaf."""
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _mode(path: str) -> str:
    try:
        return f"mode {stat.S_IMODE(os.stat(path).st_mode):04o}"
    except OSError as err:
        return f"unreadable: {err.strerror}"


def _readable_by_others(path: str) -> bool:
    try:
        return bool(os.stat(path).st_mode & (stat.S_IRGRP | stat.S_IROTH))
    except OSError:
        return False
