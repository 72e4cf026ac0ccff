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

import contextlib
import hashlib
import json
import os
import sys
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from distributed import Client, as_completed

from rankdist import _progress
from rankdist.encode.registry import ENCODINGS, get_encoding
from rankdist.encode.sparse import SPARSE_DIR, write_chunks
from rankdist.io.atomic import atomic_directory
from rankdist.io.store import Store
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
    begun = start_encoding(store, name, params, client, progress=progress, form=form)
    if isinstance(begun, Encoded):
        return begun
    return begun.run(client, progress=progress)


def start_encoding(
    store: Store,
    name: str,
    params: dict | None,
    client: Client,
    *,
    progress: bool = True,
    form: str = "dense",
) -> Encoded | PendingEncoding:
    """The cached encoding, or a :class:`PendingEncoding` ready for its chunk tasks.

    As :func:`encode`, but a dense encoding not yet cached is only begun: its temporary
    directory and empty arrays exist, and whoever holds the returned object runs the
    chunk tasks (:meth:`PendingEncoding.run`, or the tiles' block tasks, which encode
    their own rows: :mod:`rankdist.tiles.placement`), then :meth:`~PendingEncoding.finish`
    publishes it, or :meth:`~PendingEncoding.abandon` removes it.
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
    if form == "sparse" or (path / "zarr.json").exists():
        return load_encoded(path, store, name, resolved, key, form=form, n_columns=width)
    attrs = {
        "name": name,
        "params": resolved,
        "version": enc.version,
        "key": key,
        "prepared": {k: array_digest(v) for k, v in sorted(prepared.items())},
    }
    publish = atomic_directory(path, replace=True)
    tmp = publish.__enter__()
    try:
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
        rows = store.chunk_cells
        group.create_array("valid", shape=(store.n_cells,), dtype="bool", chunks=(SUBTILE,))
        # prepared arrays go to each worker once, not once per task; under a key of this
        # call (hash=False): the same arrays scattered by the previous call may still be
        # being released, and a task of this one would then lose its dependency
        shared = client.scatter([prepared], broadcast=True, hash=False)[0] if prepared else {}
    except BaseException:
        publish.__exit__(*sys.exc_info())
        raise
    return PendingEncoding(
        store, path, tmp, name, resolved, key, width, rows, shared, attrs, publish
    )


@dataclass
class PendingEncoding:
    """A dense encoding begun by :func:`start_encoding`: its chunks are written into ``tmp``.

    Chunk tasks (:func:`encode_chunk`) may write any rows whose ``valid`` chunks (of
    :data:`~rankdist.layout.SUBTILE` cells) no other task writes; once every row is
    written, :meth:`finish` renames ``tmp`` to ``path`` (one rename: readers never see
    half an encoding) and returns the :class:`Encoded`.
    """

    store: Store
    path: Path
    tmp: Path
    name: str
    params: dict
    key: str
    n_columns: int
    rows: int  # cells per chunk task when :meth:`run` encodes (the store's X chunks)
    prepared: object  # the prepare step's arrays (scattered to every worker), or {}
    attrs: dict
    publish: AbstractContextManager
    form: str = "dense"
    done: bool = False  # published or abandoned

    def sample_args(self) -> dict:
        """The keyword arguments of :func:`encode_rows` but the rows."""
        args = {"store_path": str(self.store.path.resolve()), "name": self.name}
        return args | {"params": self.params, "prepared": self.prepared}

    def task_args(self) -> dict:
        """The keyword arguments of :func:`encode_chunk` but ``start``, ``rows`` and ``keep``."""
        return self.sample_args() | {"out_path": str(self.tmp.resolve())}

    def run(self, client: Client, *, progress: bool = True) -> Encoded:
        """Encode every chunk of the store's X, one task each, then :meth:`finish`."""
        starts = list(range(0, self.store.n_cells, self.rows))
        # Keys unique to this call: Dask hands a key's existing result, an error included,
        # to whoever submits it again, so a rerun on the same client (after a full disk,
        # say) would get the failed attempt's error instead of computing.
        call = uuid.uuid4().hex[:8]
        try:
            futures = client.map(
                encode_chunk,
                starts,
                rows=self.rows,
                **self.task_args(),
                key=[f"rankdist-encode-{self.name}-{self.key}-{call}-{s}" for s in starts],
            )
            with _progress.bar(f"encode {self.name}", len(futures), enabled=progress) as bar:
                for fut in as_completed(futures):
                    fut.result()  # re-raises a worker's error here
                    bar.advance()
        except BaseException:
            self.abandon()
            raise
        return self.finish()

    def finish(self) -> Encoded:
        """Publish the encoding (every row written) and return it."""
        open_group(self.tmp, mode="r+").attrs["encoding"] = self.attrs
        self.publish.__exit__(None, None, None)
        self.done = True
        args = (self.path, self.store, self.name, self.params, self.key)
        return load_encoded(*args, n_columns=self.n_columns)

    def abandon(self) -> None:
        """Remove the temporary directory, unless the encoding was published."""
        if self.done:
            return
        self.done = True
        error = RuntimeError(f"encoding {self.path.name} abandoned")
        with contextlib.suppress(RuntimeError):
            self.publish.__exit__(RuntimeError, error, None)


def load_encoded(path, store, name, params, key, *, form="dense", n_columns=0) -> Encoded:
    """The :class:`Encoded` of a published encoding (its excluded cells read from ``valid``)."""
    valid = np.asarray(open_group(path, mode="r")["valid"][:])
    return Encoded(
        path=path,
        name=name,
        params=params,
        key=key,
        n_cells=store.n_cells,
        n_genes=store.n_genes,
        excluded=np.flatnonzero(~valid).astype(np.int64),
        form=form,
        n_columns=n_columns,
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


def encode_rows(
    start: int, stop: int, *, store_path: str, name: str, params: dict, prepared: dict
) -> tuple[np.ndarray, np.ndarray]:
    """``(z, valid)`` of cells ``start:stop`` (``stop`` clipped to the store), float32 as Z
    stores them; nothing written."""
    root = open_group(store_path, mode="r")
    block = np.asarray(root["X"][start:stop])  # each encoding casts as it needs
    totals = np.asarray(root["obs/total_counts"][start:stop], dtype=np.float64)
    z, valid = get_encoding(name).fn(block, totals, **params, **prepared)
    return np.ascontiguousarray(z, dtype=np.float32), np.asarray(valid, dtype=np.bool_)


def encode_chunk(
    start: int,
    *,
    store_path: str,
    out_path: str,
    rows: int,
    name: str,
    params: dict,
    prepared: dict,
    keep: bool = False,
):
    """Worker task: encode cells ``start:start+rows`` and write their Z and valid rows.

    Returns the number of excluded cells, or with ``keep`` the rows themselves,
    ``(z, valid)``, for a caller that holds them in memory. Where ``out_path`` is gone
    (the encoding was published or abandoned: a block recomputed after a lost worker),
    nothing is written.
    """
    args = {"store_path": store_path, "name": name, "params": params, "prepared": prepared}
    z, valid = encode_rows(start, start + rows, **args)
    stop = start + len(valid)
    if os.path.isdir(out_path):
        out = open_group(out_path, mode="r+")
        out["Z"][start:stop] = z
        out["valid"][start:stop] = valid
    return (z, valid) if keep else int((~valid).sum())
