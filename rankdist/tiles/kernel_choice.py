"""Which tile kernel runs: the float32 GEMM, or the 8-bit screen where it pays.

Both kernels give the same results bit for bit (:mod:`rankdist.tiles.screen`), so the
choice only decides the time. The screen multiplies about seven times faster here, but
every pair whose screened value lies within the certified bound of a row's k-th best or
of a cutoff is recomputed exactly, and the fused pass costs the same in both. So ``auto``
runs a sample of the encoding's own cells as one tile through both kernels on a worker
and picks the faster (docs/performance.md).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import numpy as np

from rankdist.encode.cache import encode_rows
from rankdist.layout import SUBTILE
from rankdist.tiles.blocks import read_valid, read_z_rows
from rankdist.tiles.kernel import tile_partials
from rankdist.tiles.screen import (
    REFINE_SHARE,
    ScreenUnavailable,
    quantise,
    subtile_margin,
)
from rankdist.tiles.screen import unavailable as screen_unavailable

KERNELS = ("auto", "float32", "screen")
#: The screen must be predicted this much faster to be chosen by ``auto``.
MIN_GAIN = 1.1
#: Cells in the sample (as evenly spaced runs of SUBTILE rows).
SAMPLE_CELLS = 2048


@dataclass(frozen=True)
class KernelChoice:
    """The kernel that runs, and why (stored in the run's metadata as ``kernel_*``)."""

    kernel: str
    reason: str
    rescore_share: float | None = None
    predicted_gain: float | None = None

    def metadata(self) -> dict:
        return {
            "kernel": self.kernel,
            "kernel_reason": self.reason,
            "kernel_rescore_share": _rounded(self.rescore_share),
            "kernel_predicted_gain": _rounded(self.predicted_gain),
        }


def _rounded(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.4g}")


def check_kernel(kernel, *, type_hist: bool, form: str) -> str:
    """Validate a requested kernel against the run's other options."""
    if kernel not in KERNELS:
        msg = f"unknown kernel {kernel!r}: choose one of {', '.join(KERNELS)}"
        raise ValueError(msg)
    if kernel == "screen" and type_hist:
        msg = (
            "--kernel screen cannot count the type x type histogram (it bins every pair by "
            "its exact value): use --kernel float32 or auto with --type-hist"
        )
        raise ValueError(msg)
    if kernel == "screen" and form == "sparse":
        msg = "--kernel screen multiplies the dense form of Z: use --form dense or auto"
        raise ValueError(msg)
    return kernel


def choose_kernel(
    requested: str,
    *,
    form: str,
    type_hist: bool,
    z_path: str,
    k: int,
    cutoffs,
    client,
    n_roles: int = 1,
    encode_from: dict | None = None,
) -> KernelChoice:
    """Resolve ``requested`` (``auto``, ``float32`` or ``screen``) for one run.

    The sample is read from the encoding's Z at ``z_path``, or, for an encoding still
    being computed, encoded from X (``encode_from``: the keyword arguments of
    :func:`rankdist.encode.cache.encode_rows` but the rows). An explicit ``screen`` that
    cannot run on the workers raises :class:`~rankdist.tiles.screen.ScreenUnavailable`
    saying why.
    """
    if requested == "float32":
        return KernelChoice("float32", "requested")
    if form != "dense":
        return KernelChoice("float32", "the screen multiplies the dense form only")
    if type_hist:
        return KernelChoice("float32", "the type x type histogram bins every pair")
    estimate = client.submit(
        estimate_screen,
        z_path,
        k,
        tuple(cutoffs),
        n_roles,
        encode_from,
        key=f"rankdist-kernel-{uuid.uuid4().hex[:8]}",
    ).result()
    if isinstance(estimate, str):
        if requested == "screen":
            raise ScreenUnavailable(estimate)
        return KernelChoice("float32", estimate)
    share, gain = _rounded(estimate.share), _rounded(estimate.gain)  # as the metadata says
    if requested == "screen":
        return KernelChoice("screen", "requested", share, gain)
    if gain >= MIN_GAIN:
        return KernelChoice("screen", f"predicted {gain:.2f}x faster", share, gain)
    return KernelChoice("float32", f"the screen was predicted {gain:.2f}x as fast", share, gain)


@dataclass(frozen=True)
class ScreenEstimate:
    """What :func:`estimate_screen` predicts of the screen on one encoding.

    ``shares``: the share of pairs recomputed exactly at the level-1 and the level-2
    margin; ``refined``: whether sub-tiles are predicted refined (then ``share`` is the
    level-2 share); ``gain``: predicted float32 time / screen time of the tiles.
    """

    shares: tuple[float, float]
    refined: bool
    gain: float

    @property
    def share(self) -> float:
        return self.shares[1] if self.refined else self.shares[0]


def estimate_screen(
    z_path: str,
    k: int,
    cutoffs: tuple[float, ...],
    n_roles: int = 1,
    encode_from: dict | None = None,
) -> ScreenEstimate | str:
    """Worker task: the screen's predicted cost (:class:`ScreenEstimate`), or why it cannot run.

    The sample is up to :data:`SAMPLE_CELLS` valid cells in evenly spaced runs. A pair is
    counted as rescored when its exact similarity lies within twice the sample's largest
    certified bound of a cutoff, or of either cell's k-th best (estimated as the matching
    quantile of the cell's sample similarities, k / N of the way down). Where that share
    exceeds :data:`~rankdist.tiles.screen.REFINE_SHARE` at the first level's bound, the
    sub-tiles are predicted refined (then the second level's share counts).

    The gain is measured, not modelled: the sample runs as one tile through both kernels
    (:func:`~rankdist.tiles.kernel.tile_partials`), with k scaled to the sample, lists
    starting at floors just below their final k-th best, the run's cutoffs and
    ``n_roles`` label roles, so the fused pass's own cost (counting, recomputing) is in
    both times.
    """
    reason = screen_unavailable()
    if reason is not None:
        return reason
    from threadpoolctl import threadpool_limits

    n = _n_cells(z_path if encode_from is None else encode_from["store_path"])
    runs = max(1, min(SAMPLE_CELLS // SUBTILE, -(-n // SUBTILE)))
    starts = np.unique(np.linspace(0, max(n - SUBTILE, 0), runs).astype(np.int64))
    rows, valid = [], []
    for s in starts:
        stop = min(int(s) + SUBTILE, n)
        if encode_from is None:
            rows.append(read_z_rows(z_path, int(s), stop))
            valid.append(read_valid(z_path, int(s), stop))
        else:  # the same rows as Z will hold them (each cell is encoded on its own)
            z, v = encode_rows(int(s), stop, **encode_from)
            rows.append(z)
            valid.append(v)
    z = np.concatenate(rows)[np.concatenate(valid)]
    m = len(z)
    if m < 2 * min(k + 1, m) or m < 64:
        return "too few cells to estimate the screen's gain"
    q = quantise(z)
    blocks = [(p, min(SUBTILE, m - p)) for p in range(0, m, SUBTILE)]
    margins = [
        max(subtile_margin(q, p, n_p, q, r, n_r, refined) for p, n_p in blocks for r, n_r in blocks)
        for refined in (False, True)
    ]
    with threadpool_limits(1, user_api="blas"):
        sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    depth = max(1, min(m - 2, round(k * (m - 1) / max(n - 1, 1))))
    kth = -np.partition(-sim, depth - 1, axis=1)[:, depth - 1]
    shares = []
    for margin in margins:
        near = (sim >= kth[:, None] - 2 * margin) | (sim >= kth[None, :] - 2 * margin)
        for c in cutoffs:
            near |= np.abs(sim - c) <= 2 * margin
        np.fill_diagonal(near, False)
        shares.append(float(near.sum() / (m * (m - 1))))
    # The sample as one tile of a run in its steady state: k scaled to the sample, the
    # lists starting from floors at their final k-th best (as earlier tiles leave them),
    # the run's cutoffs and number of label roles. Both kernels, timed alike.
    block = (z, np.ones(m, bool), np.zeros((max(n_roles, 1), m), np.int32))
    floors = (kth - 1e-4).astype(np.float32)
    args = (block, block, 0, 0, 0, 0, depth, np.asarray(cutoffs, np.float64), 1, (floors, floors))
    with threadpool_limits(1, user_api="blas"):
        t32 = _best_time(lambda: tile_partials(*args, count=False), repeats=2)
        t8 = _best_time(lambda: tile_partials(*args, quantised=(q, q), count=False), repeats=2)
    return ScreenEstimate((shares[0], shares[1]), shares[0] > REFINE_SHARE, t32 / t8)


def _n_cells(path: str) -> int:
    """Cells of an encoding (its ``valid``) or of a store (its ``X``)."""
    from rankdist.io.verified import open_group

    group = open_group(path, mode="r")
    return int((group["valid"] if "valid" in group else group["X"]).shape[0])


def _best_time(fn, repeats: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
