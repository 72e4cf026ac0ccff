"""Checkpoint files: round trip, and the scan keeps maximal disjoint files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from rankdist.reduce.checkpoint import load_partial, mark_written, save_partial, scan
from rankdist.reduce.partial import Partial, merge_partials


def _part(tiles, seed, hist=True):
    rng = np.random.default_rng(seed)
    p = Partial.empty(2, 5, 3, 2, 4, tiles=tiles)
    p.top_sim[:] = np.sort(rng.random((5, 3)).astype(np.float32), axis=1)[:, ::-1]
    p.top_idx[:] = rng.integers(0, 100, (5, 3))
    p.counts[:] = rng.integers(0, 9, p.counts.shape)
    p.pair_hist = rng.integers(0, 5, (3, 3, 400)) if hist else None
    return p


def test_round_trip_keeps_everything(tmp_path):
    p = _part([(0, 2, "col"), (2, 2, "row"), (2, 2, "col")], 1)
    path = save_partial(tmp_path, p)
    q = load_partial(path, 2)
    assert q.tiles == p.tiles and q.checkpoint == path
    for name in ("top_sim", "top_idx", "counts", "pair_hist"):
        assert np.array_equal(getattr(q, name), getattr(p, name)), name
    assert (
        load_partial(save_partial(tmp_path, _part([(1, 2, "col")], 2, hist=False)), 2).pair_hist
        is None
    )


def test_scan_keeps_maximal_files_and_written_blocks(tmp_path):
    a = _part([(0, 2, "col")], 1)
    b = _part([(1, 2, "col")], 2)
    ab = merge_partials(a, b)
    assert np.array_equal(ab.pair_hist, a.pair_hist + b.pair_hist)
    for part in (a, b, ab):  # as if killed after the merge wrote but before it deleted
        save_partial(tmp_path, part)
    (tmp_path / ".b2-0123456789ab.npz.tmp").write_bytes(b"half written")
    save_partial(
        tmp_path, _part([(0, 3, "col")], 3).__class__.empty(3, 5, 3, 2, 4, tiles=[(0, 3, "col")])
    )
    mark_written(tmp_path, 3)
    state = scan(tmp_path)
    assert state.written == {3}
    assert [tiles for _, tiles in state.files[2]] == [ab.tiles]
    assert 3 not in state.files and not list(tmp_path.glob("b3-*.npz"))


def test_a_failed_save_leaves_no_file_and_a_saved_one_is_synced(tmp_path, monkeypatch):
    """A merge that dies while writing its checkpoint leaves nothing in the directory."""
    real_savez, real_fsync = np.savez, os.fsync

    def half_then_fail(fh, **arrays):
        fh.write(b"PK half a zip")
        raise OSError("disk full while writing a checkpoint")

    monkeypatch.setattr(np, "savez", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_partial(tmp_path, _part([(0, 2, "col")], 1))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(np, "savez", real_savez)
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    path = save_partial(tmp_path, _part([(0, 2, "col")], 1))
    assert len(synced) == 1 and [p.name for p in tmp_path.iterdir()] == [os.path.basename(path)]
