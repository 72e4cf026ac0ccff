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


def read_block(z_path: str, store_path: str, roles: tuple[str, ...], offsets: tuple[int, ...],
               start: int, stop: int):
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
