"""The interface every input reader implements: cells streamed in row chunks.

A :class:`Source` knows its shape, obs table and var table without reading X, and
yields X as dense row chunks so that ingest never holds the whole matrix.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp


class SourceError(ValueError):
    """An input file is unreadable, of the wrong type, or malformed. The message names it."""


class Source:
    """Base class of the readers. Subclasses set the attributes and implement ``_rows``.

    Attributes
    ----------
    path
        The file or directory read (``None`` for an in-memory AnnData).
    kind
        ``'h5ad'``, ``'10x-h5'``, ``'10x-mtx'``, ``'anndata-zarr'`` or ``'anndata'``.
    obs
        Cell annotations, indexed by cell name, ``n_cells`` rows.
    var
        Gene annotations, indexed by gene name, ``n_genes`` rows.
    dtype
        dtype of X as stored in the source.
    """

    path: Path | None
    kind: str
    obs: pd.DataFrame
    var: pd.DataFrame
    dtype: np.dtype

    @property
    def n_cells(self) -> int:
        return len(self.obs)

    @property
    def n_genes(self) -> int:
        return len(self.var)

    @property
    def name(self) -> str:
        """How error messages refer to this input."""
        return str(self.path) if self.path is not None else "<in-memory AnnData>"

    def _rows(self, start: int, stop: int) -> np.ndarray | sp.spmatrix | sp.sparray:
        """Rows ``start:stop`` of X, all genes, dense or sparse."""
        raise NotImplementedError

    def iter_chunks(
        self,
        chunk_cells: int,
        genes: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, block)`` for consecutive cell chunks, in cell order.

        Parameters
        ----------
        chunk_cells
            Rows per chunk (the last chunk may be shorter).
        genes
            Sorted integer indices of the genes to keep, or ``None`` for all.
        rows
            Sorted, unique integer indices of the cells to read, or ``None`` for all.
            The cells are cut into spans of ``chunk_cells`` (``0:chunk_cells``,
            ``chunk_cells:2*chunk_cells``, ...); a span holding no selected cell is not
            read, and a span holding some is read from its first to its last selected
            cell. Each block holds the selected cells of one span.

        Yields
        ------
        start
            Index of the chunk's first cell; with ``rows``, the position of its first
            cell in ``rows`` (its cells are ``rows[start:start + len(block)]``).
        block
            Dense ``(rows, n_kept_genes)`` array in the source dtype.
        """
        if rows is None:
            spans = (
                (start, start, min(start + chunk_cells, self.n_cells), None)
                for start in range(0, self.n_cells, chunk_cells)
            )
        else:
            spans = self._selected_spans(chunk_cells, rows)
        for start, first, stop, local in spans:
            block = self._rows(first, stop)
            if local is not None:
                block = block[local]
            if genes is not None:
                block = block[:, genes]
            if sp.issparse(block):
                block = block.toarray()
            yield start, np.asarray(block)

    def _selected_spans(self, chunk_cells: int, rows) -> Iterator[tuple]:
        """``(position in rows, first cell read, stop, local rows or None)`` per span read."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or (
            len(rows) and (rows[0] < 0 or rows[-1] >= self.n_cells or (np.diff(rows) <= 0).any())
        ):
            msg = (
                f"rows must be sorted, unique cell indices in 0..{self.n_cells - 1} "
                f"(the cells of {self.name})"
            )
            raise ValueError(msg)
        span = rows // chunk_cells
        cuts = np.flatnonzero(np.diff(span)) + 1
        for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(rows)], strict=True):
            if hi == lo:
                continue
            first, last = int(rows[lo]), int(rows[hi - 1])
            whole = last - first + 1 == hi - lo  # a contiguous run: no row selection
            yield lo, first, last + 1, None if whole else rows[lo:hi] - first

    def close(self) -> None:
        """Release open file handles."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AnnDataSource(Source):
    """An AnnData object already in memory (``rankdist.ingest(adata, ...)``)."""

    def __init__(self, adata, *, use_raw: bool = False, layer: str | None = None):
        self.path = None
        self.kind = "anndata"
        if use_raw:
            if adata.raw is None:
                msg = "use_raw=True but the AnnData has no .raw"
                raise SourceError(msg)
            self._x = adata.raw.X
            self.var = adata.raw.var.copy()
        elif layer is not None:
            if layer not in adata.layers:
                msg = f"layer {layer!r} not in the AnnData; available: {sorted(adata.layers)}"
                raise SourceError(msg)
            self._x = adata.layers[layer]
            self.var = adata.var.copy()
        else:
            self._x = adata.X
            self.var = adata.var.copy()
        if self._x is None:
            msg = "the AnnData has no X matrix"
            raise SourceError(msg)
        self.obs = adata.obs.copy()
        self.dtype = np.dtype(self._x.dtype)
        if sp.issparse(self._x) and not isinstance(self._x, sp.csr_matrix | sp.csr_array):
            self._x = sp.csr_matrix(self._x)

    def _rows(self, start, stop):
        return self._x[start:stop]
