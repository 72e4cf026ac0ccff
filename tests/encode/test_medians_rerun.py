"""A failed gene-median pass, rerun on the same client, computes again.

Dask hands a key's stored result, or its stored error, to whoever submits that key
again, so the pass's task keys must be new on every call.
"""

from __future__ import annotations

import numpy as np
import pytest
from distributed import Client, LocalCluster

import rankdist
import rankdist.encode.medians as medians

from _data import counts_adata


@pytest.fixture
def own_client():
    """An in-process cluster of this test's own: the failed pass leaves nothing on the
    session's clients."""
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def test_a_failed_median_pass_reruns_on_the_same_client(tmp_path, own_client, monkeypatch):
    inproc_client = own_client
    store = rankdist.ingest(counts_adata(300, 20, seed=3), tmp_path / "m.zarr", progress=False)
    real = medians._median_map

    def failing(*args, **kwargs):
        raise OSError("disk gone for a moment")

    monkeypatch.setattr(medians, "_median_map", failing)
    with pytest.raises(OSError, match="disk gone"):
        medians.gene_nonzero_medians(store, inproc_client, progress=False)
    monkeypatch.setattr(medians, "_median_map", real)
    got = medians.gene_nonzero_medians(store, inproc_client, progress=False)
    x = np.asarray(store.root["X"][:], dtype=np.float64)
    assert got.shape == (store.n_genes,) and np.isfinite(got).any()
    totals = np.asarray(store.root["obs/total_counts"][:], dtype=np.float64)
    cp = x / totals.clip(min=1)[:, None] * medians.MEDIAN_TARGET_SUM
    for g in range(store.n_genes):
        nz = cp[:, g][cp[:, g] > 0]
        if len(nz):
            assert got[g] == pytest.approx(np.median(nz), rel=1e-12)
