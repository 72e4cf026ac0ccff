"""Encodings cached in the store: ``encodings/<name>-<key>/{Z, valid}``.

The key hashes the encoding's name, resolved parameters, version and the store's
content id (and, for an encoding with a prepare step, the digest of the arrays it
prepared), so changing a parameter computes a new encoding and an unchanged call
reuses the cached one. Each Dask task encodes one chunk of cells and writes whole Z
chunks, so tasks never write the same chunk.

Dataset-wide statistics that a prepare step needs (geneformer's gene medians) are
cached beside the encodings by encode/medians.py.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from distributed import Client, as_completed

from rankdist import _progress
from rankdist.encode.registry import ENCODINGS, get_encoding
from rankdist.encode.sparse import SPARSE_DIR, write_chunks
from rankdist.io.store import Store, atomic_directory
from rankdist.io.verified import open_group, raw_codecs
from rankdist.layout import SUBTILE


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
    form: str = "dense"  # "dense": Z array; "sparse": CSR chunk files (encode/sparse.py)
    n_columns: int = 0  # Z's width: n_genes, or the embedding dimension (genept)

    @property
    def n_valid(self) -> int:
        return self.n_cells - len(self.excluded)


def encoding_key(
    store: Store, name: str, params: dict, version: int, prepared: dict | None = None
) -> str:
    """12 hex digits naming an encoding's cache directory.

    ``prepared`` (the arrays of the encoding's prepare step) enter by their digests; an
    encoding without one keeps the key it had before prepare steps existed.
    """
    parts = [name, params, version, store.content_id]
    if prepared:
        parts.append({k: array_digest(v) for k, v in sorted(prepared.items())})
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def array_digest(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    array = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.tobytes())
    return h.hexdigest()


def encode(
    store: Store,
    name: str,
    params: dict | None,
    client: Client,
    *,
    progress: bool = True,
    form: str = "dense",
) -> Encoded:
    """Compute (or reuse) an encoding of every cell of ``store``.

    An encoding with a prepare step (geneformer's gene medians, genept's gene vectors)
    first computes or reads its dataset-wide arrays; they enter the cache key and reach
    every chunk task. Z has one column per gene, or ``Encoding.columns(prepared)``
    columns (genept: the embedding dimension).

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
    form
        ``'dense'`` stores Z as a float32 array; ``'sparse'`` stores each 512-row chunk
        as CSR of ``s`` plus ``c`` (``z = s + c``) in ``<name>-<key>-sparse/sparse/``,
        for encodings with a sparse form (docs/encodings.md, all-genes mode).
    """
    enc = get_encoding(name)
    if form not in ("dense", "sparse") or (form == "sparse" and enc.sparse is None):
        have = [n for n, e in ENCODINGS.items() if e.sparse is not None]
        msg = f"form {form!r} is not available for encoding {name!r}; sparse form: {have}"
        raise ValueError(msg)
    resolved = enc.resolve(params)
    prepared = enc.prepare(store, client, resolved, progress=progress) if enc.prepare else {}
    width = enc.columns(prepared) if enc.columns else store.n_genes
    key = encoding_key(store, name, resolved, enc.version, prepared)
    path = store.path / "encodings" / f"{name}-{key}"
    if form == "sparse":
        path = path.with_name(f"{path.name}-sparse")
        if not (path / "zarr.json").exists():
            _encode_sparse(store, enc, resolved, key, path, client, progress)
    elif not (path / "zarr.json").exists():
        rows = store.chunk_cells
        with atomic_directory(path, replace=True) as tmp:
            group = open_group(tmp, mode="w")
            # Z is read many times per run: stored uncompressed (only the crc32c appended)
            # so a block read is a copy.
            group.create_array(
                "Z",
                shape=(store.n_cells, width),
                dtype="float32",
                chunks=(SUBTILE, width),
                compressors=raw_codecs(),
            )
            group.create_array("valid", shape=(store.n_cells,), dtype="bool", chunks=(rows,))
            starts = list(range(0, store.n_cells, rows))
            # Keys unique to this call: Dask hands a key's existing result, an error
            # included, to whoever submits it again, so a rerun on the same client (after
            # a full disk, say) would get the failed attempt's error instead of computing.
            call = uuid.uuid4().hex[:8]
            # prepared arrays go to each worker once, not once per task
            shared = client.scatter([prepared], broadcast=True)[0] if prepared else {}
            futures = client.map(
                _encode_chunk,
                starts,
                store_path=str(store.path),
                out_path=str(tmp),
                rows=rows,
                name=name,
                params=resolved,
                prepared=shared,
                key=[f"rankdist-encode-{name}-{key}-{call}-{s}" for s in starts],
            )
            with _progress.bar(f"encode {name}", len(futures), enabled=progress) as bar:
                for fut in as_completed(futures):
                    fut.result()  # re-raises a worker's error here
                    bar.advance()
            group.attrs["encoding"] = {
                "name": name,
                "params": resolved,
                "version": enc.version,
                "key": key,
                "prepared": {k: array_digest(v) for k, v in sorted(prepared.items())},
            }
    group = open_group(path, mode="r")
    valid = np.asarray(group["valid"][:])
    return Encoded(
        path=path,
        name=name,
        params=resolved,
        key=key,
        n_cells=store.n_cells,
        n_genes=store.n_genes,
        excluded=np.flatnonzero(~valid).astype(np.int64),
        form=form,
        n_columns=width,
    )


def _encode_sparse(store, enc, params, key, path, client, progress) -> None:
    """Write the sparse form: ``valid`` (zarr) and one CSR file per 512-row chunk."""
    # Tasks span whole sub-tile chunks, so no two tasks write the same file.
    rows = max(SUBTILE, store.chunk_cells // SUBTILE * SUBTILE)
    with atomic_directory(path, replace=True) as tmp:
        group = open_group(tmp, mode="w")
        group.create_array("valid", shape=(store.n_cells,), dtype="bool", chunks=(rows,))
        (tmp / SPARSE_DIR).mkdir()
        starts = list(range(0, store.n_cells, rows))
        call = uuid.uuid4().hex[:8]  # keys of this call only (see encode)
        futures = client.map(
            _encode_sparse_chunk,
            starts,
            store_path=str(store.path),
            out_path=str(tmp),
            rows=rows,
            name=enc.name,
            params=params,
            key=[f"rankdist-encode-{enc.name}-{key}-sparse-{call}-{s}" for s in starts],
        )
        nnz = 0
        with _progress.bar(f"encode {enc.name} (sparse)", len(futures), enabled=progress) as bar:
            for fut in as_completed(futures):
                nnz += fut.result()
                bar.advance()
        group.attrs["encoding"] = {
            "name": enc.name,
            "params": params,
            "version": enc.version,
            "key": key,
            "form": "sparse",
            "nnz": nnz,
        }


def _encode_sparse_chunk(
    start: int, *, store_path: str, out_path: str, rows: int, name: str, params: dict
) -> int:
    """Worker task: encode cells ``start:start+rows`` in sparse form; returns the nnz."""
    root = open_group(store_path, mode="r")
    stop = min(start + rows, root["X"].shape[0])
    block = np.asarray(root["X"][start:stop])
    totals = np.asarray(root["obs/total_counts"][start:stop], dtype=np.float64)
    indptr, indices, data, c, valid = get_encoding(name).sparse(block, totals, **params)
    write_chunks(out_path, start, indptr, indices, data, c)
    open_group(out_path, mode="r+")["valid"][start:stop] = valid
    return int(indptr[-1])


def _encode_chunk(
    start: int,
    *,
    store_path: str,
    out_path: str,
    rows: int,
    name: str,
    params: dict,
    prepared: dict,
):
    """Worker task: encode cells ``start:start+rows`` and write their Z and valid rows."""
    root = open_group(store_path, mode="r")
    stop = min(start + rows, root["X"].shape[0])
    block = np.asarray(root["X"][start:stop])  # each encoding casts as it needs
    totals = np.asarray(root["obs/total_counts"][start:stop], dtype=np.float64)
    z, valid = get_encoding(name).fn(block, totals, **params, **prepared)
    out = open_group(out_path, mode="r+")
    out["Z"][start:stop] = z
    out["valid"][start:stop] = valid
    return int((~valid).sum())
