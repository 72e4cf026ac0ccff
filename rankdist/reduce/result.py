"""The neighbours result: what ``neighbors`` returns, ``load`` reads back and exports take.

A finished run is stored as ``results/<run>/`` in the store; :mod:`rankdist.reduce.runstore`
writes and reads that format (docs/results.md). This module turns it into a
:class:`NeighborResult`: the top-k as numpy arrays, the counts and relations as xarray
Datasets over Dask arrays of the stored chunks (read only when used), labelled with the
store's categories, and the exports (AnnData, scib-metrics).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp
import xarray as xr

from rankdist.io.store import Labels, Store
from rankdist.reduce import graph
from rankdist.reduce.relations import TOTAL, lazy_relations
from rankdist.reduce.runstore import list_runs, read_run


@dataclass
class NeighborResult:
    """Exact top-k neighbours and cutoff counts of every cell.

    Attributes
    ----------
    indices
        ``(n_cells, k)`` int64 neighbour indices, best first, self excluded, ties broken
        by the lower cell index; ``-1`` rows for excluded cells.
    similarities
        ``(n_cells, k)`` float32 correlations, descending; NaN rows for excluded cells.
    excluded
        ``(n_cells,)`` bool: constant cells, which have no defined rank correlation.
    cell_names
        ``(n_cells,)`` cell names.
    cutoffs
        The cutoffs the counts refer to, ascending.
    counts
        xarray Dataset: one variable per label role (``cell_type``, ...), dims
        ``(cell, cutoff, neighbor_<role>)``: the number of other cells related at or
        above each cutoff, by their label. From :func:`load`, backed by Dask arrays over
        the stored chunks: read when used (``.values``, ``.sel(...)``, a sum computed).
    labels
        The store's label columns by role.
    metadata
        Run parameters and provenance.
    pair_hist
        With ``type_hist=True``: int64 counts of cell pairs by (``type_a``, ``type_b``,
        ``bin``), 400 bins of 0.005 on [-1, 1]; symmetric in the two types, each pair of
        cells counted once. None otherwise.
    relations
        xarray Dataset, dims ``(cell, cutoff)``: ``total`` (relations at or above each
        cutoff, the sum over any role of ``counts``) and ``same_<role>`` per role (those
        with the cell's own label value), int32, zero for excluded cells. From
        :func:`load`, backed by Dask arrays like ``counts``. None (the default) derives it
        from ``counts`` and ``labels``; ``dataclasses.replace`` keeps it, so pass
        ``relations=None`` with new counts or labels.
    """

    indices: np.ndarray
    similarities: np.ndarray
    excluded: np.ndarray
    cell_names: np.ndarray
    cutoffs: tuple[float, ...]
    counts: xr.Dataset
    labels: dict[str, Labels] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    pair_hist: xr.DataArray | None = None
    relations: xr.Dataset | None = None

    def __post_init__(self):
        n, k = self.indices.shape
        if self.similarities.shape != (n, k):
            msg = f"similarities {self.similarities.shape} and indices {(n, k)} differ in shape"
            raise ValueError(msg)
        if self.excluded.shape != (n,) or len(self.cell_names) != n:
            msg = f"excluded {self.excluded.shape} / cell_names {len(self.cell_names)} != {n} cells"
            raise ValueError(msg)
        if self.relations is None:
            self.relations = derive_relations(self.counts, self.labels)

    def __repr__(self) -> str:
        return (
            f"NeighborResult({self.n_cells} cells, k={self.k}, "
            f"encoding={self.metadata.get('encoding')!r}, cutoffs={list(self.cutoffs)}, "
            f"excluded={int(self.excluded.sum())})"
        )

    @property
    def n_cells(self) -> int:
        return self.indices.shape[0]

    @property
    def k(self) -> int:
        return self.indices.shape[1]

    @cached_property
    def distances(self) -> np.ndarray:
        """``1 - similarity``, clipped at 0 (float32 rounding can give -1e-7)."""
        return np.maximum(1.0 - self.similarities, 0.0).astype(np.float32)

    @cached_property
    def distance_graph(self) -> sp.csr_matrix:
        """``(n, n)`` float32 CSR of ``1 - rho`` to each cell's k neighbours (no self)."""
        return graph.distance_graph(self.indices, self.distances, self.excluded)

    @cached_property
    def connectivities(self) -> sp.csr_matrix:
        """UMAP fuzzy-simplicial-set weights, computed exactly as scanpy does from a kNN.

        Excluded cells have no edges; the others are computed on the valid cells alone.
        Built block by block of rows (:func:`rankdist.reduce.graph.connectivities`).
        """
        return graph.connectivities(self.indices, self.distances, self.excluded)

    def self_first(self) -> tuple[np.ndarray, np.ndarray]:
        """``(n, k + 1)`` indices and distances with each cell itself in column 0.

        This is the layout of scib-metrics' ``NeighborsResults``. Excluded cells get their
        own index in every column and distance ``inf``.
        """
        return graph.self_first(self.indices, self.distances, self.excluded)

    def to_scib(self):
        """scib-metrics ``NeighborsResults`` of the valid cells, self in column 0."""
        from scib_metrics.nearest_neighbors import NeighborsResults

        if self.excluded.any():
            msg = (
                f"{int(self.excluded.sum())} cells are excluded (constant); scib-metrics needs "
                "every row filled. Subset the AnnData to ~obs['rankdist_excluded'] and recompute."
            )
            raise ValueError(msg)
        idx, dist = self.self_first()
        return NeighborsResults(indices=idx, distances=dist)

    def to_anndata(self, *, key_added: str | None = None, obs=None):
        """An AnnData carrying the exact graph where scanpy and scib-metrics look for it.

        Parameters
        ----------
        key_added
            As in ``sc.pp.neighbors``: None writes ``obsp['distances']``,
            ``obsp['connectivities']`` and ``uns['neighbors']``; a key K writes
            ``obsp['K_distances']``, ``obsp['K_connectivities']`` and ``uns['K']``.
        obs
            obs DataFrame to attach (defaults to the stored label columns).

        Returns
        -------
        anndata.AnnData
            No X (``n_vars = 0``); obsp graphs, ``obsm['rankdist_indices']`` /
            ``obsm['rankdist_distances']`` (self in column 0), ``obs['rankdist_excluded']``
            and ``uns['rankdist']`` (run metadata).
        """
        return graph.to_anndata(self, key_added=key_added, obs=obs)

    def write_h5ad(self, path: str | os.PathLike, *, key_added: str | None = None):
        """Write :meth:`to_anndata` to an ``.h5ad`` file that appears only when complete.

        The file is written under a hidden temporary name beside ``path`` and renamed into
        place: a failure (a full disk, an interrupt) leaves no ``path`` and no temporary
        file, and an existing ``path`` untouched.

        Parameters
        ----------
        path
            The file to write, in an existing folder; an existing file is replaced.
        key_added
            As in :meth:`to_anndata`.

        Returns
        -------
        anndata.AnnData
            What was written.

        Raises
        ------
        FileNotFoundError
            The folder of ``path`` does not exist.
        """
        return graph.write_h5ad(self, path, key_added=key_added)


def load(store_path: str | os.PathLike | Store, run: str | None = None) -> NeighborResult:
    """Read a finished run back as a :class:`NeighborResult`.

    Parameters
    ----------
    store_path
        The store (path or :class:`Store`).
    run
        Run name; may be omitted when the store holds exactly one run.

    Returns
    -------
    NeighborResult
        The same object :func:`rankdist.neighbors` returned for that run.
    """
    store = store_path if isinstance(store_path, Store) else Store(store_path)
    runs = list_runs(store)
    if run is None:
        if len(runs) != 1:
            msg = f"{store.path} holds runs {runs}; say which one with run=NAME (--run NAME)"
            raise ValueError(msg)
        run = runs[0]
    if run not in runs:
        msg = f"no run {run!r} in {store.path}; runs there: {runs}"
        raise KeyError(msg)
    return read_result(store, run)


def read_result(store: Store, run: str) -> NeighborResult:
    """The finished run ``run`` of ``store`` as a :class:`NeighborResult` (see :func:`load`).

    ``indices``, ``similarities`` and ``excluded`` are read; ``counts`` and ``relations``
    are Dask-backed Datasets over the stored chunks, read when used. A run without
    stored ``relations/`` (format 1) derives them from the counts, chunk by chunk, when
    they are used.
    """
    import dask.array as da

    # the names first, so that their read's transient peak does not add to the top-k's;
    # one pandas index over the names' own str objects, shared by both Datasets
    cells = pd.Index(store.cell_names, dtype=object, name="cell", copy=False)
    labels = store.labels
    stored = read_run(store.path, run)
    cutoffs = tuple(float(c) for c in stored.metadata["cutoffs"])
    dims = ("cell", "cutoff")
    counts = xr.Dataset(coords={"cell": cells, "cutoff": list(cutoffs)})
    for role, lab in labels.items():
        if role in stored.counts:
            counts[role] = xr.Variable(
                (*dims, f"neighbor_{role}"),
                da.from_zarr(stored.counts[role]),
                attrs={"column": lab.column, "meaning": "relations with similarity >= cutoff"},
            )
            counts.coords[f"neighbor_{role}"] = list(lab.categories)
    if stored.relations:
        arrays = {name: da.from_zarr(arr) for name, arr in stored.relations.items()}
        relations = _relations_dataset(arrays, counts)
    else:
        relations = derive_relations(counts, labels)
    pair_hist = None
    if stored.pair_hist is not None:
        edges = stored.bin_edges
        types = list(labels["cell_type"].categories)
        pair_hist = xr.DataArray(
            stored.pair_hist,
            dims=("type_a", "type_b", "bin"),
            coords={"type_a": types, "type_b": types, "bin": (edges[:-1] + edges[1:]) / 2},
            attrs={"bin_edges": edges, "meaning": "pairs of cells by type and similarity bin"},
        )
    return NeighborResult(
        indices=stored.indices,
        similarities=stored.similarities,
        excluded=stored.excluded,
        cell_names=store.cell_names,
        cutoffs=cutoffs,
        counts=counts,
        labels=labels,
        metadata=stored.metadata,
        pair_hist=pair_hist,
        relations=relations,
    )


def derive_relations(counts: xr.Dataset, labels: dict[str, Labels]) -> xr.Dataset:
    """``relations`` of a result from its per-value ``counts`` (lazily if they are Dask-backed).

    Parameters
    ----------
    counts
        :attr:`NeighborResult.counts`.
    labels
        The label columns by role; roles of ``counts`` without labels get no
        ``same_<role>``.

    Returns
    -------
    xarray.Dataset
        As :attr:`NeighborResult.relations`; no variables when ``counts`` has none.
    """
    roles = [str(r) for r in counts.data_vars if r in labels]
    arrays = lazy_relations(
        {r: counts[r].transpose("cell", "cutoff", f"neighbor_{r}").data for r in roles},
        {r: labels[r].codes for r in roles},
    )
    return _relations_dataset(arrays, counts)


def _relations_dataset(arrays: dict, counts: xr.Dataset) -> xr.Dataset:
    """``relations`` with the cell and cutoff coords of ``counts``."""
    meaning = {TOTAL: "relations with similarity >= cutoff"}
    variables = {
        name: xr.Variable(
            ("cell", "cutoff"),
            data,
            attrs={"meaning": meaning.get(name, f"of them with the cell's own {name[5:]}")},
        )
        for name, data in arrays.items()
    }
    coords = {c: counts.coords[c] for c in ("cell", "cutoff") if c in counts.coords}
    return xr.Dataset(variables, coords=coords)
