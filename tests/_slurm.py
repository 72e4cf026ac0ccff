"""Profiles for the one-node test SLURM (.ci/start-slurm.sh), shared by the cluster tests."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def write_profile(path: Path, system: str, section: dict) -> Path:
    """Write a dask-jobqueue profile with one ``system`` section."""
    path.write_text(yaml.safe_dump({"jobqueue": {system: section}}))
    return path


def slurm_profile(tmp_path: Path, name: str, **extra) -> Path:
    """Small jobs on the one-node test SLURM, workers over loopback; TLS credentials,
    scratch and logs under ``tmp_path``, never in the home directory."""
    section = {
        "name": name,
        "cores": 1,
        "memory": "2GB",
        "processes": 1,
        "interface": "lo",
        "walltime": "00:10:00",
        "local-directory": str(tmp_path / "scratch"),
        "log-directory": str(tmp_path / "logs"),
        "python": sys.executable,
        "scheduler-options": {"dashboard_address": "127.0.0.1:0"},
        "credentials-directory": str(tmp_path / "creds"),
    } | extra
    return write_profile(tmp_path / f"{name}.yaml", "slurm", section)
