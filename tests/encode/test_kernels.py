"""numba encoding kernels against scipy, including the rows that break naive code."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from rankdist.encode.kernels import COUNTING_MAX, standardised_log_cp, standardised_ranks


def _standardise(v):
    c = v - v.mean(axis=1, keepdims=True)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def tie_rows(seed=0):
    rng = np.random.default_rng(seed)
    rows = [
        np.zeros(50),  # all zero: constant
        np.full(50, 3.0),  # all equal: constant
        np.r_[np.zeros(49), 5.0],  # one non-zero
        rng.poisson(0.3, 50).astype(float),  # zero-heavy with ties
        rng.poisson(4.0, 50).astype(float),  # ties among non-zeros
        rng.standard_normal(50),  # negative values: the whole row is ranked
        np.r_[-1.0, np.zeros(48), 2.0],  # negative and zeros
        np.arange(50, dtype=float)[::-1],  # no ties
        rng.random(50) * (rng.random(50) < 0.1),  # 90 % zeros, distinct non-zeros
        np.r_[np.zeros(40), [COUNTING_MAX] * 3, 1.0, 1.0, 2.0, 7, 7, 7, 3],  # counts at the limit
        np.r_[np.zeros(45), COUNTING_MAX + 1.0, 2, 2, 5, 1],  # counts above it: sorted instead
        np.r_[np.zeros(45), 2.5, 2, 2, 5, 1],  # one fraction: sorted instead
        np.r_[np.zeros(45), 1e-300, 1e300, 2, 2, 1],  # extreme magnitudes
    ]
    return np.vstack(rows)


def test_ranks_match_scipy_rankdata():
    x = tie_rows()
    z, valid = standardised_ranks(x)
    assert z.dtype == np.float32 and valid.tolist() == [False, False] + [True] * 11
    assert (z[~valid] == 0).all()
    want = _standardise(scipy.stats.rankdata(x[valid], axis=1, method="average"))
    np.testing.assert_allclose(z[valid], want, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(z[valid].astype(np.float64), axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(z[valid].astype(np.float64).mean(axis=1), 0, atol=1e-7)


def test_counting_and_sorting_ranks_agree_bitwise():
    """Whole-number rows are ranked by counting; the same values as fractions sort.

    Scaling a row by 0.5 keeps its ranks but sends it down the sorting path, so both
    paths must give the same float32 bits.
    """
    rng = np.random.default_rng(7)
    x = rng.poisson(rng.gamma(0.3, 3, 300), (40, 300)).astype(float)
    x[:, 0] += 0.5 * (np.arange(40) % 2)  # every other row holds one fraction
    z_a, v_a = standardised_ranks(x)
    z_b, v_b = standardised_ranks(x * 0.5 + 0.25 * (x > 0))
    assert v_a.tolist() == v_b.tolist()
    assert np.array_equal(z_a.view(np.uint32), z_b.view(np.uint32))
    want = _standardise(scipy.stats.rankdata(x, axis=1, method="average"))
    np.testing.assert_allclose(z_a, want, atol=1e-7)


@pytest.mark.parametrize("seed", range(5))
def test_dot_products_are_spearman(seed):
    rng = np.random.default_rng(seed)
    x = rng.poisson(rng.gamma(0.5, 2, 40), (30, 40)).astype(float)
    x[0] = 0
    z, valid = standardised_ranks(x)
    rho = scipy.stats.spearmanr(x[valid], axis=1).statistic
    got = z[valid].astype(np.float64) @ z[valid].T.astype(np.float64)
    np.testing.assert_allclose(got, rho, atol=1e-6)


def test_log_cp_matches_numpy():
    rng = np.random.default_rng(3)
    x = rng.poisson(2.0, (20, 30)).astype(float)
    x[0] = 0  # empty cell: constant
    x[1] = 7  # constant after normalisation: caught exactly, not as a 1e-16 variance
    totals = x.sum(axis=1) + 13.0  # library size over genes not stored
    z, valid = standardised_log_cp(x, totals, 1e4)
    assert valid.tolist() == [False, False] + [True] * 18
    logcp = np.log1p(x[2:] / totals[2:, None] * 1e4)
    np.testing.assert_allclose(z[2:], _standardise(logcp), atol=1e-7)
