"""select_genes: all, scanpy-identical Seurat HVGs from one streaming pass, lists, var columns."""

from __future__ import annotations

import json
import warnings

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

from rankdist.io import genes as genes_module
from rankdist.io.genes import select_genes, streaming_normalised_mean_var
from rankdist.io.readers import open_source

from _data import counts_adata


@pytest.fixture
def source():
    return open_source(counts_adata(60, 40, seed=3))


def scanpy_hvg(adata: ad.AnnData, n_top: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices scanpy selects, and its normalised dispersions (float32)."""
    adata = adata.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zero-count cells, all-zero genes
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
        sc.pp.highly_variable_genes(adata, flavor="seurat", n_top_genes=n_top)
    return np.flatnonzero(adata.var["highly_variable"]), adata.var["dispersions_norm"].to_numpy()


def test_all_genes(source):
    for spec in (None, "all"):
        genes, description = select_genes(source, spec)
        np.testing.assert_array_equal(genes, np.arange(40))
        assert genes.dtype == np.int64
        assert description == {"mode": "all", "n_genes": 40}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hvg_matches_scanpy_seurat(seed, dtype):
    adata = counts_adata(300, 200, seed=seed, dtype=dtype)
    source = open_source(adata)
    for n_top in (1, 10, 50, 150, 200):
        genes, description = select_genes(source, f"hvg:{n_top}")
        expected, _ = scanpy_hvg(adata, n_top)
        np.testing.assert_array_equal(genes, expected)
        assert genes.dtype == np.int64
        assert description["mode"] == "hvg"
        assert description["n_top"] == n_top
        json.dumps(description)


def test_hvg_single_gene_bins_tie_at_one_like_scanpy():
    # seed 1 has several mean bins holding one gene: scanpy gives each a normalised
    # dispersion of exactly 1, so a cutoff at 1 keeps all of them (more than n_top)
    adata = counts_adata(300, 200, seed=1)
    _, norm = scanpy_hvg(adata, 10)
    n_at_one = int((norm == 1).sum())
    assert n_at_one >= 2
    n_top = int((norm > 1).sum()) + 1
    expected, _ = scanpy_hvg(adata, n_top)
    assert len(expected) == n_top + n_at_one - 1
    genes, _ = select_genes(open_source(adata), f"hvg:{n_top}")
    np.testing.assert_array_equal(genes, expected)


def test_hvg_keeps_exact_ties_like_scanpy():
    half = counts_adata(300, 100, seed=4)
    twins = ad.AnnData(np.hstack([half.X, half.X]), obs=half.obs)  # every gene has a twin
    for n_top in (11, 51):
        genes, _ = select_genes(open_source(twins), f"hvg:{n_top}")
        expected, _ = scanpy_hvg(twins, n_top)
        np.testing.assert_array_equal(genes, expected)
        assert len(genes) == n_top + 1


def test_hvg_streaming_chunks_merge_exactly(monkeypatch, tmp_path):
    adata = counts_adata(300, 200, seed=5)
    whole, _ = select_genes(open_source(adata), "hvg:40")
    x = adata.X.astype(np.float64)
    totals = x.sum(axis=1, keepdims=True)
    normalised = np.divide(x * 1e4, totals, out=np.zeros_like(x), where=totals > 0)

    monkeypatch.setattr(genes_module, "_HVG_CHUNK_VALUES", 7 * 200)  # 7-cell chunks
    adata.X = sp.csr_matrix(adata.X)
    adata.write_h5ad(tmp_path / "x.h5ad")
    with open_source(tmp_path / "x.h5ad") as on_disk:
        mean, var = streaming_normalised_mean_var(on_disk)
        chunked, _ = select_genes(on_disk, "hvg:40")
    np.testing.assert_allclose(mean, normalised.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(var, normalised.var(axis=0, ddof=1), rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(chunked, whole)


@pytest.mark.parametrize("spec", ["hvg:0", "hvg:41", "hvg:-3", "hvg:abc", "hvg:", "hvg:2.5"])
def test_hvg_bad_n(source, spec):
    with pytest.raises(ValueError, match=r"N must be an integer in 1\.\.40"):
        select_genes(source, spec)


def test_hvg_of_all_zero_counts_selects_nothing():
    empty = ad.AnnData(np.zeros((20, 10), dtype=np.float32))
    with pytest.raises(ValueError, match="every gene .* is constant; no gene selected"):
        select_genes(open_source(empty), "hvg:5")


def test_gene_list_file(source, tmp_path):
    names = source.var.index
    path = tmp_path / "genes.txt"
    path.write_text(f"# markers\n{names[7]}\n\n  {names[2]}  \n{names[7]}\n# end\n{names[30]}\n")
    genes, description = select_genes(source, str(path))
    np.testing.assert_array_equal(genes, [2, 7, 30])
    assert description == {"mode": "list", "path": str(path), "n_genes": 3}
    genes_from_path, _ = select_genes(source, path)
    np.testing.assert_array_equal(genes_from_path, genes)


def test_gene_list_with_unknown_genes(source, tmp_path):
    path = tmp_path / "genes.txt"
    unknown = [f"NOPE{i}" for i in range(7)]
    path.write_text("\n".join([source.var.index[0], *unknown]))
    with pytest.raises(ValueError, match=r"7 of 8 genes are not in the var names") as err:
        select_genes(source, str(path))
    assert str(path) in str(err.value)
    assert "['NOPE0', 'NOPE1', 'NOPE2', 'NOPE3', 'NOPE4']" in str(err.value)
    assert "NOPE5" not in str(err.value)


def test_gene_list_without_genes(source, tmp_path):
    path = tmp_path / "genes.txt"
    path.write_text("# nothing here\n\n")
    with pytest.raises(ValueError, match="names no gene") as err:
        select_genes(source, str(path))
    assert str(path) in str(err.value)


def test_gene_list_file_missing(source, tmp_path):
    path = tmp_path / "genes.txt"
    with pytest.raises(ValueError, match="does not exist") as err:
        select_genes(source, str(path))
    assert str(path) in str(err.value)


def test_boolean_var_column(source):
    genes, description = select_genes(source, "highly_variable")
    np.testing.assert_array_equal(genes, np.flatnonzero(source.var["highly_variable"]))
    assert description == {"mode": "column", "column": "highly_variable", "n_genes": len(genes)}


def test_non_boolean_var_column(source):
    with pytest.raises(ValueError, match=r"'n_cells' .* not boolean; .*\['highly_variable'\]"):
        select_genes(source, "n_cells")


def test_unknown_spec_lists_accepted_forms(source):
    with pytest.raises(ValueError, match=r"boolean var columns: \['highly_variable'\]") as err:
        select_genes(source, "variable")
    assert "'hvg:N'" in str(err.value)
    with pytest.raises(ValueError, match="accepted gene specs"):
        select_genes(source, 12)


def test_all_false_column_selects_nothing(source):
    source.var["none"] = False
    with pytest.raises(ValueError, match="'none' .* False for every gene"):
        select_genes(source, "none")


@pytest.mark.parametrize("spec", [None, "list"])
def test_duplicate_gene_names_in_one_source_are_refused(tmp_path, capsys, spec):
    """A name for two genes would store both (a 4-gene list selected 5 columns)."""
    from rankdist.cli import main

    adata = counts_adata(40, 12, seed=1)
    adata.var_names = [*adata.var_names[:10], adata.var_names[3], adata.var_names[5]]
    src = tmp_path / "dup.h5ad"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # anndata: var_names not unique
        adata.write_h5ad(src)
    argv = []
    if spec == "list":
        genes = tmp_path / "genes.txt"
        genes.write_text("\n".join(adata.var_names[2:6]))
        argv = ["--genes", str(genes)]
    out = tmp_path / "s.zarr"
    assert main(["ingest", str(src), str(out), "--quiet", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"rankdist ingest: error: {src} has 2 duplicate gene name(s), e.g. ['G003', 'G005']; "
        "genes are stored and selected by name, so make them unique "
        "(AnnData.var_names_make_unique()) before ingest"
    )
    assert not out.exists()
    adata.var_names_make_unique()
    with open_source(adata) as unique:
        assert len(select_genes(unique, None)[0]) == 12
