"""All-genes mode: the sparse encoding ``z = s + c`` and the sparse tile product."""

from __future__ import annotations

import numpy as np
import pytest

import rankdist
from rankdist.encode.cache import encode
from rankdist.encode.kernels import standardised_ranks
from rankdist.encode.sparse import read_sparse_rows, sparse_standardised_ranks
from rankdist.tiles.sparse import (
    DENSE_GENE_COST,
    Slab,
    SparseRows,
    choose_form,
    predicted_cost_ratio,
    sparse_subtile,
)

from _data import assert_matches_oracle, labelled_adata, oracle_spearman, zero_heavy_counts

K = 10


def _sparse(x: np.ndarray) -> tuple[SparseRows, np.ndarray]:
    indptr, indices, data, c, valid = sparse_standardised_ranks(x)
    return SparseRows(indptr, indices, data, c, x.shape[1]), valid


def test_sparse_encoding_equals_dense_ranks():
    x = zero_heavy_counts(300, 200, seed=1)
    x[11, :5] = -1.0  # negative values: the whole row is ranked, zeros still tie
    rows, valid = _sparse(x)
    z, want_valid = standardised_ranks(x)
    assert np.array_equal(valid, want_valid)
    assert not valid[7] and not valid[8] and valid[9]
    assert rows.c[9] == 0.0  # no zero gene
    dense = rows.to_dense()
    np.testing.assert_allclose(dense, z, atol=1e-7)
    # the stored genes are exactly the non-zero ones of each valid row
    for r in np.flatnonzero(valid):
        lo, hi = rows.indptr[r], rows.indptr[r + 1]
        assert np.array_equal(rows.indices[lo:hi], np.flatnonzero(x[r]))
    assert rows.indptr[8] == rows.indptr[9]  # a constant row stores nothing


@pytest.mark.parametrize("fraction", [0.0, None, np.inf])
def test_sparse_subtile_matches_float64_products(fraction):
    x = zero_heavy_counts(1100, 700, seed=2)
    x[:, :3] = np.random.default_rng(5).integers(1, 30, (1100, 3))  # dense genes
    x[512:1024] = 0  # an all-zero 512-row chunk
    rows, valid = _sparse(x)
    assert not valid[512:1024].any()
    z64 = rows.to_dense()
    kw = {} if fraction is None else {"fraction": fraction}
    slabs = [Slab.of(rows.rows(p, p + 512)) for p in range(0, 1100, 512)]
    for a in range(3):
        for b in range(3):
            out = np.full((len(slabs[a].rows), len(slabs[b].rows)), np.nan, np.float32)
            sparse_subtile(slabs[a], slabs[b], out, **kw)
            want = z64[a * 512 : a * 512 + 512] @ z64[b * 512 : b * 512 + 512].T
            np.testing.assert_allclose(out, want, atol=1e-5, rtol=0)
    # and the stored z itself is the oracle's: rho = z_a . z_b
    rho = oracle_spearman(x[:300])
    ok = valid[:300]
    got = z64[:300][ok] @ z64[:300][ok].T
    np.testing.assert_allclose(got, rho[np.ix_(ok, ok)], atol=1e-5)


def test_sparse_subtile_bits_do_not_depend_on_neighbouring_rows():
    x = zero_heavy_counts(1024, 300, seed=3)
    rows, _ = _sparse(x)
    a, b = Slab.of(rows.rows(0, 512)), Slab.of(rows.rows(512, 1024))
    first = sparse_subtile(a, b, np.empty((512, 512), np.float32))
    # the same rows read back as part of a larger block give the same slabs
    again = SparseRows.concatenate([rows.rows(0, 700), rows.rows(700, 1024)])
    a2, b2 = Slab.of(again.rows(0, 512)), Slab.of(again.rows(512, 1024))
    second = sparse_subtile(a2, b2, np.empty((512, 512), np.float32))
    assert np.array_equal(first.view(np.int32), second.view(np.int32))


def test_choose_form_rules():
    assert choose_form(np.full(100, 0.01)) == "dense"  # too few genes
    assert choose_form(np.full(20000, 0.02)) == "sparse"
    assert choose_form(np.full(20000, 0.9)) == "dense"
    assert predicted_cost_ratio(np.full(10, 1.0)) == DENSE_GENE_COST  # every gene dense
    assert 0.3 < predicted_cost_ratio(np.full(10, 0.05)) < 0.5  # 110 * 0.05**2 + 2.3 * 0.05


@pytest.fixture(scope="module")
def all_genes(tmp_path_factory):
    x = zero_heavy_counts(1100, 500, seed=4)
    store = rankdist.ingest(
        labelled_adata(x),
        tmp_path_factory.mktemp("sparse") / "s.zarr",
        cell_type="celltype",
        progress=False,
    )
    return x, store


def test_sparse_store_layout(all_genes, client):
    x, store = all_genes
    enc = encode(store, "spearman", None, client, progress=False, form="sparse")
    assert enc.form == "sparse" and enc.path.name.endswith("-sparse")
    assert sorted(p.name for p in (enc.path / "sparse").iterdir()) == ["0.npz", "1.npz", "2.npz"]
    rows = read_sparse_rows(str(enc.path), 512, 1100, store.n_genes)
    z, _ = standardised_ranks(x[512:])
    np.testing.assert_allclose(rows.to_dense(), z, atol=1e-7)
    with pytest.raises(ValueError, match="form 'sparse' is not available for encoding 'pearson'"):
        encode(store, "pearson", None, client, progress=False, form="sparse")


@pytest.mark.filterwarnings("ignore::rankdist.ExcludedCellsWarning")
def test_sparse_neighbours_match_oracle(all_genes, client):
    x, store = all_genes
    res = rankdist.neighbors(
        store,
        k=K,
        cutoffs=(0.3,),
        client=client,
        block_size=512,
        form="sparse",
        name="sparse-oracle",
        progress=False,
    )
    assert res.metadata["form"] == "sparse" and res.metadata["form_requested"] == "sparse"
    rho = oracle_spearman(x)
    assert np.array_equal(np.flatnonzero(res.excluded), [7, 8])
    ambiguous = assert_matches_oracle(res.indices, res.similarities, res.excluded, rho, K)
    assert ambiguous <= 5
    dense = rankdist.neighbors(
        store,
        k=K,
        cutoffs=(0.3,),
        client=client,
        block_size=512,
        form="dense",
        name="dense-ref",
        progress=False,
    )
    assert dense.metadata["form"] == "dense"
    ok = ~res.excluded
    np.testing.assert_allclose(res.similarities[ok], dense.similarities[ok], atol=1e-5)


@pytest.mark.filterwarnings("ignore::rankdist.ExcludedCellsWarning")
def test_sparse_identical_across_workers_and_block_sizes(all_genes, client, client_one):
    _, store = all_genes
    runs = {
        label: rankdist.neighbors(
            store,
            k=K,
            cutoffs=(0.2, 0.4),
            client=cl,
            block_size=bs,
            form="sparse",
            name=f"sparse-{label}",
            progress=False,
        )
        for label, cl, bs in [
            ("1w-512", client_one, 512),
            ("2w-512", client, 512),
            ("2w-1024", client, 1024),
        ]
    }
    ref = runs["1w-512"]
    assert ref.metadata["n_blocks"] == 3
    for label, res in runs.items():
        assert res.metadata["form"] == "sparse"
        assert np.array_equal(res.indices, ref.indices), label
        assert np.array_equal(res.similarities.view(np.int32), ref.similarities.view(np.int32))
        assert res.counts.identical(ref.counts), label


@pytest.mark.filterwarnings("ignore::rankdist.ExcludedCellsWarning")
def test_auto_stays_dense_for_few_genes(all_genes, client):
    _, store = all_genes
    res = rankdist.neighbors(store, k=K, client=client, name="auto", progress=False)
    assert res.metadata["form"] == "dense" and res.metadata["form_requested"] == "auto"
    assert res.metadata["sparse_cost_estimate"] is None  # too few genes: nothing sampled
    with pytest.raises(ValueError, match="form must be"):
        rankdist.neighbors(store, k=K, client=client, form="csr", progress=False)
