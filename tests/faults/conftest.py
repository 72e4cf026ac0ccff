"""Fixtures of the fault tests: one small labelled dataset, its clean run, the CLI's cluster.

1,500 cells x 100 genes (faults/_checks.py): one chunk of X, one encode task, 3 row blocks
of 512 and 6 tiles, so every block is merged (checkpointed) before it is written.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from faults._checks import N_CELLS, N_GENES, NEIGHBORS_KW, wait_idle

import rankdist
import rankdist.api as api
from rankdist.datasets.toy import synthetic_counts


@pytest.fixture(scope="session")
def cells_h5ad(tmp_path_factory) -> Path:
    """The dataset as an .h5ad, for ``rankdist ingest``."""
    path = tmp_path_factory.mktemp("faults-source") / "cells.h5ad"
    synthetic_counts(n_cells=N_CELLS, n_genes=N_GENES, seed=3).write_h5ad(path)
    return path


@pytest.fixture(scope="session")
def clean_store(cells_h5ad, tmp_path_factory, inproc_client) -> rankdist.Store:
    """A store of ``cells_h5ad`` with the ``spearman`` run that no fault touched."""
    store = rankdist.ingest(
        cells_h5ad,
        tmp_path_factory.mktemp("faults-clean") / "s.zarr",
        cell_type="cell_type",
        progress=False,
    )
    rankdist.neighbors(store, "spearman", client=inproc_client, **NEIGHBORS_KW)
    return store


@pytest.fixture(scope="session")
def clean(clean_store) -> rankdist.NeighborResult:
    """The run that no fault touched: what every command after a fault must reproduce."""
    return rankdist.load(clean_store, "spearman")


@pytest.fixture
def fresh_store(cells_h5ad, tmp_path) -> rankdist.Store:
    """A store of ``cells_h5ad`` with no encoding and no run yet."""
    return rankdist.ingest(cells_h5ad, tmp_path / "s.zarr", cell_type="cell_type", progress=False)


@pytest.fixture
def cli_on(monkeypatch, inproc_client):
    """Make ``rankdist neighbors`` run on the in-process cluster instead of starting one.

    After the test, waits until that cluster runs no task of it (a failed run's tasks
    already running when it failed finish on their own), so no test sees another's.
    """
    monkeypatch.setattr(
        api, "cluster_client", lambda *a, **kw: contextlib.nullcontext(inproc_client)
    )
    yield inproc_client
    wait_idle(inproc_client)
