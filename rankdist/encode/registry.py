"""The registry of encodings: one function per encoding, expression block in, z out.

Every encoding maps a ``(cells, genes)`` float64 block (plus per-cell library sizes)
to standardised float32 rows, so that for any two cells ``z_a @ z_b`` is the
correlation that encoding defines (genept: the cosine of two unit-norm cell embeddings).
Adding an encoding is one decorated function.

An encoding that needs statistics of the whole dataset (geneformer's per-gene medians)
declares a ``prepare`` step: ``prepare(store, client, params, progress=...)`` returns
named arrays, computed (or read from the store's cache) once by
:func:`rankdist.encode.cache.encode` before the per-chunk tasks, covered by the
encoding's cache key, and passed to ``fn`` as keyword arguments. An encoding whose rows
are not indexed by gene (genept: an embedding of D columns) declares ``columns``, the
width of z given the prepared arrays. The definitions and citations are in
docs/encodings.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rankdist.encode import kernels

EncodeFn = Callable[..., tuple[np.ndarray, np.ndarray]]
#: ``prepare(store, client, resolved_params, *, progress) -> {argument name: array}``.
PrepareFn = Callable[..., dict[str, np.ndarray]]
#: ``check(resolved_params) -> resolved_params``: raises ValueError, may normalise types.
CheckFn = Callable[[dict], dict]
#: ``columns(prepared) -> width of z`` for encodings whose rows are not one value per gene.
ColumnsFn = Callable[[dict], int]


@dataclass(frozen=True)
class Encoding:
    """One registered encoding.

    Attributes
    ----------
    name
        Registry key, e.g. ``'spearman'``.
    fn
        ``fn(block_f64, totals_f64, **params, **prepared) -> (z_f32, valid_bool)``.
    defaults
        Default parameters; the cache key covers the resolved parameters.
    version
        Bumped when ``fn``'s output changes, so stale caches are recomputed.
    summary
        One line for ``--help`` and the docs.
    prepare
        Optional dataset-wide step run once before the per-chunk tasks; its arrays are
        passed to ``fn`` by name and hashed into the cache key.
    check
        Optional validation of the resolved parameters.
    sparse
        Optional ``sparse(block, totals, **params) -> (indptr, indices, data, c, valid)``:
        the same rows as ``fn`` in the sparse form ``z = s + c`` (CSR of ``s``), for
        encodings whose rows are constant outside the expressed genes. Encodings that
        have one can be stored and multiplied sparse (``form='sparse'``).
    columns
        Optional ``columns(prepared) -> int``: the width of z when it is not the
        number of genes (genept: the embedding dimension).
    """

    name: str
    fn: EncodeFn
    defaults: dict = field(default_factory=dict)
    version: int = 1
    summary: str = ""
    prepare: PrepareFn | None = None
    check: CheckFn | None = None
    sparse: Callable[..., tuple] | None = None
    columns: ColumnsFn | None = None

    def resolve(self, params: dict | None) -> dict:
        """Defaults updated by ``params``; unknown parameter names are an error."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            msg = (
                f"encoding {self.name!r} has no parameter(s) {unknown}; "
                f"its parameters are {sorted(self.defaults) or 'none'}"
            )
            raise ValueError(msg)
        resolved = {**self.defaults, **params}
        return self.check(resolved) if self.check is not None else resolved


ENCODINGS: dict[str, Encoding] = {}


def register(
    name: str,
    *,
    defaults: dict | None = None,
    version: int = 1,
    summary: str = "",
    prepare: PrepareFn | None = None,
    check: CheckFn | None = None,
    sparse: Callable[..., tuple] | None = None,
    columns: ColumnsFn | None = None,
):
    """Decorator adding an encoding function to :data:`ENCODINGS`."""

    def add(fn: EncodeFn) -> EncodeFn:
        ENCODINGS[name] = Encoding(
            name, fn, dict(defaults or {}), version, summary, prepare, check, sparse, columns
        )
        return fn

    return add


def get_encoding(name: str) -> Encoding:
    """The registered encoding called ``name``; an error lists the available ones."""
    try:
        return ENCODINGS[name]
    except KeyError:
        msg = f"unknown encoding {name!r}; available: {sorted(ENCODINGS)}"
        raise ValueError(msg) from None


def _spearman_sparse(block: np.ndarray, totals: np.ndarray) -> tuple:
    from rankdist.encode.sparse import sparse_standardised_ranks

    dtype = block.dtype if block.dtype in (np.float32, np.float64) else np.float64
    return sparse_standardised_ranks(np.ascontiguousarray(block, dtype=dtype))


@register(
    "spearman",
    summary="average-tie ranks of the selected genes (Spearman's rho)",
    sparse=_spearman_sparse,
)
def spearman(block: np.ndarray, totals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Ranks need only the order of the values: float32 counts are ranked as they are
    # (casting would copy the block), anything else as float64.
    dtype = block.dtype if block.dtype in (np.float32, np.float64) else np.float64
    return kernels.standardised_ranks(np.ascontiguousarray(block, dtype=dtype))


@register(
    "pearson",
    defaults={"target_sum": 1e4},
    summary="log1p of counts per 10k (Pearson): the raw-expression baseline",
)
def pearson(
    block: np.ndarray, totals: np.ndarray, target_sum: float
) -> tuple[np.ndarray, np.ndarray]:
    return kernels.standardised_log_cp(
        np.ascontiguousarray(block, dtype=np.float64),
        np.ascontiguousarray(totals, dtype=np.float64),
        float(target_sum),
    )


def _positive_int(encoding: str, param: str) -> CheckFn:
    """A check that ``params[param]`` is a positive integer (stored as a Python int)."""

    def check(params: dict) -> dict:
        value = params[param]
        is_int = isinstance(value, int | np.integer) and not isinstance(value, bool)
        if not is_int or value < 1:
            msg = (
                f"encoding {encoding!r}: {param} must be a positive integer, got {value!r}; "
                f"e.g. params={{{param!r}: {ENCODINGS[encoding].defaults[param]}}}"
            )
            raise ValueError(msg)
        # one JSON form for the cache key, whatever integer type the caller used
        return {**params, param: int(value)}

    return check


def _non_negative(block: np.ndarray, encoding: str) -> np.ndarray:
    block = np.ascontiguousarray(block, dtype=np.float64)
    if block.size and block.min() < 0:
        msg = (
            f"encoding {encoding!r} ranks non-zero expression and needs non-negative values; "
            f"this block holds {block.min()}: ingest counts or log-normalised expression"
        )
        raise ValueError(msg)
    return block


def _gene_nonzero_medians(store, client, params, *, progress: bool = True) -> dict[str, np.ndarray]:
    # cache imports this module, so the store-side work is imported when first needed
    from rankdist.encode.medians import gene_nonzero_medians

    return {"gene_medians": gene_nonzero_medians(store, client, progress=progress)}


@register(
    "geneformer",
    defaults={"top": 2048},
    summary="Geneformer rank-value encoding: top genes by CP10k / gene non-zero median",
    prepare=_gene_nonzero_medians,
    check=_positive_int("geneformer", "top"),
)
def geneformer(
    block: np.ndarray, totals: np.ndarray, top: int, gene_medians: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Geneformer's rank-value encoding (Theodoris et al. 2023, Nature 618:616).

    Each cell's counts per 10k are divided by each gene's non-zero median over the
    dataset; the ``top`` highest genes are ranked and every other gene is tied at the
    bottom. Within a cell, dividing by the cell's total is a common positive factor, so
    the kernel ranks ``x_g / median_g``: the same order, and exact ties stay exact.
    """
    return kernels.standardised_top_ranks(
        _non_negative(block, "geneformer"),
        np.ascontiguousarray(gene_medians, dtype=np.float64),
        int(top),
    )


@register(
    "topn",
    defaults={"n": 100},
    summary="cell2sentence: the n most expressed genes ranked, the rest tied",
    check=_positive_int("topn", "n"),
)
def topn(block: np.ndarray, totals: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell2sentence's rank encoding (Levine et al. 2023, bioRxiv 2023.09.11.557287).

    Genes ranked by expression, the ``n`` highest non-zero genes kept, the rest tied at
    the bottom. Any per-cell monotone normalisation (CP10k, log1p) gives the same order,
    so the stored values are ranked as they are.
    """
    block = _non_negative(block, "topn")
    return kernels.standardised_top_ranks(block, np.ones(block.shape[1]), int(n))


def _check_n_bins(params: dict) -> dict:
    params = _positive_int("scgpt", "n_bins")(params)
    if params["n_bins"] < 2:
        msg = (
            f"encoding 'scgpt': n_bins counts the zero bin and must be at least 2, got "
            f"{params['n_bins']}; e.g. params={{'n_bins': 51}}"
        )
        raise ValueError(msg)
    return params


@register(
    "scgpt",
    defaults={"n_bins": 51},
    summary="scGPT value binning: per-cell quantile bins of log1p CP10k (zeros: bin 0)",
    check=_check_n_bins,
)
def scgpt(block: np.ndarray, totals: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """scGPT's value binning (Cui et al. 2024, Nat Methods 21:1470), Pearson over the bins.

    Each cell's non-zero values are binned by the cell's own quantiles into bins
    ``1 .. n_bins - 1`` (zeros are bin 0); equal values share a bin, and the rule at the
    edges is exact (:mod:`rankdist.encode.binning`). The bins depend only on the order
    of a cell's values, so normalising to 10^4 and log1p (strictly increasing within a
    cell) leave them unchanged and the stored values are binned as they are.
    """
    from rankdist.encode.binning import standardised_bins

    return standardised_bins(_non_negative(block, "scgpt"), int(n_bins))


def _check_embeddings(params: dict) -> dict:
    from pathlib import Path

    path, allow = params["embeddings"], params["allow_pickle"]
    if not isinstance(path, str | Path) or not str(path):
        msg = (
            "encoding 'genept' needs a table of gene embeddings: --param embeddings=FILE "
            "(params={'embeddings': 'genes.npz'}); .npz, .csv or .parquet, see docs/encodings.md"
        )
        raise ValueError(msg)
    if isinstance(allow, str) and allow.lower() in ("true", "false"):
        allow = allow.lower() == "true"
    if not isinstance(allow, bool | np.bool_):
        msg = (
            f"encoding 'genept': allow_pickle must be true or false, got {allow!r}; "
            "e.g. --param allow_pickle=true"
        )
        raise ValueError(msg)
    # one absolute path, so the cache key does not depend on the working directory
    resolved = str(Path(path).expanduser().resolve())
    if not Path(resolved).is_file():  # checked here too, so a run fails before it starts
        msg = f"encoding 'genept': embeddings file {resolved!r} not found; pass an existing file"
        raise FileNotFoundError(msg)
    return {**params, "embeddings": resolved, "allow_pickle": bool(allow)}


def _gene_vectors(store, client, params, *, progress: bool = True) -> dict[str, np.ndarray]:
    from rankdist.encode.embeddings import gene_vectors

    return gene_vectors(store, client, params, progress=progress)


@register(
    "genept",
    defaults={"embeddings": None, "allow_pickle": False},
    summary="GenePT-w: expression-weighted mean of gene text embeddings (cosine)",
    prepare=_gene_vectors,
    check=_check_embeddings,
    columns=lambda prepared: prepared["gene_vectors"].shape[1],
)
def genept(
    block: np.ndarray,
    totals: np.ndarray,
    embeddings: str,
    allow_pickle: bool,
    gene_vectors: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """GenePT-w (Chen & Zou 2024): a cell's expression-weighted mean gene embedding.

    The weights are the cell's normalised expression ``x / total`` (``total`` the library
    size over every source gene); genes without an embedding have a zero vector, so they
    are skipped. The embedding ``e = w @ V / sum(w over embedded genes)`` is compared by
    cosine: ``z = e / ||e||`` (not centred), float64 rounded once to float32. A cell with
    ``e = 0`` (no expressed gene with an embedding) is excluded.
    """
    from rankdist.encode.embeddings import normalised_weights

    weights = normalised_weights(block, totals)
    e = weights @ gene_vectors
    embedded = np.abs(gene_vectors).sum(axis=1) > 0
    mass = weights[:, embedded].sum(axis=1)
    e = np.divide(e, mass[:, None], out=np.zeros_like(e), where=mass[:, None] > 0)
    norm = np.linalg.norm(e, axis=1)
    valid = norm > 0
    z = np.divide(e, norm[:, None], out=np.zeros_like(e), where=valid[:, None])
    return z.astype(np.float32), valid
