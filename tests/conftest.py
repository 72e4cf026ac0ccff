"""Shared fixtures: real Dask LocalClusters (process workers), made once per session."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from distributed import Client, LocalCluster


@pytest.fixture(scope="session")
def client():
    """Two single-threaded worker processes: a real cluster with real data movement."""
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as lc,
        Client(lc) as c,
    ):
        yield c


@pytest.fixture(scope="session")
def client_one():
    """One worker with one thread: the serial reference."""
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as lc,
        Client(lc) as c,
    ):
        yield c


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "needs(service): needs a system service (slurm, chromium); skipped where it is "
        "missing, but a failure when CI=true",
    )


_PROBES = {
    "slurm": lambda: (
        shutil.which("sbatch") is not None
        and subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    ),
    "chromium": lambda: shutil.which("chromium") is not None,
}


def pytest_runtest_setup(item):
    for mark in item.iter_markers(name="needs"):
        for service in mark.args:
            try:
                ok = _PROBES[service]()
            except (OSError, subprocess.SubprocessError):
                ok = False
            if ok:
                continue
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail(f"CI=true but the {service!r} service is not available", pytrace=False)
            pytest.skip(f"{service} not available on this machine")
