"""Per-gene text embeddings for the genept encoding: read a table, align it to a store.

GenePT (Chen & Zou 2024, bioRxiv 2023.10.16.562533; Nat Biomed Eng 2025) embeds each
gene's NCBI summary with a text-embedding model; GenePT-w represents a cell by the mean
of its genes' embeddings weighted by the cell's normalised expression. The table is a
file the user provides:

* ``.npz`` with arrays ``genes`` (str, one symbol per row) and ``vectors``
  (``(n, D)`` numbers), read with ``allow_pickle=False``;
* ``.csv``: the first column the gene symbol, the others the vector; a first row whose
  other cells are not all numbers is a header and skipped;
* ``.parquet``: as ``.csv`` (the first column the symbol), when pandas has a parquet
  engine (pyarrow or fastparquet);
* GenePT's published pickle (a dict symbol -> vector), only with ``allow_pickle=True``:
  unpickling a file runs code from it. :func:`convert_pickle` turns one into ``.npz``
  once.

Store genes missing from the table are skipped and reported once per call with their
share of the expression (:class:`MissingGenesWarning`); the per-gene expression sums
behind that share are computed once per store and cached in
``encodings/_gene_expression-<key>/``.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import warnings
from pathlib import Path

import numpy as np
from distributed import Client

from rankdist import _progress
from rankdist.io.store import Store, atomic_directory
from rankdist.io.verified import open_group, raw_codecs

#: File forms :func:`read_embeddings` reads (the pickle ones only when allowed).
TABLE_SUFFIXES = (".npz", ".csv", ".parquet")
PICKLE_SUFFIXES = (".pkl", ".pickle")
#: Version of the per-gene expression sums below; bumping it recomputes the cache.
EXPRESSION_VERSION = 1


class MissingGenesWarning(UserWarning):
    """Some of the store's genes have no embedding: they are skipped."""


def read_embeddings(path: str | Path, *, allow_pickle: bool = False):
    """Gene symbols and their vectors from an embeddings file.

    Parameters
    ----------
    path
        ``.npz``, ``.csv``, ``.parquet``, or (with ``allow_pickle``) ``.pkl``/``.pickle``
        (module docstring).
    allow_pickle
        Read a pickle. Unpickling runs code from the file: only for files you trust.

    Returns
    -------
    genes
        ``(n,)`` object array of unique str symbols.
    vectors
        ``(n, D)`` float64, finite.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"embeddings file {str(path)!r} not found; pass an existing .npz, .csv or .parquet"
        raise FileNotFoundError(msg)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        genes, vectors = _read_npz(path)
    elif suffix in (".csv", ".parquet"):
        genes, vectors = _read_frame(path, suffix)
    elif suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            msg = (
                f"embeddings file {str(path)!r} is a pickle, and unpickling runs code from the "
                "file: pass --param allow_pickle=true (params={'allow_pickle': True}) if you "
                "trust it, or convert it once to .npz with "
                "rankdist.encode.embeddings.convert_pickle(src, dst)"
            )
            raise ValueError(msg)
        genes, vectors = _read_pickle(path)
    else:
        msg = (
            f"embeddings file {str(path)!r}: unknown form {suffix!r}; use .npz (arrays genes, "
            f"vectors), .csv or .parquet (first column the gene symbol), or a GenePT pickle "
            "with allow_pickle=true"
        )
        raise ValueError(msg)
    return _checked(path, genes, vectors)


def convert_pickle(src: str | Path, dst: str | Path) -> Path:
    """Convert GenePT's published pickle (dict symbol -> vector) to ``.npz``, once.

    Unpickling runs code from ``src``: convert only files you trust. The ``.npz`` then
    reads without any opt-in.
    """
    genes, vectors = _checked(Path(src), *_read_pickle(Path(src)))
    dst = Path(dst)
    np.savez(dst, genes=genes.astype(str), vectors=vectors)
    return dst


def _read_npz(path: Path):
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = sorted({"genes", "vectors"} - set(data.files))
            if missing:
                msg = (
                    f"embeddings file {str(path)!r} lacks array(s) {missing}; it has "
                    f"{sorted(data.files)}: save it with np.savez(path, genes=..., vectors=...)"
                )
                raise ValueError(msg)
            return data["genes"], data["vectors"]
    except ValueError as err:
        if "allow_pickle" not in str(err):
            raise
        msg = (
            f"embeddings file {str(path)!r} holds object arrays, which only a pickle can read; "
            "save genes as a str array: np.savez(path, genes=np.asarray(genes, dtype=str), ...)"
        )
        raise ValueError(msg) from None


def _read_frame(path: Path, suffix: str):
    import pandas as pd

    if suffix == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except ImportError:
            msg = (
                f"embeddings file {str(path)!r}: reading parquet needs pyarrow or fastparquet, "
                "which this environment lacks; convert the table to .npz (genes, vectors) or "
                ".csv (first column the gene symbol)"
            )
            raise ValueError(msg) from None
        if frame.shape[1] < 2:
            msg = f"embeddings file {str(path)!r}: need a gene column and vector columns"
            raise ValueError(msg)
        return frame.iloc[:, 0].to_numpy(), frame.iloc[:, 1:].to_numpy()
    frame = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    if frame.shape[1] < 2:
        msg = f"embeddings file {str(path)!r}: need a gene symbol column and vector columns"
        raise ValueError(msg)
    first = pd.to_numeric(frame.iloc[0, 1:], errors="coerce")
    if first.isna().any():  # a header row
        frame = frame.iloc[1:]
    values = frame.iloc[:, 1:].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    return frame.iloc[:, 0].to_numpy(), values


def _read_pickle(path: Path):
    with open(path, "rb") as f:
        table = pickle.load(f)  # noqa: S301 - only with the caller's explicit opt-in
    if not isinstance(table, dict):
        msg = (
            f"embeddings pickle {str(path)!r} holds a {type(table).__name__}, not GenePT's "
            "dict gene symbol -> vector"
        )
        raise ValueError(msg)
    genes = list(table)
    return np.asarray(genes, dtype=object), np.asarray([table[g] for g in genes], dtype=object)


def _checked(path: Path, genes, vectors):
    genes = np.asarray([str(g) for g in np.asarray(genes).ravel()], dtype=object)
    try:
        vectors = np.asarray(vectors)
        # a pickle's dict values arrive as an object array of per-gene vectors
        listed = vectors.tolist() if vectors.dtype == object else vectors
        vectors = np.asarray(listed, dtype=np.float64)
    except (TypeError, ValueError):
        msg = f"embeddings file {str(path)!r}: vectors must be numbers of one length per gene"
        raise ValueError(msg) from None
    if vectors.ndim != 2 or vectors.shape[0] != len(genes) or vectors.shape[1] < 1:
        msg = (
            f"embeddings file {str(path)!r}: {len(genes)} genes but vectors of shape "
            f"{vectors.shape}; want one row of D >= 1 numbers per gene"
        )
        raise ValueError(msg)
    if len(genes) == 0:
        msg = f"embeddings file {str(path)!r} holds no genes"
        raise ValueError(msg)
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        msg = (
            f"embeddings file {str(path)!r}: {int(bad.sum())} vector(s) hold NaN, inf or "
            f"non-numbers, first for {list(genes[bad][:5])}; fix or drop those rows"
        )
        raise ValueError(msg)
    _, first, counts = np.unique(genes.astype(str), return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = sorted(genes[first[counts > 1]].tolist())
        msg = f"embeddings file {str(path)!r}: gene symbol(s) {dup[:5]} appear more than once"
        raise ValueError(msg)
    return genes, vectors


def align(store_genes: np.ndarray, genes: np.ndarray, vectors: np.ndarray):
    """The table's vectors in the store's gene order, zero rows for genes it lacks.

    Returns
    -------
    gene_vectors
        ``(n_store_genes, D)`` float64.
    found
        ``(n_store_genes,)`` bool: the gene has a vector.
    """
    row_of = {g: i for i, g in enumerate(genes.tolist())}
    rows = np.array([row_of.get(str(g), -1) for g in store_genes], dtype=np.int64)
    found = rows >= 0
    gene_vectors = np.zeros((len(store_genes), vectors.shape[1]), dtype=np.float64)
    gene_vectors[found] = vectors[rows[found]]
    return gene_vectors, found


def gene_vectors(store: Store, client: Client, params: dict, *, progress: bool = True) -> dict:
    """genept's prepare step: the embedding table aligned to the store's genes.

    Reads ``params['embeddings']``, warns (:class:`MissingGenesWarning`) with the count
    and expression share of the store's genes it lacks, and returns
    ``{'gene_vectors': (n_genes, D) float64}`` (zero rows for those genes).
    """
    path = params["embeddings"]
    genes, vectors = read_embeddings(path, allow_pickle=params["allow_pickle"])
    aligned, found = align(store.gene_names, genes, vectors)
    if not found.any():
        msg = (
            f"embeddings file {path!r} has none of the store's {store.n_genes} genes (store: "
            f"{list(store.gene_names[:3])}..., file: {list(genes[:3])}...); the first column "
            "must hold the same gene symbols as the store's var names"
        )
        raise ValueError(msg)
    if not found.all():
        sums = gene_expression_sums(store, client, progress=progress)
        total = float(sums.sum())
        share = float(sums[~found].sum()) / total if total > 0 else 0.0
        warnings.warn(
            f"genept: {int((~found).sum())} of the store's {store.n_genes} genes have no "
            f"embedding in {path!r} and are skipped (first: {list(store.gene_names[~found][:5])});"
            f" they hold {100 * share:.2f} % of the cells' normalised expression "
            "(counts / total, summed over cells)",
            MissingGenesWarning,
            stacklevel=2,
        )
    return {"gene_vectors": aligned}


def gene_expression_sums(store: Store, client: Client, *, progress: bool = True) -> np.ndarray:
    """Per gene, the sum over cells of ``x / total`` (float64), cached once per store.

    ``total`` is ``obs/total_counts``; a cell with total 0 adds nothing. Cached in
    ``encodings/_gene_expression-<key>/`` (array ``sums``), the key hashing the
    definition's version and the store's ``content_id``.
    """
    blob = json.dumps(["gene_expression_sums", EXPRESSION_VERSION, store.content_id])
    key = hashlib.sha256(blob.encode()).hexdigest()[:12]
    path = store.path / "encodings" / f"_gene_expression-{key}"
    if not (path / "zarr.json").exists():
        starts = list(range(0, store.n_cells, store.chunk_cells))
        futures = client.map(
            _expression_sums_chunk,
            starts,
            store_path=str(store.path),
            rows=store.chunk_cells,
            key=[f"rankdist-expression-{key}-{s}" for s in starts],
        )
        sums = np.zeros(store.n_genes, dtype=np.float64)
        with _progress.bar("gene expression", len(futures), enabled=progress) as bar:
            for fut in futures:  # in order: the float64 sum does not depend on timing
                sums += fut.result()
                bar.advance()
        with atomic_directory(path, replace=True) as tmp:
            group = open_group(tmp, mode="w")
            arr = group.create_array(
                "sums",
                shape=sums.shape,
                dtype="float64",
                chunks=(max(1, len(sums)),),
                compressors=raw_codecs(),
            )
            arr[:] = sums
            group.attrs["gene_expression"] = {
                "definition": "sum over cells of x / total",
                "version": EXPRESSION_VERSION,
                "key": key,
            }
    return np.asarray(open_group(path, mode="r")["sums"][:], dtype=np.float64)


def _expression_sums_chunk(start: int, *, store_path: str, rows: int) -> np.ndarray:
    """Worker task: per-gene sums of ``x / total`` over cells ``start:start+rows``."""
    root = open_group(store_path, mode="r")
    stop = min(start + rows, root["X"].shape[0])
    return normalised_weights(
        np.asarray(root["X"][start:stop]),
        np.asarray(root["obs/total_counts"][start:stop], dtype=np.float64),
    ).sum(axis=0)


def normalised_weights(block: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """``x / total`` per cell in float64 (0 for a cell whose total is 0)."""
    block = np.asarray(block, dtype=np.float64)
    totals = np.asarray(totals, dtype=np.float64)[:, None]
    return np.divide(block, totals, out=np.zeros_like(block), where=totals > 0)
