"""Worker-side reads of encoded row blocks, cached per worker process.

Tiles are submitted row-major, so consecutive tiles on a worker share block i: a small
LRU cache turns most reads of a tile into one read instead of two.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from functools import lru_cache

import numpy as np
import zarr

from rankdist.encode.sparse import read_sparse_rows
from rankdist.tiles.grid import CACHED_BLOCKS

_cache: OrderedDict = OrderedDict()
_lock = threading.Lock()


def read_block(
    z_path: str,
    store_path: str,
    roles: tuple[str, ...],
    offsets: tuple[int, ...],
    start: int,
    stop: int,
    *,
    form: str,
    n_genes: int,
):
    """``(z, valid, codes)`` for cells ``start:stop``: float32, bool, int32 (roles, rows).

    ``z`` is a :class:`rankdist.encode.sparse.SparseRows` of ``n_genes`` genes for an
    encoding stored in sparse form (``form='sparse'``, the job's form). The store is
    opened only for the label codes of ``roles``.
    """
    key = (z_path, start, stop)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    enc = zarr.open_group(z_path, mode="r")
    if form == "sparse":
        z = read_sparse_rows(z_path, start, stop, n_genes)
    else:
        z = read_z_rows(z_path, start, stop)
    valid = np.asarray(enc["valid"][start:stop], dtype=np.bool_)
    root = zarr.open_group(store_path, mode="r") if roles else None
    codes = np.empty((len(roles), stop - start), dtype=np.int32)
    for r, (role, off) in enumerate(zip(roles, offsets, strict=True)):
        codes[r] = np.asarray(root[f"obs/{role}"][start:stop], dtype=np.int32) + off
    value = (z, valid, codes)
    with _lock:
        _cache[key] = value
        while len(_cache) > CACHED_BLOCKS:
            _cache.popitem(last=False)
    return value


def read_z_rows(z_path: str, start: int, stop: int) -> np.ndarray:
    """float32 rows ``start:stop`` of the encoding's Z, read straight from its chunk files.

    Z is written uncompressed, so each chunk file holds the raw little-endian rows of its
    chunk (zarr's ``bytes`` codec): reading them into one buffer is about twice as fast
    as going through zarr, which matters because every tile reads a block. A chunk that
    zarr did not write (all zeros, the fill value) reads as zeros. Any other layout falls
    back to zarr.
    """
    layout = _raw_layout(z_path)
    if layout is None or start % layout[0]:
        return np.ascontiguousarray(zarr.open_group(z_path, mode="r")["Z"][start:stop])
    chunk_rows, n_rows, n_genes = layout
    out = np.empty((stop - start, n_genes), dtype=np.float32)
    for c0 in range(start, stop, chunk_rows):
        rows = min(c0 + chunk_rows, stop) - c0
        path = os.path.join(z_path, "Z", "c", str(c0 // chunk_rows), "0")
        view = memoryview(out[c0 - start : c0 - start + rows]).cast("B")
        try:
            with open(path, "rb", buffering=0) as fh:
                got = fh.readinto(view)
        except FileNotFoundError:
            out[c0 - start : c0 - start + rows] = 0.0
            continue
        if got != len(view):
            msg = f"{path}: expected {len(view)} bytes of Z, read {got}; recompute the encoding"
            raise OSError(msg)
    return out


@lru_cache(maxsize=16)
def _raw_layout(z_path: str) -> tuple[int, int, int] | None:
    """(chunk rows, rows, genes) if Z is stored as raw float32 row chunks, else None."""
    try:
        meta = json.loads(open(os.path.join(z_path, "Z", "zarr.json")).read())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    codecs = meta.get("codecs", [])
    raw = (
        meta.get("data_type") == "float32"
        and len(codecs) == 1
        and codecs[0].get("name") == "bytes"
        and codecs[0].get("configuration", {}).get("endian") == "little"
        and meta.get("chunk_key_encoding", {}).get("name") == "default"
        and meta["chunk_key_encoding"].get("configuration", {}).get("separator") == "/"
        and meta.get("fill_value") == 0.0
        and meta["chunk_grid"]["configuration"]["chunk_shape"][1] == meta["shape"][1]
    )
    if not raw:
        return None
    return meta["chunk_grid"]["configuration"]["chunk_shape"][0], *meta["shape"]


def read_valid(z_path: str, start: int, stop: int) -> np.ndarray:
    """The encoding's validity mask for cells ``start:stop`` (without reading Z)."""
    with _lock:
        for (path, s0, s1), (_, valid, _) in _cache.items():
            if path == z_path and s0 == start and s1 == stop:
                return valid
    return np.asarray(zarr.open_group(z_path, mode="r")["valid"][start:stop], dtype=np.bool_)


# Per-row lower bounds of each cell's final k-th best similarity, learnt from the tiles
# this worker process has finished. The k-th best over any subset of a row's candidates
# is a lower bound on its k-th best over all of them, so a later tile may drop every
# candidate strictly below the floor: they can never reach the final top-k. Floors only
# make tiles faster; results are identical with or without them.
_floors: dict = {}


def _floor_array(z_path: str, k: int, n_cells: int) -> np.ndarray:
    key = (z_path, k)
    arr = _floors.get(key)
    if arr is None or len(arr) != n_cells:
        arr = _floors[key] = np.full(n_cells, -np.inf, np.float32)
    return arr


def forget_floors() -> None:
    """Drop every floor this worker process has learnt, as if it had run no tile yet.

    Results never depend on the floors; a timing that must not profit from an earlier
    run's floors (``rankdist plan --calibrate``) starts from none.
    """
    with _lock:
        _floors.clear()


def row_floors(z_path: str, k: int, n_cells: int, start: int, stop: int) -> np.ndarray:
    """float32 floors of cells ``start:stop`` (``-inf`` where nothing is known yet)."""
    with _lock:
        return _floor_array(z_path, k, n_cells)[start:stop].copy()


def raise_floors(
    z_path: str,
    k: int,
    n_cells: int,
    start: int,
    top_sim: np.ndarray,
    top_idx: np.ndarray,
    empty: int,
) -> None:
    """Raise the floors of cells ``start:`` with a finished tile's k-th best (full lists)."""
    kth = np.where(top_idx[:, -1] != empty, top_sim[:, -1], -np.inf).astype(np.float32)
    with _lock:
        view = _floor_array(z_path, k, n_cells)[start : start + len(kth)]
        np.maximum(view, kth, out=view)
