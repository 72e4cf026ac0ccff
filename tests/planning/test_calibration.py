"""Where calibrations are written and read, and what a calibration pass starts from."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from rankdist.planning import calibrate as calibrate_module
from rankdist.planning.calibration import (
    load_calibration,
    packaged_calibration_path,
    user_calibration_path,
)
from rankdist.reduce.partial import EMPTY
from rankdist.tiles.blocks import forget_floors, raise_floors, row_floors


def test_user_file_is_under_xdg_config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert user_calibration_path() == tmp_path / "xdg" / "rankdist" / "calibration.json"


@pytest.mark.parametrize("xdg", [None, "", "relative/config"])
def test_user_file_falls_back_to_dot_config(tmp_path, monkeypatch, xdg):
    # unset, empty or relative XDG_CONFIG_HOME: the XDG default, ~/.config
    monkeypatch.setenv("HOME", str(tmp_path))
    if xdg is None:
        monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CONFIG_HOME", xdg)
    assert user_calibration_path() == tmp_path / ".config" / "rankdist" / "calibration.json"


def test_loading_prefers_the_user_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    packaged = load_calibration(packaged_calibration_path())
    assert load_calibration() == packaged  # no user file yet
    mine = dataclasses.replace(packaged, gemm_gflops_per_core=1.5, measured={"host": "mine"})
    mine.save(tmp_path / "rankdist" / "calibration.json")
    assert load_calibration() == mine
    assert load_calibration(packaged_calibration_path()) == packaged  # an explicit path wins


def test_calibrate_writes_the_user_file_never_the_packaged_one(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    packaged = packaged_calibration_path()
    before = (packaged.read_bytes(), packaged.stat().st_mtime_ns)
    measured = dataclasses.replace(
        load_calibration(packaged), fused_ns_per_pair=99.0, measured={"host": "here"}
    )
    monkeypatch.setattr(calibrate_module, "measure", lambda **workload: measured)
    lines: list[str] = []
    assert calibrate_module.calibrate(log=lines.append) == measured
    user = tmp_path / "xdg" / "rankdist" / "calibration.json"
    assert lines == [f"wrote {user}"]
    assert load_calibration(user) == measured and load_calibration() == measured
    assert (packaged.read_bytes(), packaged.stat().st_mtime_ns) == before
    # an explicit path is written instead
    elsewhere = calibrate_module.calibrate(tmp_path / "node.json", log=lines.append)
    assert load_calibration(tmp_path / "node.json") == elsewhere
    assert Path(lines[-1].removeprefix("wrote ")) == tmp_path / "node.json"


def test_forget_floors_drops_what_the_worker_learnt():
    # each calibration pass times its tiles from no floors, as a fresh run would
    top_sim = np.full((2, 3), 0.5, dtype=np.float32)
    top_idx = np.zeros((2, 3), dtype=np.int64)
    raise_floors("forget-floors-z", 3, 4, 1, top_sim, top_idx, EMPTY)
    assert row_floors("forget-floors-z", 3, 4, 0, 4).tolist() == [-np.inf, 0.5, 0.5, -np.inf]
    forget_floors()
    assert np.isneginf(row_floors("forget-floors-z", 3, 4, 0, 4)).all()
