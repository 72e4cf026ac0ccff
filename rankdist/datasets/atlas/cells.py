"""Cells of the synthetic atlas, block by block: labels, library sizes and counts.

Cells come in blocks of :data:`BLOCK_CELLS`; block b draws from its own streams
``default_rng([seed, STREAM_LABELS, b])`` and ``default_rng([seed, STREAM_COUNTS, b])``,
so any range of whole blocks is the same whoever generates it, alone or with others.

Counts are negative binomial (gamma-Poisson) with mean ``library * profile[type] *
donor_effect`` and the gene's shape r. Most of the 33,538 means are far below one UMI, so
drawing every cell x gene value would spend nearly all its time on zeros. The kernel
instead draws, exactly, the same distribution sparsely:

* a gene with mean mu > :data:`DIRECT_MEAN` is drawn directly, ``Poisson(Gamma(r, mu / r))``;
* the others use the negative binomial's compound-Poisson form: ``Poisson(lambda)``
  clusters with ``lambda = r log(1 + mu / r)``, each of ``Logarithmic(mu / (mu + r))``
  UMIs. The clusters of all these genes are one Poisson process over the concatenated
  intervals of length mu (one exponential gap per candidate, none per empty gene),
  thinned with probability ``lambda / mu``.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

from rankdist.datasets.atlas.model import (
    LIBRARY_SD,
    STREAM_COUNTS,
    STREAM_LABELS,
    AtlasModel,
)

#: Cells per random-stream block. Task chunks are whole blocks.
BLOCK_CELLS = 64
#: Genes whose mean exceeds this many UMIs are drawn directly (see the module docstring).
DIRECT_MEAN = 1.0


def block_labels(model: AtlasModel, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Subtype, donor and library size of the cells of one block.

    Returns
    -------
    subtype, donor
        ``(n,)`` int32 indices into the model's subtypes and donors.
    library
        ``(n,)`` float64 expected UMIs of each cell.
    """
    start = block * BLOCK_CELLS
    stop = min(start + BLOCK_CELLS, model.spec.n_cells)
    donor = model.donor_of(np.arange(start, stop)).astype(np.int32)
    rng = np.random.default_rng([model.spec.seed, STREAM_LABELS, block])
    u = rng.random(stop - start)
    z = rng.standard_normal(stop - start)
    cumulative = model.donor_composition[donor]
    n_sub = cumulative.shape[1]
    subtype = np.minimum((u[:, None] >= cumulative).sum(axis=1), n_sub - 1).astype(np.int32)
    log_lib = model.subtype_log_library[subtype] + model.donor_log_library[donor]
    return subtype, donor, np.exp(log_lib + LIBRARY_SD * z)


def cell_labels(model: AtlasModel, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Subtype and donor (int32) of cells ``start:stop`` (``start`` a multiple of the block)."""
    parts = [block_labels(model, b)[:2] for b in _blocks(start, stop)]
    subtype = np.concatenate([p[0] for p in parts])
    donor = np.concatenate([p[1] for p in parts])
    return subtype[: stop - start], donor[: stop - start]


def generate_cells(
    model: AtlasModel, start: int, stop: int, keep: np.ndarray | None = None
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Counts of cells ``start:stop`` as CSR over the kept genes, and their library sizes.

    Parameters
    ----------
    model
        The atlas (:func:`~rankdist.datasets.atlas.model.atlas_model`).
    start, stop
        Cell range; ``start`` is a multiple of :data:`BLOCK_CELLS`.
    keep
        Sorted gene indices to keep (None: all genes).

    Returns
    -------
    counts
        ``(stop - start, n_kept)`` float32 CSR with sorted indices: integer UMI counts.
    total_counts
        ``(stop - start,)`` float64 UMIs of each cell over all genes.
    """
    if start % BLOCK_CELLS or not 0 <= start < stop <= model.spec.n_cells:
        msg = (
            f"cells {start}:{stop}: start must be a multiple of {BLOCK_CELLS} and "
            f"0 <= start < stop <= {model.spec.n_cells}"
        )
        raise ValueError(msg)
    n_genes = model.spec.n_genes
    keep_col = np.full(n_genes, -1, dtype=np.int32)
    n_keep = n_genes if keep is None else len(keep)
    keep_col[np.arange(n_genes) if keep is None else keep] = np.arange(n_keep, dtype=np.int32)
    labels = [block_labels(model, b) for b in _blocks(start, stop)]
    donors = np.unique(np.concatenate([lab[1] for lab in labels]))
    effects = np.stack([model.donor_effect(d) for d in donors])
    parts, totals = [], []
    for b, (subtype, donor, library) in zip(_blocks(start, stop), labels, strict=True):
        rng = np.random.default_rng([model.spec.seed, STREAM_COUNTS, b])
        local = np.searchsorted(donors, donor).astype(np.int32)
        data, indices, indptr, total = _nb_counts(
            rng, library, subtype, local, model.profiles, effects, model.nb_shape, keep_col
        )
        parts.append(sp.csr_matrix((data, indices, indptr), shape=(len(library), n_keep)))
        totals.append(total)
    counts = parts[0] if len(parts) == 1 else sp.vstack(parts, format="csr")
    counts.has_sorted_indices = True
    return counts, np.concatenate(totals)


def _blocks(start: int, stop: int) -> range:
    return range(start // BLOCK_CELLS, -(-stop // BLOCK_CELLS))


@numba.njit(nogil=True, cache=True)
def _nb_counts(rng, library, subtype, donor, profiles, effects, shape, keep_col):
    """Negative-binomial counts of one block as CSR pieces (see the module docstring)."""
    n, n_genes = library.shape[0], profiles.shape[1]
    cap = max(1024, n * 256)
    data = np.empty(cap, np.float32)
    indices = np.empty(cap, np.int32)
    indptr = np.zeros(n + 1, np.int64)
    totals = np.zeros(n)
    nnz = 0
    for c in range(n):
        lib = library[c]
        prof = profiles[subtype[c]]
        fx = effects[donor[c]]
        gap = rng.standard_exponential()  # distance to the next candidate cluster
        total = 0.0
        for g in range(n_genes):
            mu = lib * prof[g] * fx[g]
            if mu > DIRECT_MEAN:
                # datasets.counts.gamma_poisson's draw, one value at a time in the
                # stream's order: that function's vectorised order would change the bits
                r = shape[g]
                count = rng.poisson(rng.standard_gamma(r) * (mu / r))
            elif gap >= mu:
                gap -= mu
                continue
            else:
                r = shape[g]
                x = mu / r
                accept = np.log1p(x) / x
                q = mu / (mu + r)
                count = 0
                while gap < mu:
                    if rng.random() < accept:
                        count += rng.logseries(q)
                    gap += rng.standard_exponential()
                gap -= mu
            if count > 0:
                total += count
                col = keep_col[g]
                if col >= 0:
                    if nnz == cap:
                        cap *= 2
                        grown = np.empty(cap, np.float32)
                        grown[:nnz] = data[:nnz]
                        data = grown
                        grown_idx = np.empty(cap, np.int32)
                        grown_idx[:nnz] = indices[:nnz]
                        indices = grown_idx
                    data[nnz] = count
                    indices[nnz] = col
                    nnz += 1
        totals[c] = total
        indptr[c + 1] = nnz
    return data[:nnz].copy(), indices[:nnz].copy(), indptr, totals
