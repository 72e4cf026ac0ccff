"""Partial results for one row block, and their order-independent merge.

A partial holds, for the rows of one block, the best k (similarity, cell index) pairs
seen so far, best first, and the counts of relations in each cutoff bin per label value.
Merging is associative and commutative and bit-exact: the top-k order is total
(similarity descending, then cell index ascending) and the counts are integers. So any
merge tree over any tile order gives identical results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from dask.sizeof import sizeof

#: Index of an empty top-k slot; sorts after every real cell index on ties.
EMPTY = np.iinfo(np.int64).max


@dataclass(eq=False)
class Partial:
    """Reductions over some tiles for the rows of one block.

    Attributes
    ----------
    block
        Row block index.
    top_sim
        ``(rows, k)`` float32, descending; ``-inf`` in empty slots.
    top_idx
        ``(rows, k)`` int64 global cell indices; :data:`EMPTY` in empty slots.
    counts
        ``(rows, n_cutoffs, n_label_values)`` int32: relations with similarity in
        ``[cutoffs[c], cutoffs[c+1])`` per neighbour label value (all label roles side by
        side). Cumulated into "at or above each cutoff" when the result is written.
    tiles
        The tiles folded in so far, as ``(i, j, side)`` with side ``'row'`` (block i's rows)
        or ``'col'`` (block j's rows).
    checkpoint
        Path of the checkpoint file holding exactly this partial, if any.
    pair_hist
        ``(types, types, bins)`` int64 similarity histogram of the pairs of the tiles
        whose row side is this block (each tile counted once), or None.
    """

    block: int
    top_sim: np.ndarray
    top_idx: np.ndarray
    counts: np.ndarray
    tiles: frozenset
    checkpoint: str | None = None
    pair_hist: np.ndarray | None = None

    @classmethod
    def empty(cls, block: int, rows: int, k: int, n_cutoffs: int, n_values: int, tiles=()):
        return cls(
            block=block,
            top_sim=np.full((rows, k), -np.inf, dtype=np.float32),
            top_idx=np.full((rows, k), EMPTY, dtype=np.int64),
            counts=np.zeros((rows, n_cutoffs, n_values), dtype=np.int32),
            tiles=frozenset(tiles),
        )

    @property
    def nbytes(self) -> int:
        hist = 0 if self.pair_hist is None else self.pair_hist.nbytes
        return self.top_sim.nbytes + self.top_idx.nbytes + self.counts.nbytes + hist


@sizeof.register(Partial)
def _sizeof_partial(part: Partial) -> int:
    # Without this Dask counts a partial as ~56 bytes and neither spills it nor shows it.
    return part.nbytes + 200


def merge_partials(*parts: Partial) -> Partial:
    """Merge partials of the same block covering disjoint tiles."""
    first = parts[0]
    tiles = set(first.tiles)
    for p in parts[1:]:
        if p.block != first.block:
            msg = f"cannot merge partials of blocks {first.block} and {p.block}"
            raise ValueError(msg)
        if tiles & p.tiles:
            msg = f"tiles {sorted(tiles & p.tiles)} would be counted twice in block {p.block}"
            raise ValueError(msg)
        tiles |= p.tiles
    top_sim, top_idx = first.top_sim.copy(), first.top_idx.copy()
    counts = first.counts.copy()
    hists = [p.pair_hist for p in parts if p.pair_hist is not None]
    pair_hist = np.sum(hists, axis=0) if hists else None
    for p in parts[1:]:
        top_sim, top_idx = merge_topk(top_sim, top_idx, p.top_sim, p.top_idx)
        counts += p.counts
    return Partial(first.block, top_sim, top_idx, counts, frozenset(tiles), pair_hist=pair_hist)


@numba.njit(nogil=True, cache=True)
def merge_topk(a_sim, a_idx, b_sim, b_idx):
    """Row-wise merge of two best-first top-k lists into one (similarity desc, index asc)."""
    rows, k = a_sim.shape
    out_sim = np.empty_like(a_sim)
    out_idx = np.empty_like(a_idx)
    for r in range(rows):
        ia = 0
        ib = 0
        for t in range(k):
            sa = a_sim[r, ia]
            sb = b_sim[r, ib]
            if sa > sb or (sa == sb and a_idx[r, ia] <= b_idx[r, ib]):
                out_sim[r, t] = sa
                out_idx[r, t] = a_idx[r, ia]
                ia += 1
            else:
                out_sim[r, t] = sb
                out_idx[r, t] = b_idx[r, ib]
                ib += 1
    return out_sim, out_idx


def partial_bytes_per_row(k: int, n_cutoffs: int, n_values: int) -> int:
    """Bytes of one row of a partial: top-k (float32 + int64) and int32 counts.

    ``n_values`` is the length of the shared label-value axis (the sum of every role's
    category count); a run with no cutoffs still holds one row of counts.
    """
    return k * (4 + 8) + max(n_cutoffs, 1) * n_values * 4
