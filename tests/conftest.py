"""Shared fixtures: real Dask LocalClusters (process workers), made once per session.

Every test runs with ``XDG_CONFIG_HOME`` set to an empty temporary folder
(:func:`config_home`), so no test reads or writes a developer's own rankdist
configuration, such as the calibration ``rankdist plan`` reads first.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from distributed import Client, LocalCluster


@pytest.fixture(scope="session", autouse=True)
def config_home(tmp_path_factory):
    """An empty ``XDG_CONFIG_HOME`` for the whole session: the folder, as a Path.

    Set in this process's environment before any cluster starts, so that worker processes
    and ``rankdist`` commands run as subprocesses see it too: ``load_calibration()`` reads
    the packaged file, and ``rankdist plan --calibrate`` writes here. A test that writes
    its own calibration sets ``XDG_CONFIG_HOME`` itself (``monkeypatch.setenv``).
    """
    path = tmp_path_factory.mktemp("config-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(path))
        yield path


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
def inproc_client():
    """Workers as threads of this process (the embedded default): what a test patches,
    the tasks see, and a test function can pause a task deterministically."""
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
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
