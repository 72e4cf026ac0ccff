"""Where the work runs: a LocalCluster, a running scheduler, or a batch system.

The embedded LocalCluster is the default (``local.py``). SLURM, PBS, SGE and LSF jobs are
submitted through dask-jobqueue (``jobqueue.py``), configured by a profile that
``profile.py`` reads.
"""

from rankdist.cluster.client import cluster_client, describe_client

__all__ = ["cluster_client", "describe_client"]
