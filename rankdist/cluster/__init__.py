"""Where the work runs: a LocalCluster, a running scheduler, or a batch system.

One module per kind of cluster: the embedded LocalCluster (``local.py``), a running
scheduler joined by address (``address.py``), and SLURM, PBS, SGE and LSF jobs submitted
through dask-jobqueue (``jobqueue.py``), configured by a profile that ``profile.py`` reads.
``client.py`` picks the kind from ``--cluster``.

The public names are imported on first use (PEP 562): the command line reads the batch
systems' names from ``profile.py`` without loading distributed.
"""

from importlib import import_module

#: Public name -> module that defines it.
_EXPORTS = {
    "cluster_client": "rankdist.cluster.client",
    "describe_client": "rankdist.cluster.describe",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        msg = f"module 'rankdist.cluster' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
