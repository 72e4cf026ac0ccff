"""Synthetic labelled scRNA-seq counts with a two-level type hierarchy and batch effects."""

from __future__ import annotations

import numpy as np

from rankdist.datasets.counts import gamma_poisson
from rankdist.datasets.labels import letters, nested_labels, obs_frame


def synthetic_counts(
    n_cells: int = 3000,
    n_genes: int = 600,
    *,
    n_coarse: int = 3,
    types_per_coarse: int = 2,
    n_batches: int = 2,
    seed: int = 0,
):
    """Negative-binomial counts for cell types nested in coarse classes, with batches.

    Coarse classes are named A, B, C, ... and their types A1, A2, ...; each coarse class
    up-regulates its own block of marker genes and each fine type a
    smaller block of its own; each batch scales every gene by a log-normal factor.
    Library sizes are log-normal. Counts are gamma-Poisson (negative binomial, inverse
    dispersion 2), which gives the zero-heavy matrices of droplet data.

    Returns
    -------
    anndata.AnnData
        Integer counts (float32) in X; obs columns ``cell_type``, ``coarse_type`` and
        ``batch`` (categorical).
    """
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_types = n_coarse * types_per_coarse
    type_class = np.arange(n_types) // types_per_coarse
    base = rng.normal(-1.0, 1.2, n_genes)
    coarse_fx = np.zeros((n_coarse, n_genes))
    type_fx = np.zeros((n_types, n_genes))
    genes = rng.permutation(n_genes)
    per_coarse = max(1, n_genes // (4 * n_coarse))
    per_type = max(1, n_genes // (8 * n_types))
    for c in range(n_coarse):
        coarse_fx[c, genes[c * per_coarse : (c + 1) * per_coarse]] = 1.5
    offset = n_coarse * per_coarse
    for t in range(n_types):
        sel = genes[offset + t * per_type : offset + (t + 1) * per_type]
        type_fx[t, sel] = 1.2
    batch_fx = rng.normal(0.0, 0.35, (n_batches, n_genes))
    cell_type = rng.integers(0, n_types, n_cells)
    batch = rng.integers(0, n_batches, n_cells)
    coarse = type_class[cell_type]
    log_mu = base + coarse_fx[coarse] + type_fx[cell_type] + batch_fx[batch]
    prob = np.exp(log_mu)
    prob /= prob.sum(axis=1, keepdims=True)
    library = rng.lognormal(np.log(2500), 0.4, n_cells)
    mean = prob * library[:, None]
    counts = gamma_poisson(rng, mean, shape=2.0).astype(np.float32)
    coarse_names = [letters(c) for c in range(n_coarse)]
    type_names = [f"{letters(type_class[t])}{t % types_per_coarse + 1}" for t in range(n_types)]
    batch_names = [f"batch{b}" for b in range(n_batches)]
    labels = nested_labels(cell_type, type_names, type_class, coarse_names, batch, batch_names)
    obs = obs_frame(labels, index=[f"cell{i:06d}" for i in range(n_cells)])
    var = pd.DataFrame(index=[f"gene{g:05d}" for g in range(n_genes)])
    return ad.AnnData(X=counts, obs=obs, var=var)
