"""A cluster that is already running: join its scheduler by address."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from distributed import Client

from rankdist.cluster.describe import describe_client

__all__ = ["scheduler_client"]


@contextlib.contextmanager
def scheduler_client(address: str, *, quiet: bool = False) -> Iterator[Client]:
    """A client of the Dask scheduler at ``address``; the cluster keeps running after.

    Parameters
    ----------
    address
        The scheduler's address, e.g. ``tcp://host:8786``.
    quiet
        Do not print the workers and the dashboard link.

    Yields
    ------
    distributed.Client
        Connected to the scheduler, with the workers it has.
    """
    try:
        client = Client(address, timeout="30s")
    except OSError as err:
        msg = f"could not reach the Dask scheduler at {address} ({err}); is it running?"
        raise ConnectionError(msg) from err
    with client:
        if not quiet:
            print(describe_client(client), file=sys.stderr, flush=True)
        yield client
