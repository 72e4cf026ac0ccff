"""10x Genomics inputs: Cell Ranger ``.h5`` files (v3 ``matrix`` group, v2 genome group)
and mtx directories (MatrixMarket genes x cells with barcodes and features tables).

A 10x ``.h5`` holds genes x cells CSC, which is cells x genes CSR: cells are sliced
straight from disk. An mtx file's entries may come in any order, so they are spooled
by cell once, on first use (:class:`CellSpool`).
"""

from __future__ import annotations

import contextlib
import gzip
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from rankdist.io._disk import ACCEPTED_FORMATS, compressed_rows, reading
from rankdist.io._spool import READ_BATCH_ENTRIES, SPOOL_BUCKET_ENTRIES, CellSpool
from rankdist.io.source import Source, SourceError

#: Datasets every Cell Ranger matrix group holds (v2 and v3).
_TENX_MATRIX = ("data", "indices", "indptr", "shape", "barcodes")


def _strings(dataset) -> np.ndarray:
    """A 1-D HDF5 string dataset as a numpy array of ``str``."""
    values = dataset[()]
    if values.dtype.kind == "S":
        return np.char.decode(values, "utf-8")
    if values.dtype == object:  # variable-length strings
        return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values])
    return values.astype(str)


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
        with reading(self):
            rows = compressed_rows(
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
    :class:`CellSpool`. Names follow ``scanpy.read_10x_mtx``: gene symbols made unique over
    all features, then only 'Gene Expression' features kept when a feature-type column exists.
    ``dtype`` is int32 for an ``integer`` matrix (values beyond int32 are refused), float64
    for ``real``, and int32 ones for ``pattern``.

    Parameters
    ----------
    directory
        The mtx directory.
    prefix
        File-name prefix shared by its three files (``''`` for Cell Ranger's own names).
    read_batch_entries, bucket_entries
        Spooling sizes (see :mod:`rankdist.io._spool`).
    """

    def __init__(
        self,
        directory: Path,
        prefix: str = "",
        *,
        read_batch_entries: int = READ_BATCH_ENTRIES,
        bucket_entries: int = SPOOL_BUCKET_ENTRIES,
    ):
        from anndata.utils import make_index_unique

        self.path, self.kind = directory, "10x-mtx"
        self._spool: CellSpool | None = None
        self._read_batch_entries, self._bucket_entries = read_batch_entries, bucket_entries
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

    def _spool_entries(self) -> CellSpool:
        spool = CellSpool(
            self.n_cells, self.n_genes, self.dtype, self._nnz, bucket_entries=self._bucket_entries
        )
        n_fields = 2 if self._field == "pattern" else 3
        dtypes = {0: np.int64, 1: np.int64, 2: np.float64 if self._field == "real" else np.int64}
        seen = 0
        with contextlib.ExitStack() as on_error:
            on_error.callback(spool.close)
            with _mtx_errors(self.matrix_path), _open_text(self.matrix_path) as fh:
                _read_mtx_header(fh, self.matrix_path)
                if self._nnz:
                    reader = pd.read_csv(
                        fh,
                        sep=r"\s+",
                        header=None,
                        dtype=dtypes,
                        chunksize=self._read_batch_entries,
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

    def _add_entries(self, spool: CellSpool, chunk: pd.DataFrame, n_fields: int, first_entry: int):
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
