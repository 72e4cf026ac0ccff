"""The parameters every cluster-starting function takes, documented once.

:func:`rankdist.cluster.client.cluster_client` takes ``cluster``, ``workers``, ``jobs``,
``profile``, ``insecure`` and ``security``, and every function that passes them on
(:func:`rankdist.neighbors`, :func:`rankdist.datasets.atlas.synth_atlas`,
``doctor_report``) can document them from the same text. It lives here once; a
docstring names it by a placeholder on a line of its own, which :func:`doc_params`
replaces at the placeholder's indentation (as dask-jobqueue's
``%(JobQueueCluster.parameters)s``)::

    @doc_params(**CLUSTER_PARAMS)
    def run(store, *, cluster="local", workers=None):
        '''Run on a cluster.

        Parameters
        ----------
        store
            The store.
        %(cluster)s
        %(workers)s
        '''

``%(cluster_params)s`` stands for those four, in that order; ``%(insecure)s`` and
``%(security)s`` document who may connect to the cluster.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from typing import TypeVar

from rankdist.cluster.profile import SYSTEMS

__all__ = ["CLUSTER_PARAMS", "doc_params"]

_SYSTEM_NAMES = ", ".join(f"``'{name}'``" for name in SYSTEMS)

CLUSTER = f"""\
cluster
    Where the work runs: ``'local'`` starts a LocalCluster on this machine; a
    scheduler address (``tls://host:8786``, or plain ``tcp://``) joins the cluster
    already running there; a batch system runs the workers in jobs submitted through
    dask-jobqueue, cancelled when the work ends. Batch systems: {_SYSTEM_NAMES}."""

WORKERS = """\
workers
    ``cluster='local'`` only: how many Dask workers. 1 (the default) runs one worker
    as threads inside the calling process, using every core and one block cache, so a
    plain script needs no main guard; N > 1 starts N worker processes (then a script
    needs ``if __name__ == "__main__":``)."""

JOBS = """\
jobs
    Batch systems only: jobs to keep running (default 1), one node each in the
    ``deploy/`` profiles, each running the workers its profile describes. A job whose
    worker retires at its ``--lifetime`` is replaced by a new one."""

PROFILE = """\
profile
    Batch systems only: a dask-jobqueue YAML profile with a ``jobqueue: <system>:``
    section (see ``deploy/``). None: dask-jobqueue's own configuration."""

INSECURE = """\
insecure
    Clusters rankdist starts (``'local'``, batch systems) only: plain TCP without
    credentials instead of TLS with credentials made for the run. Whoever reaches a
    port of the cluster (for ``'local'``, any user of this machine) can then run code
    as you. Warns."""

SECURITY = """\
security
    Scheduler addresses only: a YAML file with Dask's TLS settings for joining a
    ``tls://`` scheduler (``distributed: comm: tls:`` with ``ca-file`` and ``client:
    cert:``, ``key:``), or a ``distributed.security.Security``. None: Dask's own
    configuration."""

#: Placeholder name -> numpydoc text of that parameter (unindented).
CLUSTER_PARAMS: dict[str, str] = {
    "cluster": CLUSTER,
    "workers": WORKERS,
    "jobs": JOBS,
    "profile": PROFILE,
    "insecure": INSECURE,
    "security": SECURITY,
    "cluster_params": "\n".join((CLUSTER, WORKERS, JOBS, PROFILE)),
}

_PLACEHOLDER = re.compile(r"(?P<indent>[ \t]*)%\((?P<name>\w+)\)s[ \t]*")

F = TypeVar("F", bound=Callable)


def doc_params(**texts: str) -> Callable[[F], F]:
    """Decorator replacing each ``%(name)s`` line of a docstring with ``texts[name]``.

    Parameters
    ----------
    **texts
        Placeholder name -> unindented text; it is indented as the placeholder was.
        Only whole-line placeholders are replaced, so a ``%`` elsewhere stays as it is.

    Returns
    -------
    Callable
        The decorator; it returns the object it was given, with its docstring filled in.
    """

    def fill(obj: F) -> F:
        lines = []
        for line in (obj.__doc__ or "").split("\n"):
            match = _PLACEHOLDER.fullmatch(line)
            if match is None:
                lines.append(line)
                continue
            name = match["name"]
            if name not in texts:
                msg = (
                    f"{obj.__qualname__}'s docstring names %({name})s, which doc_params "
                    f"was not given; it has {sorted(texts)}"
                )
                raise KeyError(msg)
            lines.append(textwrap.indent(texts[name], match["indent"]))
        obj.__doc__ = "\n".join(lines)
        return obj

    return fill
