"""The truncated rank encodings (geneformer, topn) on hand-computed examples and oracles.

Definitions (docs/encodings.md): a cell's key is ``x_g / d_g`` on its non-zero genes
(geneformer: ``d_g`` is gene g's non-zero median of counts per 10k; topn: ``d_g = 1``);
the kept genes are the ``top`` highest keys plus every gene tied with the ``top``-th; the
value vector is the key on kept genes and 0 elsewhere, and its average-tie ranks are
standardised.
"""

from __future__ import annotations

import hashlib
import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.stats
import zarr

import rankdist
import rankdist.encode.medians as medians_module
from rankdist.encode.cache import encode, encoding_key
from rankdist.encode.kernels import standardised_ranks, standardised_top_ranks
from rankdist.encode.medians import gene_groups, gene_nonzero_medians
from rankdist.encode.registry import get_encoding

from _data import oracle_counts, safe_cutoffs, tricky_adata


def standardise(ranks: np.ndarray) -> np.ndarray:
    c = np.asarray(ranks, dtype=np.float64)
    c = c - c.mean(axis=-1, keepdims=True)
    return c / np.linalg.norm(c, axis=-1, keepdims=True)


def oracle_truncated_ranks(keys: np.ndarray, top: int) -> np.ndarray:
    """The definition, written independently of the kernel: rows of average-tie ranks."""
    out = np.empty_like(keys, dtype=np.float64)
    for r, key in enumerate(keys):
        nonzero = np.sort(key[key > 0])[::-1]
        cut = nonzero[top - 1] if len(nonzero) > top else 0.0
        kept = (key > 0) & (key >= cut)
        out[r] = scipy.stats.rankdata(np.where(kept, key, 0.0), method="average")
    return out


def oracle_medians(x: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """np.median of x / total * 1e4 over each gene's non-zero cells (NaN if none)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # 0 / 0 in empty cells, never used
        norm = x / totals[:, None] * 1e4
    return np.array(
        [
            np.median(norm[x[:, g] != 0, g]) if (x[:, g] != 0).any() else np.nan
            for g in range(x.shape[1])
        ]
    )


def oracle_rho(ranks: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.corrcoef(ranks)


def assert_topk_within_float32(indices, similarities, excluded, rho, k, atol=1e-5):
    """Each row's k neighbours are a top-k of the oracle, similarities within ``atol``.

    Truncated rank vectors share most of their values, so distinct pairs often have
    mathematically equal correlations whose float32 values differ in the last bit: the
    order among such pairs is the float32 one, not the index order that
    ``_data.assert_matches_oracle`` demands of exact (duplicated-cell) ties.
    """
    valid = ~excluded
    assert (indices[excluded] == -1).all() and np.isnan(similarities[excluded]).all()
    for r in np.flatnonzero(valid):
        vals = np.where(valid, rho[r], -np.inf)
        vals[r] = -np.inf
        want = np.sort(vals)[::-1][:k]
        got_idx, got = indices[r], similarities[r].astype(np.float64)
        assert len(set(got_idx.tolist())) == k and r not in got_idx and valid[got_idx].all()
        assert (np.diff(got) <= 0).all(), f"row {r}: not in descending order"
        np.testing.assert_allclose(got, want, atol=atol, rtol=0, err_msg=f"row {r}")
        np.testing.assert_allclose(vals[got_idx], got, atol=atol, rtol=0, err_msg=f"row {r}")
        missed = np.setdiff1d(np.flatnonzero(vals > got[-1] + atol), got_idx)
        assert len(missed) == 0, f"row {r}: neighbours {missed} missing"


# --- topn: hand-computed ------------------------------------------------------------------

# one cell, 6 genes: non-zero 5, 2, 2, 9, 1 (gene 0 is zero)
CELL = np.array([[0.0, 5.0, 2.0, 2.0, 9.0, 1.0]])
TOPN_BY_HAND = {
    # the 2 tied at the 3rd place are both kept; gene 5 (1) joins the zero at the bottom
    3: [1.5, 5, 3.5, 3.5, 6, 1.5],
    4: [1.5, 5, 3.5, 3.5, 6, 1.5],  # exactly 4 kept: the same vector
    2: [2.5, 5, 2.5, 2.5, 6, 2.5],  # 9 and 5 kept, 4 genes tied at ranks 1..4
    1: [3, 3, 3, 3, 6, 3],  # only 9 kept
    5: [1, 5, 3.5, 3.5, 6, 2],  # every non-zero kept: plain Spearman ranks
    100: [1, 5, 3.5, 3.5, 6, 2],  # top beyond the non-zeros: the same
}


@pytest.mark.parametrize("n", sorted(TOPN_BY_HAND))
def test_topn_hand_example(n):
    z, valid = get_encoding("topn").fn(CELL, np.array([19.0]), n=n)
    assert valid.tolist() == [True] and z.dtype == np.float32
    np.testing.assert_allclose(z[0], standardise(TOPN_BY_HAND[n]), atol=1e-7)
    np.testing.assert_allclose(oracle_truncated_ranks(CELL, n)[0], TOPN_BY_HAND[n])


def test_topn_constant_and_empty_cells():
    rows = np.array(
        [
            [0, 0, 0, 0],  # empty: constant
            [3, 3, 3, 3],  # all equal: the tie at the cut keeps all, still constant
            [3, 3, 0, 0],  # two tied non-zeros above two zeros: valid
            [0, 0, 7, 0],  # one non-zero
        ],
        dtype=float,
    )
    for n in (1, 2, 4, 10):
        z, valid = get_encoding("topn").fn(rows, rows.sum(axis=1), n=n)
        assert valid.tolist() == [False, False, True, True], n
        assert (z[:2] == 0).all()
        np.testing.assert_allclose(z[2], standardise([3.5, 3.5, 1.5, 1.5]), atol=1e-7)
        np.testing.assert_allclose(z[3], standardise([2, 2, 4, 2]), atol=1e-7)


def test_topn_beyond_the_genes_is_exactly_spearman():
    rng = np.random.default_rng(5)
    x = rng.poisson(0.8, (40, 25)).astype(float)
    x[0] = 0
    x[1] = 2
    z_top, valid_top = get_encoding("topn").fn(x, x.sum(axis=1), n=25)
    z_rank, valid_rank = standardised_ranks(x)
    assert np.array_equal(valid_top, valid_rank) and np.array_equal(z_top, z_rank)


# --- the kernel against the oracle, ties and constant rows included -----------------------


def kernel_rows(seed=0):
    rng = np.random.default_rng(seed)
    rows = [
        np.zeros(30),  # all zero
        np.full(30, 4.0),  # all equal
        np.r_[np.zeros(29), 5.0],  # one non-zero
        rng.poisson(0.4, 30).astype(float),  # zero-heavy, ties
        rng.poisson(5.0, 30).astype(float),  # many tied non-zeros
        rng.random(30) * (rng.random(30) < 0.3),  # distinct non-zeros
        np.arange(30, dtype=float),  # no ties, one zero
    ]
    return np.vstack(rows)


@pytest.mark.parametrize("top", [1, 2, 3, 7, 29, 30, 64])
def test_kernel_matches_the_definition(top):
    x = kernel_rows()
    rng = np.random.default_rng(1)
    for divisors in (np.ones(30), rng.choice([0.5, 1.0, 2.0, 3.0], 30)):
        keys = np.where(x != 0, x / divisors, 0.0)
        want = oracle_truncated_ranks(keys, top)
        constant = (want == want[:, :1]).all(axis=1)
        z, valid = standardised_top_ranks(x, divisors, top)
        assert np.array_equal(valid, ~constant)
        assert (z[~valid] == 0).all() and not valid[0]
        np.testing.assert_allclose(z[valid], standardise(want[valid]), atol=1e-7)
        zv = z[valid].astype(np.float64)
        np.testing.assert_allclose(np.linalg.norm(zv, axis=1), 1, atol=1e-6)
        np.testing.assert_allclose(zv.mean(axis=1), 0, atol=1e-7)


def test_negative_values_are_refused():
    with pytest.raises(ValueError, match="non-negative values"):
        get_encoding("topn").fn(np.array([[1.0, -1.0, 0.0]]), np.array([1.0]), n=2)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10", None])
@pytest.mark.parametrize(("name", "param"), [("geneformer", "top"), ("topn", "n")])
def test_parameters_must_be_positive_integers(name, param, bad):
    with pytest.raises(ValueError, match=f"{param} must be a positive integer"):
        get_encoding(name).resolve({param: bad})


def test_parameters_resolve_to_one_form():
    enc = get_encoding("geneformer")
    assert enc.resolve(None) == {"top": 2048}
    assert enc.resolve({"top": np.int64(4096)}) == {"top": 4096}
    assert type(enc.resolve({"top": np.int64(4096)})["top"]) is int
    assert get_encoding("topn").resolve(None) == {"n": 100}


# --- geneformer: hand-computed medians and ranks ------------------------------------------

# Selected genes g0..g2 of 9 cells; a fourth gene 'pad' (not selected) makes the library
# sizes 16 (32 for c3), so counts per 10k are x * 625 (x * 312.5) exactly.
HAND_X = np.array(
    [
        [1, 0, 4],  # c0
        [3, 2, 0],  # c1
        [0, 0, 0],  # c2: empty, excluded
        [2, 6, 1],  # c3 (total 32)
        [5, 0, 2],  # c4
        [6, 0, 5],  # c5
        [6, 5, 0],  # c6
        [0, 1, 0],  # c7
        [4, 0, 3],  # c8: 4 / 2500 == 3 / 1875, a tie made by the medians
    ],
    dtype=np.float32,
)
HAND_TOTALS = np.array([16, 16, 16, 32, 16, 16, 16, 16, 16], dtype=np.float64)
# g0 non-zero CP10k: 625 625 1875 2500 3125 3750 3750 -> 2500
# g1: 625 1250 1875 3125 -> (1250 + 1875) / 2 = 1562.5
# g2: 312.5 1250 1875 2500 3125 -> 1875
HAND_MEDIANS = [2500.0, 1562.5, 1875.0]
GENEFORMER_BY_HAND = {
    # keys x / median; c1, c5, c6 rank differently from their raw counts
    3: [
        [2, 1, 3],
        [2, 3, 1],
        None,
        [2, 3, 1],
        [3, 1, 2],
        [2, 1, 3],
        [2, 3, 1],
        [1.5, 3, 1.5],
        [2.5, 1, 2.5],
    ],
    # the top gene only; c8's two tied genes are both kept
    1: [
        [1.5, 1.5, 3],
        [1.5, 3, 1.5],
        None,
        [1.5, 3, 1.5],
        [3, 1.5, 1.5],
        [1.5, 1.5, 3],
        [1.5, 3, 1.5],
        [1.5, 3, 1.5],
        [2.5, 1, 2.5],
    ],
}


@pytest.fixture(scope="module")
def hand_store(tmp_path_factory):
    pad = HAND_TOTALS - HAND_X.sum(axis=1)
    adata = ad.AnnData(
        X=np.column_stack([HAND_X, pad]).astype(np.float32),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(len(HAND_X))]),
        var=pd.DataFrame({"use": [True, True, True, False]}, index=["g0", "g1", "g2", "pad"]),
    )
    return rankdist.ingest(
        adata, tmp_path_factory.mktemp("hand") / "h.zarr", genes="use", progress=False
    )


def test_geneformer_medians_by_hand(hand_store, client):
    medians = gene_nonzero_medians(hand_store, client, progress=False)
    assert medians.tolist() == HAND_MEDIANS
    np.testing.assert_array_equal(medians, oracle_medians(HAND_X, HAND_TOTALS))
    cached = [p.name for p in (hand_store.path / "encodings").iterdir() if p.name[0] == "_"]
    assert len(cached) == 1 and cached[0].startswith("_gene_medians-")


@pytest.mark.parametrize("top", [3, 2, 1])
def test_geneformer_hand_example(hand_store, client, top):
    enc = encode(hand_store, "geneformer", {"top": top}, client, progress=False)
    group = zarr.open_group(enc.path, mode="r")
    z = np.asarray(group["Z"][:])
    assert enc.excluded.tolist() == [2] and (z[2] == 0).all()
    # top 2: only c3 has 3 non-zeros, and its lowest key is alone at the bottom either way
    want = GENEFORMER_BY_HAND[1 if top == 1 else 3]
    for cell, ranks in enumerate(want):
        if ranks is not None:
            np.testing.assert_allclose(z[cell], standardise(ranks), atol=1e-7, err_msg=cell)
    assert group.attrs["encoding"]["prepared"]["gene_medians"]


def test_geneformer_medians_across_many_map_and_reduce_tasks(tmp_path, client, monkeypatch):
    # 512-cell X chunks, one chunk per map task, reduce groups of at most 60 values
    monkeypatch.setattr("rankdist.layout.CHUNK_VALUES", 512 * 30)
    monkeypatch.setattr(medians_module, "MEDIAN_MAP_VALUES", 1)
    monkeypatch.setattr(medians_module, "MEDIAN_REDUCE_VALUES", 60)
    adata = tricky_adata(n_cells=1100, n_genes=30, seed=3)
    adata.X[:, 5] = 0  # a gene never expressed: no median
    store = rankdist.ingest(adata, tmp_path / "m.zarr", progress=False)
    assert store.chunk_cells == 512
    medians = gene_nonzero_medians(store, client, progress=False)
    x = np.asarray(adata.X, dtype=np.float64)
    want = oracle_medians(x, x.sum(axis=1))
    np.testing.assert_array_equal(medians, want)  # exact, NaN where no median
    assert np.isnan(medians[5]) and np.isfinite(np.delete(medians, 5)).all()
    assert not list((store.path / "encodings").glob("*/spool"))


def test_gene_groups_respect_the_budget():
    assert gene_groups(np.array([3, 3, 3, 10, 1, 0, 2]), 6) == [(0, 2), (2, 3), (3, 4), (4, 7)]
    assert gene_groups(np.array([0, 0]), 5) == [(0, 2)]


# --- the cache key ------------------------------------------------------------------------


def test_cache_key_follows_parameters_and_prepared_arrays(hand_store, client):
    paths = {
        (name, value): encode(hand_store, name, {param: value}, client, progress=False).path
        for name, param in (("geneformer", "top"), ("topn", "n"))
        for value in (1, 2)
    }
    assert len(set(paths.values())) == 4
    again = encode(hand_store, "geneformer", {"top": np.int64(2)}, client, progress=False)
    assert again.path == paths[("geneformer", 2)]
    medians = [p for p in (hand_store.path / "encodings").iterdir() if p.name[0] == "_"]
    assert len(medians) == 1  # computed once, shared by every top
    a = encoding_key(hand_store, "geneformer", {"top": 2}, 1, {"gene_medians": np.ones(3)})
    b = encoding_key(hand_store, "geneformer", {"top": 2}, 1, {"gene_medians": np.full(3, 2.0)})
    assert a != b
    # encodings without a prepare step keep their key
    blob = json.dumps(["pearson", {"target_sum": 1e4}, 1, hand_store.content_id], sort_keys=True)
    old = hashlib.sha256(blob.encode()).hexdigest()[:12]
    assert encoding_key(hand_store, "pearson", {"target_sum": 1e4}, 1, {}) == old


# --- end to end against a brute-force oracle ----------------------------------------------


@pytest.mark.filterwarnings("ignore::rankdist.ExcludedCellsWarning")
@pytest.mark.parametrize(("encoding", "params"), [("geneformer", {"top": 8}), ("topn", {"n": 6})])
def test_neighbors_match_the_oracle(tmp_path, client, encoding, params):
    adata = tricky_adata(n_cells=300, n_genes=40, seed=2)
    store = rankdist.ingest(adata, tmp_path / "e.zarr", cell_type="celltype", progress=False)
    x = np.asarray(adata.X, dtype=np.float64)
    if encoding == "geneformer":
        divisors = oracle_medians(x, x.sum(axis=1))
        top = params["top"]
    else:
        divisors, top = np.ones(x.shape[1]), params["n"]
    keys = np.divide(x, divisors, out=np.zeros_like(x), where=x != 0)
    ranks = oracle_truncated_ranks(keys, top)
    excluded = (ranks == ranks[:, :1]).all(axis=1)
    assert excluded[7] and excluded.sum() < 5  # the empty cell, and few others
    rho = oracle_rho(ranks)
    cutoffs = safe_cutoffs(rho, [0.3, 0.6])
    res = rankdist.neighbors(
        store, encoding, k=6, cutoffs=cutoffs, client=client, params=params, progress=False
    )
    assert np.array_equal(res.excluded, excluded)
    assert_topk_within_float32(res.indices, res.similarities, res.excluded, rho, k=6)
    codes = store.labels["cell_type"].codes
    want = oracle_counts(rho, excluded, codes, 4, cutoffs)
    np.testing.assert_array_equal(np.asarray(res.counts["cell_type"]), want)
    assert res.metadata["encoding_params"] == params
