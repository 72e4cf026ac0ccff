"""Helpers shared by the on-disk readers: accepted-formats hint, CSR row slicing, read errors."""

from __future__ import annotations

import contextlib

import numpy as np
import scipy.sparse as sp

from rankdist.io.source import Source, SourceError

ACCEPTED_FORMATS = (
    "accepted inputs: an AnnData object, an .h5ad file, an AnnData .zarr directory, "
    "a 10x Genomics .h5 file (Cell Ranger v2 or v3), or a 10x mtx directory "
    "(matrix.mtx[.gz] with barcodes.tsv[.gz] and features.tsv[.gz] or genes.tsv[.gz])"
)


def compressed_rows(data, indices, indptr, start: int, stop: int, n_cols: int) -> sp.csr_matrix:
    """Rows ``start:stop`` of a CSR matrix stored as three on-disk arrays (h5py or zarr)."""
    ptr = np.asarray(indptr[start : stop + 1], dtype=np.int64)
    lo, hi = int(ptr[0]), int(ptr[-1])
    return sp.csr_matrix(
        (np.asarray(data[lo:hi]), np.asarray(indices[lo:hi]), ptr - lo),
        shape=(stop - start, n_cols),
    )


@contextlib.contextmanager
def reading(source: Source):
    """Turn low-level read failures of ``source`` into a SourceError naming it."""
    try:
        yield
    except (OSError, KeyError) as err:
        msg = f"{source.name} could not be read ({err}): it is truncated or corrupt"
        raise SourceError(msg) from err
