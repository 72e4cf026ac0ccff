"""Cell type x cell type similarity: quantiles of the pair distribution from the histogram."""

from __future__ import annotations

import numpy as np
import xarray as xr

from rankdist.reduce.result import NeighborResult

QUANTILES = (0.25, 0.5, 0.75)


def histogram_quantiles(counts: np.ndarray, edges: np.ndarray, qs=QUANTILES) -> np.ndarray:
    """Quantiles of binned data, interpolated linearly within the bin that holds them.

    Parameters
    ----------
    counts
        ``(..., bins)`` counts.
    edges
        ``(bins + 1,)`` bin edges.
    qs
        Quantiles in [0, 1].

    Returns
    -------
    numpy.ndarray
        ``(..., len(qs))``; NaN where a histogram is empty. The true quantile lies in the
        same bin, so the error is below one bin width.
    """
    counts = np.asarray(counts, dtype=np.float64)
    cum = np.cumsum(counts, axis=-1)
    out = np.full(counts.shape[:-1] + (len(qs),), np.nan)
    flat_cum = cum.reshape(-1, counts.shape[-1])
    flat_counts = counts.reshape(-1, counts.shape[-1])
    flat_out = out.reshape(-1, len(qs))
    for r in range(flat_cum.shape[0]):
        n = flat_cum[r, -1]
        if n == 0:
            continue
        for j, q in enumerate(qs):
            target = q * n
            b = int(np.searchsorted(flat_cum[r], target, side="left"))
            b = min(b, counts.shape[-1] - 1)
            before = flat_cum[r, b - 1] if b > 0 else 0.0
            inside = flat_counts[r, b]
            frac = (target - before) / inside if inside > 0 else 0.5
            flat_out[r, j] = edges[b] + frac * (edges[b + 1] - edges[b])
    return out


def type_similarity(res: NeighborResult) -> xr.Dataset:
    """Median and quartiles of the similarity of every pair of cell types.

    Parameters
    ----------
    res
        A result computed with ``type_hist=True``.

    Returns
    -------
    xarray.Dataset
        dims ``type_a``, ``type_b`` (the cell types) and ``quantile`` (0.25, 0.5, 0.75):

        - ``similarity``: the quantiles of the correlations of pairs with one cell of
          ``type_a`` and one of ``type_b`` (within-type pairs on the diagonal), accurate
          to within one histogram bin (0.005);
        - ``pairs``: the number of such pairs.

        Plus ``within`` and ``between`` (dim ``quantile``): the same quantiles pooled
        over all within-type pairs and all between-type pairs.
    """
    if res.pair_hist is None:
        msg = (
            "this result has no type x type histogram; run neighbors with "
            "type_hist=True (--type-hist)"
        )
        raise ValueError(msg)
    hist = res.pair_hist.to_numpy()
    edges = np.asarray(res.pair_hist.attrs["bin_edges"])
    types = list(res.pair_hist.coords["type_a"].to_numpy())
    n = len(types)
    eye = np.eye(n, dtype=bool)
    within = hist[eye].sum(axis=0)
    between = hist[np.triu(~eye)].sum(axis=0)  # each unordered type pair once
    return xr.Dataset(
        {
            "similarity": (("type_a", "type_b", "quantile"), histogram_quantiles(hist, edges)),
            "pairs": (("type_a", "type_b"), hist.sum(axis=-1)),
            "within": (("quantile",), histogram_quantiles(within, edges)),
            "between": (("quantile",), histogram_quantiles(between, edges)),
        },
        coords={"type_a": types, "type_b": types, "quantile": list(QUANTILES)},
        attrs={
            "encoding": str(res.metadata.get("encoding")),
            "bin_width": float(edges[1] - edges[0]),
        },
    )
