"""Choose the genes a run uses: all, highly variable (Seurat flavour), a list, or a var column.

Highly variable genes are computed in one streaming pass over the source, reproducing
``scanpy.pp.normalize_total(target_sum=1e4)``, ``scanpy.pp.log1p`` and
``scanpy.pp.highly_variable_genes(flavor='seurat', n_top_genes=N)`` (scanpy 1.11) without
materialising the matrix.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from rankdist.io.source import Source

__all__ = ["select_genes", "seurat_hvg", "streaming_normalised_mean_var"]

GENE_SPECS = (
    "accepted gene specs: None or 'all'; 'hvg:N' (N highly variable genes, 1 <= N <= n_genes); "
    "the path of a text file with one gene name per line; the name of a boolean var column"
)
#: Target values (cells x genes) per chunk of the highly-variable-genes pass.
_HVG_CHUNK_VALUES = 1 << 22
#: scanpy's seurat defaults.
_TARGET_SUM = 1e4
_N_BINS = 20


def select_genes(source: Source, spec: str | os.PathLike | None) -> tuple[np.ndarray, dict]:
    """Resolve a gene specification against ``source.var``.

    Parameters
    ----------
    source
        The input; only ``var`` is read, except for ``'hvg:N'`` which streams X once.
    spec
        ``None`` or ``'all'``; ``'hvg:N'``; a path to a gene list file (one name per line,
        blank lines and ``#`` comments ignored, duplicates collapse); or the name of a
        boolean ``var`` column (a column wins over a file of the same name).

    Returns
    -------
    genes
        Sorted int64 indices into ``source.var``, at least one.
    description
        JSON-able provenance, e.g. ``{"mode": "hvg", "n_top": 2000, ...}``.

    Raises
    ------
    ValueError
        The var names of ``source`` are not unique (whatever the spec: a name would
        stand for two genes in the store), or the spec is malformed, names unknown genes
        or columns, or selects no gene.
    """
    _check_unique_gene_names(source)
    n_genes = source.n_genes
    if spec is None or (isinstance(spec, str) and spec == "all"):
        return np.arange(n_genes, dtype=np.int64), {"mode": "all", "n_genes": n_genes}
    if isinstance(spec, str) and spec.startswith("hvg:"):
        return _hvg(source, spec)
    if not isinstance(spec, str | os.PathLike):
        msg = f"gene spec {spec!r} is a {type(spec).__name__}; {GENE_SPECS}"
        raise ValueError(msg)
    if isinstance(spec, str) and spec in source.var.columns:
        return _from_column(source, spec)
    path = Path(spec)
    if path.is_file():
        return _from_file(source, path)
    if not isinstance(spec, str) or os.sep in spec or path.suffix:
        msg = f"gene list file {str(path)!r} does not exist; {GENE_SPECS}"
        raise ValueError(msg)
    msg = (
        f"gene spec {spec!r} is not a var column of {source.name} nor an existing file; "
        f"boolean var columns: {_boolean_columns(source.var)}; {GENE_SPECS}"
    )
    raise ValueError(msg)


def _check_unique_gene_names(source: Source) -> None:
    """Refuse duplicate var names, as ingest refuses duplicate cell names."""
    names = source.var.index
    dup = names[names.duplicated()]
    if len(dup):
        msg = (
            f"{source.name} has {len(dup)} duplicate gene name(s), e.g. "
            f"{list(dup.unique()[:5])}; genes are stored and selected by name, so make them "
            "unique (AnnData.var_names_make_unique()) before ingest"
        )
        raise ValueError(msg)


def _boolean_columns(var: pd.DataFrame) -> list[str]:
    return [str(c) for c in var.columns if pd.api.types.is_bool_dtype(var[c].dtype)]


def _from_column(source: Source, column: str) -> tuple[np.ndarray, dict]:
    values = source.var[column]
    if not pd.api.types.is_bool_dtype(values.dtype):
        msg = (
            f"var column {column!r} of {source.name} is {values.dtype}, not boolean; "
            f"boolean var columns: {_boolean_columns(source.var)}"
        )
        raise ValueError(msg)
    genes = np.flatnonzero(values.fillna(False).to_numpy(dtype=bool)).astype(np.int64)
    if len(genes) == 0:
        msg = f"var column {column!r} of {source.name} is False for every gene; no gene selected"
        raise ValueError(msg)
    return genes, {"mode": "column", "column": column, "n_genes": len(genes)}


def _from_file(source: Source, path: Path) -> tuple[np.ndarray, dict]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    wanted = list(dict.fromkeys(line for line in lines if line and not line.startswith("#")))
    if not wanted:
        msg = f"gene list file {path} names no gene (only blank lines and # comments)"
        raise ValueError(msg)
    names = source.var.index
    unknown = [name for name in wanted if name not in set(names)]
    if unknown:
        msg = (
            f"gene list file {path}: {len(unknown)} of {len(wanted)} genes are not in the var "
            f"names of {source.name}, e.g. {unknown[:5]}; fix the names or drop them"
        )
        raise ValueError(msg)
    genes = np.flatnonzero(names.isin(wanted)).astype(np.int64)
    return genes, {"mode": "list", "path": str(path), "n_genes": len(genes)}


def _hvg(source: Source, spec: str) -> tuple[np.ndarray, dict]:
    text = spec.removeprefix("hvg:")
    n_genes = source.n_genes
    if not text.strip().isdigit() or not 1 <= int(text) <= n_genes:
        msg = (
            f"gene spec {spec!r}: N must be an integer in 1..{n_genes} (the genes of {source.name})"
        )
        raise ValueError(msg)
    n_top = int(text)
    mean, var = streaming_normalised_mean_var(source)
    selected = seurat_hvg(mean, var, n_top)
    genes = np.flatnonzero(selected).astype(np.int64)
    if len(genes) == 0:
        msg = f"gene spec {spec!r}: every gene of {source.name} is constant; no gene selected"
        raise ValueError(msg)
    description = {
        "mode": "hvg",
        "n_top": n_top,
        "flavor": "seurat",
        "target_sum": _TARGET_SUM,
        "n_bins": _N_BINS,
        "n_genes": len(genes),
    }
    return genes, description


def streaming_normalised_mean_var(source: Source) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and variance (ddof=1) of counts per 10k, in one pass over ``source``.

    Each cell is divided by its total / 1e4 (all-zero cells stay zero), as
    ``scanpy.pp.normalize_total(target_sum=1e4)``. Chunk statistics are merged with the
    pairwise update of Chan, Golub & LeVeque (1979), in float64.

    Returns
    -------
    mean, var
        float64 arrays of shape ``(n_genes,)``.
    """
    n_genes = source.n_genes
    chunk_cells = max(1, _HVG_CHUNK_VALUES // max(n_genes, 1))
    count = 0
    mean = np.zeros(n_genes)
    m2 = np.zeros(n_genes)  # sum of squared deviations from the mean
    for _, block in source.iter_chunks(chunk_cells):
        x = np.asarray(block, dtype=np.float64)
        totals = x.sum(axis=1) / _TARGET_SUM
        np.divide(x, totals[:, None], out=x, where=totals[:, None] != 0)
        n_b = len(x)
        mean_b = x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        delta = mean_b - mean
        total = count + n_b
        mean += delta * (n_b / total)
        m2 += m2_b + delta**2 * (count * n_b / total)
        count = total
    var = m2 / (count - 1) if count > 1 else np.zeros(n_genes)
    return mean, var


def seurat_hvg(mean: np.ndarray, var: np.ndarray, n_top: int) -> np.ndarray:
    """Seurat-flavour highly variable genes from per-gene mean and variance of normalised data.

    Follows scanpy 1.11's ``_highly_variable_genes_single_batch`` (``flavor='seurat'``):
    log dispersion ``log(var / mean)`` (zero dispersion is NaN), 20 equal-width bins of
    ``log1p(mean)``, z-score within each bin (a bin whose std is undefined, e.g. a single
    gene, gets avg 0 and dev = its mean, i.e. normalised dispersion 1 for one gene), then
    every gene whose normalised dispersion is at least the ``n_top``-th highest (ties all
    kept; NaN never selected).

    Returns
    -------
    selected
        Boolean mask of shape ``(n_genes,)``.
    """
    mean = mean.copy()
    mean[mean == 0] = 1e-12
    with np.errstate(divide="ignore", invalid="ignore"):
        dispersion = var / mean
        dispersion[dispersion == 0] = np.nan
        dispersion = np.log(dispersion)
    frame = pd.DataFrame({"means": np.log1p(mean), "dispersions": dispersion})
    frame["mean_bin"] = pd.cut(frame["means"], bins=_N_BINS)
    stats = frame.groupby("mean_bin", observed=True)["dispersions"].agg(avg="mean", dev="std")
    one_gene = stats["dev"].isnull()
    stats.loc[one_gene, "dev"] = stats.loc[one_gene, "avg"]
    stats.loc[one_gene, "avg"] = 0
    per_gene = stats.loc[frame["mean_bin"]].set_index(frame.index)
    norm = ((frame["dispersions"] - per_gene["avg"]) / per_gene["dev"]).to_numpy()
    finite = norm[~np.isnan(norm)]
    if finite.size == 0:
        return np.zeros(len(norm), dtype=bool)
    cutoff = np.sort(finite)[::-1][min(n_top, finite.size) - 1]
    return np.nan_to_num(norm, nan=-np.inf) >= cutoff
