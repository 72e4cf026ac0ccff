"""A cluster that is already running: join its scheduler by address."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator

import dask.config
from distributed import Client
from distributed.comm.addressing import get_address_host
from distributed.security import Security

from rankdist.cluster.describe import describe_client
from rankdist.cluster.security import (
    SECURITY_FILE_EXAMPLE,
    InsecureClusterWarning,
    is_loopback,
    security_from_file,
)

__all__ = ["join_security", "scheduler_client"]


@contextlib.contextmanager
def scheduler_client(
    address: str,
    *,
    security: str | os.PathLike | Security | None = None,
    quiet: bool = False,
) -> Iterator[Client]:
    """A client of the Dask scheduler at ``address``; the cluster keeps running after.

    Parameters
    ----------
    address
        The scheduler's address: ``tls://host:8786``, or ``tcp://host:8786`` (plain TCP,
        which warns unless ``host`` is this machine's loopback interface).
    security
        ``tls://`` only: a YAML file with Dask's TLS settings (see
        :func:`rankdist.cluster.security.security_from_file`) or a ``Security``; None:
        Dask's configuration (``distributed.comm.tls``).
    quiet
        Do not print the workers and the dashboard link.

    Yields
    ------
    distributed.Client
        Connected to the scheduler, with the workers it has.
    """
    resolved = join_security(address, security)
    try:
        client = Client(address, timeout="30s", security=resolved)
    except OSError as err:
        msg = f"could not reach the Dask scheduler at {address} ({err}); is it running?"
        if address.startswith("tls://"):
            msg += " For tls://, check that the --security credentials are the scheduler's"
        raise ConnectionError(msg) from err
    with client:
        if not quiet:
            print(describe_client(client), file=sys.stderr, flush=True)
        yield client


def join_security(address: str, security: str | os.PathLike | Security | None = None):
    """The ``Security`` to join ``address`` with, checked before anything connects.

    Parameters
    ----------
    address
        ``tls://host:port`` or ``tcp://host:port``.
    security
        As for :func:`scheduler_client`.

    Returns
    -------
    distributed.security.Security or None
        None: Dask's configuration applies (for ``tcp://``, or ``tls://`` set up there).

    Raises
    ------
    ValueError
        ``security`` for a ``tcp://`` address, or ``tls://`` without credentials.

    Warns
    -----
    InsecureClusterWarning
        For ``tcp://`` to a host other than this machine's loopback interface.
    """
    scheme, _, rest = address.partition("://")
    try:
        host = get_address_host(address)
    except ValueError as err:  # no port, or a scheme distributed does not know
        msg = f"--cluster {address}: {err}; use tls://HOST:PORT or tcp://HOST:PORT"
        raise ValueError(msg) from None
    if scheme == "tls":
        if isinstance(security, Security):
            return security
        if security is not None:
            return security_from_file(security)
        configured = dask.config.get("distributed.comm.tls.ca-file", None) or dask.config.get(
            "distributed.client.security-loader", None
        )
        if not configured:
            msg = (
                f"--cluster {address} needs TLS credentials: pass --security FILE, a YAML "
                f"file holding {SECURITY_FILE_EXAMPLE}, or set distributed.comm.tls in "
                "Dask's configuration"
            )
            raise ValueError(msg)
        return None
    if security is not None:
        msg = (
            f"--security applies to tls:// addresses; {address} is {scheme or 'plain'}; "
            f"join a TLS scheduler as --cluster tls://{rest or 'HOST:PORT'} --security FILE"
        )
        raise ValueError(msg)
    if scheme == "tcp" and not is_loopback(host):
        warnings.warn(
            f"{address} is plain TCP over the network: anyone who reaches that port can run "
            "code as the scheduler's user and read the data in transit; start the scheduler "
            "with TLS and join it as --cluster tls://HOST:PORT --security FILE",
            InsecureClusterWarning,
            stacklevel=2,
        )
    return None
