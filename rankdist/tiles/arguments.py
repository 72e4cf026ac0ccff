"""Checks of the tile arguments of ``neighbors`` (k, cutoffs, block size), before any work."""

from __future__ import annotations

import numpy as np

from rankdist.layout import SUBTILE


def check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        msg = f"k must be a positive integer, got {k!r}"
        raise ValueError(msg)
    return int(k)


def check_cutoffs(cutoffs) -> tuple[float, ...]:
    if isinstance(cutoffs, int | float):
        cutoffs = (cutoffs,)
    try:
        vals = tuple(sorted({float(c) for c in cutoffs}))
    except (TypeError, ValueError):
        msg = f"cutoffs must be numbers in [-1, 1] such as (0.3, 0.5); got {cutoffs!r}"
        raise ValueError(msg) from None
    if not vals:
        msg = (
            f"cutoffs must hold at least one correlation in [-1, 1], such as (0.5,) or "
            f"(0.3, 0.5, 0.7); got {cutoffs!r}"
        )
        raise ValueError(msg)
    bad = [c for c in vals if not -1.0 <= c <= 1.0]
    if bad:
        msg = f"cutoffs must lie in [-1, 1] (they are correlations); got {bad}"
        raise ValueError(msg)
    return vals


def check_block_size(block_size) -> int | None:
    if block_size is None:
        return None
    is_int = isinstance(block_size, int | np.integer) and not isinstance(block_size, bool)
    if not is_int or block_size <= 0 or block_size % SUBTILE:
        msg = (
            f"block size {block_size!r} must be a positive integer multiple of {SUBTILE} "
            f"(e.g. {SUBTILE}, {2 * SUBTILE}, {8 * SUBTILE}), or None to choose it from worker "
            "memory"
        )
        raise ValueError(msg)
    return int(block_size)
