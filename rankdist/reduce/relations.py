"""Relations per cell and cutoff in the form analyses read: totals and same-label counts.

``counts/<role>[i, c, v]`` holds cell i's relations (other valid cells with similarity at
or above cutoff c) with a cell of label value v. Purity, batch and findings tables need
two numbers of each such row: the total (the sum over v, the same for every role) and
the count of the cell's own value, ``v = codes[i]``. A finished run stores them as
``relations/total`` and ``relations/same_<role>`` (docs/results.md); for runs written
before them, and for results built in memory, they are derived from the counts here,
block by block.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import zarr

from rankdist.io.store import LABEL_ROLES, compressor

#: Name of the total in ``relations/`` and in ``NeighborResult.relations``.
TOTAL = "total"


def same_name(role: str) -> str:
    """``relations/same_<role>``: the count of relations with the cell's own ``role`` value."""
    return f"same_{role}"


def same_label(counts: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``counts[i, c, codes[i]]``: each cell's relations with its own label value.

    Parameters
    ----------
    counts
        ``(cells, n_cutoffs, n_values)`` per-value counts of one role.
    codes
        ``(cells,)`` the cells' label codes in that role, or ``(cells, 1, 1)``.

    Returns
    -------
    numpy.ndarray
        ``(cells, n_cutoffs)`` int32.
    """
    index = np.asarray(codes, dtype=np.intp).reshape(-1, 1, 1)
    return np.take_along_axis(counts, index, axis=2)[:, :, 0].astype(np.int32)


def total_relations(counts: np.ndarray) -> np.ndarray:
    """``(cells, n_cutoffs)`` int32: relations at or above each cutoff, all values summed."""
    return counts.sum(axis=2, dtype=np.int64).astype(np.int32)


def relations_block(
    counts: Mapping[str, np.ndarray], codes: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The stored relations of a block of cells, from its per-value counts.

    Parameters
    ----------
    counts
        Role -> ``(cells, n_cutoffs, n_values)`` per-value counts of the block; at least
        one role.
    codes
        Role -> ``(cells,)`` the block's label codes, for every role of ``counts``.

    Returns
    -------
    dict
        :data:`TOTAL` (from the first role; every role sums to it) and ``same_<role>``
        per role, each ``(cells, n_cutoffs)`` int32.
    """
    first = next(iter(counts.values()))
    out = {TOTAL: total_relations(first)}
    for role, arr in counts.items():
        out[same_name(role)] = same_label(arr, codes[role])
    return out


def lazy_relations(counts: Mapping[str, object], codes: Mapping[str, np.ndarray]) -> dict:
    """:func:`relations_block` over whole arrays, lazily where the counts are Dask arrays.

    Parameters
    ----------
    counts
        Role -> ``(n_cells, n_cutoffs, n_values)`` counts: Dask arrays (a stored run; one
        task per chunk of cells, nothing read until computed) or numpy arrays (computed
        at once).
    codes
        Role -> ``(n_cells,)`` label codes.

    Returns
    -------
    dict
        As :func:`relations_block`, Dask arrays chunked like the counts' cells where the
        counts are Dask arrays.
    """
    import dask.array as da

    out = {}
    for role, arr in counts.items():
        if not isinstance(arr, da.Array):
            block = relations_block({role: np.asarray(arr)}, {role: codes[role]})
            out.setdefault(TOTAL, block[TOTAL])
            out[same_name(role)] = block[same_name(role)]
            continue
        arr = arr.rechunk({1: -1, 2: -1})  # a cell's row whole in one chunk
        if TOTAL not in out:
            out[TOTAL] = arr.map_blocks(total_relations, drop_axis=2, dtype=np.int32)
        role_codes = da.from_array(np.asarray(codes[role]), chunks=(arr.chunks[0],))
        out[same_name(role)] = da.map_blocks(
            same_label, arr, role_codes[:, None, None], drop_axis=2, dtype=np.int32
        )
    return out


def store_codes(store_path: str | os.PathLike, roles: list[str]) -> dict[str, np.ndarray]:
    """The label codes ``obs/<role>`` of ``roles`` in a store.

    Raises
    ------
    ValueError
        If the store lacks one of them, naming the store and the missing labels.
    """
    root = zarr.open_group(store_path, mode="r")
    missing = [f"obs/{role}" for role in roles if f"obs/{role}" not in root]
    if missing:
        msg = (
            f"cannot write the relations of a run: the store {Path(store_path)} has no labels "
            f"{missing} for its counts; compute runs on a store written by rankdist ingest"
        )
        raise ValueError(msg)
    return {role: np.asarray(root[f"obs/{role}"][:]) for role in roles}


def write_relations(run: zarr.Group, codes: Mapping[str, np.ndarray]) -> None:
    """Write ``relations/total`` and ``relations/same_<role>`` beside ``counts/<role>``.

    The counts are read back one chunk of cells at a time, so memory stays one row block
    of counts whatever the number of cells; the relations are chunked like them.

    Parameters
    ----------
    run
        A run's group (work directory) with every block of ``counts/`` written.
    codes
        Role -> ``(n_cells,)`` label codes, for every role of ``counts/``.
    """
    stored = dict(run["counts"].arrays())
    # in the counts' layout order (cell_type first): the total is cell_type's row sum
    order = {role: i for i, role in enumerate(LABEL_ROLES)}
    counts = {r: stored[r] for r in sorted(stored, key=lambda r: (order.get(r, len(order)), r))}
    first = next(iter(counts.values()))
    n, n_cutoffs, _ = first.shape
    rows = first.chunks[0]
    names = [TOTAL, *(same_name(role) for role in counts)]
    out = {
        name: run.create_array(
            f"relations/{name}",
            shape=(n, n_cutoffs),
            dtype="int32",
            chunks=(rows, n_cutoffs),
            compressors=compressor(),
        )
        for name in names
    }
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        block = relations_block(
            {role: np.asarray(arr[start:stop]) for role, arr in counts.items()},
            {role: codes[role][start:stop] for role in counts},
        )
        for name in names:
            out[name][start:stop] = block[name]
