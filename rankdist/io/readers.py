"""Open single-cell inputs as :class:`~rankdist.io.source.Source` objects that stream cells.

Formats: in-memory AnnData, ``.h5ad`` files and AnnData ``.zarr`` stores (X dense, CSR or
CSC; ``raw`` and ``layers``), 10x Genomics ``.h5`` files (Cell Ranger v3 ``matrix`` group
and the v2 one-group-per-genome layout) and 10x mtx directories.

This module recognises the format from the input's content and dispatches to its reader:
:mod:`rankdist.io._anndata_disk` (h5ad, AnnData zarr), :mod:`rankdist.io._tenx` (10x .h5
and mtx) or :class:`~rankdist.io.source.AnnDataSource` (in memory).

No reader holds the whole matrix. Dense and CSR inputs, and 10x ``.h5`` files (whose
genes x cells CSC is cells x genes CSR), are sliced by rows. CSC inputs and mtx files,
whose entries are not grouped by cell, are spooled once, on first use, into temporary
per-cell-bucket files (:mod:`rankdist.io._spool`); memory stays O(read batch + one bucket).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import h5py

from rankdist.io import _spool
from rankdist.io._anndata_disk import StoredAnnDataSource
from rankdist.io._disk import ACCEPTED_FORMATS
from rankdist.io._tenx import MtxSource, TenxH5Source
from rankdist.io.source import AnnDataSource, Source, SourceError

__all__ = ["open_source"]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# The spooling sizes open_source hands to the readers, read at call time so that tests
# can shrink them here (many read batches and buckets on small data).
#: Nonzeros read from a CSC matrix or an mtx file at a time while spooling.
_READ_BATCH_ENTRIES = _spool.READ_BATCH_ENTRIES
#: Target nonzeros per spool bucket (the unit read back when streaming rows).
_SPOOL_BUCKET_ENTRIES = _spool.SPOOL_BUCKET_ENTRIES
_V2_DATASETS = {"data", "indices", "indptr", "shape", "barcodes", "genes", "gene_names"}


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
    PermissionError
        The input, or a file of it, cannot be read (``filename`` names it).
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
            return MtxSource(path, **_spool_sizes())
        entries = sorted(p.name for p in path.iterdir())[:10]
        msg = (
            f"{path} is a directory but neither an AnnData zarr store (no zarr.json or .zgroup) "
            f"nor a 10x mtx directory (no matrix.mtx[.gz]); it contains {entries}. "
            f"{ACCEPTED_FORMATS}"
        )
        raise SourceError(msg)
    if "matrix.mtx" in path.name:
        _reject_raw_layer(path, use_raw, layer)
        prefix = path.name[: path.name.index("matrix.mtx")]
        return MtxSource(path.parent, prefix=prefix, **_spool_sizes())
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
                source = StoredAnnDataSource(
                    path, f, "h5ad", use_raw=use_raw, layer=layer, **_spool_sizes()
                )
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

    from rankdist.io.verified import open_group

    try:
        root = open_group(path, mode="r")
        keys = list(root)
    except PermissionError:
        raise  # unreadable, not corrupt: the error names the file
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
    return StoredAnnDataSource(
        path, root, "anndata-zarr", use_raw=use_raw, layer=layer, **_spool_sizes()
    )


def _spool_sizes() -> dict[str, int]:
    """Spooling sizes for the readers that spool (CSC AnnData matrices, mtx files)."""
    return {"read_batch_entries": _READ_BATCH_ENTRIES, "bucket_entries": _SPOOL_BUCKET_ENTRIES}
