"""Priming a diagonal sub-tile's lists reads the same triangle as the fused pass."""

from __future__ import annotations

import numpy as np

from rankdist.tiles.kernel import _prime


def test_diagonal_prime_uses_the_upper_triangle_only():
    # BLAS may round S[a, b] and S[b, a] differently; the pass sees only b > a.
    rng = np.random.default_rng(0)
    n, k = 8, 3
    upper = rng.random((n, n)).astype(np.float32)
    s = np.triu(upper, 1) + np.triu(upper, 1).T
    s[np.tril_indices(n, -1)] += np.float32(1e-3)  # lower triangle a little higher
    lists = np.full((n, k), -np.inf, np.float32)
    _prime(s, lists, np.ones(n, bool), diagonal=True, axis=1)
    seen = np.where(np.triu(np.ones((n, n), bool), 1), s, s.T)  # what the pass reads
    np.fill_diagonal(seen, -np.inf)
    want = np.sort(seen, axis=1)[:, -k]
    np.testing.assert_array_equal(lists[:, -1], want)
