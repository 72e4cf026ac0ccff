"""Seeded count data and writers for every input format rankdist reads (test helpers).

``counts_adata`` builds a small AnnData of negative-binomial counts; the writers put it on
disk as Cell Ranger would (10x ``.h5`` v2/v3, 10x mtx directories). AnnData's own formats
are written with ``write_h5ad`` / ``write_zarr``.
"""

from __future__ import annotations

import gzip as gz
import shutil
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

#: The genome the 10x writers put features in.
GENOME = "GRCh38"


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


def _symbols(adata: ad.AnnData) -> np.ndarray:
    if "gene_symbols" in adata.var:
        return adata.var["gene_symbols"].to_numpy(dtype=str)
    return adata.var_names.to_numpy(dtype=str)


def _gene_ids(adata: ad.AnnData) -> np.ndarray:
    if "gene_ids" in adata.var:
        return adata.var["gene_ids"].to_numpy(dtype=str)
    return adata.var_names.to_numpy(dtype=str)


def _feature_types(adata: ad.AnnData) -> np.ndarray:
    if "feature_types" in adata.var:
        return adata.var["feature_types"].to_numpy(dtype=str)
    return np.full(adata.n_vars, "Gene Expression")


def write_10x_h5(adata: ad.AnnData, path: str | Path, version: int = 3) -> Path:
    """Write ``adata.X`` (integer counts) as a Cell Ranger ``.h5`` file.

    Parameters
    ----------
    adata
        Counts; ``var`` may carry ``gene_ids``, ``gene_symbols`` and ``feature_types``.
    path
        File to create.
    version
        3: ``matrix`` group with ``features/{id,name,feature_type,genome}``; 2: one group
        named :data:`GENOME` with ``genes`` and ``gene_names`` (no feature types).

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    # genes x cells CSC is exactly cells x genes CSR
    x = sp.csr_matrix(adata.X).astype(np.int32)
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix" if version == 3 else GENOME)
        g["data"] = x.data
        g["indices"] = x.indices.astype(np.int64)
        g["indptr"] = x.indptr.astype(np.int64)
        g["shape"] = np.array([adata.n_vars, adata.n_obs], dtype=np.int32)
        g["barcodes"] = adata.obs_names.to_numpy(dtype="S")
        if version == 3:
            features = g.create_group("features")
            features["id"] = _gene_ids(adata).astype("S")
            features["name"] = _symbols(adata).astype("S")
            features["feature_type"] = _feature_types(adata).astype("S")
            features["genome"] = np.full(adata.n_vars, GENOME, dtype="S")
            features["_all_tag_keys"] = np.array([b"genome"])
        elif version == 2:
            g["genes"] = _gene_ids(adata).astype("S")
            g["gene_names"] = _symbols(adata).astype("S")
        else:
            msg = f"version must be 2 or 3, got {version!r}"
            raise ValueError(msg)
    return path


def write_10x_mtx(
    adata: ad.AnnData,
    dirpath: str | Path,
    gzip: bool = False,
    shuffle: bool = False,
    legacy: bool = False,
    seed: int = 0,
) -> Path:
    """Write ``adata.X`` (integer counts) as a Cell Ranger mtx directory.

    Parameters
    ----------
    adata
        Counts; ``var`` may carry ``gene_ids``, ``gene_symbols`` and ``feature_types``.
    dirpath
        Directory to create (parents included).
    gzip
        Gzip all three files (``matrix.mtx.gz``, ``barcodes.tsv.gz``, ``features.tsv.gz``),
        as Cell Ranger v3 does.
    shuffle
        Write the entries in a random order (seeded by ``seed``) instead of by cell.
    legacy
        Cell Ranger v2 layout: ``genes.tsv`` with two columns (id, symbol).

    Returns
    -------
    Path
        ``dirpath``.
    """
    dirpath = Path(dirpath)
    dirpath.mkdir(parents=True, exist_ok=True)
    matrix = dirpath / "matrix.mtx"
    genes_by_cells = sp.coo_matrix(sp.csc_matrix(adata.X.T).astype(np.int64))
    scipy.io.mmwrite(matrix, genes_by_cells, field="integer")
    if shuffle:
        lines = matrix.read_text().splitlines(keepends=True)
        first_entry = next(i for i, line in enumerate(lines) if not line.startswith("%")) + 1
        entries = lines[first_entry:]
        order = np.random.default_rng(seed).permutation(len(entries))
        matrix.write_text("".join(lines[:first_entry] + [entries[i] for i in order]))
    features = pd.DataFrame({"id": _gene_ids(adata), "name": _symbols(adata)})
    if not legacy:
        features["type"] = _feature_types(adata)
    features_path = dirpath / ("genes.tsv" if legacy else "features.tsv")
    features.to_csv(features_path, sep="\t", header=False, index=False)
    barcodes_path = dirpath / "barcodes.tsv"
    barcodes_path.write_text("".join(f"{name}\n" for name in adata.obs_names))
    if gzip:
        for plain in (matrix, features_path, barcodes_path):
            with plain.open("rb") as src, gz.open(f"{plain}.gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            plain.unlink()
    return dirpath
