"""The scgpt encoding (scGPT's per-cell value binning) by hand and against oracles.

Definition (docs/encodings.md): a cell's non-zero values, sorted ``s[0..m-1]``, have
edges ``np.quantile(s, np.linspace(0, 1, n_bins - 1))`` (linear interpolation); a value's
bin is the number of edges at or below it (``np.digitize``, ``right=False``), computed in
exact arithmetic; zeros are bin 0. The correlation is Pearson over the bins.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import rankdist
from rankdist.encode.binning import value_bins
from rankdist.encode.registry import get_encoding

from _data import oracle_counts, safe_cutoffs, tricky_adata


def standardise(values) -> np.ndarray:
    c = np.asarray(values, dtype=np.float64)
    c = c - c.mean(axis=-1, keepdims=True)
    return c / np.linalg.norm(c, axis=-1, keepdims=True)


def oracle_bins(row: np.ndarray, n_bins: int) -> np.ndarray:
    """np.digitize(v, np.quantile(nonzero, linspace)) with every edge an exact fraction.

    Written from the definition, independently of the kernel's closed form: edge j is
    ``s[lo] + (s[hi] - s[lo]) * frac`` at virtual index ``j (m - 1) / (n_bins - 2)``,
    compared with each value as exact rationals. The values are log1p of counts per 10k,
    as scGPT bins them.
    """
    row = np.asarray(row, dtype=np.float64)
    out = np.zeros(len(row))
    nz = np.flatnonzero(row)
    if len(nz) == 0:
        return out
    v = np.log1p(row[nz] / row.sum() * 1e4)
    s = [Fraction(x) for x in np.sort(v)]
    m, k_edges = len(s), n_bins - 2
    edges = []
    for j in range(k_edges + 1):
        h = Fraction(j * (m - 1), k_edges) if k_edges else Fraction(0)
        lo = int(h)  # floor: h >= 0
        hi = min(lo + 1, m - 1)
        edges.append(s[lo] + (s[hi] - s[lo]) * (h - lo))
    out[nz] = [sum(e <= Fraction(x) for e in edges) for x in v]
    return out


# --- by hand ------------------------------------------------------------------------------

# one cell, 6 genes: non-zero 5, 2, 2, 9, 1 (gene 0 is zero); sorted 1, 2, 2, 5, 9 (m = 5)
CELL = np.array([[0.0, 5.0, 2.0, 2.0, 9.0, 1.0]])
SCGPT_BY_HAND = {
    # 51 bins: 50 edges at virtual indices j * 4 / 49. A value counts the edges with
    # ceil(j * 4 / 49) <= L, L the last sorted position of its value: 1 (L=0) -> j = 0
    # only; 2 (L=2) -> j <= 24.5, 25 edges; 5 (L=3) -> j <= 36.75, 37; 9 (L=4) -> all 50.
    51: [0, 37, 25, 25, 50, 1],
    # 3 bins: edges at the minimum and the maximum; only 9 reaches the second
    3: [0, 1, 1, 1, 2, 1],
    # 5 bins: 4 edges at virtual indices 0, 4/3, 8/3, 4, i.e. 1, 2 + (2 - 2) / 3 = 2,
    # 2 + (5 - 2) * 2/3 = 4 and 9: 1 counts one edge, 2 two, 5 three, 9 four
    5: [0, 3, 2, 2, 4, 1],
    # 2 bins: one edge at the minimum; every non-zero is bin 1
    2: [0, 1, 1, 1, 1, 1],
}


@pytest.mark.parametrize("n_bins", sorted(SCGPT_BY_HAND))
def test_scgpt_hand_example(n_bins):
    want = SCGPT_BY_HAND[n_bins]
    assert value_bins(CELL, n_bins)[0].tolist() == want
    assert oracle_bins(CELL[0], n_bins).tolist() == want
    z, valid = get_encoding("scgpt").fn(CELL, np.array([19.0]), n_bins=n_bins)
    assert valid.tolist() == [True] and z.dtype == np.float32
    np.testing.assert_allclose(z[0], standardise(want), atol=1e-7)


def test_scgpt_constant_empty_and_single_cells():
    rows = np.array(
        [
            [0, 0, 0, 0],  # empty: constant
            [3, 3, 3, 3],  # all equal and non-zero: every gene in the top bin, constant
            [3, 3, 0, 0],  # two tied non-zeros: both in the top bin, above two zeros
            [0, 0, 7, 0],  # one non-zero: the top bin
            [1, 2, 3, 4],  # no zero
        ],
        dtype=float,
    )
    bins = value_bins(rows, 51)
    assert bins.tolist() == [
        [0, 0, 0, 0],
        [50, 50, 50, 50],
        [50, 50, 0, 0],
        [0, 0, 50, 0],
        [1, 17, 33, 50],  # 1 + floor(L * 49 / 3) for L = 0, 1, 2, 3
    ]
    z, valid = get_encoding("scgpt").fn(rows, rows.sum(axis=1), n_bins=51)
    assert valid.tolist() == [False, False, True, True, True]
    assert (z[:2] == 0).all()
    np.testing.assert_allclose(z[2], standardise([50, 50, 0, 0]), atol=1e-7)
    np.testing.assert_allclose(z[3], standardise([0, 0, 50, 0]), atol=1e-7)


def test_equal_values_share_a_bin_where_numpy_floats_split_them():
    # 166 distinct values, 101 bins: edge 54 sits exactly on the value at sorted position
    # 90 (54 * 165 / 99 = 90), but numpy's float linspace puts its virtual index at
    # 90.00000000000001, lifting the edge just above the value. The exact rule counts it.
    v = np.arange(1, 167, dtype=np.float64)
    numpy_bins = np.digitize(v, np.quantile(v, np.linspace(0, 1, 100)))
    assert numpy_bins[90] == 54
    assert value_bins(v[None], 101)[0, 90] == 55 == 1 + (90 * 99) // 165
    assert oracle_bins(v, 101)[90] == 55


@pytest.mark.parametrize("n_bins", [2, 3, 7, 51, 200])
def test_kernel_matches_the_exact_oracle(n_bins):
    rng = np.random.default_rng(n_bins)
    x = rng.poisson(rng.gamma(0.7, 2.0, (1, 60)), (80, 60)).astype(np.float64)
    x[0] = 0
    x[1] = 4
    x[2, :] = np.arange(60)  # one zero, the rest distinct
    got = value_bins(x, n_bins)
    want = np.array([oracle_bins(r, n_bins) for r in x])
    np.testing.assert_array_equal(got, want)
    assert got.max() <= n_bins - 1 and (got[x != 0] >= 1).all() and (got[x == 0] == 0).all()


def test_bins_depend_only_on_the_order_within_a_cell():
    rng = np.random.default_rng(3)
    x = rng.poisson(1.5, (30, 50)).astype(np.float64)
    scaled = np.log1p(x / np.maximum(x.sum(axis=1, keepdims=True), 1) * 1e4)
    np.testing.assert_array_equal(value_bins(x, 51), value_bins(scaled, 51))


@pytest.mark.parametrize("bad", [0, 1, -3, 2.5, True, "51", None])
def test_n_bins_must_be_an_integer_of_at_least_two(bad):
    with pytest.raises(ValueError, match="n_bins"):
        get_encoding("scgpt").resolve({"n_bins": bad})


def test_negative_values_are_refused():
    with pytest.raises(ValueError, match="non-negative"):
        get_encoding("scgpt").fn(np.array([[1.0, -1.0]]), np.array([1.0]), n_bins=51)


# --- end to end against a brute-force oracle ----------------------------------------------


def assert_topk_within_float32(indices, similarities, excluded, rho, k, atol=1e-5):
    """Each row's neighbours are a top-k of the oracle, similarities within ``atol``.

    Bin vectors share most of their values, so distinct pairs often have equal
    correlations whose float32 values differ in the last bit: their order is float32's.
    """
    valid = ~excluded
    assert (indices[excluded] == -1).all() and np.isnan(similarities[excluded]).all()
    for r in np.flatnonzero(valid):
        vals = np.where(valid, rho[r], -np.inf)
        vals[r] = -np.inf
        want = np.sort(vals)[::-1][:k]
        got_idx, got = indices[r], similarities[r].astype(np.float64)
        assert len(set(got_idx.tolist())) == k and r not in got_idx and valid[got_idx].all()
        np.testing.assert_allclose(got, want, atol=atol, rtol=0, err_msg=f"row {r}")
        np.testing.assert_allclose(vals[got_idx], got, atol=atol, rtol=0, err_msg=f"row {r}")


@pytest.mark.filterwarnings("ignore::rankdist.ExcludedCellsWarning")
@pytest.mark.parametrize("n_bins", [51, 5])
def test_neighbors_match_the_oracle(tmp_path, client, n_bins):
    adata = tricky_adata(n_cells=300, n_genes=40, seed=4)
    store = rankdist.ingest(adata, tmp_path / "s.zarr", cell_type="celltype", progress=False)
    x = np.asarray(adata.X, dtype=np.float64)
    bins = np.array([oracle_bins(r, n_bins) for r in x])
    excluded = (bins == bins[:, :1]).all(axis=1)
    assert excluded[7] and excluded[8] and excluded.sum() < 5
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.corrcoef(bins)  # float64 Pearson over the bin values
    cutoffs = safe_cutoffs(rho, [0.3, 0.6])
    res = rankdist.neighbors(
        store,
        "scgpt",
        k=6,
        cutoffs=cutoffs,
        client=client,
        params={"n_bins": n_bins},
        progress=False,
    )
    assert np.array_equal(res.excluded, excluded)
    assert_topk_within_float32(res.indices, res.similarities, res.excluded, rho, k=6)
    codes = store.labels["cell_type"].codes
    want = oracle_counts(rho, excluded, codes, 4, cutoffs)
    np.testing.assert_array_equal(np.asarray(res.counts["cell_type"]), want)
    assert res.metadata["encoding_params"] == {"n_bins": n_bins}
