"""Where the work runs: a LocalCluster (the embedded default) or a running scheduler."""

from rankdist.cluster.local import cluster_client, describe_client

__all__ = ["cluster_client", "describe_client"]
