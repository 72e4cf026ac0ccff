"""Writers for every input format rankdist reads (test helpers).

The writers put an AnnData (such as ``_data.counts_adata``) on disk as Cell Ranger would
(10x ``.h5`` v2/v3, 10x mtx directories). AnnData's own formats are written with
``write_h5ad`` / ``write_zarr``.
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
