"""Open single-cell inputs as :class:`~rankdist.io.source.Source` objects that stream cells.

Formats: in-memory AnnData, ``.h5ad`` files and AnnData ``.zarr`` stores (X dense, CSR or
CSC; ``raw`` and ``layers``), 10x Genomics ``.h5`` files (Cell Ranger v3 ``matrix`` group
and the v2 one-group-per-genome layout) and 10x mtx directories.

No reader holds the whole matrix. Dense and CSR inputs, and 10x ``.h5`` files (whose
genes x cells CSC is cells x genes CSR), are sliced by rows. CSC inputs and mtx files,
whose entries are not grouped by cell, are spooled once, on first use, into temporary
per-cell-bucket files (:class:`_CellSpool`); memory stays O(read batch + one bucket).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import tempfile
import weakref
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from rankdist.io.source import AnnDataSource, Source, SourceError

__all__ = ["open_source"]

ACCEPTED_FORMATS = (
    "accepted inputs: an AnnData object, an .h5ad file, an AnnData .zarr directory, "
    "a 10x Genomics .h5 file (Cell Ranger v2 or v3), or a 10x mtx directory "
    "(matrix.mtx[.gz] with barcodes.tsv[.gz] and features.tsv[.gz] or genes.tsv[.gz])"
)
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Nonzeros read from a CSC matrix or an mtx file at a time while spooling.
_READ_BATCH_ENTRIES = 1 << 20
#: Target nonzeros per spool bucket (the unit read back when streaming rows).
_SPOOL_BUCKET_ENTRIES = 1 << 22
_V2_DATASETS = {"data", "indices", "indptr", "shape", "barcodes", "genes", "gene_names"}
_TENX_MATRIX = ("data", "indices", "indptr", "shape", "barcodes")


def open_source(path_or_adata, *, use_raw: bool = False, layer: str | None = None) -> Source:
    """Open an input for streaming by cell chunks, recognising its format from its content.

    Parameters
    ----------
    path_or_adata
        An :class:`anndata.AnnData`, or the path of an ``.h5ad`` file, an AnnData ``.zarr``
        directory, a 10x ``.h5`` file, a 10x mtx directory (or its ``matrix.mtx[.gz]``).
    use_raw
        Read ``raw.X`` and ``raw.var`` (AnnData inputs only).
    layer
        Read ``layers[layer]`` instead of X (AnnData inputs only).

    Returns
    -------
    Source
        Open source; close it (or use it as a context manager) to release files and
        temporary spools.

    Raises
    ------
    SourceError
        The input is missing, of an unrecognised format, corrupt, or lacks the requested
        raw/layer. The message names the input.
    """
    import anndata

    if isinstance(path_or_adata, anndata.AnnData):
        return AnnDataSource(path_or_adata, use_raw=use_raw, layer=layer)
    if not isinstance(path_or_adata, str | os.PathLike):
        msg = f"cannot read a {type(path_or_adata).__name__}; {ACCEPTED_FORMATS}"
        raise SourceError(msg)
    path = Path(path_or_adata).expanduser()
    if not path.exists():
        msg = f"{path} does not exist; {ACCEPTED_FORMATS}"
        raise SourceError(msg)
    if path.is_dir():
        if (path / "zarr.json").is_file() or (path / ".zgroup").is_file():
            return _open_zarr(path, use_raw=use_raw, layer=layer)
        if any((path / f"matrix.mtx{gz}").is_file() for gz in ("", ".gz")):
            _reject_raw_layer(path, use_raw, layer)
            return MtxSource(path)
        entries = sorted(p.name for p in path.iterdir())[:10]
        msg = (
            f"{path} is a directory but neither an AnnData zarr store (no zarr.json or .zgroup) "
            f"nor a 10x mtx directory (no matrix.mtx[.gz]); it contains {entries}. "
            f"{ACCEPTED_FORMATS}"
        )
        raise SourceError(msg)
    if "matrix.mtx" in path.name:
        _reject_raw_layer(path, use_raw, layer)
        return MtxSource(path.parent, prefix=path.name[: path.name.index("matrix.mtx")])
    with path.open("rb") as fh:
        head = fh.read(8)
    if head != _HDF5_SIGNATURE:
        msg = f"{path} is not an HDF5 file (it starts with {head!r}); {ACCEPTED_FORMATS}"
        raise SourceError(msg)
    return _open_hdf5(path, use_raw=use_raw, layer=layer)


def _reject_raw_layer(path: Path, use_raw: bool, layer: str | None) -> None:
    if use_raw or layer is not None:
        msg = (
            f"{path} is a 10x file, which has no raw or layers (available layers: []); "
            "call open_source without use_raw/layer"
        )
        raise SourceError(msg)


def _open_hdf5(path: Path, *, use_raw: bool, layer: str | None) -> Source:
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        msg = (
            f"{path} has an HDF5 signature but cannot be opened ({err}): it is truncated or corrupt"
        )
        raise SourceError(msg) from err
    with contextlib.ExitStack() as on_error:
        on_error.callback(f.close)
        try:
            keys = list(f)
            if "matrix" in keys:
                _reject_raw_layer(path, use_raw, layer)
                source = TenxH5Source(path, f, "matrix")
            elif "obs" in keys and ("X" in keys or "layers" in keys):
                source = StoredAnnDataSource(path, f, "h5ad", use_raw=use_raw, layer=layer)
            else:
                genomes = [
                    k for k in keys if isinstance(f[k], h5py.Group) and _V2_DATASETS <= set(f[k])
                ]
                if not genomes:
                    msg = (
                        f"{path} is an HDF5 file but neither an h5ad (no obs and X) nor a 10x .h5 "
                        f"(no 'matrix' group, no genome group); top-level keys: {keys}. "
                        f"{ACCEPTED_FORMATS}"
                    )
                    raise SourceError(msg)
                if len(genomes) > 1:
                    msg = (
                        f"{path} is a Cell Ranger v2 .h5 with several genomes {genomes}; rankdist "
                        "reads one: subset it with scanpy.read_10x_h5(path, genome=...) and "
                        "write_h5ad"
                    )
                    raise SourceError(msg)
                _reject_raw_layer(path, use_raw, layer)
                source = TenxH5Source(path, f, genomes[0])
        except (OSError, KeyError) as err:
            msg = f"{path} could not be read ({err}): it is truncated or corrupt"
            raise SourceError(msg) from err
        on_error.pop_all()
    return source


def _open_zarr(path: Path, *, use_raw: bool, layer: str | None) -> Source:
    import zarr

    try:
        root = zarr.open_group(path, mode="r")
        keys = list(root)
    except (zarr.errors.BaseZarrError, OSError, ValueError) as err:
        msg = f"{path} looks like a zarr store but cannot be opened ({err}): it is corrupt"
        raise SourceError(msg) from err
    if "rankdist" in root.attrs:
        msg = (
            f"{path} is a rankdist store, not an input matrix; open it with "
            f"rankdist.Store({str(path)!r}) or ingest the data it was made from"
        )
        raise SourceError(msg)
    if "obs" not in keys or not ("X" in keys or "layers" in keys):
        msg = (
            f"{path} is a zarr store but not an AnnData one (no obs and X); top-level keys: "
            f"{sorted(keys)}. {ACCEPTED_FORMATS}"
        )
        raise SourceError(msg)
    return StoredAnnDataSource(path, root, "anndata-zarr", use_raw=use_raw, layer=layer)


def _strings(dataset) -> np.ndarray:
    """A 1-D HDF5 string dataset as a numpy array of ``str``."""
    values = dataset[()]
    if values.dtype.kind == "S":
        return np.char.decode(values, "utf-8")
    if values.dtype == object:  # variable-length strings
        return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values])
    return values.astype(str)


def _compressed_rows(data, indices, indptr, start: int, stop: int, n_cols: int) -> sp.csr_matrix:
    """Rows ``start:stop`` of a CSR matrix stored as three on-disk arrays (h5py or zarr)."""
    ptr = np.asarray(indptr[start : stop + 1], dtype=np.int64)
    lo, hi = int(ptr[0]), int(ptr[-1])
    return sp.csr_matrix(
        (np.asarray(data[lo:hi]), np.asarray(indices[lo:hi]), ptr - lo),
        shape=(stop - start, n_cols),
    )


class _CellSpool:
    """Nonzeros regrouped by cell in temporary files, so any entry order reads back by rows.

    Entries are appended, in batches, to one binary file per bucket of ``bucket_cells``
    consecutive cells; the bucket size targets ``_SPOOL_BUCKET_ENTRIES`` nonzeros. Reading
    rows loads only the buckets they fall in (the last one is cached), so memory is
    O(read batch + bucket) however the entries were ordered. Duplicates are summed, as
    :func:`scipy.io.mmread` followed by ``tocsr`` does. The directory is removed by
    :meth:`close` (or when the spool is garbage collected).
    """

    def __init__(self, n_cells: int, n_genes: int, dtype: np.dtype, nnz: int):
        self.n_cells, self.n_genes = n_cells, n_genes
        per_cell = max(nnz, 1) / max(n_cells, 1)
        self.bucket_cells = int(max(1, min(n_cells, _SPOOL_BUCKET_ENTRIES // max(per_cell, 1))))
        self._record = np.dtype([("row", "<u4"), ("col", "<u4"), ("val", dtype)])
        self._dir = Path(tempfile.mkdtemp(prefix="rankdist-spool-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
        self._cached: tuple[int, sp.csr_matrix | None] = (-1, None)

    @property
    def directory(self) -> Path:
        return self._dir

    def add(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> None:
        """Append entries (0-based cell ``rows``, gene ``cols``) to their buckets' files."""
        buckets = np.asarray(rows, dtype=np.int64) // self.bucket_cells
        order = np.argsort(buckets, kind="stable")
        buckets = buckets[order]
        records = np.empty(len(order), dtype=self._record)
        records["row"] = np.asarray(rows)[order] - buckets * self.bucket_cells
        records["col"] = np.asarray(cols)[order]
        records["val"] = np.asarray(values)[order]
        present, starts = np.unique(buckets, return_index=True)
        for bucket, lo, hi in zip(present, starts, [*starts[1:], len(records)], strict=True):
            with (self._dir / f"{bucket:08d}.bin").open("ab") as fh:
                records[lo:hi].tofile(fh)

    def _bucket(self, bucket: int) -> sp.csr_matrix:
        if self._cached[0] != bucket:
            self._cached = (-1, None)
            path = self._dir / f"{bucket:08d}.bin"
            records = np.fromfile(path, dtype=self._record) if path.exists() else None
            if records is None:
                records = np.empty(0, dtype=self._record)
            n_rows = min(self.bucket_cells, self.n_cells - bucket * self.bucket_cells)
            matrix = sp.coo_matrix(
                (records["val"], (records["row"], records["col"])), shape=(n_rows, self.n_genes)
            ).tocsr()
            self._cached = (bucket, matrix)
        return self._cached[1]

    def rows(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` as CSR (``stop > start``)."""
        size = self.bucket_cells
        parts = []
        for bucket in range(start // size, (stop - 1) // size + 1):
            first = bucket * size
            parts.append(
                self._bucket(bucket)[max(start, first) - first : min(stop, first + size) - first]
            )
        return parts[0] if len(parts) == 1 else sp.vstack(parts, format="csr")

    def close(self) -> None:
        self._cached = (-1, None)
        self._cleanup()


class StoredAnnDataSource(Source):
    """An AnnData on disk, as ``.h5ad`` (h5py) or ``.zarr``: X, ``raw/X`` or a layer.

    Dense and CSR matrices are sliced by rows; a CSC matrix is spooled by cell on first use.
    """

    def __init__(self, path: Path, root, kind: str, *, use_raw: bool, layer: str | None):
        self.path, self.kind = path, kind
        self._root = root
        self._spool: _CellSpool | None = None
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
        with _reading(self):
            if self.layout == "dense":
                return np.asarray(self._x[start:stop])
            if self.layout == "csr":
                x = self._x
                return _compressed_rows(
                    x["data"], x["indices"], x["indptr"], start, stop, self.n_genes
                )
            if self._spool is None:
                self._spool = self._spool_csc()
            return self._spool.rows(start, stop)

    def _spool_csc(self) -> _CellSpool:
        data, cells, indptr = self._x["data"], self._x["indices"], self._x["indptr"]
        ptr = np.asarray(indptr[:], dtype=np.int64)
        nnz = int(ptr[-1])
        spool = _CellSpool(self.n_cells, self.n_genes, self.dtype, nnz)
        with contextlib.ExitStack() as on_error:
            on_error.callback(spool.close)
            for lo in range(0, nnz, _READ_BATCH_ENTRIES):
                hi = min(lo + _READ_BATCH_ENTRIES, nnz)
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


@contextlib.contextmanager
def _reading(source: Source):
    """Turn low-level read failures of ``source`` into a SourceError naming it."""
    try:
        yield
    except (OSError, KeyError) as err:
        msg = f"{source.name} could not be read ({err}): it is truncated or corrupt"
        raise SourceError(msg) from err


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


class TenxH5Source(Source):
    """A 10x Genomics ``.h5`` matrix: Cell Ranger v3 ``matrix`` group or a v2 genome group.

    The file holds genes x cells CSC, so each cell's entries are contiguous and cells are
    sliced straight from disk. Only 'Gene Expression' features are kept where feature types
    are stored, and gene names are then made unique; this matches
    ``scanpy.read_10x_h5(path)`` followed by ``var_names_make_unique()``.
    """

    def __init__(self, path: Path, f: h5py.File, group: str):
        from anndata.utils import make_index_unique

        self.path, self.kind, self._file = path, "10x-h5", f
        g = f[group]
        v3 = group == "matrix"
        needed = [
            *_TENX_MATRIX,
            *(("features/id", "features/name") if v3 else ("genes", "gene_names")),
        ]
        missing = [k for k in needed if k not in g]
        if missing:
            msg = (
                f"{path} looks like a 10x .h5 (group {group!r}) but lacks {missing}: "
                "it is truncated or was not written by Cell Ranger"
            )
            raise SourceError(msg)
        n_features, n_cells = (int(v) for v in g["shape"][()])
        self._n_features = n_features
        self._data, self._indices, self._indptr = g["data"], g["indices"], g["indptr"]
        barcodes = _strings(g["barcodes"])
        if v3:
            var = _tenx_v3_features(g["features"])
        else:
            var = pd.DataFrame(
                {"name": _strings(g["gene_names"]), "gene_ids": _strings(g["genes"])}
            )
        if (
            len(barcodes) != n_cells
            or len(var) != n_features
            or self._indptr.shape != (n_cells + 1,)
        ):
            msg = (
                f"{path}: shape says {n_features} features x {n_cells} cells but it has "
                f"{len(var)} features, {len(barcodes)} barcodes and {self._indptr.shape[0]} indptr "
                "entries: the file is corrupt"
            )
            raise SourceError(msg)
        self.obs = pd.DataFrame(index=pd.Index(barcodes))
        if "filtered_barcodes" in g:
            self.obs["filtered_barcodes"] = g["filtered_barcodes"][()].astype(bool)
        self._keep = None
        if "feature_types" in var:
            keep = (var["feature_types"] == "Gene Expression").to_numpy()
            if not keep.any():
                msg = (
                    f"{path} has no 'Gene Expression' features (feature types: "
                    f"{sorted(set(var['feature_types']))}); rankdist reads gene expression only"
                )
                raise SourceError(msg)
            if not keep.all():
                self._keep = np.flatnonzero(keep)
                var = var[keep]
        names = var.pop("name")
        self.var = var.set_index(make_index_unique(pd.Index(names.to_numpy(), dtype=str)))
        self.dtype = np.dtype(self._data.dtype)

    def _rows(self, start, stop):
        with _reading(self):
            rows = _compressed_rows(
                self._data, self._indices, self._indptr, start, stop, self._n_features
            )
        return rows if self._keep is None else rows[:, self._keep]

    def close(self) -> None:
        self._file.close()


def _tenx_v3_features(features: h5py.Group) -> pd.DataFrame:
    """Cell Ranger v3 feature table, with the columns ``scanpy.read_10x_h5`` gives."""
    columns = {"name": _strings(features["name"])}
    if "gene_id" in features:  # probe-barcode matrix
        columns.update(gene_ids=_strings(features["gene_id"]), probe_ids=_strings(features["id"]))
    else:
        columns["gene_ids"] = _strings(features["id"])
    if "feature_type" in features:
        columns["feature_types"] = _strings(features["feature_type"])
    skip = {"name", "feature_type", "id", "gene_id", "_all_tag_keys"}
    for key, item in features.items():
        if (
            isinstance(item, h5py.Dataset)
            and key not in skip
            and item.shape == (len(columns["name"]),)
        ):
            columns[key] = item[()].astype(bool) if item.dtype.kind == "b" else _strings(item)
    return pd.DataFrame(columns)


class MtxSource(Source):
    """A 10x mtx directory: MatrixMarket genes x cells with barcodes and features tables.

    The entries may come in any order: on first use they are parsed once, in batches, into a
    :class:`_CellSpool`. Names follow ``scanpy.read_10x_mtx``: gene symbols made unique over
    all features, then only 'Gene Expression' features kept when a feature-type column exists.
    ``dtype`` is int32 for an ``integer`` matrix (values beyond int32 are refused), float64
    for ``real``, and int32 ones for ``pattern``.
    """

    def __init__(self, directory: Path, prefix: str = ""):
        from anndata.utils import make_index_unique

        self.path, self.kind = directory, "10x-mtx"
        self._spool: _CellSpool | None = None
        self.matrix_path = _mtx_file(directory, prefix, ["matrix.mtx"])
        barcodes = _read_tsv(_mtx_file(directory, prefix, ["barcodes.tsv"]))
        features = _read_tsv(_mtx_file(directory, prefix, ["features.tsv", "genes.tsv"]))
        with _mtx_errors(self.matrix_path), _open_text(self.matrix_path) as fh:
            n_features, n_cells, self._nnz, self._field = _read_mtx_header(fh, self.matrix_path)
        if (n_features, n_cells) != (len(features), len(barcodes)):
            msg = (
                f"{self.matrix_path} is {n_features} genes x {n_cells} cells but the directory has "
                f"{len(features)} features and {len(barcodes)} barcodes: "
                "the files do not belong together"
            )
            raise SourceError(msg)
        names = features[1] if features.shape[1] > 1 else features[0]
        var = pd.DataFrame({"gene_ids": features[0].to_numpy()})
        var.index = make_index_unique(pd.Index(names.to_numpy(), dtype=str))
        keep = np.ones(n_features, dtype=bool)
        if features.shape[1] > 2:
            var["feature_types"] = features[2].to_numpy()
            keep = (var["feature_types"] == "Gene Expression").to_numpy()
        self.var = var[keep]
        self._gene_map = np.full(n_features, -1, dtype=np.int64)
        self._gene_map[keep] = np.arange(int(keep.sum()))
        self.obs = pd.DataFrame(index=pd.Index(barcodes[0].to_numpy(), dtype=str))
        self.dtype = np.dtype(np.float64 if self._field == "real" else np.int32)

    def _rows(self, start, stop):
        if self._spool is None:
            self._spool = self._spool_entries()
        return self._spool.rows(start, stop)

    def _spool_entries(self) -> _CellSpool:
        spool = _CellSpool(self.n_cells, self.n_genes, self.dtype, self._nnz)
        n_fields = 2 if self._field == "pattern" else 3
        dtypes = {0: np.int64, 1: np.int64, 2: np.float64 if self._field == "real" else np.int64}
        seen = 0
        with contextlib.ExitStack() as on_error:
            on_error.callback(spool.close)
            with _mtx_errors(self.matrix_path), _open_text(self.matrix_path) as fh:
                _read_mtx_header(fh, self.matrix_path)
                if self._nnz:
                    reader = pd.read_csv(
                        fh, sep=r"\s+", header=None, dtype=dtypes, chunksize=_READ_BATCH_ENTRIES
                    )
                    with reader:
                        for chunk in reader:
                            self._add_entries(spool, chunk, n_fields, first_entry=seen)
                            seen += len(chunk)
            if seen != self._nnz:
                msg = (
                    f"{self.matrix_path} declares {self._nnz} entries but has {seen}: "
                    "it is truncated"
                )
                raise SourceError(msg)
            on_error.pop_all()
        return spool

    def _add_entries(self, spool: _CellSpool, chunk: pd.DataFrame, n_fields: int, first_entry: int):
        name = self.matrix_path
        if chunk.shape[1] != n_fields:
            msg = (
                f"{name}: entries have {chunk.shape[1]} fields, "
                f"a {self._field} matrix has {n_fields}"
            )
            raise SourceError(msg)
        genes = chunk[0].to_numpy() - 1
        cells = chunk[1].to_numpy() - 1
        bad = (genes < 0) | (genes >= len(self._gene_map)) | (cells < 0) | (cells >= self.n_cells)
        if bad.any():
            at = int(np.argmax(bad))
            msg = (
                f"{name}: entry {first_entry + at + 1} ({genes[at] + 1}, {cells[at] + 1}) "
                f"lies outside the declared {len(self._gene_map)} x {self.n_cells} matrix: "
                "the file is corrupt"
            )
            raise SourceError(msg)
        values = np.ones(len(chunk), dtype=self.dtype) if n_fields == 2 else chunk[2].to_numpy()
        if self.dtype.kind == "i" and len(values):
            info = np.iinfo(self.dtype)
            if values.min() < info.min or values.max() > info.max:
                msg = (
                    f"{name}: integer values beyond int32 ({values.min()}..{values.max()}); "
                    "rankdist reads counts"
                )
                raise SourceError(msg)
        mapped = self._gene_map[genes]
        kept = mapped >= 0
        spool.add(cells[kept], mapped[kept], values[kept].astype(self.dtype))

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def _mtx_file(directory: Path, prefix: str, stems: list[str]) -> Path:
    for stem in stems:
        for suffix in ("", ".gz"):
            if (candidate := directory / f"{prefix}{stem}{suffix}").is_file():
                return candidate
    wanted = " or ".join(f"{prefix}{stem}[.gz]" for stem in stems)
    contents = sorted(p.name for p in directory.iterdir())[:10]
    msg = (
        f"10x mtx directory {directory} lacks {wanted}; it contains {contents}. {ACCEPTED_FORMATS}"
    )
    raise SourceError(msg)


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


@contextlib.contextmanager
def _mtx_errors(path: Path):
    """Report parse and decompression failures of a text file as a SourceError naming it."""
    try:
        yield
    except SourceError:
        raise
    except (OSError, EOFError, ValueError) as err:
        msg = (
            f"{path} could not be parsed ({type(err).__name__}: {err}): it is truncated or corrupt"
        )
        raise SourceError(msg) from err


def _read_tsv(path: Path) -> pd.DataFrame:
    with _mtx_errors(path):
        try:
            return pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False)
        except pd.errors.EmptyDataError as err:
            msg = f"{path} is empty; a 10x mtx directory needs one line per barcode or feature"
            raise SourceError(msg) from err


def _read_mtx_header(fh, path: Path) -> tuple[int, int, int, str]:
    """Parse the banner and size line, leaving ``fh`` at the first entry.

    Returns ``(n_rows, n_cols, nnz, field)``.
    """
    line = fh.readline()
    banner = line.lower().split()
    if len(banner) != 5 or banner[:2] != ["%%matrixmarket", "matrix"]:
        msg = f"{path} is not a MatrixMarket file (first line {line[:80]!r}); {ACCEPTED_FORMATS}"
        raise SourceError(msg)
    layout, field, symmetry = banner[2:]
    if (
        layout != "coordinate"
        or field not in {"integer", "real", "pattern"}
        or symmetry != "general"
    ):
        msg = (
            f"{path} is a MatrixMarket '{layout} {field} {symmetry}' matrix; rankdist reads "
            "'coordinate integer|real|pattern general' (what Cell Ranger writes)"
        )
        raise SourceError(msg)
    while (line := fh.readline()).strip().startswith("%") or (line and not line.strip()):
        pass
    size = line.split()
    if len(size) != 3 or not all(token.isdigit() for token in size):
        msg = (
            f"{path}: expected a size line 'rows cols entries', found {line[:80]!r}: "
            "the file is corrupt"
        )
        raise SourceError(msg)
    n_rows, n_cols, nnz = (int(token) for token in size)
    return n_rows, n_cols, nnz, field
