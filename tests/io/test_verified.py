"""rankdist.io.verified: every chunk checksummed and written; missing or damaged ones named."""

from __future__ import annotations

import json
import pickle

import google_crc32c
import numpy as np
import pytest
import zarr

from rankdist.encode.sparse import (
    SPARSE_DIR,
    chunk_file,
    read_sparse_rows,
    sparse_standardised_ranks,
    write_chunks,
)
from rankdist.io.store import STORE_FORMAT, Store, StoreError, compressor
from rankdist.io.verified import (
    ChunkError,
    DamagedChunkError,
    MissingChunkError,
    check_chunk_file,
    open_array,
    open_group,
    raw_codecs,
)
from rankdist.tiles.blocks import _raw_layout, read_z_rows

from _data import zero_heavy_counts


def _flip(path, at: int = -10) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    path.write_bytes(bytes(data))


def _fake_store(path, **attrs):
    """A group that reads as a rankdist store, for messages (no X needed)."""
    root = open_group(path, mode="w")
    root.attrs["rankdist"] = {"format": STORE_FORMAT, "content_id": "x", **attrs}
    return root


def _codecs(array_dir) -> list[str]:
    return [c["name"] for c in json.loads((array_dir / "zarr.json").read_text())["codecs"]]


def test_arrays_end_in_crc32c_and_raw_z_is_rows_then_checksum(tmp_path):
    root = open_group(tmp_path / "g", mode="w")
    z = np.arange(1100 * 7, dtype=np.float32).reshape(1100, 7)
    root.create_array(
        "Z", shape=z.shape, dtype="float32", chunks=(512, 7), compressors=raw_codecs()
    )
    root["Z"][:] = z
    root.create_array("X", shape=(10,), dtype="int32", chunks=(4,), compressors=compressor())
    root.create_array("names", shape=(3,), dtype=str, chunks=(3,))  # zarr's default codecs
    assert _codecs(tmp_path / "g" / "Z") == ["bytes", "crc32c"]
    assert _codecs(tmp_path / "g" / "X") == ["bytes", "blosc", "crc32c"]
    assert _codecs(tmp_path / "g" / "names")[-1] == "crc32c"
    raw = (tmp_path / "g" / "Z" / "c" / "1" / "0").read_bytes()
    assert raw[:-4] == z[512:1024].tobytes()
    assert int.from_bytes(raw[-4:], "little") == google_crc32c.value(raw[:-4])


def test_every_chunk_is_written_fill_values_included_also_when_reopened(tmp_path):
    root = open_group(tmp_path / "g", mode="w")
    root.create_array("v", shape=(12,), dtype="bool", chunks=(4,))
    root["v"][:] = False  # the fill value: zarr alone would write no chunk
    root.create_array("w", shape=(12,), dtype="float32", chunks=(4,))
    open_group(tmp_path / "g", mode="r+")["w"][:] = 0.0
    for name in ("v", "w"):
        assert sorted(p.name for p in (tmp_path / "g" / name / "c").iterdir()) == ["0", "1", "2"]
    assert open_group(tmp_path / "g")["w"][:].tolist() == [0.0] * 12


def test_a_missing_chunk_is_an_error_naming_store_array_chunk_and_reingest(tmp_path):
    store = tmp_path / "s.zarr"
    root = _fake_store(store, provenance={"source": "/data/cells.h5ad"})
    root.create_array("X", shape=(8, 3), dtype="float32", chunks=(4, 3))
    root["X"][:] = 1.0
    (store / "X" / "c" / "1" / "0").unlink()
    with pytest.raises(MissingChunkError) as err:
        open_group(store)["X"][:]
    msg = str(err.value)
    assert "\n" not in msg and isinstance(err.value, StoreError | ValueError)
    assert f"{store}: array X, chunk (1, 0): file X/c/1/0 is missing" in msg
    assert f"rankdist ingest /data/cells.h5ad {store} --overwrite" in msg
    assert (err.value.array, err.value.chunk) == ("X", (1, 0))
    assert open_group(store)["X"][:4].tolist() == [[1.0] * 3] * 4  # other chunks read


def test_a_damaged_chunk_is_an_error_where_plain_zarr_gives_a_bare_value_error(tmp_path):
    store = tmp_path / "s.zarr"
    root = _fake_store(store)
    root.create_array("obs/cell_type", shape=(6,), dtype="int32", chunks=(6,))
    root["obs/cell_type"][:] = np.arange(6)
    _flip(store / "obs" / "cell_type" / "c" / "0")
    with pytest.raises(
        DamagedChunkError,
        match=r"array obs/cell_type, chunk \(0\): file "
        r"obs/cell_type/c/0 does not match its crc32c checksum; re-ingest",
    ):
        open_group(store)["obs/cell_type"][:]
    # what zarr's own codec says, without the store's check: no array, no chunk named
    with pytest.raises(ValueError, match="Stored and computed checksum do not match"):
        zarr.open_group(store, mode="r")["obs/cell_type"][:]


def test_encoding_and_run_chunks_say_how_to_recompute(tmp_path):
    store = tmp_path / "s.zarr"
    root = _fake_store(store)
    enc = root.create_group("encodings").create_group("spearman-abc")
    enc.create_array("valid", shape=(4,), dtype="bool", chunks=(4,))
    enc["valid"][:] = True
    run = root.create_group("results").create_group("r1")
    run.attrs["run"] = {
        "encoding": "pearson",
        "k": 5,
        "cutoffs": [0.3, 0.5],
        "encoding_params": {},
        "type_hist": True,
        "form_requested": "auto",
    }
    run.create_array("indices", shape=(4, 5), dtype="int64", chunks=(4, 5))
    run["indices"][:] = 1
    (store / "encodings" / "spearman-abc" / "valid" / "c" / "0").unlink()
    _flip(store / "results" / "r1" / "indices" / "c" / "0" / "0")
    with pytest.raises(MissingChunkError) as err:
        open_group(store / "encodings" / "spearman-abc")["valid"][:]
    assert "array encodings/spearman-abc/valid, chunk (0)" in str(err.value)
    assert f"`rankdist verify {store} --repair` removes it" in str(err.value)
    with pytest.raises(DamagedChunkError) as err:
        open_group(store / "results" / "r1")["indices"][:]
    assert "array results/r1/indices, chunk (0, 0)" in str(err.value)
    assert (
        f"rankdist neighbors {store} --name r1 --encoding pearson --k 5 --cutoffs 0.3,0.5 "
        "--type-hist" in str(err.value)
    )


def test_a_writer_fills_chunks_it_has_not_written_yet(tmp_path):
    root = open_group(tmp_path / "g", mode="w")
    root.create_array("a", shape=(8,), dtype="int32", chunks=(4,))
    out = open_group(tmp_path / "g", mode="r+")
    out["a"][1:3] = 7  # a partial chunk: zarr reads the absent chunk first
    assert open_group(tmp_path / "g")["a"][:4].tolist() == [0, 7, 7, 0]
    with pytest.raises(MissingChunkError, match=r"chunk \(1\)"):  # never written: a reader
        open_group(tmp_path / "g")["a"][:]


def test_chunk_errors_pickle_unchanged(tmp_path):
    err = MissingChunkError("m", store=tmp_path, array="X", chunk=(1, 0))
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is MissingChunkError and isinstance(back, ChunkError)
    assert (str(back), back.store, back.array, back.chunk) == ("m", tmp_path, "X", (1, 0))


def test_open_array_checks_as_open_group(tmp_path):
    root = _fake_store(tmp_path / "s.zarr")
    root.create_array("X", shape=(4,), dtype="int32", chunks=(2,))
    root["X"][:] = 3
    (tmp_path / "s.zarr" / "X" / "c" / "1").unlink()
    with pytest.raises(MissingChunkError, match=r"array X, chunk \(1\): file X/c/1 is missing"):
        open_array(tmp_path / "s.zarr" / "X")[:]


def test_check_chunk_file_states(tmp_path):
    root = open_group(tmp_path / "g", mode="w")
    root.create_array("a", shape=(4,), dtype="int32", chunks=(2,))
    root["a"][:] = 5
    chunk = tmp_path / "g" / "a" / "c" / "0"
    assert check_chunk_file(chunk) == "intact"
    _flip(chunk, at=-1)  # the checksum itself
    assert check_chunk_file(chunk) == "damaged"
    chunk.write_bytes(b"ab")
    assert check_chunk_file(chunk) == "damaged"
    chunk.unlink()
    assert check_chunk_file(chunk) == "missing"


def _z(tmp_path, n=1300, g=9):
    rng = np.random.default_rng(3)
    z = rng.standard_normal((n, g)).astype(np.float32)
    z[512:1024] = 0.0  # all zeros: written all the same
    store = tmp_path / "s.zarr"
    enc = _fake_store(store).create_group("encodings").create_group("spearman-k")
    enc.create_array("Z", shape=z.shape, dtype="float32", chunks=(512, g), compressors=raw_codecs())
    enc["Z"][:] = z
    return z, store / "encodings" / "spearman-k"


def test_raw_z_reads_check_the_crc_of_every_chunk_including_a_partial_last_one(tmp_path):
    z, path = _z(tmp_path)
    assert _raw_layout(str(path)) == (512, 1300, 9)
    for start, stop in [(0, 1300), (512, 1024), (1024, 1300), (0, 700), (1024, 1100)]:
        assert np.array_equal(read_z_rows(str(path), start, stop), z[start:stop])
    last = path / "Z" / "c" / "2" / "0"
    _flip(last, at=1200 * 4)  # a row past stop=1100: still inside the chunk read
    with pytest.raises(DamagedChunkError, match=r"array encodings/spearman-k/Z, chunk \(2, 0\)"):
        read_z_rows(str(path), 1024, 1100)


@pytest.mark.parametrize("damage", ["missing", "flipped", "short", "long"])
def test_raw_z_reads_raise_on_missing_or_damaged_chunks(tmp_path, damage):
    _, path = _z(tmp_path)
    chunk = path / "Z" / "c" / "1" / "0"
    if damage == "missing":
        chunk.unlink()
    elif damage == "flipped":
        _flip(chunk, at=100)
    elif damage == "short":
        chunk.write_bytes(chunk.read_bytes()[:-7])
    else:
        chunk.write_bytes(chunk.read_bytes() + b"\0")
    kind = MissingChunkError if damage == "missing" else DamagedChunkError
    with pytest.raises(kind) as err:
        read_z_rows(str(path), 0, 1300)
    assert "chunk (1, 0)" in str(err.value) and "--repair" in str(err.value)


@pytest.mark.parametrize("damage", ["missing", "flipped"])
def test_sparse_chunk_files_are_checked(tmp_path, damage):
    x = zero_heavy_counts(n_cells=600, n_genes=40, seed=2)
    indptr, indices, data, c, _ = sparse_standardised_ranks(x)
    store = tmp_path / "s.zarr"
    _fake_store(store).create_group("encodings").create_group("spearman-k-sparse")
    path = store / "encodings" / "spearman-k-sparse"
    (path / SPARSE_DIR).mkdir()
    write_chunks(path, 0, indptr, indices, data, c)
    assert read_sparse_rows(str(path), 0, 600, 40).nnz == indptr[-1]
    target = chunk_file(path, 1)
    if damage == "missing":
        target.unlink()
    else:
        _flip(target, at=len(target.read_bytes()) // 3)
    kind = MissingChunkError if damage == "missing" else DamagedChunkError
    with pytest.raises(kind) as err:
        read_sparse_rows(str(path), 0, 600, 40)
    msg = str(err.value)
    assert "array encodings/spearman-k-sparse/sparse, chunk (1)" in msg and "\n" not in msg
    assert "file encodings/spearman-k-sparse/sparse/1.npz" in msg and "--repair" in msg


def test_a_store_of_format_1_is_refused_with_the_reingest_command(tmp_path):
    root = open_group(tmp_path / "old.zarr", mode="w")
    root.attrs["rankdist"] = {"format": 1, "provenance": {"source": "/d/a.h5ad"}}
    with pytest.raises(StoreError) as err:
        Store(tmp_path / "old.zarr")
    assert f"rankdist ingest /d/a.h5ad {tmp_path / 'old.zarr'} --overwrite" in str(err.value)
