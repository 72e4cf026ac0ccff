"""Spearman encoding of all genes in sparse form: ``z = s + c * 1`` (docs/encodings.md).

Every zero of a cell shares one average rank, so its standardised ranks are a constant
``c`` plus a vector ``s`` that is non-zero only at the cell's expressed genes. Storing
``s`` as CSR and ``c`` per row takes about ``8 * nnz`` bytes per cell instead of
``4 * G``; :mod:`rankdist.tiles.sparse` multiplies the sparse form directly.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from rankdist.encode.kernels import COUNTING_MAX, _average_ranks, _sum_sq_dev
from rankdist.layout import SUBTILE

#: Cells read to estimate per-gene density for the dense/sparse choice.
SAMPLE_CELLS = 1024


@numba.njit(nogil=True, cache=True)
def sparse_standardised_ranks(block):
    """Standardised average-tie ranks of each row as ``(CSR of s, c, valid)``.

    The ranks, mean and norm are those of
    :func:`rankdist.encode.kernels.standardised_ranks`, so ``s + c`` is the dense
    encoding up to float32 rounding of ``s``. ``s_g = (rank_g - rank_0) / norm`` is
    computed from the ranks (not as a difference of rounded ``z`` values), and is
    stored for every non-zero gene, so a row's zero genes are exactly those it omits.

    Parameters
    ----------
    block
        ``(cells, genes)`` float32 or float64 expression.

    Returns
    -------
    indptr
        ``(cells + 1,)`` int64.
    indices
        ``(nnz,)`` int32 genes, ascending within a row.
    data
        ``(nnz,)`` float32 ``s`` values.
    c
        ``(cells,)`` float64 standardised rank of the row's zeros (0 if it has none).
    valid
        ``(cells,)`` bool, False for constant rows (stored empty, ``c = 0``).
    """
    n, g = block.shape
    indptr = np.zeros(n + 1, np.int64)
    expressed = np.zeros(n, np.int64)
    for r in range(n):
        for j in range(g):
            if block[r, j] != 0:
                expressed[r] += 1
    total = expressed.sum()
    indices = np.empty(total, np.int32)
    data = np.empty(total, np.float32)
    c = np.zeros(n, np.float64)
    valid = np.zeros(n, np.bool_)
    ranks = np.empty(g, np.float64)
    vals = np.empty(g, np.float64)
    pos = np.empty(g, np.int64)
    tally = np.zeros(COUNTING_MAX + 1, np.int64)
    row = np.empty(g, np.float64)
    mean = 0.5 * (g + 1)
    for r in range(n):
        for j in range(g):
            row[j] = block[r, j]
        _average_ranks(row, ranks, vals, pos, tally)
        constant = True
        for j in range(g):
            if ranks[j] != mean:
                constant = False
                break
        if constant:
            indptr[r + 1] = indptr[r]  # stored empty; later rows shift down
            continue
        valid[r] = True
        inv = 1.0 / np.sqrt(_sum_sq_dev(ranks, mean))
        zero_rank = mean
        for j in range(g):
            if row[j] == 0:
                zero_rank = ranks[j]
                break
        has_zero = expressed[r] < g
        c[r] = (zero_rank - mean) * inv if has_zero else 0.0
        base = zero_rank if has_zero else mean
        t = indptr[r]
        for j in range(g):
            if row[j] != 0:
                indices[t] = j
                data[t] = (ranks[j] - base) * inv
                t += 1
        indptr[r + 1] = t
    return indptr, indices[: indptr[n]], data[: indptr[n]], c, valid


# --- storage: encodings/<name>-<key>-sparse/{valid, sparse/<chunk>.npz} -------------------

#: Folder of the sparse chunk files inside an encoding's cache directory.
SPARSE_DIR = "sparse"


@dataclass(frozen=True)
class SparseRows:
    """Rows of Z in sparse form: CSR of ``s`` plus each row's zero value ``c``.

    Attributes
    ----------
    indptr
        ``(rows + 1,)`` int64 offsets into ``indices`` and ``data``.
    indices
        ``(nnz,)`` int32 gene of each stored value, ascending within a row.
    data
        ``(nnz,)`` float32 ``s`` values (``z - c``) of the expressed genes.
    c
        ``(rows,)`` float64 standardised value shared by the row's other genes.
    n_genes
        Genes per row (``G``).
    """

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    c: np.ndarray
    n_genes: int

    def __len__(self) -> int:
        return len(self.c)

    def rows(self, start: int, stop: int) -> SparseRows:
        """Rows ``start:stop`` (``stop`` clipped), sharing memory with these."""
        stop = min(stop, len(self))
        lo, hi = int(self.indptr[start]), int(self.indptr[stop])
        return SparseRows(
            self.indptr[start : stop + 1] - lo,
            self.indices[lo:hi],
            self.data[lo:hi],
            self.c[start:stop],
            self.n_genes,
        )

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def __sizeof__(self) -> int:
        # what Dask's sizeof reports for a block held in worker memory
        return self.indptr.nbytes + self.indices.nbytes + self.data.nbytes + self.c.nbytes

    def to_dense(self) -> np.ndarray:
        """``(rows, genes)`` float64 ``z`` (for tests and small checks)."""
        z = np.repeat(self.c[:, None], self.n_genes, axis=1)
        for r in range(len(self)):
            lo, hi = self.indptr[r], self.indptr[r + 1]
            z[r, self.indices[lo:hi]] += self.data[lo:hi]
        return z

    @classmethod
    def concatenate(cls, parts: list[SparseRows]) -> SparseRows:
        """Rows of ``parts`` one after another."""
        offsets = np.cumsum([0] + [p.nnz for p in parts[:-1]])
        indptr = np.concatenate(
            [[0]] + [p.indptr[1:] + o for p, o in zip(parts, offsets, strict=True)]
        )
        return cls(
            indptr.astype(np.int64),
            np.concatenate([p.indices for p in parts]),
            np.concatenate([p.data for p in parts]),
            np.concatenate([p.c for p in parts]),
            parts[0].n_genes,
        )


def chunk_file(z_path, chunk: int) -> Path:
    """The file holding sub-tile chunk ``chunk`` (cells ``chunk * SUBTILE`` onwards)."""
    return Path(z_path) / SPARSE_DIR / f"{chunk}.npz"


def write_chunks(out_path, start: int, indptr, indices, data, c) -> None:
    """Write rows starting at ``start`` (a multiple of SUBTILE) as one file per chunk."""
    for r0 in range(0, len(c), SUBTILE):
        r1 = min(r0 + SUBTILE, len(c))
        lo, hi = indptr[r0], indptr[r1]
        np.savez(
            chunk_file(out_path, (start + r0) // SUBTILE),
            indptr=indptr[r0 : r1 + 1] - lo,
            indices=indices[lo:hi],
            data=data[lo:hi],
            c=c[r0:r1],
        )


def read_sparse_rows(z_path: str, start: int, stop: int, n_genes: int) -> SparseRows:
    """Cells ``start:stop`` (``start`` a multiple of SUBTILE) of a sparse encoding.

    Each chunk file is a zip, whose members carry a CRC-32 that reading them checks: a
    missing file raises :class:`~rankdist.io.verified.MissingChunkError`, an unreadable
    or mismatching one :class:`~rankdist.io.verified.DamagedChunkError`.
    """
    if start % SUBTILE:
        msg = f"sparse Z rows are read from multiples of {SUBTILE}, not {start}"
        raise ValueError(msg)
    parts = []
    for chunk in range(start // SUBTILE, -(-stop // SUBTILE)):
        part = read_sparse_chunk(z_path, chunk, n_genes)
        lo = chunk * SUBTILE
        parts.append(part.rows(max(start - lo, 0), min(stop - lo, len(part))))
    return SparseRows.concatenate(parts)


def read_sparse_chunk(z_path: str, chunk: int, n_genes: int) -> SparseRows:
    """The rows of sub-tile chunk ``chunk`` of a sparse encoding, its CRC-32s checked."""
    # here, not at the top: the CLI's parser imports this module and must not load zarr
    from rankdist.io.verified import MISSING, DamagedChunkError, MissingChunkError, chunk_error

    path = chunk_file(z_path, chunk)
    sparse_dir, name = Path(z_path) / SPARSE_DIR, path.name
    try:
        with np.load(path) as f:
            return SparseRows(f["indptr"], f["indices"], f["data"], f["c"], n_genes)
    except FileNotFoundError:
        raise chunk_error(MissingChunkError, sparse_dir, (chunk,), MISSING, name=name) from None
    except (zipfile.BadZipFile, ValueError, KeyError, EOFError, OSError) as err:
        problem = f"is damaged (its zip CRC-32 or structure: {err})"
        raise chunk_error(DamagedChunkError, sparse_dir, (chunk,), problem, name=name) from None


def sample_gene_density(store_path: str, cells: int = SAMPLE_CELLS) -> np.ndarray:
    """Worker task: fraction of cells expressing each gene, from up to ``cells`` cells.

    The cells are the first rows of evenly spaced X chunks, so the sample spans the
    store (ingest order often follows donors or cell types) and reads whole chunks only.
    """
    from rankdist.io.verified import open_group

    x = open_group(store_path, mode="r")["X"]
    n, rows = x.shape[0], x.chunks[0]
    chunks = -(-n // rows)
    take = max(1, min(chunks, -(-cells // rows)))
    per = max(1, cells // take)
    picked = np.unique(np.linspace(0, chunks - 1, take).astype(np.int64))
    counts = np.zeros(x.shape[1], np.int64)
    seen = 0
    for ch in picked:
        lo = int(ch) * rows
        block = np.asarray(x[lo : min(lo + per, n)])
        counts += np.count_nonzero(block, axis=0)
        seen += len(block)
    return counts / max(seen, 1)
