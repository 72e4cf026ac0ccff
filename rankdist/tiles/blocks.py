"""Worker-side reads of encoded row blocks, cached per worker process.

Tiles are submitted row-major, so consecutive tiles on a worker share block i: a small
LRU cache turns most reads of a tile into one read instead of two.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import zarr

_CACHE_BLOCKS = 4
_cache: OrderedDict = OrderedDict()
_lock = threading.Lock()


def read_block(
    z_path: str,
    store_path: str,
    roles: tuple[str, ...],
    offsets: tuple[int, ...],
    start: int,
    stop: int,
):
    """``(z, valid, codes)`` for cells ``start:stop``: float32, bool, int32 (roles, rows)."""
    key = (z_path, start, stop)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    enc = zarr.open_group(z_path, mode="r")
    z = np.ascontiguousarray(enc["Z"][start:stop], dtype=np.float32)
    valid = np.asarray(enc["valid"][start:stop], dtype=np.bool_)
    root = zarr.open_group(store_path, mode="r")
    codes = np.empty((len(roles), stop - start), dtype=np.int32)
    for r, (role, off) in enumerate(zip(roles, offsets, strict=True)):
        codes[r] = np.asarray(root[f"obs/{role}"][start:stop], dtype=np.int32) + off
    value = (z, valid, codes)
    with _lock:
        _cache[key] = value
        while len(_cache) > _CACHE_BLOCKS:
            _cache.popitem(last=False)
    return value


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
