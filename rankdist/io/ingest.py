"""Ingest: stream one or several sources into a validated, atomically written rankdist store.

Several sources are concatenated in the order given, keeping the genes present in every
one of them (by var name, in the first source's order); cells can be subsampled per cell
type on the way (``max_per_type``), reading only the kept rows. See docs/store.md.
"""

from __future__ import annotations

import contextlib
import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from rankdist import _progress
from rankdist.io._combine import (
    SOURCE_BATCH_COLUMN,
    _cell_names,
    _Part,
    _plan_parts,
    _provenance,
    _source_batches,
    _union_labels,
)
from rankdist.io._subsample import _check_subsample, _keep_rows, _subsample
from rankdist.io.genes import select_genes
from rankdist.io.readers import open_source
from rankdist.io.source import Source
from rankdist.io.store import (
    Store,
    atomic_directory,
    check_store_path,
    compressor,
    drop_unused_categories,
    finish_store,
)
from rankdist.io.verified import open_group
from rankdist.layout import chunk_rows

__all__ = ["SOURCE_BATCH_COLUMN", "ingest"]


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
    max_per_type: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Store:
    """Stream one or several datasets into a rankdist store.

    Parameters
    ----------
    source
        Path to a .h5ad, 10x .h5, 10x mtx directory or AnnData .zarr; or an AnnData; or a
        list of these, concatenated in order. Several sources keep the genes present in
        all of them (matched by var name, in the first source's order); colliding cell
        names are prefixed with the source's name (``'<stem>:<cell>'``).
    store_path
        Directory to create. It appears only when ingest succeeds.
    cell_type, coarse_type, batch
        obs columns holding the fine cell type, the coarse class and the batch; with
        several sources each column must exist in all of them. With several sources and
        no ``batch``, the batch is the source file's name without suffix (its stem).
    genes
        ``None``/``'all'``, ``'hvg:N'``, a file with one gene per line, or a boolean var column.
    use_raw, layer
        Read ``.raw.X`` or ``layers[layer]`` instead of ``X``.
    max_per_type
        Keep at most this many cells of each cell type (needs ``cell_type``), drawn
        uniformly at random; types with fewer cells are kept whole, and kept cells stay
        in their original order. Only the kept rows are read.
    seed
        Seed of :func:`numpy.random.default_rng` for ``max_per_type``.
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
    check_store_path(store_path, overwrite)
    inputs = list(source) if isinstance(source, list | tuple) else [source]
    if not inputs:
        msg = "source is an empty list; pass a path, an AnnData, or a list of them"
        raise ValueError(msg)
    max_per_type = _check_subsample(max_per_type, seed, cell_type)
    with contextlib.ExitStack() as sources:
        srcs = [sources.enter_context(open_source(s, use_raw=use_raw, layer=layer)) for s in inputs]
        parts = _plan_parts(srcs)
        roles = {"cell_type": cell_type, "coarse_type": coarse_type, "batch": batch}
        _check_categorical_labels(parts, roles)
        labels = {role: _union_labels(parts, col) for role, col in roles.items() if col is not None}
        if batch is None and len(parts) > 1:
            labels["batch"] = _source_batches(parts)
        names, prefixed = _cell_names(parts)
        subsample = None
        if max_per_type is not None:
            kept, subsample = _subsample(labels["cell_type"], max_per_type, seed)
            names = names[kept]
            labels = {
                r: (col, *drop_unused_categories(codes[kept], cats))
                for r, (col, codes, cats) in labels.items()
            }
            _keep_rows(parts, kept)
        combined = _CombinedSource(parts, names)
        gene_idx, gene_desc = select_genes(combined, genes)
        if combined.n_cells < 2:
            msg = f"{combined.name} has {combined.n_cells} cell(s); rankdist needs at least 2"
            if subsample is not None:
                msg += f" (after max_per_type={max_per_type})"
            raise ValueError(msg)
        params = {
            "genes": gene_desc,
            "use_raw": use_raw,
            "layer": layer,
            "labels": {role: column for role, (column, _, _) in labels.items()},
        }
        provenance = _provenance(parts, params, prefixed, subsample)
        # Encodings are cached inside the store and a re-ingest replaces the whole store,
        # so a fresh id per ingest is all a cache key needs.
        content_id = uuid.uuid4().hex[:16]
        with atomic_directory(store_path, replace=overwrite) as tmp:
            root = open_group(tmp, mode="w")
            totals = _write_matrix(combined, root, gene_idx, progress)
            finish_store(
                root,
                cell_names=names,
                gene_names=combined.var.index[gene_idx],
                labels=labels,
                total_counts=totals,
                content_id=content_id,
                provenance=provenance,
            )
    return Store(store_path)


def _part_blocks(part: _Part, chunk_cells: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(first store row - offset, block)`` of the kept cells, all genes, validated."""
    # A function here rather than a method of _Part: reading the matrix belongs to ingest,
    # and every block goes through this module's _validate_block.
    src = part.source
    gene_names = np.asarray(src.var.index)
    for start, block in src.iter_chunks(chunk_cells, rows=part.rows):
        if part.rows is None:
            _validate_block(src, block, start, gene_names)
        else:
            rows = part.rows[start : start + len(block)]
            _validate_block(src, block, start, gene_names, rows=rows)
        yield start, block


class _CombinedSource(Source):
    """The kept cells of every part, over the common genes, each block validated.

    What gene selection sees: ``var`` is the first source's, restricted to the common
    genes; the highly-variable-genes pass then stops at the first NaN, inf or negative
    value with a message naming it, instead of failing later on statistics computed
    from it.
    """

    def __init__(self, parts: list[_Part], names: np.ndarray):
        self.parts = parts
        first = parts[0]
        self.path = first.source.path if len(parts) == 1 else None
        self.kind = first.source.kind if len(parts) == 1 else "multiple"
        dtypes = [p.source.dtype for p in parts]
        numeric = all(d.kind in "fiu" for d in dtypes)
        self.dtype = np.result_type(*dtypes) if numeric else np.dtype(np.float64)
        self.obs = pd.DataFrame(index=pd.Index(names, dtype=object))
        var = first.source.var
        self.var = var if first.genes is None else var.iloc[first.genes]
        self._name = ", ".join(p.source.name for p in parts)

    @property
    def name(self) -> str:
        return self._name

    def iter_chunks(self, chunk_cells, genes=None, rows=None):
        if rows is not None:
            msg = "the combined sources are already subsampled; rows is not supported here"
            raise ValueError(msg)
        for part in self.parts:
            cols = part.columns(genes)
            for start, block in _part_blocks(part, chunk_cells):
                yield part.offset + start, (block if cols is None else block[:, cols])


def _write_matrix(
    src: _CombinedSource, root: zarr.Group, gene_idx: np.ndarray, progress: bool
) -> np.ndarray:
    """Stream X into ``root['X']`` (selected genes); return the library sizes (all genes)."""
    n, g = src.n_cells, len(gene_idx)
    rows = chunk_rows(g, n)
    x = root.create_array(
        "X", shape=(n, g), dtype=src.dtype, chunks=(rows, g), compressors=compressor()
    )
    totals = np.empty(n, dtype=np.float64)
    genes = None if len(gene_idx) == src.n_genes else gene_idx
    writer = _ChunkWriter(x)
    n_blocks = sum(p.n_blocks(rows) for p in src.parts)
    with _progress.bar(f"ingest {src.name}", n_blocks, enabled=progress) as bar:
        for part in src.parts:
            cols = part.columns(genes)
            for start, block in _part_blocks(part, rows):
                first = part.offset + start
                # library size over every gene of the cell's own source
                totals[first : first + len(block)] = block.sum(axis=1, dtype=np.float64)
                writer.append(block if cols is None else block[:, cols])
                bar.advance()
    writer.close()
    return totals


class _ChunkWriter:
    """Appends blocks of any number of rows to an array, writing whole chunks only.

    Subsampled or concatenated sources yield blocks that do not line up with the store's
    chunks; buffering them to chunk boundaries writes (and compresses) each chunk once.
    """

    def __init__(self, array: zarr.Array):
        self._array, self._rows = array, int(array.chunks[0])
        self._pending: list[np.ndarray] = []
        self._held = 0
        self._written = 0

    def append(self, block: np.ndarray) -> None:
        self._pending.append(block)
        self._held += len(block)
        if self._held >= self._rows:
            self._write(self._held // self._rows * self._rows)

    def close(self) -> None:
        if self._held:
            self._write(self._held)

    def _write(self, n_rows: int) -> None:
        data = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        stop = self._written + n_rows
        self._array[self._written : stop] = data[:n_rows].astype(self._array.dtype, copy=False)
        rest = data[n_rows:]
        self._pending = [rest] if len(rest) else []
        self._held, self._written = len(rest), stop


def _validate_block(
    src: Source, block: np.ndarray, start: int, gene_names: np.ndarray, rows=None
) -> None:
    """NaN, inf and negative values are errors naming the cell, the gene and the value.

    The block holds source cells ``start, start + 1, ...``, or the cells ``rows``.
    """
    cells = np.arange(start, start + len(block)) if rows is None else np.asarray(rows)
    if block.dtype.kind == "f":
        bad = ~np.isfinite(block)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            msg = (
                f"{src.name}: X has {int(bad.sum())} non-finite value(s) in cells "
                f"{cells[0]}..{cells[-1]}; first: {block[r, c]} at cell "
                f"{src.obs.index[cells[r]]!r}, gene {gene_names[c]!r}"
            )
            raise ValueError(msg)
    if block.dtype.kind in "fi":
        neg = block < 0
        if neg.any():
            r, c = np.argwhere(neg)[0]
            msg = (
                f"{src.name}: X has negative value(s) ({block[r, c]} at cell "
                f"{src.obs.index[cells[r]]!r}, gene {gene_names[c]!r}); rankdist expects "
                "counts or log-normalised expression, not scaled/centred data"
            )
            raise ValueError(msg)


def _check_categorical_labels(parts: list[_Part], roles: dict[str, str | None]) -> None:
    """Labels are categories: a float column with fractional values is a score, not a type.

    Such a column is refused when every cell has its own value (each cell would be a
    category of its own), and warned about otherwise; floats that are all whole numbers
    (integer codes stored as floats) pass.
    """
    for role, column in roles.items():
        for part in parts:
            src = part.source
            if column is None or column not in src.obs.columns:
                continue  # a missing column is reported with the available ones
            values = src.obs[column]
            if values.dtype.kind != "f" or values.isna().any():
                continue
            numbers = values.to_numpy()
            if np.array_equal(numbers, np.round(numbers)):
                continue  # integer codes stored as floats
            n_distinct, n_cells = int(values.nunique()), len(values)
            what = (
                f"obs column {column!r} of {src.name} holds continuous values ({values.dtype}, "
                f"{n_distinct} distinct values over {n_cells} cells) but labels are categories"
            )
            instead = (
                f"pass a column of {role.replace('_', ' ')} names or integer codes instead "
                f"(--{role.replace('_', '-')} COLUMN), or bin this one first"
            )
            if n_distinct == n_cells:
                msg = f"{what}: every cell would be its own {role}; {instead}"
                raise ValueError(msg)
            warnings.warn(f"{what}; {instead}", UserWarning, stacklevel=3)
