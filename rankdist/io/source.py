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
        self, chunk_cells: int, genes: np.ndarray | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, block)`` for consecutive cell chunks, in cell order.

        Parameters
        ----------
        chunk_cells
            Rows per chunk (the last chunk may be shorter).
        genes
            Sorted integer indices of the genes to keep, or ``None`` for all.

        Yields
        ------
        start
            Index of the chunk's first cell.
        block
            Dense ``(rows, n_kept_genes)`` array in the source dtype.
        """
        for start in range(0, self.n_cells, chunk_cells):
            stop = min(start + chunk_cells, self.n_cells)
            block = self._rows(start, stop)
            if genes is not None:
                block = block[:, genes]
            if sp.issparse(block):
                block = block.toarray()
            yield start, np.asarray(block)

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
