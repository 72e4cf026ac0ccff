"""Reported similarities come from pair_value, so they do not depend on the GEMM's rounding."""

from __future__ import annotations

import numpy as np

from rankdist.reduce.partial import Partial
from rankdist.tiles.fused import fused_pass, gemm_error_bound, pair_value


def _unit_rows(n: int, g: int, seed: int) -> np.ndarray:
    z = np.random.default_rng(seed).standard_normal((n, g))
    z -= z.mean(axis=1, keepdims=True)
    return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)


def test_pair_value_is_symmetric_and_close_to_float64():
    z = _unit_rows(50, 300, 0)
    exact = z.astype(np.float64) @ z.astype(np.float64).T
    for a in range(50):
        for b in range(50):
            assert pair_value(z[a], z[b]) == pair_value(z[b], z[a])
            assert abs(pair_value(z[a], z[b]) - exact[a, b]) <= 2**-24
    assert 0 < gemm_error_bound(300) < 300 * 2**-23


def test_duplicates_tie_by_index_even_when_the_gemm_is_asymmetric():
    # Cells 1 and 5 are the same cell; cell 3 lies between them. A GEMM that rounds
    # S[1, 3] and S[3, 5] differently (as OpenBLAS's Haswell kernels do) must not make
    # 5 rank above 1 in cell 3's list.
    n, g = 8, 64
    k = n - 1  # every other cell is listed
    z = _unit_rows(n, g, 1)
    z[5] = z[1]
    s = (z.astype(np.float64) @ z.astype(np.float64).T).astype(np.float32)
    s[3, 5] = np.nextafter(np.nextafter(s[3, 5], np.float32(2)), np.float32(2))  # 2 ulps up
    part = Partial.empty(0, n, k, 1, 1, tiles=[(0, 0, "row"), (0, 0, "col")])
    valid = np.ones(n, bool)
    codes = np.zeros((1, n), np.int32)
    cutoffs = np.array([-1.0])
    fused_pass(
        s,
        z,
        z,
        gemm_error_bound(g),
        0,
        0,
        0,
        0,
        True,
        valid,
        valid,
        codes,
        codes,
        cutoffs,
        part.top_sim,
        part.top_idx,
        part.counts,
        part.top_sim,
        part.top_idx,
        part.counts,
    )
    row = list(part.top_idx[3])
    assert row.index(1) + 1 == row.index(5)
    assert part.top_sim[3, row.index(1)] == part.top_sim[3, row.index(5)] == pair_value(z[3], z[1])
    # The counts saw every other cell once (cutoff -1 admits all pairs).
    assert (part.counts[:, 0, 0] == n - 1).all()
