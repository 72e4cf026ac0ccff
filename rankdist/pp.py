"""``rankdist.pp.neighbors``: the exact neighbour graph of an AnnData, written as scanpy writes it.

The scanpy-style entry point (``sc.pp.neighbors``): the AnnData in memory is ingested into
a store (a temporary one, removed afterwards, unless ``store=`` names one), the exact
top-k runs there (:func:`rankdist.neighbors`), and the graphs come back into the AnnData
under scanpy's keys, so ``sc.tl.umap(adata)`` and ``sc.tl.leiden(adata)`` follow. See
docs/scanpy.md.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from pathlib import Path

from rankdist.api import neighbors as run_neighbors
from rankdist.io.ingest import ingest
from rankdist.io.store import Store

#: The key of rankdist's provenance in ``uns`` for the graph under ``key_added``.
PROVENANCE = "rankdist"


def provenance_key(key_added: str | None) -> str:
    """``uns`` key of the provenance of the graph under ``key_added``.

    ``'rankdist'`` for scanpy's default keys, ``'<key_added>_rankdist'`` otherwise, as
    scanpy names ``obsp['<key_added>_distances']``.
    """
    return PROVENANCE if key_added is None else f"{key_added}_{PROVENANCE}"


def neighbors(
    adata,
    encoding: str = "spearman",
    n_neighbors: int = 15,
    key_added: str | None = None,
    store: str | os.PathLike | None = None,
    *,
    layer: str | None = None,
    use_raw: bool = False,
    genes: str | None = None,
    cell_type: str | None = None,
    coarse_type: str | None = None,
    batch: str | None = None,
    overwrite: bool = False,
    cluster: str = "local",
    progress: bool = True,
    **kwargs,
) -> None:
    """Exact neighbour graph of every cell, written into ``adata`` as ``sc.pp.neighbors`` writes it.

    Parameters
    ----------
    adata
        An :class:`anndata.AnnData` in memory with counts (or any non-negative
        expression) in ``X``, ``layers[layer]`` or ``.raw``. It is not copied.
    encoding
        ``'spearman'`` (ranks) or another name of ``rankdist.ENCODINGS``.
    n_neighbors
        As in scanpy: the neighbourhood size *counting the cell itself*, so each cell gets
        ``n_neighbors - 1`` neighbours (the ``k`` of :func:`rankdist.neighbors`).
    key_added
        None writes ``obsp['distances']``, ``obsp['connectivities']``,
        ``uns['neighbors']`` and ``uns['rankdist']``; a key K writes
        ``obsp['K_distances']``, ``obsp['K_connectivities']``, ``uns['K']`` and
        ``uns['K_rankdist']``.
    store
        Where to keep the store (a new path, or an existing store with
        ``overwrite=True``); the run stays there and ``uns['rankdist']`` records it. None
        ingests into a temporary folder under :func:`tempfile.gettempdir` (``TMPDIR``),
        removed when the call returns: workers on other machines cannot read it, so with a
        batch-system cluster name a store on a shared filesystem.
    layer, use_raw
        Read ``layers[layer]`` or ``.raw`` instead of ``X``.
    genes
        Gene selection, as for :func:`rankdist.ingest` (None: all genes).
    cell_type, coarse_type, batch
        obs columns to count relations by at each cutoff (not needed for the graph). Only
        useful with ``store``: :func:`rankdist.tl.purity` then adds the cutoff columns.
    overwrite
        Replace an existing store at ``store``.
    cluster
        Where the work runs, as for :func:`rankdist.neighbors` (ignored with ``client=``).
    progress
        Show progress bars.
    **kwargs
        Passed to :func:`rankdist.neighbors`: ``cutoffs``, ``client``, ``params``,
        ``name``, ``workers``, ``jobs``, ``profile``, ``block_size``, ``form``, ...

    Returns
    -------
    None
        ``adata`` is updated in place: ``obsp[distances]`` (float32 CSR, ``1 - rho`` to
        each of the ``n_neighbors - 1`` neighbours, self excluded),
        ``obsp[connectivities]`` (UMAP weights, as scanpy computes them from that kNN),
        ``uns[key]`` (``connectivities_key``, ``distances_key`` and ``params`` with
        ``n_neighbors``, ``method='umap'``, ``metric='correlation'``) and the run's
        metadata under ``uns['rankdist']``. A constant cell (no rank correlation; a
        :class:`rankdist.ExcludedCellsWarning` names it) has no entries in either graph.
    """
    k = _check_kwargs(n_neighbors, kwargs)
    ingest_args = {
        "genes": genes,
        "use_raw": use_raw,
        "layer": layer,
        "cell_type": cell_type,
        "coarse_type": coarse_type,
        "batch": batch,
        "progress": progress,
    }
    if store is None:
        with tempfile.TemporaryDirectory(prefix="rankdist-pp-") as tmp:
            found = ingest(adata, Path(tmp) / "store.zarr", **ingest_args)
            _write(adata, found, encoding, k, key_added, cluster, progress, kwargs, keep=False)
        return
    found = ingest(adata, store, overwrite=overwrite, **ingest_args)
    _write(adata, found, encoding, k, key_added, cluster, progress, kwargs, keep=True)


def _check_kwargs(n_neighbors, kwargs: dict) -> int:
    """``k = n_neighbors - 1``, once ``kwargs`` are checked as options of ``neighbors``."""
    if "k" in kwargs:
        msg = (
            f"pass n_neighbors={kwargs['k'] + 1 if isinstance(kwargs['k'], int) else 'K+1'} "
            "instead of k: as in scanpy, n_neighbors counts the cell itself"
        )
        raise TypeError(msg)
    allowed = set(inspect.signature(run_neighbors).parameters) - {"store", "encoding", "k"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        msg = (
            f"rankdist.pp.neighbors got unexpected options {unknown}; it passes extra options "
            f"to rankdist.neighbors, which takes {sorted(allowed)}"
        )
        raise TypeError(msg)
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int) or n_neighbors < 2:
        msg = (
            f"n_neighbors must be an integer >= 2 (the cell itself and at least one "
            f"neighbour), not {n_neighbors!r}"
        )
        raise ValueError(msg)
    return n_neighbors - 1


def _write(adata, store: Store, encoding, k, key_added, cluster, progress, kwargs, *, keep):
    """Run the neighbours on ``store`` and put the graphs and provenance into ``adata``."""
    res = run_neighbors(store, encoding, k, cluster=cluster, progress=progress, **kwargs)
    names = res.cell_names.astype(str)
    if len(names) != adata.n_obs or (names != adata.obs_names.to_numpy(dtype=str)).any():
        msg = (
            f"the store {store.path} holds other cells than adata ({len(names)} vs "
            f"{adata.n_obs}); this is a bug in rankdist.pp.neighbors, please report it"
        )
        raise RuntimeError(msg)
    exported = res.to_anndata(key_added=key_added)
    key = "neighbors" if key_added is None else key_added
    entry = exported.uns[key]
    for name in (entry["distances_key"], entry["connectivities_key"]):
        adata.obsp[name] = exported.obsp[name]
    adata.uns[key] = entry
    record = dict(exported.uns["rankdist"])
    if keep:
        record["store"] = str(Path(store.path).resolve())
        record["run"] = str(res.metadata["name"])
    adata.uns[provenance_key(key_added)] = record
