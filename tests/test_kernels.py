"""numba encoding kernels against scipy, including the rows that break naive code."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from rankdist.encode.kernels import standardised_log_cp, standardised_ranks


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
    ]
    return np.vstack(rows)


def test_ranks_match_scipy_rankdata():
    x = tie_rows()
    z, valid = standardised_ranks(x)
    assert z.dtype == np.float32 and valid.tolist() == [False, False] + [True] * 7
    assert (z[~valid] == 0).all()
    want = _standardise(scipy.stats.rankdata(x[valid], axis=1, method="average"))
    np.testing.assert_allclose(z[valid], want, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(z[valid].astype(np.float64), axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(z[valid].astype(np.float64).mean(axis=1), 0, atol=1e-7)


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
