"""Write an .h5ad whose CSR X arrives in row blocks, with bounded memory, published atomically.

X is written with h5py as the AnnData on-disk CSR encoding (``data``/``indices`` grow as
blocks are appended; ``indptr`` is filled block by block); obs, var and the empty
elements are written with :func:`anndata.io.write_elem`, so ``anndata.read_h5ad`` and
``rankdist ingest`` read the file as any other. Everything goes to a hidden sibling
file that replaces the target only when complete.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Entries per HDF5 chunk of X's data and indices.
_ENTRIES_PER_CHUNK = 1 << 18
COMPRESSIONS = (None, "gzip", "lzf")


class CsrH5adWriter:
    """Appends CSR row blocks to X of an open h5ad file; see :func:`h5ad_writer`."""

    def __init__(self, f: h5py.File, n_cells: int, n_genes: int, compression: str | None):
        self.n_cells, self.n_genes = n_cells, n_genes
        self.rows_written = 0
        self._file = f
        x = f.create_group("X")
        x.attrs["encoding-type"] = "csr_matrix"
        x.attrs["encoding-version"] = "0.1.0"
        x.attrs["shape"] = np.array([n_cells, n_genes], dtype=np.int64)
        opts = {"maxshape": (None,), "chunks": (_ENTRIES_PER_CHUNK,), "compression": compression}
        self._data = x.create_dataset("data", shape=(0,), dtype=np.float32, **opts)
        self._indices = x.create_dataset("indices", shape=(0,), dtype=np.int32, **opts)
        self._indptr = x.create_dataset("indptr", shape=(n_cells + 1,), dtype=np.int64)
        self._indptr[0] = 0
        self._nnz = 0

    def append(self, block: sp.csr_matrix) -> None:
        """Write the next ``block.shape[0]`` rows (CSR with sorted indices)."""
        n_rows = block.shape[0]
        if block.shape[1] != self.n_genes or self.rows_written + n_rows > self.n_cells:
            msg = (
                f"block of shape {block.shape} does not fit X of shape "
                f"({self.n_cells}, {self.n_genes}) after {self.rows_written} rows"
            )
            raise ValueError(msg)
        nnz = int(block.nnz)
        stop = self._nnz + nnz
        self._data.resize((stop,))
        self._indices.resize((stop,))
        self._data[self._nnz : stop] = np.asarray(block.data, dtype=np.float32)
        self._indices[self._nnz : stop] = np.asarray(block.indices, dtype=np.int32)
        row = self.rows_written
        self._indptr[row + 1 : row + 1 + n_rows] = block.indptr[1:].astype(np.int64) + self._nnz
        self._nnz, self.rows_written = stop, row + n_rows

    def finish(self, obs: pd.DataFrame, var: pd.DataFrame) -> None:
        """Write obs, var and the empty AnnData elements; X must be complete."""
        from anndata.io import write_elem

        if self.rows_written != self.n_cells or len(obs) != self.n_cells:
            msg = (
                f"X has {self.rows_written} of {self.n_cells} rows and obs {len(obs)}; "
                "the file is incomplete"
            )
            raise ValueError(msg)
        f = self._file
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        write_elem(f, "obs", obs)
        write_elem(f, "var", var)
        for key in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            write_elem(f, key, {})


@contextlib.contextmanager
def h5ad_writer(
    path: str | os.PathLike,
    n_cells: int,
    n_genes: int,
    *,
    compression: str | None = None,
    overwrite: bool = False,
) -> Iterator[CsrH5adWriter]:
    """A :class:`CsrH5adWriter` whose file appears at ``path`` only if the block succeeds.

    Parameters
    ----------
    path
        The .h5ad file to create.
    n_cells, n_genes
        Shape of X.
    compression
        HDF5 filter of X's data and indices: None (fastest to read), ``'gzip'`` or ``'lzf'``.
    overwrite
        Replace an existing .h5ad (only an HDF5 file is replaced).
    """
    from rankdist.io.store import atomic_file  # on use: importing this module loads no zarr

    path = Path(path)
    check_h5ad_path(path, overwrite)
    if compression not in COMPRESSIONS:
        msg = f"compression {compression!r}: choose one of {COMPRESSIONS}"
        raise ValueError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as f:
        yield CsrH5adWriter(f, n_cells, n_genes, compression)


def check_h5ad_path(path: Path, overwrite: bool) -> None:
    """An existing ``path`` is an error unless ``overwrite`` and it is an HDF5 file."""
    if not path.exists():
        return
    if not overwrite:
        msg = f"{path} already exists; pass overwrite=True (--overwrite) to replace it"
        raise FileExistsError(msg)
    is_hdf5 = False
    if path.is_file():
        with path.open("rb") as fh:
            is_hdf5 = fh.read(8) == _HDF5_SIGNATURE
    if not is_hdf5:
        kind = "a directory" if path.is_dir() else "a file that is not HDF5"
        msg = (
            f"refusing to overwrite {path}: it is {kind}, and overwrite=True (--overwrite) "
            "only replaces an .h5ad; choose another path or remove it yourself first"
        )
        raise FileExistsError(msg)
