"""A tile job says how its encoding is stored; workers read blocks in that form."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from rankdist.encode.sparse import SPARSE_DIR, SparseRows, sparse_standardised_ranks, write_chunks
from rankdist.tiles import blocks
from rankdist.tiles.grid import TilePlan
from rankdist.tiles.scheduler import TileJob

from _data import zero_heavy_counts


def _encoding(path, x):
    """An encoding folder holding both forms of x's ranks: Z and the sparse chunks."""
    indptr, indices, data, c, valid = sparse_standardised_ranks(x)
    group = zarr.open_group(path, mode="w")
    group.create_array("valid", shape=valid.shape, dtype="bool", chunks=(512,))
    group["valid"][:] = valid
    dense = SparseRows(indptr, indices, data, c, x.shape[1]).to_dense().astype(np.float32)
    group.create_array("Z", shape=dense.shape, dtype="float32", chunks=(512, x.shape[1]))
    group["Z"][:] = dense
    (path / SPARSE_DIR).mkdir()
    write_chunks(path, 0, indptr, indices, data, c)
    return dense, valid


def _job(tmp_path, z_path, **form) -> TileJob:
    # the store does not exist: with no label roles a block read must not open it
    return TileJob(
        store_path=str(tmp_path / "no-store.zarr"),
        z_path=str(z_path),
        plan=TilePlan(600, 512),
        k=3,
        cutoffs=(0.5,),
        roles=(),
        role_sizes=(),
        **form,
    )


@pytest.mark.parametrize("form", ["dense", "sparse"])
def test_block_is_read_in_the_jobs_form_without_probing(tmp_path, form):
    x = zero_heavy_counts(600, 50, seed=4)
    z_path = tmp_path / f"enc-{form}"
    dense, valid = _encoding(z_path, x)
    blocks._cache.clear()
    z, got_valid, codes = _job(tmp_path, z_path, form=form, n_genes=50).block(1)
    assert np.array_equal(got_valid, valid[512:]) and codes.shape == (0, 88)
    if form == "sparse":
        assert isinstance(z, SparseRows) and z.n_genes == 50
        np.testing.assert_allclose(z.to_dense(), dense[512:], atol=1e-7)
    else:  # the sparse/ folder next to Z does not change what a dense job reads
        assert isinstance(z, np.ndarray) and np.array_equal(z, dense[512:])


def test_job_form_is_checked(tmp_path):
    with pytest.raises(ValueError, match="'dense' or 'sparse', not 'csr'"):
        _job(tmp_path, tmp_path, form="csr")
    with pytest.raises(ValueError, match="needs n_genes"):
        _job(tmp_path, tmp_path, form="sparse")
