"""Planning tests never see the developer's own calibration file."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _own_config_home(tmp_path, monkeypatch):
    """An empty ``XDG_CONFIG_HOME``: ``load_calibration()`` reads the packaged file."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
