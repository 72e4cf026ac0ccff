"""The genept encoding (GenePT-w) on hand-computed cells, file forms and a cosine oracle.

Definition (docs/encodings.md): weights ``w = x / total`` (``total``: the cell's library
size over every source gene); embedding ``e = w @ V / sum(w over embedded genes)``, ``V``
the table's vectors in the store's gene order (zero for genes it lacks); ``z = e / ||e||``.
"""

from __future__ import annotations

import pickle

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import zarr

import rankdist
from rankdist.encode.cache import encode
from rankdist.encode.embeddings import (
    MissingGenesWarning,
    convert_pickle,
    read_embeddings,
)
from rankdist.encode.registry import get_encoding

from _data import assert_matches_oracle, oracle_counts, safe_cutoffs, tricky_adata

# three selected genes g0, g1, g2 and a pad gene outside the selection (in the totals)
HAND_X = np.array([[2, 0, 0], [1, 1, 2], [0, 3, 1], [0, 0, 0]], dtype=np.float64)
HAND_TOTALS = np.array([4.0, 4.0, 8.0, 5.0])  # c3 expresses only the pad gene
HAND_GENES = ["g0", "g1", "g2"]
HAND_VECTORS = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # D = 2 != 3 genes
# c0: w = (1/2, 0, 0)         -> e = (1, 0)
# c1: w = (1/4, 1/4, 1/2)     -> e = (1/4 + 1/2, 1/4 + 1/2) / 1 = (3/4, 3/4)
# c2: w = (0, 3/8, 1/8)       -> e = (1/8, 3/8 + 1/8) / (1/2) = (1/4, 1)
# c3: no selected expression  -> e = 0, excluded
HAND_E = [[1.0, 0.0], [0.75, 0.75], [0.25, 1.0], None]


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def hand_store(tmp_path_factory):
    pad = HAND_TOTALS - HAND_X.sum(axis=1)
    adata = ad.AnnData(
        X=np.column_stack([HAND_X, pad]).astype(np.float32),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(len(HAND_X))]),
        var=pd.DataFrame({"use": [True, True, True, False]}, index=[*HAND_GENES, "pad"]),
    )
    return rankdist.ingest(
        adata, tmp_path_factory.mktemp("genept") / "h.zarr", genes="use", progress=False
    )


def write_npz(path, genes, vectors):
    np.savez(path, genes=np.asarray(genes, dtype=str), vectors=np.asarray(vectors))
    return str(path)


def write_csv(path, genes, vectors, *, header=True):
    frame = pd.DataFrame(np.asarray(vectors), index=pd.Index(genes, name="gene"))
    frame.columns = [f"dim{j}" for j in range(frame.shape[1])]
    frame.to_csv(path, header=header)
    return str(path)


def write_pickle(path, genes, vectors):
    with open(path, "wb") as f:
        pickle.dump({g: list(v) for g, v in zip(genes, vectors, strict=True)}, f)
    return str(path)


# --- by hand ------------------------------------------------------------------------------


def test_genept_hand_example(hand_store, client, tmp_path):
    table = write_npz(tmp_path / "t.npz", HAND_GENES, HAND_VECTORS)
    enc = encode(hand_store, "genept", {"embeddings": table}, client, progress=False)
    z = np.asarray(zarr.open_group(enc.path, mode="r")["Z"][:])
    assert z.shape == (4, 2) and enc.n_columns == 2 and enc.n_genes == 3
    assert enc.excluded.tolist() == [3] and (z[3] == 0).all()
    for cell, e in enumerate(HAND_E[:3]):
        np.testing.assert_allclose(z[cell], unit(e), atol=1e-7, err_msg=cell)
    assert z.dtype == np.float32
    # the encoding function itself, on the block and totals a chunk task passes
    z_fn, valid = get_encoding("genept").fn(
        HAND_X, HAND_TOTALS, embeddings=table, allow_pickle=False, gene_vectors=HAND_VECTORS
    )
    assert valid.tolist() == [True, True, True, False]
    np.testing.assert_array_equal(z_fn, z)


def test_missing_genes_are_reported_once_and_skipped(hand_store, client, tmp_path):
    # the table lacks g2 and holds a gene the store does not have
    table = write_npz(tmp_path / "t.npz", ["g1", "g0", "other"], [[0, 1], [1, 0], [5, 5]])
    # g2's share of sum(x / total): (2/4 + 1/8) / (3/4 + 5/8 + 5/8) = 0.625 / 2 = 31.25 %
    with pytest.warns(MissingGenesWarning, match=r"1 of the store's 3 genes .*31\.25 %") as rec:
        enc = encode(hand_store, "genept", {"embeddings": table}, client, progress=False)
    assert len([w for w in rec if w.category is MissingGenesWarning]) == 1
    assert "['g2']" in str(rec[0].message)
    z = np.asarray(zarr.open_group(enc.path, mode="r")["Z"][:])
    # c1: w = (1/4, 1/4) on g0, g1 -> e = (1/2, 1/2); c2: only g1 -> (0, 1)
    for cell, e in enumerate([[1, 0], [0.5, 0.5], [0, 1]]):
        np.testing.assert_allclose(z[cell], unit(e), atol=1e-7, err_msg=cell)
    sums = [p for p in (hand_store.path / "encodings").iterdir() if p.name[0] == "_"]
    assert [p.name.startswith("_gene_expression-") for p in sums] == [True]


def test_a_table_without_any_store_gene_is_an_error(hand_store, client, tmp_path):
    table = write_npz(tmp_path / "t.npz", ["A", "B"], [[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="none of the store's 3 genes"):
        encode(hand_store, "genept", {"embeddings": table}, client, progress=False)


# --- file forms ---------------------------------------------------------------------------


def test_every_file_form_reads_the_same_table(tmp_path):
    genes, vectors = ["g0", "g1", "ACTB"], np.array([[0.5, -1.0, 2.0], [1e-3, 0, 3], [1, 2, 3]])
    paths = [
        write_npz(tmp_path / "t.npz", genes, vectors),
        write_csv(tmp_path / "header.csv", genes, vectors),
        write_csv(tmp_path / "bare.csv", genes, vectors, header=False),
    ]
    for path in paths:
        got_genes, got = read_embeddings(path)
        assert got_genes.tolist() == genes, path
        np.testing.assert_array_equal(got, vectors, err_msg=path)
    pickled = write_pickle(tmp_path / "genept.pickle", genes, vectors)
    got_genes, got = read_embeddings(pickled, allow_pickle=True)
    assert got_genes.tolist() == genes and np.array_equal(got, vectors)
    converted = convert_pickle(pickled, tmp_path / "converted.npz")
    got_genes, got = read_embeddings(converted)
    assert got_genes.tolist() == genes and np.array_equal(got, vectors)


def test_parquet_reads_with_an_engine_and_says_so_without(tmp_path):
    genes, vectors = ["g0", "g1"], np.array([[1.0, 2.0], [3.0, 4.0]])
    frame = pd.DataFrame({"gene": genes, "a": vectors[:, 0], "b": vectors[:, 1]})
    path = tmp_path / "t.parquet"
    try:
        frame.to_parquet(path)
    except ImportError:  # no pyarrow / fastparquet in this environment
        path.write_bytes(b"PAR1")
        with pytest.raises(ValueError, match=r"t\.parquet.*needs pyarrow or fastparquet.*\.npz"):
            read_embeddings(path)
        return
    got_genes, got = read_embeddings(path)
    assert got_genes.tolist() == genes and np.array_equal(got, vectors)


def test_a_pickle_is_refused_without_the_opt_in(hand_store, client, tmp_path):
    pickled = write_pickle(tmp_path / "genept.pkl", HAND_GENES, HAND_VECTORS)
    with pytest.raises(ValueError, match=r"genept\.pkl.*runs code.*allow_pickle=true"):
        read_embeddings(pickled)
    with pytest.raises(ValueError, match=r"genept\.pkl.*allow_pickle=true"):
        encode(hand_store, "genept", {"embeddings": pickled}, client, progress=False)
    # the CLI passes the opt-in as the string 'true'
    enc = encode(
        hand_store,
        "genept",
        {"embeddings": pickled, "allow_pickle": "true"},
        client,
        progress=False,
    )
    z = np.asarray(zarr.open_group(enc.path, mode="r")["Z"][:])
    np.testing.assert_allclose(z[1], unit(HAND_E[1]), atol=1e-7)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("t.txt", b"g0,1,2\n", r"t\.txt.*unknown form '\.txt'"),
        ("dup.csv", b"g0,1,2\ng0,3,4\n", r"dup\.csv.*\['g0'\] appear more than once"),
        # (a first row with a non-number is a header; a later one is an error)
        ("nan.csv", b"g0,1,2\ng1,3,x\n", r"nan\.csv.*1 vector\(s\) hold NaN.*\['g1'\]"),
        ("one.csv", b"g0\ng1\n", r"one\.csv.*vector columns"),
    ],
)
def test_bad_tables_name_the_file_and_the_fix(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=match):
        read_embeddings(tmp_path / name)


def test_an_npz_without_the_arrays_names_them(tmp_path):
    np.savez(tmp_path / "t.npz", symbols=np.array(["g0"]), vectors=np.ones((1, 2)))
    with pytest.raises(ValueError, match=r"lacks array\(s\) \['genes'\]"):
        read_embeddings(tmp_path / "t.npz")
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        read_embeddings(tmp_path / "nowhere.npz")


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({}, r"needs a table of gene embeddings: --param embeddings=FILE"),
        ({"embeddings": "t.npz", "allow_pickle": "yes"}, "allow_pickle must be true or false"),
        ({"embeddings": "t.npz", "allow_pickle": 1}, "allow_pickle must be true or false"),
        ({"embeddings": 3}, r"needs a table of gene embeddings"),
    ],
)
def test_parameters_are_checked(params, match):
    with pytest.raises(ValueError, match=match):
        get_encoding("genept").resolve(params)


def test_parameters_resolve_to_one_form(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"embeddings file '.*t\.npz' not found"):
        get_encoding("genept").resolve({"embeddings": "t.npz"})
    write_npz(tmp_path / "t.npz", HAND_GENES, HAND_VECTORS)
    genept = get_encoding("genept")
    a = genept.resolve({"embeddings": "t.npz", "allow_pickle": "True"})
    b = genept.resolve({"embeddings": str(tmp_path / "t.npz"), "allow_pickle": True})
    assert a == b == {"embeddings": str((tmp_path / "t.npz").resolve()), "allow_pickle": True}


# --- the cache key covers the table's content ---------------------------------------------


def test_cache_key_follows_the_table_content(hand_store, client, tmp_path):
    table = write_npz(tmp_path / "t.npz", HAND_GENES, HAND_VECTORS)
    first = encode(hand_store, "genept", {"embeddings": table}, client, progress=False)
    again = encode(hand_store, "genept", {"embeddings": table}, client, progress=False)
    assert again.path == first.path
    write_npz(tmp_path / "t.npz", HAND_GENES, HAND_VECTORS * [1.0, 2.0])  # same path, new vectors
    changed = encode(hand_store, "genept", {"embeddings": table}, client, progress=False)
    assert changed.path != first.path
    attrs = zarr.open_group(changed.path, mode="r").attrs["encoding"]
    assert set(attrs["prepared"]) == {"gene_vectors"}
    z = np.asarray(zarr.open_group(changed.path, mode="r")["Z"][:])
    np.testing.assert_allclose(z[1], unit([0.75, 1.5]), atol=1e-7)


# --- end to end against a brute-force cosine oracle ----------------------------------------


@pytest.mark.filterwarnings("ignore::rankdist.ExcludedCellsWarning")
@pytest.mark.parametrize(("dim", "n_cells", "block_size"), [(7, 300, None), (96, 1100, 512)])
def test_neighbors_match_the_cosine_oracle(tmp_path, client, dim, n_cells, block_size):
    # the second case: Z wider than the genes, over a grid of 3 x 3 row blocks
    adata = tricky_adata(n_cells=n_cells, n_genes=40, seed=6)
    store = rankdist.ingest(adata, tmp_path / "e.zarr", cell_type="celltype", progress=False)
    rng = np.random.default_rng(dim)
    # fewer and more dimensions than the 40 genes; genes g35..g39 have no embedding, and
    # the table holds genes the store lacks, in another order
    genes = [f"g{j}" for j in rng.permutation(35)] + ["X1", "X2"]
    vectors = rng.normal(size=(len(genes), dim))
    table = write_csv(tmp_path / "genes.csv", genes, vectors)
    x = np.asarray(adata.X, dtype=np.float64)
    v = np.zeros((40, dim))
    v[[int(g[1:]) for g in genes[:35]]] = vectors[:35]
    w = x / x.sum(axis=1, keepdims=True).clip(min=1)
    e = w @ v
    norms = np.linalg.norm(e, axis=1)
    excluded = norms == 0
    assert excluded[7] and excluded.sum() < 5
    with np.errstate(invalid="ignore", divide="ignore"):
        unit_e = e / norms[:, None]
        cosine = unit_e @ unit_e.T  # float64 cosine of the embeddings
    cosine[excluded] = np.nan
    cosine[:, excluded] = np.nan
    cutoffs = safe_cutoffs(cosine, [0.3, 0.8])
    with pytest.warns(MissingGenesWarning, match="5 of the store's 40 genes"):
        res = rankdist.neighbors(
            store,
            "genept",
            k=6,
            cutoffs=cutoffs,
            client=client,
            params={"embeddings": table},
            block_size=block_size,
            progress=False,
        )
    assert np.array_equal(res.excluded, excluded)
    assert_matches_oracle(res.indices, res.similarities, res.excluded, cosine, k=6)
    codes = store.labels["cell_type"].codes
    want = oracle_counts(cosine, excluded, codes, 4, cutoffs)
    np.testing.assert_array_equal(np.asarray(res.counts["cell_type"]), want)
    assert res.metadata["encoding_params"]["embeddings"] == str((tmp_path / "genes.csv").resolve())
    assert res.metadata["n_blocks"] == (3 if block_size else 1)


# --- the command line ---------------------------------------------------------------------


def test_cli_reads_the_table_and_the_opt_in(hand_store, client, tmp_path, capsys):
    from rankdist.cli import main

    pickled = write_pickle(tmp_path / "genept.pkl", HAND_GENES[:2], HAND_VECTORS[:2])
    argv = ["neighbors", str(hand_store.path), "--encoding", "genept", "--k", "1", "--quiet"]
    # no table: refused before any cluster starts
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rankdist neighbors: error: encoding 'genept' needs a table")
    argv += ["--cluster", client.scheduler.address, "--param", f"embeddings={pickled}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("rankdist neighbors: error: embeddings file ")
    assert "--param allow_pickle=true" in err[-1]
    assert main([*argv, "--param", "allow_pickle=true", "--name", "gpt"]) == 0
    err = capsys.readouterr().err
    assert "rankdist neighbors: warning: genept: 1 of the store's 3 genes" in err
    res = rankdist.load(hand_store, "gpt")
    assert res.metadata["encoding_params"]["allow_pickle"] is True
    # c1 (w = 1/4, 1/4 on g0, g1) lies between c0 (g0) and c2 (g1): each one's neighbour
    assert res.indices[:3, 0].tolist() == [1, 0, 1]


def test_blocks_are_sized_by_the_embedding_width(hand_store, client, tmp_path, monkeypatch):
    """A Z row of a D-wide embedding is 4 D bytes, not 4 x genes: the block size must be
    chosen from D, or a wide table would overrun the worker's memory."""
    import rankdist.api as api

    widths = []
    real = api.choose_block_rows

    def spy(n_cells, n_genes, **kwargs):
        widths.append(n_genes)
        return real(n_cells, n_genes, **kwargs)

    monkeypatch.setattr(api, "choose_block_rows", spy)
    vectors = np.arange(3 * 64, dtype=np.float64).reshape(3, 64) % 7 + 1  # D = 64 > 3 genes
    table = write_npz(tmp_path / "wide.npz", HAND_GENES, vectors)
    with pytest.warns(rankdist.ExcludedCellsWarning):
        rankdist.neighbors(
            hand_store, "genept", k=1, client=client, params={"embeddings": table},
            name="wide", progress=False,
        )  # fmt: skip
    assert widths == [64]
