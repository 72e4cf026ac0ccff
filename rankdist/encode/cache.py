"""Encodings cached in the store: ``encodings/<name>-<key>/{Z, valid}``.

The key hashes the encoding's name, resolved parameters, version and the store's
content id, so changing a parameter computes a new encoding and an unchanged call
reuses the cached one. Each Dask task encodes one chunk of cells and writes whole Z
chunks, so tasks never write the same chunk.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from distributed import Client

from rankdist import _progress
from rankdist.encode.registry import get_encoding
from rankdist.io.store import Store, atomic_directory
from rankdist.tiles.plan import SUBTILE


@dataclass(frozen=True)
class Encoded:
    """A computed encoding: where its Z lives and which cells it excludes."""

    path: Path
    name: str
    params: dict
    key: str
    n_cells: int
    n_genes: int
    excluded: np.ndarray  # (n_excluded,) int64 indices of constant cells

    @property
    def n_valid(self) -> int:
        return self.n_cells - len(self.excluded)


def encoding_key(store: Store, name: str, params: dict, version: int) -> str:
    blob = json.dumps([name, params, version, store.content_id], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def encode(
    store: Store,
    name: str,
    params: dict | None,
    client: Client,
    *,
    progress: bool = True,
) -> Encoded:
    """Compute (or reuse) an encoding of every cell of ``store``.

    Parameters
    ----------
    store
        The ingested store.
    name
        Registered encoding (see :data:`rankdist.encode.registry.ENCODINGS`).
    params
        Encoding parameters overriding its defaults.
    client
        Dask client whose workers read X and write Z (shared filesystem).
    progress
        Show a progress bar.
    """
    enc = get_encoding(name)
    resolved = enc.resolve(params)
    key = encoding_key(store, name, resolved, enc.version)
    path = store.path / "encodings" / f"{name}-{key}"
    if not (path / "zarr.json").exists():
        rows = store.chunk_cells
        with atomic_directory(path, replace=True) as tmp:
            group = zarr.open_group(tmp, mode="w")
            # Z is read many times per run: stored uncompressed so a block read is a copy.
            group.create_array(
                "Z", shape=(store.n_cells, store.n_genes), dtype="float32",
                chunks=(SUBTILE, store.n_genes), compressors=None,
            )  # fmt: skip
            group.create_array("valid", shape=(store.n_cells,), dtype="bool", chunks=(rows,))
            starts = list(range(0, store.n_cells, rows))
            futures = client.map(
                _encode_chunk, starts,
                store_path=str(store.path), out_path=str(tmp), rows=rows,
                name=name, params=resolved, key=[f"rankdist-encode-{name}-{s}" for s in starts],
            )  # fmt: skip
            with _progress.bar(f"encode {name}", len(futures), enabled=progress) as bar:
                for fut in _completed(futures):
                    fut.result()  # re-raises a worker's error here
                    bar.advance()
            group.attrs["encoding"] = {
                "name": name,
                "params": resolved,
                "version": enc.version,
                "key": key,
            }
    group = zarr.open_group(path, mode="r")
    valid = np.asarray(group["valid"][:])
    return Encoded(
        path=path, name=name, params=resolved, key=key,
        n_cells=store.n_cells, n_genes=store.n_genes,
        excluded=np.flatnonzero(~valid).astype(np.int64),
    )  # fmt: skip


def _completed(futures):
    from distributed import as_completed

    return as_completed(futures)


def _encode_chunk(
    start: int, *, store_path: str, out_path: str, rows: int, name: str, params: dict
):
    """Worker task: encode cells ``start:start+rows`` and write their Z and valid rows."""
    root = zarr.open_group(store_path, mode="r")
    stop = min(start + rows, root["X"].shape[0])
    block = np.asarray(root["X"][start:stop], dtype=np.float64)
    totals = np.asarray(root["obs/total_counts"][start:stop], dtype=np.float64)
    z, valid = get_encoding(name).fn(block, totals, **params)
    out = zarr.open_group(out_path, mode="r+")
    out["Z"][start:stop] = z
    out["valid"][start:stop] = valid
    return int((~valid).sum())
