"""Where calibrations are written and read, and what a calibration pass starts from."""

from __future__ import annotations

import numpy as np

from rankdist.reduce.partial import EMPTY
from rankdist.tiles.blocks import forget_floors, raise_floors, row_floors


def test_forget_floors_drops_what_the_worker_learnt():
    # each calibration pass times its tiles from no floors, as a fresh run would
    top_sim = np.full((2, 3), 0.5, dtype=np.float32)
    top_idx = np.zeros((2, 3), dtype=np.int64)
    raise_floors("forget-floors-z", 3, 4, 1, top_sim, top_idx, EMPTY)
    assert row_floors("forget-floors-z", 3, 4, 0, 4).tolist() == [-np.inf, 0.5, 0.5, -np.inf]
    forget_floors()
    assert np.isneginf(row_floors("forget-floors-z", 3, 4, 0, 4)).all()
