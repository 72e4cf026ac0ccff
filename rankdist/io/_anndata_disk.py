"""An AnnData on disk (``.h5ad`` via h5py, or an AnnData ``.zarr``) read by cell chunks.

Dense and CSR matrices are sliced by rows straight from disk; a CSC matrix, whose
entries are grouped by gene, is spooled by cell on first use (:class:`CellSpool`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from rankdist.io._disk import compressed_rows, reading
from rankdist.io._spool import READ_BATCH_ENTRIES, SPOOL_BUCKET_ENTRIES, CellSpool
from rankdist.io.source import Source, SourceError


class StoredAnnDataSource(Source):
    """An AnnData on disk, as ``.h5ad`` (h5py) or ``.zarr``: X, ``raw/X`` or a layer.

    Dense and CSR matrices are sliced by rows; a CSC matrix is spooled by cell on first use.

    Parameters
    ----------
    path
        The ``.h5ad`` file or ``.zarr`` directory (for messages and provenance).
    root
        Its open root: an :class:`h5py.File` (closed by :meth:`close`) or a zarr group.
    kind
        ``'h5ad'`` or ``'anndata-zarr'``.
    use_raw, layer
        Read ``raw/X`` with ``raw/var``, or ``layers/<layer>``, instead of ``X``.
    read_batch_entries, bucket_entries
        Spooling sizes for a CSC matrix (see :mod:`rankdist.io._spool`).
    """

    def __init__(
        self,
        path: Path,
        root,
        kind: str,
        *,
        use_raw: bool,
        layer: str | None,
        read_batch_entries: int = READ_BATCH_ENTRIES,
        bucket_entries: int = SPOOL_BUCKET_ENTRIES,
    ):
        self.path, self.kind = path, kind
        self._root = root
        self._spool: CellSpool | None = None
        self._read_batch_entries, self._bucket_entries = read_batch_entries, bucket_entries
        x_key, var_key = _matrix_location(path, root, use_raw=use_raw, layer=layer)
        self.obs = _read_frame(path, root, "obs")
        self.var = _read_frame(path, root, var_key)
        self._x, self.layout, shape = _matrix_parts(path, root, x_key)
        if shape != (self.n_cells, self.n_genes):
            msg = (
                f"matrix {x_key} in {path} has shape {shape} but obs x {var_key} is "
                f"{(self.n_cells, self.n_genes)}: the file is corrupt"
            )
            raise SourceError(msg)
        dtype = self._x.dtype if self.layout == "dense" else self._x["data"].dtype
        self.dtype = np.dtype(dtype)
        self.matrix_key = x_key

    def _rows(self, start, stop):
        with reading(self):
            if self.layout == "dense":
                return np.asarray(self._x[start:stop])
            if self.layout == "csr":
                x = self._x
                return compressed_rows(
                    x["data"], x["indices"], x["indptr"], start, stop, self.n_genes
                )
            if self._spool is None:
                self._spool = self._spool_csc()
            return self._spool.rows(start, stop)

    def _spool_csc(self) -> CellSpool:
        data, cells, indptr = self._x["data"], self._x["indices"], self._x["indptr"]
        ptr = np.asarray(indptr[:], dtype=np.int64)
        nnz = int(ptr[-1])
        spool = CellSpool(
            self.n_cells, self.n_genes, self.dtype, nnz, bucket_entries=self._bucket_entries
        )
        with contextlib.ExitStack() as on_error:
            on_error.callback(spool.close)
            for lo in range(0, nnz, self._read_batch_entries):
                hi = min(lo + self._read_batch_entries, nnz)
                genes = np.searchsorted(ptr, np.arange(lo, hi), side="right") - 1
                spool.add(np.asarray(cells[lo:hi]), genes, np.asarray(data[lo:hi]))
            on_error.pop_all()
        return spool

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        if isinstance(self._root, h5py.File):
            self._root.close()


def _matrix_location(path, root, *, use_raw: bool, layer: str | None) -> tuple[str, str]:
    """Keys of the matrix and of its var table inside an AnnData group."""
    layers = sorted(root["layers"]) if "layers" in root else []
    if use_raw and layer is not None:
        msg = f"use_raw=True and layer={layer!r} were both given for {path}; pass only one"
        raise SourceError(msg)
    if use_raw:
        if "raw" not in root or "X" not in root["raw"] or "var" not in root["raw"]:
            msg = (
                f"use_raw=True but {path} has no raw (raw/X); available layers: {layers}; "
                "pass layer=... or use_raw=False"
            )
            raise SourceError(msg)
        return "raw/X", "raw/var"
    if layer is not None:
        if layer not in layers:
            msg = f"layer {layer!r} not in {path}; available layers: {layers}"
            raise SourceError(msg)
        return f"layers/{layer}", "var"
    if "X" not in root:
        msg = f"{path} has no X matrix; pass layer=... (available layers: {layers})"
        raise SourceError(msg)
    return "X", "var"


def _read_frame(path, root, key: str) -> pd.DataFrame:
    from anndata.io import read_elem

    group = root[key]
    if group.attrs.get("encoding-type") != "dataframe":
        msg = (
            f"{key} in {path} is not an anndata dataframe (written by anndata < 0.8?); "
            "re-write the file with a current anndata: anndata.read_h5ad(...).write_h5ad(...)"
        )
        raise SourceError(msg)
    try:
        frame = read_elem(group)
    except (OSError, KeyError, ValueError) as err:
        msg = f"cannot read {key} of {path} ({err}): it is truncated or corrupt"
        raise SourceError(msg) from err
    frame.index = frame.index.astype(str)
    return frame


def _matrix_parts(path, root, key: str):
    """The matrix at ``key`` as ``(parts, layout, shape)``.

    ``parts`` is the array for layout ``'dense'``, else a dict of the ``data``, ``indices``
    and ``indptr`` arrays for layout ``'csr'`` or ``'csc'``.
    """
    node = root[key]
    encoding = str(node.attrs.get("encoding-type", node.attrs.get("h5sparse_format", "array")))
    if hasattr(node, "shape") and hasattr(node, "dtype"):
        return node, "dense", tuple(node.shape)
    if encoding not in {"csr_matrix", "csr_array", "csr", "csc_matrix", "csc_array", "csc"}:
        msg = f"matrix {key} in {path} has encoding {encoding!r}; rankdist reads dense, CSR or CSC"
        raise SourceError(msg)
    missing = [k for k in ("data", "indices", "indptr") if k not in node]
    if missing:
        msg = f"sparse matrix {key} in {path} lacks {missing}: the file is corrupt"
        raise SourceError(msg)
    shape = tuple(int(v) for v in node.attrs.get("shape", node.attrs.get("h5sparse_shape", ())))
    return {k: node[k] for k in ("data", "indices", "indptr")}, encoding[:3], shape
