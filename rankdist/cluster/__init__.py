"""Where the work runs: a LocalCluster, a running scheduler, or a batch system.

One module per kind of cluster: the embedded LocalCluster (``local.py``), a running
scheduler joined by address (``address.py``), and SLURM, PBS, SGE and LSF jobs submitted
through dask-jobqueue (``jobqueue.py``), configured by a profile that ``profile.py`` reads.
``client.py`` picks the kind from ``--cluster``.

The public names are imported on first use (PEP 562): the command line reads the batch
systems' names from ``profile.py`` without loading distributed.
"""

from rankdist._lazy import lazy_exports

#: Public name -> module that defines it.
_EXPORTS = {
    "cluster_client": "rankdist.cluster.client",
    "describe_client": "rankdist.cluster.describe",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
