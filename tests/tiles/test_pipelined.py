"""The encoding pipelined into the tiles: block tasks encode their own cells.

A run whose dense encoding is not cached and whose blocks stay in worker memory has no
encoding pass before its tiles: each ``rankdist-block`` task encodes its cells from X,
writes them into the encoding being computed, and hands them to the tiles. The results,
the published encoding and the ``auto`` kernel's sample must be exactly those of a run on
the encoding computed first; a failed run must leave no half-written encoding.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import rankdist
from rankdist.encode import cache
from rankdist.io.verified import open_group
from rankdist.tiles.kernel_choice import ScreenEstimate, estimate_screen

from _data import ingest_tricky, tricky_adata

ARGS = dict(k=12, cutoffs=(0.2, 0.4), progress=False)
pytestmark = pytest.mark.filterwarnings("ignore::rankdist.ExcludedCellsWarning")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A store with no encoding yet: 1,300 tricky cells (ties, duplicates, 2 constant)."""
    adata = tricky_adata(n_cells=1300, n_genes=120, seed=11)
    return ingest_tricky(adata, tmp_path_factory.mktemp("pipelined") / "s.zarr").path


@pytest.fixture
def fresh(pristine, tmp_path):
    """Copies of the store, each with no encoding, one per call."""
    made = iter(range(100))

    def copy():
        return rankdist.Store(shutil.copytree(pristine, tmp_path / f"s{next(made)}.zarr"))

    return copy


@pytest.fixture(scope="module")
def reference(pristine, tmp_path_factory, inproc_client):
    """The run on the encoding computed first (the barrier path), and that encoding."""
    store = rankdist.Store(shutil.copytree(pristine, tmp_path_factory.mktemp("ref") / "s.zarr"))
    enc = cache.encode(store, "spearman", None, inproc_client, progress=False)
    on = {"client": inproc_client, "block_size": 512, "kernel": "float32"}
    res = rankdist.neighbors(store, **on, **ARGS)
    assert res.metadata["encoding_pipelined"] is False
    return res, enc


def _published(store) -> list[str]:
    return sorted(p.name for p in (store.path / "encodings").iterdir() if p.name != "zarr.json")


def _same(res, ref, label):
    assert np.array_equal(res.indices, ref.indices), label
    assert np.array_equal(res.similarities.view(np.int32), ref.similarities.view(np.int32)), label
    assert res.counts.identical(ref.counts), label
    assert np.array_equal(res.excluded, ref.excluded), label
    assert res.metadata["n_excluded"] == ref.metadata["n_excluded"] == 2, label


@pytest.mark.parametrize(
    ("cluster", "block_size", "kernel"),
    [("threads", 512, "float32"), ("processes", 512, "auto"), ("processes", 1024, "screen")],
)
def test_pipelined_run_equals_the_run_on_the_cached_encoding(
    fresh, reference, inproc_client, client, cluster, block_size, kernel
):
    ref, ref_enc = reference
    store = fresh()
    on = inproc_client if cluster == "threads" else client
    res = rankdist.neighbors(store, client=on, block_size=block_size, kernel=kernel, **ARGS)
    assert res.metadata["encoding_pipelined"] is True
    assert res.metadata["blocks"] == "resident"
    _same(res, ref, (cluster, block_size, kernel))
    # the encoding the block tasks wrote is the one encode() writes, byte for byte
    assert _published(store) == [ref_enc.path.name]
    paths = (store.path / "encodings" / ref_enc.path.name, ref_enc.path)
    got, want = (open_group(p, mode="r") for p in paths)
    assert np.array_equal(np.asarray(got["Z"][:]).view(np.int32), want["Z"][:].view(np.int32))
    assert np.array_equal(got["valid"][:], want["valid"][:])
    assert got.attrs["encoding"] == want.attrs["encoding"]
    # the next run finds it cached
    again = rankdist.neighbors(store, client=on, block_size=block_size, name="again", **ARGS)
    assert again.metadata["encoding_pipelined"] is False
    _same(again, ref, "cached")


def test_failed_encoding_leaves_nothing_and_the_rerun_completes(
    fresh, reference, inproc_client, monkeypatch
):
    ref, _ = reference
    store = fresh()
    real = cache.encode_chunk

    def broken(start, **kwargs):
        if start == 512:
            raise OSError("X is unreadable here (on purpose)")
        return real(start, **kwargs)

    monkeypatch.setattr(cache, "encode_chunk", broken)  # the in-process workers call it
    with pytest.raises(OSError, match="on purpose"):
        rankdist.neighbors(store, client=inproc_client, block_size=512, kernel="float32", **ARGS)
    assert _published(store) == []  # no encoding, no temporary one
    assert rankdist.list_runs(store) == []
    monkeypatch.undo()
    res = rankdist.neighbors(store, client=inproc_client, block_size=512, kernel="float32", **ARGS)
    assert res.metadata["encoding_pipelined"] is True
    _same(res, ref, "rerun")


def test_the_kernel_sample_encoded_from_x_is_the_sample_of_z(fresh, reference):
    _, enc = reference
    store = fresh()
    from_z = estimate_screen(str(enc.path), 12, (0.2, 0.4), 3)
    if isinstance(from_z, str):
        pytest.fail(f"the screen cannot run here: {from_z}")
    args = {"store_path": str(store.path), "name": "spearman", "params": enc.params}
    from_x = estimate_screen(str(enc.path), 12, (0.2, 0.4), 3, args | {"prepared": {}})
    assert isinstance(from_x, ScreenEstimate)
    assert from_x.shares == from_z.shares and from_x.refined == from_z.refined
