"""Worker-side block reads: the raw chunk path equals zarr's own read."""

from __future__ import annotations

import numpy as np
import zarr

from rankdist.tiles.blocks import _raw_layout, read_z_rows


def _z_group(path, z, **kw):
    group = zarr.open_group(path, mode="w")
    arr = group.create_array("Z", shape=z.shape, dtype="float32", chunks=(512, z.shape[1]), **kw)
    arr[:] = z
    return group


def test_raw_read_equals_zarr_including_unwritten_and_edge_chunks(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((1700, 37)).astype(np.float32)
    z[512:1024] = 0.0  # an all-zero chunk: zarr does not write it (the fill value)
    _z_group(tmp_path / "enc", z, compressors=None)
    path = str(tmp_path / "enc")
    assert _raw_layout(path) == (512, 1700, 37)
    assert not (tmp_path / "enc" / "Z" / "c" / "1" / "0").exists()
    for start, stop in [(0, 1700), (0, 512), (512, 1024), (1024, 1700), (1536, 1700), (0, 1100)]:
        got = read_z_rows(path, start, stop)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        assert np.array_equal(got, z[start:stop]), (start, stop)


def test_other_layouts_fall_back_to_zarr(tmp_path):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((700, 11)).astype(np.float32)
    _z_group(tmp_path / "enc", z)  # default compressor: not raw
    path = str(tmp_path / "enc")
    assert _raw_layout(path) is None
    assert np.array_equal(read_z_rows(path, 512, 700), z[512:])
