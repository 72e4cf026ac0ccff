"""Worker-side reads of encoded row blocks: resident in worker memory, or streamed and cached.

With blocks *resident* (the default where Z fits the cluster's memory), each block is read
once per run by a ``rankdist-block`` task and held by Dask; a tile task receives its two
blocks as arguments and makes them visible to the block reader for its duration
(:func:`blocks_in_memory`), so the tile kernel reads them through the same
:func:`read_block` call either way. With blocks *streamed*, every tile reads its blocks
from the store; tiles are submitted row-major, so consecutive tiles on a worker share
block i and a small LRU cache turns most reads of a tile into one read instead of two. A
benchmark can count the reads that reach the store (:func:`start_counting`,
:func:`read_counts`).
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import google_crc32c
import numpy as np

from rankdist.encode.sparse import read_sparse_rows
from rankdist.io.verified import (
    CRC_BYTES,
    DAMAGED,
    MISSING,
    DamagedChunkError,
    MissingChunkError,
    chunk_error,
    open_group,
)
from rankdist.tiles.grid import CACHED_BLOCKS

_cache: OrderedDict = OrderedDict()
_lock = threading.Lock()
# Blocks read from the store (cache misses) since start_counting(): (z_path, start, stop)
# -> [reads, bytes]. None when nobody counts, so an uncounted read pays one comparison.
_reads: dict | None = None
# The blocks a running tile task received from Dask, per thread (a task runs on one thread).
_held = threading.local()


@contextmanager
def blocks_in_memory(blocks: dict) -> Iterator[None]:
    """Within the ``with``, :func:`read_block` returns these blocks without reading the store.

    ``blocks`` maps ``(z_path, start, stop)`` to ``(z, valid, codes)`` as :func:`read_block`
    returns them. Only the calling thread sees them: the tile task that holds them.
    """
    previous = getattr(_held, "blocks", None)
    _held.blocks = blocks
    try:
        yield
    finally:
        _held.blocks = previous


def start_counting() -> None:
    """Count this process's block reads from the store from now on, from zero.

    A benchmark calls it on every worker (``client.run(start_counting)``) before a run,
    then :func:`read_counts` after it. Cache hits are not reads and are not counted.
    """
    global _reads
    with _lock:
        _reads = {}


def read_counts() -> dict[tuple[str, int, int], tuple[int, int]]:
    """``(z_path, start, stop) -> (reads, bytes)`` read from the store since :func:`start_counting`.

    Bytes are those of the arrays returned (Z, its validity mask and the label codes).
    Empty if counting was never started in this process.
    """
    with _lock:
        return {key: (n, nbytes) for key, (n, nbytes) in (_reads or {}).items()}


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
    cache: bool = True,
):
    """``(z, valid, codes)`` for cells ``start:stop``: float32, bool, int32 (roles, rows).

    ``z`` is a :class:`rankdist.encode.sparse.SparseRows` of ``n_genes`` genes for an
    encoding stored in sparse form (``form='sparse'``, the job's form). The store is
    opened only for the label codes of ``roles``. A block held by the calling tile task
    (:func:`blocks_in_memory`) is returned as it is; otherwise the per-process cache is
    tried, then the store (a counted read), whose block is cached unless ``cache`` is
    False (a resident block's one read: Dask holds it).
    """
    key = (z_path, start, stop)
    held = getattr(_held, "blocks", None)
    if held is not None and key in held:
        return held[key]
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    enc = open_group(z_path, mode="r")
    if form == "sparse":
        z = read_sparse_rows(z_path, start, stop, n_genes)
    else:
        z = read_z_rows(z_path, start, stop)
    valid = np.asarray(enc["valid"][start:stop], dtype=np.bool_)
    value = (z, valid, read_codes(store_path, roles, offsets, start, stop))
    with _lock:
        if _reads is not None:
            count = _reads.setdefault(key, [0, 0])
            count[0] += 1
            count[1] += _nbytes(z) + valid.nbytes + value[2].nbytes
        if cache:
            _cache[key] = value
            while len(_cache) > CACHED_BLOCKS:
                _cache.popitem(last=False)
    return value


def read_codes(
    store_path: str, roles: tuple[str, ...], offsets: tuple[int, ...], start: int, stop: int
) -> np.ndarray:
    """int32 ``(roles, rows)``: label codes of cells ``start:stop``, each role's offset added."""
    root = open_group(store_path, mode="r") if roles else None
    codes = np.empty((len(roles), stop - start), dtype=np.int32)
    for r, (role, off) in enumerate(zip(roles, offsets, strict=True)):
        codes[r] = np.asarray(root[f"obs/{role}"][start:stop], dtype=np.int32) + off
    return codes


def _nbytes(z) -> int:
    """Bytes of a dense Z block, or of the arrays of a sparse one."""
    if isinstance(z, np.ndarray):
        return z.nbytes
    return z.indptr.nbytes + z.indices.nbytes + z.data.nbytes + z.c.nbytes


def encoded_bytes(z_path: str, n_cells: int, n_columns: int, n_roles: int, *, form: str) -> int:
    """Bytes of every block of an encoding as the tiles hold them: Z, validity, label codes.

    Dense: ``n_cells x (4 n_columns + 1 + 4 n_roles)``. Sparse: the chunk files' sizes
    (compressed neither, so about their arrays' bytes) plus validity and codes.
    """
    per_cell = 1 + 4 * n_roles
    if form != "sparse":
        return n_cells * (4 * n_columns + per_cell)
    from rankdist.encode.sparse import SPARSE_DIR

    chunks = os.path.join(z_path, SPARSE_DIR)
    files = sum(entry.stat().st_size for entry in os.scandir(chunks) if entry.is_file())
    return files + n_cells * per_cell


def read_z_rows(z_path: str, start: int, stop: int) -> np.ndarray:
    """float32 rows ``start:stop`` of the encoding's Z, read straight from its chunk files.

    Z is written uncompressed, so each chunk file holds the raw little-endian rows of its
    chunk (zarr's ``bytes`` codec) followed by their crc32c: reading them into one buffer
    is about twice as fast as going through zarr, which matters because every tile reads
    a block. Each chunk's crc32c is checked over the bytes read (all of the chunk's rows,
    those past ``stop`` into a scratch buffer): a missing file raises
    :class:`~rankdist.io.verified.MissingChunkError`, a short, long or mismatching one
    :class:`~rankdist.io.verified.DamagedChunkError`. In a Z written without checksums
    (before store format 2) a chunk zarr did not write reads as zeros, as zarr reads it.
    Any other layout falls back to zarr.
    """
    layout = _raw_layout(z_path)
    if layout is None or start % layout[0]:
        return np.ascontiguousarray(open_group(z_path, mode="r")["Z"][start:stop])
    chunk_rows, n_rows, n_genes = layout
    checked = _z_checksummed(z_path)
    out = np.empty((stop - start, n_genes), dtype=np.float32)
    for c0 in range(start, stop, chunk_rows):
        rows = min(c0 + chunk_rows, stop) - c0
        chunk = c0 // chunk_rows
        path = os.path.join(z_path, "Z", "c", str(chunk), "0")
        block = out[c0 - start : c0 - start + rows]
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            if checked:
                raise chunk_error(MissingChunkError, _z_dir(z_path), (chunk, 0), MISSING) from None
            block[:] = 0.0
            continue
        try:
            if checked:
                _read_checked(fd, block, chunk_rows - rows, z_path, chunk)
                continue
            got = os.readv(fd, [block.reshape(-1).view(np.uint8)])
        finally:
            os.close(fd)
        if got != block.nbytes:
            msg = f"{path}: expected {block.nbytes} bytes of Z, read {got}; recompute the encoding"
            raise OSError(msg)
    return out


def _read_checked(fd: int, block: np.ndarray, rows_after: int, z_path: str, chunk: int) -> None:
    """Read a chunk file into ``block`` (its rows after it into scratch), check its crc32c."""
    after = np.empty((rows_after, block.shape[1]), dtype=np.float32)
    tail = np.empty(CRC_BYTES + 1, dtype=np.uint8)  # one byte more: a longer file is damaged
    want = block.nbytes + after.nbytes + CRC_BYTES
    buffers = [block.reshape(-1).view(np.uint8), after.reshape(-1).view(np.uint8), tail]
    got = os.readv(fd, buffers)
    crc = google_crc32c.value(block)
    if rows_after:
        crc = google_crc32c.extend(crc, after)
    if got != want or crc != int.from_bytes(tail[:CRC_BYTES].tobytes(), "little"):
        raise chunk_error(DamagedChunkError, _z_dir(z_path), (chunk, 0), DAMAGED)


def _z_dir(z_path: str) -> str:
    return os.path.join(z_path, "Z")


@lru_cache(maxsize=16)
def _z_meta(z_path: str) -> dict | None:
    try:
        return json.loads(open(os.path.join(z_path, "Z", "zarr.json")).read())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _z_checksummed(z_path: str) -> bool:
    """Whether Z's raw chunks end in a crc32c (``[bytes, crc32c]``, store format 2)."""
    codecs = (_z_meta(z_path) or {}).get("codecs", [])
    return len(codecs) == 2 and codecs[1].get("name") == "crc32c"


@lru_cache(maxsize=16)
def _raw_layout(z_path: str) -> tuple[int, int, int] | None:
    """(chunk rows, rows, genes) if Z is stored as raw float32 row chunks, else None.

    Raw: the ``bytes`` codec (little-endian), optionally followed by ``crc32c``.
    """
    meta = _z_meta(z_path)
    if meta is None:
        return None
    codecs = meta.get("codecs", [])
    raw = (
        meta.get("data_type") == "float32"
        and len(codecs) in (1, 2)
        and (len(codecs) == 1 or _z_checksummed(z_path))
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
    held = getattr(_held, "blocks", None)
    if held is not None and (z_path, start, stop) in held:
        return held[(z_path, start, stop)][1]
    with _lock:
        for (path, s0, s1), (_, valid, _) in _cache.items():
            if path == z_path and s0 == start and s1 == stop:
                return valid
    return np.asarray(open_group(z_path, mode="r")["valid"][start:stop], dtype=np.bool_)


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
