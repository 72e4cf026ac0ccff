"""Geneformer's per-gene non-zero medians, computed once per store and cached.

Dataset-wide statistics that an encoding's prepare step needs are cached beside the
encodings, under names starting with ``_``: ``encodings/_gene_medians-<key>/`` holds the
exact per-gene non-zero medians (see :func:`gene_nonzero_medians`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

import numpy as np
from distributed import Client, as_completed

from rankdist import _progress
from rankdist.io.store import Store, atomic_directory
from rankdist.io.verified import open_group, raw_codecs

#: Version of the median definition below; bumping it recomputes every cached median.
MEDIANS_VERSION = 1
#: Counts per cell after normalisation, as Geneformer's tokenizer (``target_sum``).
MEDIAN_TARGET_SUM = 1e4
#: Cells x genes a map task reads at once (whole X chunks): 64 MiB as float64.
MEDIAN_MAP_VALUES = 1 << 23
#: Non-zero values a reduce task gathers (one gene alone may exceed it): 128 MiB.
MEDIAN_REDUCE_VALUES = 1 << 24


def gene_nonzero_medians(store: Store, client: Client, *, progress: bool = True) -> np.ndarray:
    """Exact per-gene median of counts per 10k over the cells where the gene is non-zero.

    The value of gene g in cell c is ``x / total_c * 1e4`` in float64 (``total_c`` is
    ``obs/total_counts``, the library size over every source gene), as in Geneformer's
    tokenizer (Theodoris et al. 2023). The median is :func:`numpy.median`'s: the middle
    value, or the mean of the two middle values for an even count. A gene that is zero
    in every cell has no median (NaN).

    Computed once per store and cached in ``encodings/_gene_medians-<key>/``, in two
    passes that hold at most a bounded number of values (docs/encodings.md):

    1. *map*: one task per span of whole X chunks (:data:`MEDIAN_MAP_VALUES` values)
       writes the span's non-zero values gene-major into a spool file beside the cache,
       with the per-gene counts;
    2. *reduce*: the genes are cut into consecutive groups of at most
       :data:`MEDIAN_REDUCE_VALUES` non-zero values (a gene with more is a group of its
       own); one task per group reads its slice of every spool file and takes each
       gene's median.

    Parameters
    ----------
    store
        The ingested store.
    client
        Dask client whose workers read X and share the store's filesystem.
    progress
        Show progress bars.

    Returns
    -------
    numpy.ndarray
        ``(n_genes,)`` float64 medians.
    """
    blob = json.dumps(
        ["gene_nonzero_medians", MEDIAN_TARGET_SUM, MEDIANS_VERSION, store.content_id]
    )
    key = hashlib.sha256(blob.encode()).hexdigest()[:12]
    path = store.path / "encodings" / f"_gene_medians-{key}"
    if not (path / "zarr.json").exists():
        with atomic_directory(path, replace=True) as tmp:
            group = open_group(tmp, mode="w")
            spool = tmp / "spool"
            spool.mkdir()
            medians = _medians_map_reduce(store, client, spool, key, progress)
            shutil.rmtree(spool)
            arr = group.create_array(
                "medians",
                shape=medians.shape,
                dtype="float64",
                chunks=(max(1, len(medians)),),
                compressors=raw_codecs(),
            )
            arr[:] = medians
            group.attrs["gene_medians"] = {
                "definition": "median of x / total * target_sum over cells with x != 0",
                "target_sum": MEDIAN_TARGET_SUM,
                "version": MEDIANS_VERSION,
                "key": key,
            }
    return np.asarray(open_group(path, mode="r")["medians"][:], dtype=np.float64)


def _medians_map_reduce(store: Store, client: Client, spool: Path, key: str, progress: bool):
    n, g = store.n_cells, store.n_genes
    chunk = store.chunk_cells
    span = max(1, MEDIAN_MAP_VALUES // (chunk * max(g, 1))) * chunk
    starts = list(range(0, n, span))
    key = f"{key}-{uuid.uuid4().hex[:8]}"  # keys of this call only: a rerun after a failure
    futures = client.map(  # must compute, not get the failed attempt's error back from Dask
        _median_map,
        starts,
        store_path=str(store.path),
        spool=str(spool),
        span=span,
        key=[f"rankdist-medians-map-{key}-{s}" for s in starts],
    )
    counts = np.zeros(g, dtype=np.int64)
    with _progress.bar("gene medians (1/2)", len(futures), enabled=progress) as bar:
        for fut in as_completed(futures):
            counts += fut.result()
            bar.advance()
    groups = gene_groups(counts, MEDIAN_REDUCE_VALUES)
    futures = client.map(
        _median_reduce,
        groups,
        spool=str(spool),
        starts=starts,
        key=[f"rankdist-medians-reduce-{key}-{lo}" for lo, _ in groups],
    )
    medians = np.full(g, np.nan)
    with _progress.bar("gene medians (2/2)", len(futures), enabled=progress) as bar:
        for fut, (lo, hi) in zip(futures, groups, strict=True):
            medians[lo:hi] = fut.result()
            bar.advance()
    return medians


def gene_groups(counts: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Cut genes into consecutive ``(lo, hi)`` ranges of at most ``budget`` values each.

    A gene with more than ``budget`` values forms a range of its own.
    """
    groups, lo, held = [], 0, 0
    for gene, c in enumerate(counts.tolist()):
        if held and held + c > budget:
            groups.append((lo, gene))
            lo, held = gene, 0
        held += c
    groups.append((lo, len(counts)))
    return groups


def _median_map(start: int, *, store_path: str, spool: str, span: int) -> np.ndarray:
    """Worker task: spool the non-zero CP10k values of cells ``start:start+span``, gene-major."""
    root = open_group(store_path, mode="r")
    stop = min(start + span, root["X"].shape[0])
    block = np.asarray(root["X"][start:stop], dtype=np.float64)
    totals = np.asarray(root["obs/total_counts"][start:stop], dtype=np.float64)
    genes, cells = np.nonzero(block.T)  # gene-major, cells ascending within a gene
    values = block[cells, genes]
    values /= totals[cells]  # in place: the same roundings as x / total * 1e4
    values *= MEDIAN_TARGET_SUM
    counts = np.bincount(genes, minlength=block.shape[1]).astype(np.int64)
    np.save(Path(spool) / f"{start:012d}.values.npy", values)
    np.save(Path(spool) / f"{start:012d}.counts.npy", counts)
    return counts


def _median_reduce(group: tuple[int, int], *, spool: str, starts: list[int]) -> np.ndarray:
    """Worker task: the non-zero medians of genes ``lo:hi`` from every map task's spool file."""
    lo, hi = group
    pieces = []
    for start in starts:
        counts = np.load(Path(spool) / f"{start:012d}.counts.npy")
        offsets = np.concatenate([[0], np.cumsum(counts)])
        pieces.append((counts[lo:hi].copy(), int(offsets[lo]), int(offsets[hi]), start))
    per_gene = np.sum([c for c, *_ in pieces], axis=0, dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(per_gene)])
    gathered = np.empty(int(bounds[-1]), dtype=np.float64)
    filled = bounds[:-1].copy()
    for counts, first, last, start in pieces:
        if last == first:
            continue
        values = np.load(Path(spool) / f"{start:012d}.values.npy", mmap_mode="r")[first:last]
        gene = np.repeat(np.arange(hi - lo), counts)
        within = np.arange(last - first) - np.repeat(np.cumsum(counts) - counts, counts)
        gathered[filled[gene] + within] = values
        filled += counts
    medians = np.full(hi - lo, np.nan)
    for j in range(hi - lo):
        if per_gene[j]:
            medians[j] = np.median(gathered[bounds[j] : bounds[j + 1]], overwrite_input=True)
    return medians
