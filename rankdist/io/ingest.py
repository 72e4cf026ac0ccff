"""Ingest: stream a source into a validated, atomically written rankdist store."""

from __future__ import annotations

import hashlib
import os
import uuid
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from rankdist import _progress
from rankdist.io.genes import select_genes
from rankdist.io.readers import open_source
from rankdist.io.source import Source
from rankdist.io.store import (
    STORE_FORMAT,
    Store,
    atomic_directory,
    compressor,
    write_labels,
    write_names,
)

#: Target number of values in one stored chunk of X (16 MiB at float32).
CHUNK_VALUES = 1 << 22


def chunk_rows(n_genes: int, n_cells: int) -> int:
    """Cells per stored chunk of X: a multiple of 512, about :data:`CHUNK_VALUES` values."""
    rows = max(512, (CHUNK_VALUES // max(n_genes, 1)) // 512 * 512)
    return min(rows, max(512, -(-n_cells // 512) * 512))


def ingest(
    source,
    store_path: str | os.PathLike,
    *,
    cell_type: str | None = None,
    coarse_type: str | None = None,
    batch: str | None = None,
    genes: str | None = None,
    use_raw: bool = False,
    layer: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Store:
    """Stream a dataset into a rankdist store.

    Parameters
    ----------
    source
        Path to a .h5ad, 10x .h5, 10x mtx directory or AnnData .zarr; or an AnnData.
    store_path
        Directory to create. It appears only when ingest succeeds.
    cell_type, coarse_type, batch
        obs columns holding the fine cell type, the coarse class and the batch.
    genes
        ``None``/``'all'``, ``'hvg:N'``, a file with one gene per line, or a boolean var column.
    use_raw, layer
        Read ``.raw.X`` or ``layers[layer]`` instead of ``X``.
    overwrite
        Replace an existing store at ``store_path`` (atomically).
    progress
        Show a progress bar.

    Returns
    -------
    Store
        The new store, opened for reading.
    """
    store_path = Path(store_path)
    _check_store_path(store_path, overwrite)
    with open_source(source, use_raw=use_raw, layer=layer) as src:
        roles = {"cell_type": cell_type, "coarse_type": coarse_type, "batch": batch}
        labels = {role: _label_codes(src, col) for role, col in roles.items() if col is not None}
        _check_cell_names(src)
        gene_idx, gene_desc = select_genes(_CheckedSource(src), genes)
        if src.n_cells < 2:
            msg = f"{src.name} has {src.n_cells} cell(s); rankdist needs at least 2"
            raise ValueError(msg)
        source_sha = _sha256(src.path) if src.path is not None else None
        params = {
            "genes": gene_desc,
            "use_raw": use_raw,
            "layer": layer,
            "labels": {r: c for r, c in roles.items() if c is not None},
        }
        # Encodings are cached inside the store and a re-ingest replaces the whole store,
        # so a fresh id per ingest is all a cache key needs.
        content_id = uuid.uuid4().hex[:16]
        with atomic_directory(store_path, replace=overwrite) as tmp:
            root = zarr.open_group(tmp, mode="w")
            _write_matrix(src, root, gene_idx, progress)
            write_names(root, "obs/names", src.obs.index)
            write_names(root, "var/names", src.var.index[gene_idx])
            for role, (column, codes, cats) in labels.items():
                write_labels(root, role, column, codes, cats)
            root.create_group("encodings")
            root.create_group("results")
            root.attrs["rankdist"] = {
                "format": STORE_FORMAT,
                "content_id": content_id,
                "provenance": {
                    "source": str(Path(src.path).resolve()) if src.path is not None else None,
                    "source_kind": src.kind,
                    "sha256": source_sha,
                    "source_shape": [src.n_cells, src.n_genes],
                    "parameters": params,
                    "rankdist_version": version("rankdist"),
                },
            }
    return Store(store_path)


def _check_store_path(store_path: Path, overwrite: bool) -> None:
    """An existing ``store_path`` is an error, unless ``overwrite`` and it is safe to replace.

    Only a rankdist store or an empty directory is replaced: overwriting anything else
    (the input file itself, a project directory) would delete the user's data.
    """
    if not store_path.exists():
        return
    if not overwrite:
        msg = f"store {store_path} already exists; pass overwrite=True (--overwrite) to replace it"
        raise FileExistsError(msg)
    if store_path.is_dir() and not any(store_path.iterdir()):
        return
    try:
        # any rankdist store, including one of an older format that must be re-ingested
        is_store = "rankdist" in zarr.open_group(store_path, mode="r").attrs
    except (FileNotFoundError, NotADirectoryError, zarr.errors.GroupNotFoundError, ValueError):
        is_store = False
    if not is_store:
        kind = "a file" if store_path.is_file() else "a directory that is not a rankdist store"
        msg = (
            f"refusing to overwrite {store_path}: it is {kind}, and overwrite=True "
            "(--overwrite) only replaces a rankdist store; choose another store path, "
            "or remove it yourself first"
        )
        raise FileExistsError(msg)


class _CheckedSource(Source):
    """``source`` with every streamed block checked by :func:`_validate_block`.

    Passes that read X before it is written (the highly-variable-genes pass) then stop at
    the first NaN, inf or negative value with a message naming it, instead of failing
    later on statistics computed from it.
    """

    def __init__(self, source: Source):
        self._source = source
        self.path, self.kind, self.dtype = source.path, source.kind, source.dtype
        self.obs, self.var = source.obs, source.var
        self._gene_names = np.asarray(source.var.index)

    def _rows(self, start, stop):
        return self._source._rows(start, stop)

    def iter_chunks(self, chunk_cells, genes=None):
        for start, block in super().iter_chunks(chunk_cells):
            _validate_block(self, block, start, self._gene_names)
            yield start, (block if genes is None else block[:, genes])


def _label_codes(src: Source, column: str) -> tuple[str, np.ndarray, list[str]]:
    """Codes and categories of obs[column]; errors name the column and the file."""
    if column not in src.obs.columns:
        msg = f"column {column!r} not in obs of {src.name}; available: {list(src.obs.columns)}"
        raise KeyError(msg)
    values = src.obs[column]
    missing = values.isna()
    if missing.any():
        first = list(src.obs.index[missing.to_numpy()][:3])
        msg = (
            f"obs column {column!r} of {src.name} has {int(missing.sum())} missing value(s) "
            f"(first cells: {first}); fill or drop them before ingest"
        )
        raise ValueError(msg)
    cat = pd.Categorical(
        values.astype(str)
        if not isinstance(values.dtype, pd.CategoricalDtype)
        else values.cat.remove_unused_categories()
    )
    return column, np.asarray(cat.codes, dtype=np.int32), [str(c) for c in cat.categories]


def _check_cell_names(src: Source) -> None:
    names = src.obs.index
    dup = names[names.duplicated()]
    if len(dup):
        msg = (
            f"{src.name} has {len(dup)} duplicate cell name(s), e.g. {list(dup.unique()[:5])}; "
            "make them unique (AnnData.obs_names_make_unique()) before ingest"
        )
        raise ValueError(msg)


def _write_matrix(src: Source, root: zarr.Group, gene_idx: np.ndarray, progress: bool) -> None:
    """Stream X into ``root['X']`` (selected genes) and ``obs/total_counts`` (all genes)."""
    n, g = src.n_cells, len(gene_idx)
    rows = chunk_rows(g, n)
    dtype = src.dtype if src.dtype.kind in "fiu" else np.dtype(np.float64)
    x = root.create_array(
        "X", shape=(n, g), dtype=dtype, chunks=(rows, g), compressors=compressor()
    )
    totals = np.empty(n, dtype=np.float64)
    gene_names = np.asarray(src.var.index)
    select_all = len(gene_idx) == src.n_genes
    with _progress.bar(f"ingest {src.name}", -(-n // rows), enabled=progress) as bar:
        for start, block in src.iter_chunks(rows):
            _validate_block(src, block, start, gene_names)
            totals[start : start + len(block)] = block.sum(axis=1, dtype=np.float64)
            x[start : start + len(block)] = block if select_all else block[:, gene_idx]
            bar.advance()
    tot = root.create_array(
        "obs/total_counts", shape=(n,), dtype="float64", chunks=(max(1, min(n, 1 << 20)),)
    )
    tot[:] = totals


def _validate_block(src: Source, block: np.ndarray, start: int, gene_names: np.ndarray) -> None:
    """NaN, inf and negative values are errors naming the cell, the gene and the value."""
    if block.dtype.kind == "f":
        bad = ~np.isfinite(block)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            msg = (
                f"{src.name}: X has {int(bad.sum())} non-finite value(s) in cells "
                f"{start}..{start + len(block) - 1}; first: {block[r, c]} at cell "
                f"{src.obs.index[start + r]!r}, gene {gene_names[c]!r}"
            )
            raise ValueError(msg)
    if block.dtype.kind in "fi":
        neg = block < 0
        if neg.any():
            r, c = np.argwhere(neg)[0]
            msg = (
                f"{src.name}: X has negative value(s) ({block[r, c]} at cell "
                f"{src.obs.index[start + r]!r}, gene {gene_names[c]!r}); rankdist expects "
                "counts or log-normalised expression, not scaled/centred data"
            )
            raise ValueError(msg)


def _sha256(path: os.PathLike) -> str:
    """sha256 of a file, or of every file under a directory (names and contents)."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()
