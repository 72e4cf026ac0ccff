"""Seeded data factories and the brute-force oracle the tests compare against."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.stats

import rankdist
from rankdist.datasets.counts import gamma_poisson


def tricky_adata(n_cells: int = 700, n_genes: int = 80, seed: int = 0) -> ad.AnnData:
    """Counts built to stress exactness: ties, zero-heavy genes, duplicated and constant cells.

    - Poisson counts with small means: many tied values within each cell.
    - A third of the genes are almost always zero.
    - Cells 3 and 4 duplicate cell 250 (exact ties in similarity, broken by index).
    - Cell 7 is empty and cell 8 is all-equal: both constant, so excluded.
    - Labels: 4 cell types in 2 coarse classes, 3 batches.
    """
    rng = np.random.default_rng(seed)
    types = rng.integers(0, 4, n_cells)
    means = rng.gamma(0.6, 1.5, (4, n_genes))
    means[:, : n_genes // 3] *= 0.02
    x = rng.poisson(means[types]).astype(np.float32)
    x[3] = x[250]
    x[4] = x[250]
    types[3] = types[4] = types[250]
    x[7] = 0
    x[8] = 2
    obs = {
        "celltype": pd.Categorical.from_codes(types, ["B", "T", "NK", "Mono"]),
        "coarse": pd.Categorical.from_codes(types // 2, ["lymphoid", "other"]),
        "donor": pd.Categorical.from_codes(rng.integers(0, 3, n_cells), ["d0", "d1", "d2"]),
    }
    return _named_adata(x, obs)


def ingest_tricky(adata: ad.AnnData, path):
    """A :func:`tricky_adata` ingested with its three label roles (celltype, coarse, donor)."""
    return rankdist.ingest(
        adata, path, cell_type="celltype", coarse_type="coarse", batch="donor", progress=False
    )


def zero_heavy_counts(n_cells: int = 1100, n_genes: int = 600, seed: int = 0) -> np.ndarray:
    """All-genes-like float32 counts: ~90 % zeros, heavy-tailed gene means, many ties.

    - Gene means are log-normal: a few housekeeping genes are expressed in most cells,
      most genes in a few percent.
    - Cell 7 is empty and cell 8 is all-equal (constant: excluded); cells 3 and 4
      duplicate cell 250; cell 9 expresses every gene (no zeros).
    """
    rng = np.random.default_rng(seed)
    means = rng.lognormal(-3.0, 1.8, n_genes)
    library = rng.lognormal(0.0, 0.4, (n_cells, 1))
    x = gamma_poisson(rng, means * library, shape=2.0).astype(np.float32)
    x[3] = x[250]
    x[4] = x[250]
    x[7] = 0
    x[8] = 2
    x[9] = rng.integers(1, 4, n_genes)
    return x


def labelled_adata(x: np.ndarray, seed: int = 0) -> ad.AnnData:
    """``x`` as an AnnData with a random ``celltype`` (a, b or c) per cell.

    Cells are named c0, c1, ... and genes g0, g1, ..., as in :func:`tricky_adata`.
    """
    types = np.random.default_rng(seed).integers(0, 3, len(x))
    return _named_adata(x, {"celltype": pd.Categorical.from_codes(types, ["a", "b", "c"])})


def _named_adata(x: np.ndarray, obs: dict) -> ad.AnnData:
    """AnnData of ``x`` and the ``obs`` columns; cells c0, c1, ..., genes g0, g1, ..."""
    obs = pd.DataFrame(obs, index=[f"c{i}" for i in range(x.shape[0])])
    return ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(x.shape[1])]))


def counts_adata(n_cells: int, n_genes: int, seed: int, *, dtype=np.float32) -> ad.AnnData:
    """A cells x genes AnnData of negative-binomial counts with many zeros.

    Gene means are log-normal and dispersions vary per gene (so highly variable genes
    exist); about 30% of entries are dropped to zero on top. Cell 2 and gene 1 are all zero.
    ``var`` has ``gene_ids``, ``gene_symbols`` (genes 3, 4 and 5 share the symbol 'Gene3'),
    ``feature_types`` (the last two genes are 'Antibody Capture'), a boolean
    ``highly_variable`` and an integer ``n_cells``; ``obs`` has a categorical ``cell_type``.

    Parameters
    ----------
    n_cells, n_genes
        Shape of X (``n_cells >= 3``, ``n_genes >= 8``).
    seed
        Seed of :func:`numpy.random.default_rng`.
    dtype
        dtype of the dense X.

    Returns
    -------
    AnnData
        Dense X of shape ``(n_cells, n_genes)``.
    """
    rng = np.random.default_rng(seed)
    gene_mean = rng.lognormal(mean=-0.5, sigma=1.5, size=n_genes)
    size_factor = rng.lognormal(mean=0.0, sigma=0.5, size=n_cells)
    mu = size_factor[:, None] * gene_mean[None, :]
    shape_r = rng.uniform(0.1, 3.0, size=n_genes)
    counts = rng.negative_binomial(shape_r, shape_r / (shape_r + mu))
    counts[rng.random(counts.shape) < 0.3] = 0
    counts[2, :] = 0
    counts[:, 1] = 0
    symbols = [f"Gene{i}" for i in range(n_genes)]
    symbols[4] = symbols[5] = symbols[3]
    feature_types = ["Gene Expression"] * (n_genes - 2) + ["Antibody Capture"] * 2
    var = pd.DataFrame(
        {
            "gene_ids": [f"ENSG{i:011d}" for i in range(n_genes)],
            "gene_symbols": symbols,
            "feature_types": feature_types,
            "highly_variable": rng.random(n_genes) < 0.3,
            "n_cells": (counts > 0).sum(axis=0),
        },
        index=[f"G{i:03d}" for i in range(n_genes)],
    )
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(rng.choice(["B", "T", "NK"], size=n_cells))},
        index=[f"BC{i:05d}-1" for i in range(n_cells)],
    )
    return ad.AnnData(counts.astype(dtype), obs=obs, var=var)


def oracle_spearman(x: np.ndarray) -> np.ndarray:
    """Brute-force float64 Spearman between all rows (NaN for constant rows)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(scipy.stats.spearmanr(np.asarray(x, dtype=np.float64), axis=1).statistic)


def oracle_pearson_logcp(x: np.ndarray, totals: np.ndarray, target_sum: float = 1e4) -> np.ndarray:
    """Brute-force float64 Pearson of log1p(counts per ``target_sum``)."""
    x = np.asarray(x, dtype=np.float64)
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals, dtype=float), where=totals > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.corrcoef(np.log1p(x * scale[:, None]))


def assert_matches_oracle(indices, similarities, excluded, rho, k, atol=1e-5):
    """Every neighbour and similarity equals the oracle's top-k, ties by lower index.

    Positions may differ from the oracle's order only where the oracle itself has a
    near-tie (two different values closer than ``atol``, which float32 cannot order);
    exact ties (duplicated cells) must come out in index order.
    """
    n = rho.shape[0]
    valid = ~excluded
    assert np.array_equal(np.isnan(similarities).all(axis=1), excluded)
    assert (indices[excluded] == -1).all()
    n_ambiguous = 0
    for r in np.flatnonzero(valid):
        vals = np.where(valid, rho[r], -np.inf)
        vals[r] = -np.inf
        order = np.lexsort((np.arange(n), -np.round(vals, 12)))
        want_idx = order[:k]
        want = vals[want_idx]
        got_idx = indices[r]
        got = similarities[r].astype(np.float64)
        np.testing.assert_allclose(got, want, atol=atol, rtol=0, err_msg=f"row {r} similarities")
        np.testing.assert_allclose(vals[got_idx], got, atol=atol, rtol=0, err_msg=f"row {r} named")
        assert len(set(got_idx.tolist())) == k and r not in got_idx and valid[got_idx].all()
        for p in np.flatnonzero(got_idx != want_idx):
            gap = np.abs(vals - want[p])
            gap[want_idx[p]] = np.inf
            near = (gap > 1e-12) & (gap <= atol)
            assert near.any(), (
                f"row {r} position {p}: {got_idx[p]} != {want_idx[p]} without a near-tie"
            )
            n_ambiguous += 1
        # exact ties come out in index order
        same = np.diff(got) == 0
        assert (np.diff(got_idx)[same] > 0).all(), f"row {r}: equal similarities not in index order"
    return n_ambiguous


def oracle_counts(rho, excluded, codes, n_values, cutoffs):
    """(n, n_cutoffs, n_values) relations with rho >= cutoff, by the neighbour's code."""
    n = rho.shape[0]
    valid = ~excluded
    out = np.zeros((n, len(cutoffs), n_values), dtype=np.int64)
    for a in np.flatnonzero(valid):
        related = valid.copy()
        related[a] = False
        for c, cut in enumerate(cutoffs):
            sel = related & (rho[a] >= cut)
            out[a, c] = np.bincount(codes[sel], minlength=n_values)
    return out


def safe_cutoffs(rho, wanted, margin=2e-6):
    """Shift each wanted cutoff up until no oracle value lies within ``margin`` of it.

    float32 similarities are within ~1e-6 of float64 ones, so a pair closer than that to
    a cutoff could fall on either side; away from them, counts must be exact.
    """
    vals = np.sort(rho[np.isfinite(rho)].ravel())
    out = []
    for c in wanted:
        while True:
            lo, hi = np.searchsorted(vals, [c - margin, c + margin])
            if lo == hi:
                break
            c = float(vals[hi - 1]) + margin + 1e-9
        out.append(c)
    assert out == sorted(out) and all(abs(a - b) < 0.01 for a, b in zip(out, wanted, strict=True))
    return out
