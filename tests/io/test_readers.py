"""open_source: every format streams exactly what anndata's or scanpy's own reader gives."""

from __future__ import annotations

import gzip
import warnings

import anndata as ad
import h5py
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
import zarr

from rankdist.io import readers
from rankdist.io.readers import open_source
from rankdist.io.source import AnnDataSource, SourceError

from _data import counts_adata
from _formats import write_10x_h5, write_10x_mtx

N_CELLS, N_GENES = 60, 40
GENE_SUBSET = np.array([0, 1, 3, 4, 5, 17, N_GENES - 3])


@pytest.fixture
def adata():
    return counts_adata(N_CELLS, N_GENES, seed=7)


@pytest.fixture(autouse=True)
def small_spool(monkeypatch):
    """Tiny read batches and spool buckets, so spooled inputs span many of both."""
    monkeypatch.setattr(readers, "_READ_BATCH_ENTRIES", 37)
    monkeypatch.setattr(readers, "_SPOOL_BUCKET_ENTRIES", 100)


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zarr v2 and non-unique names
        yield


def _dense(x) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def stream(source, chunk_cells: int, genes=None) -> np.ndarray:
    """Concatenate ``iter_chunks``, checking starts, shapes and dtype on the way."""
    blocks, expected_start = [], 0
    for start, block in source.iter_chunks(chunk_cells, genes):
        assert start == expected_start
        assert isinstance(block, np.ndarray)
        assert block.dtype == source.dtype
        assert block.shape == (
            min(chunk_cells, source.n_cells - start),
            len(genes) if genes is not None else source.n_genes,
        )
        blocks.append(block)
        expected_start += len(block)
    assert expected_start == source.n_cells
    return np.concatenate(blocks)


def assert_streams_like(source, oracle: ad.AnnData) -> None:
    """Matrix (several chunk sizes, a gene subset), obs names and var names equal the oracle's."""
    expected = _dense(oracle.X)
    assert list(source.obs.index) == list(oracle.obs_names)
    assert list(source.var.index) == list(oracle.var_names)
    for chunk_cells in (1, 7, oracle.n_obs + 5):
        np.testing.assert_array_equal(stream(source, chunk_cells), expected)
    genes = GENE_SUBSET[GENE_SUBSET < source.n_genes]
    np.testing.assert_array_equal(stream(source, 7, genes), expected[:, genes])


def test_in_memory_anndata(adata):
    source = open_source(adata)
    assert isinstance(source, AnnDataSource)
    assert_streams_like(source, adata)


@pytest.mark.parametrize("layout", ["dense", "csr", "csc"])
@pytest.mark.parametrize("container", ["h5ad", "zarr"])
def test_anndata_on_disk(adata, tmp_path, layout, container):
    if layout != "dense":
        adata.X = getattr(sp, f"{layout}_matrix")(adata.X)
    path = tmp_path / f"x.{container}"
    if container == "h5ad":
        adata.write_h5ad(path)
        oracle = ad.read_h5ad(path)
    else:
        adata.write_zarr(path)
        oracle = ad.read_zarr(path)
    with open_source(str(path)) as source:
        assert source.kind == {"h5ad": "h5ad", "zarr": "anndata-zarr"}[container]
        assert source.dtype == np.float32
        assert (source.n_cells, source.n_genes) == (N_CELLS, N_GENES)
        assert list(source.obs["cell_type"]) == list(oracle.obs["cell_type"])
        assert_streams_like(source, oracle)


@pytest.mark.parametrize("container", ["h5ad", "zarr"])
def test_raw_and_layers(adata, tmp_path, container):
    adata.layers["counts"] = sp.csc_matrix(adata.X.astype(np.int32))
    adata.raw = adata
    adata = adata[:, 5:30].copy()
    adata.X = np.log1p(adata.X).astype(np.float64)
    path = tmp_path / f"x.{container}"
    getattr(adata, f"write_{container}")(path)
    oracle = ad.read_h5ad(path) if container == "h5ad" else ad.read_zarr(path)

    with open_source(path) as source:
        assert source.dtype == np.float64
        assert_streams_like(source, oracle)
    with open_source(path, use_raw=True) as source:
        assert source.n_genes == N_GENES
        assert_streams_like(source, oracle.raw.to_adata())
    with open_source(path, layer="counts") as source:
        assert source.dtype == np.int32
        assert_streams_like(source, ad.AnnData(oracle.layers["counts"], oracle.obs, oracle.var))


def test_csc_spool_is_removed_on_close(adata, tmp_path):
    adata.X = sp.csc_matrix(adata.X)
    adata.write_h5ad(tmp_path / "x.h5ad")
    source = open_source(tmp_path / "x.h5ad")
    next(source.iter_chunks(10))
    spool_dir = source._spool.directory
    assert source._spool.bucket_cells < N_CELLS  # several buckets
    assert any(spool_dir.iterdir())
    source.close()
    assert not spool_dir.exists()


@pytest.mark.parametrize("version", [3, 2])
def test_10x_h5(adata, tmp_path, version):
    path = write_10x_h5(adata, tmp_path / "counts.h5", version=version)
    oracle = sc.read_10x_h5(path)
    oracle.var_names_make_unique()
    with open_source(path) as source:
        assert source.kind == "10x-h5"
        assert source.dtype == np.int32
        assert source.n_genes == (N_GENES - 2 if version == 3 else N_GENES)
        assert {"Gene3", "Gene3-1", "Gene3-2"} <= set(source.var.index)
        assert list(source.var["gene_ids"]) == list(oracle.var["gene_ids"])
        assert_streams_like(source, oracle)


MTX_VARIANTS = {
    "gzip": dict(gzip=True),
    "gzip-shuffled": dict(gzip=True, shuffle=True),
    "plain": dict(),
    "plain-shuffled": dict(shuffle=True),
    "legacy": dict(legacy=True),
}


@pytest.mark.parametrize("variant", list(MTX_VARIANTS))
def test_10x_mtx(adata, tmp_path, variant):
    options = MTX_VARIANTS[variant]
    directory = write_10x_mtx(adata, tmp_path / variant, **options)
    # scanpy reads v3 directories only gzipped; the plain variants hold the same data
    legacy = options.get("legacy", False)
    oracle_dir = directory if legacy else write_10x_mtx(adata, tmp_path / "oracle", gzip=True)
    oracle = sc.read_10x_mtx(oracle_dir)
    with open_source(directory) as source:
        assert source.kind == "10x-mtx"
        assert source.dtype == np.int32
        assert list(source.var["gene_ids"]) == list(oracle.var["gene_ids"])
        assert_streams_like(source, oracle)


def test_mtx_matrix_file_path(adata, tmp_path):
    directory = write_10x_mtx(adata, tmp_path / "m", gzip=True)
    with open_source(directory / "matrix.mtx.gz") as source:
        assert source.path == directory
        np.testing.assert_array_equal(stream(source, 9), adata.X[:, :-2])


def test_mtx_spool_is_removed_on_close(adata, tmp_path):
    source = open_source(write_10x_mtx(adata, tmp_path / "m", shuffle=True))
    stream(source, 11)
    spool_dir = source._spool.directory
    source.close()
    assert not spool_dir.exists()


# --- errors ---------------------------------------------------------------------------


def test_missing_path(tmp_path):
    path = tmp_path / "nope.h5ad"
    with pytest.raises(SourceError, match="does not exist") as err:
        open_source(path)
    assert str(path) in str(err.value)
    assert "10x mtx directory" in str(err.value)


def test_not_a_path():
    with pytest.raises(SourceError, match="cannot read a int; accepted inputs"):
        open_source(42)


def test_directory_of_unknown_kind(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SourceError, match="neither an AnnData zarr store") as err:
        open_source(tmp_path)
    assert str(tmp_path) in str(err.value)
    assert "notes.txt" in str(err.value)


def test_non_hdf5_file_despite_extension(tmp_path):
    path = tmp_path / "counts.h5ad"
    path.write_text("cell,gene,count\n")
    with pytest.raises(SourceError, match="is not an HDF5 file") as err:
        open_source(path)
    assert str(path) in str(err.value)
    assert "accepted inputs" in str(err.value)


def test_hdf5_of_unknown_layout(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["weights"] = np.zeros(3)
    with pytest.raises(SourceError, match="neither an h5ad .* nor a 10x") as err:
        open_source(path)
    assert str(path) in str(err.value)
    assert "weights" in str(err.value)


@pytest.mark.parametrize("kind", ["h5ad", "10x"])
def test_truncated_hdf5(adata, tmp_path, kind):
    path = tmp_path / "x.h5"
    if kind == "h5ad":
        adata.write_h5ad(path)
    else:
        write_10x_h5(adata, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="truncated or corrupt") as err:
        with open_source(path) as source:
            stream(source, 10)
    assert str(path) in str(err.value)


def test_corrupt_chunk_is_reported_while_streaming(adata, tmp_path):
    path = write_10x_h5(adata, tmp_path / "x.h5")
    with h5py.File(path, "a") as f:
        data = f["matrix/data"][()]
        del f["matrix/data"]
        f.create_dataset("matrix/data", data=data, chunks=(64,), compression="gzip")
    with h5py.File(path, "r") as f:
        chunk = f["matrix/data"].id.get_chunk_info(0)
    with path.open("r+b") as fh:
        fh.seek(chunk.byte_offset)
        fh.write(b"\xff" * chunk.size)
    with (
        open_source(path) as source,
        pytest.raises(SourceError, match="truncated or corrupt") as err,
    ):
        stream(source, 10)
    assert str(path) in str(err.value)


def test_zarr_that_is_not_anndata(tmp_path):
    path = tmp_path / "store.zarr"
    group = zarr.open_group(path, mode="w")
    group.create_array("X", shape=(3, 3), dtype="f4")
    with pytest.raises(SourceError, match="not an AnnData one") as err:
        open_source(path)
    assert str(path) in str(err.value)


def test_rankdist_store_is_not_an_input(tmp_path):
    path = tmp_path / "store.zarr"
    group = zarr.open_group(path, mode="w")
    group.attrs["rankdist"] = {"format": 1}
    group.create_array("X", shape=(3, 3), dtype="f4")
    group.create_group("obs")
    with pytest.raises(SourceError, match="is a rankdist store, not an input") as err:
        open_source(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("container", ["h5ad", "zarr"])
def test_missing_raw_and_unknown_layer(adata, tmp_path, container):
    adata.layers["counts"] = adata.X.copy()
    path = tmp_path / f"x.{container}"
    getattr(adata, f"write_{container}")(path)
    with pytest.raises(SourceError, match=r"use_raw=True but .* has no raw") as err:
        open_source(path, use_raw=True)
    assert str(path) in str(err.value)
    assert "available layers: ['counts']" in str(err.value)
    with pytest.raises(
        SourceError, match=r"layer 'spliced' not in .*available layers: \['counts'\]"
    ):
        open_source(path, layer="spliced")
    with pytest.raises(SourceError, match="pass only one"):
        open_source(path, use_raw=True, layer="counts")


def test_raw_or_layer_on_10x(adata, tmp_path):
    path = write_10x_h5(adata, tmp_path / "x.h5")
    with pytest.raises(SourceError, match="no raw or layers") as err:
        open_source(path, use_raw=True)
    assert str(path) in str(err.value)
    directory = write_10x_mtx(adata, tmp_path / "m")
    with pytest.raises(SourceError, match="no raw or layers"):
        open_source(directory, layer="counts")


def test_10x_v2_with_two_genomes(adata, tmp_path):
    path = write_10x_h5(adata, tmp_path / "x.h5", version=2)
    with h5py.File(path, "a") as f:
        f.copy(f["GRCh38"], "mm10")
    with pytest.raises(SourceError, match=r"several genomes \['GRCh38', 'mm10'\]") as err:
        open_source(path)
    assert str(path) in str(err.value)


def test_10x_h5_missing_features(adata, tmp_path):
    path = write_10x_h5(adata, tmp_path / "x.h5")
    with h5py.File(path, "a") as f:
        del f["matrix/features/name"]
    with pytest.raises(SourceError, match=r"lacks \['features/name'\]") as err:
        open_source(path)
    assert str(path) in str(err.value)


def _rewrite_mtx(directory, edit):
    matrix = directory / "matrix.mtx"
    matrix.write_text(edit(matrix.read_text()))
    return matrix


def test_mtx_truncated(adata, tmp_path):
    directory = write_10x_mtx(adata, tmp_path / "m")
    matrix = _rewrite_mtx(directory, lambda text: "".join(text.splitlines(True)[:-5]))
    with open_source(directory) as source, pytest.raises(SourceError, match="truncated") as err:
        stream(source, 10)
    assert str(matrix) in str(err.value)


def test_mtx_entry_out_of_range(adata, tmp_path):
    directory = write_10x_mtx(adata, tmp_path / "m")
    matrix = _rewrite_mtx(
        directory, lambda text: text.rstrip("\n").rsplit("\n", 1)[0] + "\n41 1 3\n"
    )
    with open_source(directory) as source, pytest.raises(SourceError, match="lies outside") as err:
        stream(source, 10)
    assert str(matrix) in str(err.value)


def test_mtx_unparsable_entry(adata, tmp_path):
    directory = write_10x_mtx(adata, tmp_path / "m")
    matrix = _rewrite_mtx(
        directory, lambda text: text.rstrip("\n").rsplit("\n", 1)[0] + "\n1 1 x\n"
    )
    with (
        open_source(directory) as source,
        pytest.raises(SourceError, match="could not be parsed") as err,
    ):
        stream(source, 10)
    assert str(matrix) in str(err.value)


def test_mtx_corrupt_gzip(adata, tmp_path):
    directory = write_10x_mtx(adata, tmp_path / "m", gzip=True)
    matrix = directory / "matrix.mtx.gz"
    data = matrix.read_bytes()
    matrix.write_bytes(data[: len(data) // 2])
    with (
        open_source(directory) as source,
        pytest.raises(SourceError, match="truncated or corrupt") as err,
    ):
        stream(source, 10)
    assert str(matrix) in str(err.value)


def test_mtx_bad_header(adata, tmp_path):
    directory = write_10x_mtx(adata, tmp_path / "m")
    matrix = _rewrite_mtx(directory, lambda text: text.replace("general", "symmetric", 1))
    with pytest.raises(SourceError, match="coordinate integer symmetric") as err:
        open_source(directory)
    assert str(matrix) in str(err.value)


def test_mtx_shape_disagrees_with_features(adata, tmp_path):
    directory = write_10x_mtx(adata, tmp_path / "m")
    features = directory / "features.tsv"
    features.write_text("".join(features.read_text().splitlines(True)[:-1]))
    with pytest.raises(SourceError, match="39 features and 60 barcodes") as err:
        open_source(directory)
    assert str(directory / "matrix.mtx") in str(err.value)


def test_mtx_missing_barcodes(adata, tmp_path):
    directory = write_10x_mtx(adata, tmp_path / "m", gzip=True)
    (directory / "barcodes.tsv.gz").unlink()
    with pytest.raises(SourceError, match=r"lacks barcodes.tsv\[.gz\]") as err:
        open_source(directory)
    assert str(directory) in str(err.value)


def test_mtx_gzip_barcodes_corrupt(adata, tmp_path):
    directory = write_10x_mtx(adata, tmp_path / "m", gzip=True)
    with gzip.open(directory / "barcodes.tsv.gz", "wb") as fh:
        fh.write(b"")
    with pytest.raises(SourceError, match="is empty") as err:
        open_source(directory)
    assert "barcodes.tsv.gz" in str(err.value)
