"""Temporary per-cell-bucket files that let entries stored in any order be read back by cells.

CSC matrices and 10x mtx files do not group their nonzeros by cell. Their readers spool
the entries once, in batches of :data:`READ_BATCH_ENTRIES`, into a :class:`CellSpool`,
then stream rows from it; memory stays O(read batch + one bucket).
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np
import scipy.sparse as sp

#: Nonzeros read from a CSC matrix or an mtx file at a time while spooling.
READ_BATCH_ENTRIES = 1 << 20
#: Target nonzeros per spool bucket (the unit read back when streaming rows).
SPOOL_BUCKET_ENTRIES = 1 << 22


class CellSpool:
    """Nonzeros regrouped by cell in temporary files, so any entry order reads back by rows.

    Entries are appended, in batches, to one binary file per bucket of ``bucket_cells``
    consecutive cells; the bucket size targets ``bucket_entries`` nonzeros. Reading
    rows loads only the buckets they fall in (the last one is cached), so memory is
    O(read batch + bucket) however the entries were ordered. Duplicates are summed, as
    :func:`scipy.io.mmread` followed by ``tocsr`` does. The directory is removed by
    :meth:`close` (or when the spool is garbage collected).

    Parameters
    ----------
    n_cells, n_genes
        Shape of the matrix being spooled (cells x genes).
    dtype
        dtype of the stored values.
    nnz
        Number of entries that will be added (sets the bucket size).
    bucket_entries
        Target nonzeros per bucket (default :data:`SPOOL_BUCKET_ENTRIES`).
    """

    def __init__(
        self,
        n_cells: int,
        n_genes: int,
        dtype: np.dtype,
        nnz: int,
        *,
        bucket_entries: int = SPOOL_BUCKET_ENTRIES,
    ):
        self.n_cells, self.n_genes = n_cells, n_genes
        per_cell = max(nnz, 1) / max(n_cells, 1)
        self.bucket_cells = int(max(1, min(n_cells, bucket_entries // max(per_cell, 1))))
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
