"""Bad inputs: the right exception, a message naming the problem, and nothing half-written.

Every failed ``ingest`` must leave no store and no hidden ``.NAME.tmp-*`` sibling; every
failed ``neighbors`` must leave no ``results/<run>`` and no temporary directory. The CLI
reports the same errors as ``rankdist <cmd>: error: <msg>`` and returns 2.
"""

from __future__ import annotations

import inspect
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import rankdist
import rankdist.api as pipeline_module
import rankdist.io.ingest as ingest_module
from rankdist.cli import main
from rankdist.io.source import SourceError
from rankdist.io.store import StoreError

from _data import counts_adata

N_CELLS, N_GENES = 30, 12
CELL, GENE = 5, 7  # where a bad value is planted: cell 'BC00005-1', gene 'G007'


def adata_with(value=None, *, n_cells: int = N_CELLS, layout: str = "dense"):
    """Seeded counts, optionally with ``value`` at (CELL, GENE), X dense, CSR or CSC."""
    adata = counts_adata(n_cells, N_GENES, seed=3)
    if value is not None:
        adata.X[CELL, GENE] = value
    if layout != "dense":
        adata.X = {"csr": sp.csr_matrix, "csc": sp.csc_matrix}[layout](adata.X)
    return adata


def h5ad(tmp_path: Path, adata, name: str = "in.h5ad") -> Path:
    path = tmp_path / name
    adata.write_h5ad(path)
    return path


def assert_nothing_written(store_path: Path) -> None:
    """No store, and no temporary or swapped-out sibling of it."""
    assert not store_path.exists()
    assert not list(store_path.parent.glob(f".{store_path.name}.*"))


def assert_no_run(store_path: Path, run: str) -> None:
    assert not (store_path / "results" / run).exists()
    for group in ("results", "encodings"):
        hidden = [p.name for p in (store_path / group).iterdir() if p.name.startswith(".")]
        assert hidden == [], f"temporary directories left in {group}/"


def cli_error(capsys, *argv) -> str:
    """Run the CLI, expect return code 2 and one error line; return that line."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rankdist {argv[0]}: error: ")
    return err


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store with an all-zero cell (2) and an all-equal cell (5); runs on it must fail."""
    adata = adata_with()
    adata.X[CELL] = 3
    return rankdist.ingest(
        adata, tmp_path_factory.mktemp("bad") / "s.zarr", cell_type="cell_type", progress=False
    )


@pytest.fixture
def fresh_store(store, tmp_path):
    """A private copy of ``store``, for tests that write runs."""
    shutil.copytree(store.path, tmp_path / "s.zarr")
    return rankdist.Store(tmp_path / "s.zarr")


def constant_mask(store) -> np.ndarray:
    x = store.read_x(0, store.n_cells)
    return np.ptp(x, axis=1) == 0


# --- matrix values -----------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["dense", "csr", "csc"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_value_names_cell_and_gene(tmp_path, value, layout):
    src = h5ad(tmp_path, adata_with(value, layout=layout))
    out = tmp_path / "s.zarr"
    with pytest.raises(ValueError, match="non-finite") as err:
        rankdist.ingest(src, out, progress=False)
    msg = str(err.value)
    assert str(src) in msg and "'BC00005-1'" in msg and "'G007'" in msg and str(value) in msg
    assert_nothing_written(out)


def test_non_finite_value_caught_before_the_hvg_pass(tmp_path):
    # the highly-variable-genes pass reads X first; NaN must not reach its statistics
    out = tmp_path / "s.zarr"
    with pytest.raises(ValueError, match="non-finite.*'BC00005-1', gene 'G007'"):
        rankdist.ingest(adata_with(np.nan), out, genes="hvg:5", progress=False)
    assert_nothing_written(out)


def test_negative_value(tmp_path, capsys):
    src = h5ad(tmp_path, adata_with(-1.5))
    out = tmp_path / "s.zarr"
    with pytest.raises(ValueError, match=r"negative value\(s\) \(-1.5 at cell 'BC00005-1', gene"):
        rankdist.ingest(src, out, progress=False)
    assert_nothing_written(out)
    err = cli_error(capsys, "ingest", src, out, "--quiet")
    assert str(src) in err and "'G007'" in err and "not scaled/centred" in err
    assert_nothing_written(out)


def test_failure_in_the_last_chunk_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr("rankdist.layout.CHUNK_VALUES", 512 * N_GENES)  # 512-cell chunks
    adata = adata_with(n_cells=1100)
    adata.X[1099, GENE] = np.nan
    src = h5ad(tmp_path, adata)
    out = tmp_path / "s.zarr"
    seen = []
    validate = ingest_module._validate_block

    def spy(source, block, start, gene_names):
        seen.append((start, len(list(tmp_path.glob(".s.zarr.tmp-*")))))
        validate(source, block, start, gene_names)

    monkeypatch.setattr(ingest_module, "_validate_block", spy)
    with pytest.raises(ValueError, match=r"cells 1024\.\.1099; first: nan at cell 'BC01099-1'"):
        rankdist.ingest(src, out, progress=False)
    assert seen == [(0, 1), (512, 1), (1024, 1)]  # two chunks were written to a temp dir
    assert_nothing_written(out)


# --- labels and names --------------------------------------------------------------------


@pytest.mark.parametrize("role", ["cell_type", "coarse_type", "batch"])
def test_missing_label_column_lists_available(tmp_path, role, capsys):
    out = tmp_path / "s.zarr"
    with pytest.raises(KeyError) as err:
        rankdist.ingest(adata_with(), out, **{role: "celltype"}, progress=False)
    assert err.value.args[0] == (
        "column 'celltype' not in obs of <in-memory AnnData>; available: ['cell_type']"
    )
    assert_nothing_written(out)
    src = h5ad(tmp_path, adata_with())
    err = cli_error(capsys, "ingest", src, out, f"--{role.replace('_', '-')}", "celltype")
    assert f"column 'celltype' not in obs of {src}; available: ['cell_type']" in err
    assert_nothing_written(out)


@pytest.mark.parametrize(
    "column",
    [
        pd.Categorical(["T"] * (N_CELLS - 2) + [None, None]),
        ["T"] * (N_CELLS - 2) + [None, None],
        [1.0] * (N_CELLS - 2) + [np.nan, np.nan],
    ],
    ids=["categorical", "object", "float"],
)
def test_label_column_with_missing_values(tmp_path, column):
    adata = adata_with()
    adata.obs["donor"] = column
    out = tmp_path / "s.zarr"
    with pytest.raises(ValueError) as err:
        rankdist.ingest(adata, out, batch="donor", progress=False)
    assert str(err.value) == (
        "obs column 'donor' of <in-memory AnnData> has 2 missing value(s) "
        "(first cells: ['BC00028-1', 'BC00029-1']); fill or drop them before ingest"
    )
    assert_nothing_written(out)


def test_duplicate_cell_names(tmp_path, capsys):
    adata = adata_with()
    adata.obs_names = [*adata.obs_names[:-1], adata.obs_names[4]]
    out = tmp_path / "s.zarr"
    with pytest.raises(ValueError, match=r"1 duplicate cell name\(s\), e.g. \['BC00004-1'\]"):
        rankdist.ingest(adata, out, progress=False)
    assert_nothing_written(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # anndata: obs_names not unique
        src = h5ad(tmp_path, adata)
    err = cli_error(capsys, "ingest", src, out)
    assert str(src) in err and "obs_names_make_unique" in err
    assert_nothing_written(out)


# --- files that are not inputs -----------------------------------------------------------


def _random_bytes(path):
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _truncated_h5ad(path):
    full = h5ad(path.parent, adata_with(), "full.h5ad").read_bytes()
    path.write_bytes(full[:3000])


UNREADABLE = {
    "random-bytes.h5ad": (_random_bytes, "is not an HDF5 file"),
    "truncated.h5ad": (_truncated_h5ad, "HDF5 signature but cannot be opened"),
    "table.csv": (lambda p: p.write_text("cell,g1\nc1,3\n"), r"starts with b'cell,g1"),
    "image.png": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)), r"b'\\x89PNG"),
    "missing.h5ad": (lambda p: None, "does not exist"),
    "empty-dir": (lambda p: p.mkdir(), r"neither an AnnData zarr store .* contains \[\]"),
}


@pytest.mark.parametrize("name", list(UNREADABLE))
def test_unreadable_input(tmp_path, name, capsys):
    make, expected = UNREADABLE[name]
    src = tmp_path / name
    make(src)
    out = tmp_path / "s.zarr"
    with pytest.raises(SourceError, match=expected) as err:
        rankdist.ingest(src, out, progress=False)
    assert str(err.value).startswith(str(src))
    assert_nothing_written(out)
    if name in {"random-bytes.h5ad", "missing.h5ad", "empty-dir"}:
        err = cli_error(capsys, "ingest", src, out, "--quiet")
        assert str(src) in err and "accepted inputs" in err
        assert_nothing_written(out)


def test_store_given_as_ingest_input(store, tmp_path):
    out = tmp_path / "again.zarr"
    with pytest.raises(SourceError, match="is a rankdist store, not an input matrix") as err:
        rankdist.ingest(store.path, out, progress=False)
    assert str(store.path) in str(err.value)
    assert_nothing_written(out)


def _plain_dir(p):
    p.mkdir()
    (p / "notes.txt").write_text("not a store")


def _anndata_zarr(p):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # anndata: zarr v2 default changing
        adata_with().write_zarr(p)


NOT_A_STORE = {
    "empty-dir": (lambda p: p.mkdir(), "is not a rankdist store"),
    "plain-dir": (_plain_dir, "is not a rankdist store"),
    "data.h5ad": (lambda p: adata_with().write_h5ad(p), "is a file, not a rankdist store"),
    "anndata.zarr": (_anndata_zarr, "is a Zarr group but not a rankdist"),
    "missing.zarr": (lambda p: None, "does not exist"),
}


@pytest.mark.parametrize("name", list(NOT_A_STORE))
def test_path_that_is_not_a_store(tmp_path, name, client, capsys):
    make, expected = NOT_A_STORE[name]
    path = tmp_path / name
    make(path)
    for call in (
        lambda: rankdist.neighbors(path, k=3, client=client, progress=False),
        lambda: rankdist.load(path),
        lambda: rankdist.Store(path),
    ):
        with pytest.raises(StoreError, match=expected) as err:
            call()
        assert str(path) in str(err.value) and "rankdist ingest" in str(err.value)
    for argv in (["neighbors", path, "--quiet"], ["info", path]):
        assert str(path) in cli_error(capsys, *argv)
    assert not (path / "results").exists()


# --- an existing store path --------------------------------------------------------------


def test_ingest_onto_existing_store(tmp_path, capsys):
    out = tmp_path / "s.zarr"
    first = rankdist.ingest(adata_with(), out, progress=False)
    with pytest.raises(FileExistsError) as err:
        rankdist.ingest(adata_with(n_cells=20), out, progress=False)
    assert str(err.value) == (
        f"store {out} already exists; pass overwrite=True (--overwrite) to replace it"
    )
    src = h5ad(tmp_path, adata_with(n_cells=20))
    assert str(out) in cli_error(capsys, "ingest", src, out, "--quiet")
    assert rankdist.Store(out).content_id == first.content_id  # untouched
    # a failed overwrite keeps the old store too
    with pytest.raises(ValueError, match="non-finite"):
        rankdist.ingest(adata_with(np.nan), out, overwrite=True, progress=False)
    assert rankdist.Store(out).content_id == first.content_id
    second = rankdist.ingest(src, out, overwrite=True, progress=False)
    assert second.n_cells == 20 and second.content_id != first.content_id
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("kind", ["the input file", "a plain directory"])
def test_overwrite_never_replaces_something_that_is_not_a_store(tmp_path, kind):
    src = h5ad(tmp_path, adata_with())
    target = src if kind == "the input file" else tmp_path / "project"
    if kind == "a plain directory":
        _plain_dir(target)
    with pytest.raises(FileExistsError, match=f"refusing to overwrite {re.escape(str(target))}"):
        rankdist.ingest(src, target, overwrite=True, progress=False)
    assert src.is_file() and target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_overwrite_fills_an_empty_directory(tmp_path):
    (tmp_path / "s.zarr").mkdir()
    assert rankdist.ingest(adata_with(), tmp_path / "s.zarr", overwrite=True, progress=False)


# --- neighbors arguments -----------------------------------------------------------------


def test_k_must_be_below_the_cells_with_a_correlation(store, client):
    n_valid = int((~constant_mask(store)).sum())
    assert n_valid < N_CELLS  # some cells are constant: k=n_valid is a distinct case
    for k in (N_CELLS, n_valid):
        with pytest.raises(ValueError) as err:
            rankdist.neighbors(store, k=k, client=client, name="bigk", progress=False)
        assert str(err.value) == (
            f"k={k} must be smaller than the number of cells with a defined correlation "
            f"({n_valid} of {N_CELLS} in {store.path}); choose k <= {n_valid - 1}"
        )
        assert_no_run(store.path, "bigk")


def test_k_at_the_valid_cells_fails_once_the_block_tasks_have_encoded_them(fresh_store, client):
    """With no cached encoding the tiles' block tasks encode the cells; k is checked
    against the valid cells once they all are, and the run's work directory goes."""
    encodings = fresh_store.path / "encodings"
    for cached in encodings.iterdir():
        if cached.is_dir():
            shutil.rmtree(cached)
    n_valid = int((~constant_mask(fresh_store)).sum())
    with pytest.raises(ValueError) as err:
        rankdist.neighbors(fresh_store, k=n_valid, client=client, name="bigk", progress=False)
    assert str(err.value) == (
        f"k={n_valid} must be smaller than the number of cells with a defined correlation "
        f"({n_valid} of {N_CELLS} in {fresh_store.path}); choose k <= {n_valid - 1}"
    )
    assert_no_run(fresh_store.path, "bigk")
    assert len([p for p in encodings.iterdir() if p.is_dir()]) == 1  # published, reusable


@pytest.mark.parametrize("k", [0, -3, 2.5, "3", True, None])
def test_k_must_be_a_positive_integer(store, client, k):
    with pytest.raises(ValueError, match=re.escape(f"k must be a positive integer, got {k!r}")):
        rankdist.neighbors(store, k=k, client=client, name="badk", progress=False)
    assert_no_run(store.path, "badk")


@pytest.mark.parametrize(
    ("cutoffs", "expected"),
    [
        ((0.5, 1.5), r"must lie in \[-1, 1\] .*got \[1.5\]"),
        (-1.01, r"got \[-1.01\]"),
        ((float("nan"),), r"got \[nan\]"),
        (("high",), r"must be numbers in \[-1, 1\] .*got \('high',\)"),
        (None, r"must be numbers .*got None"),
    ],
)
def test_cutoffs_must_be_correlations(store, client, cutoffs, expected):
    with pytest.raises(ValueError, match=expected):
        rankdist.neighbors(store, k=3, cutoffs=cutoffs, client=client, name="c", progress=False)
    assert_no_run(store.path, "c")


@pytest.mark.parametrize("block_size", [1000, 100, 0, -512, 512.0, "512"])
def test_block_size_must_be_a_multiple_of_512(store, client, block_size):
    expected = f"block size {block_size!r} must be a positive integer multiple of 512"
    with pytest.raises(ValueError, match=re.escape(expected)):
        rankdist.neighbors(
            store, k=3, block_size=block_size, client=client, name="b", progress=False
        )
    assert_no_run(store.path, "b")


@pytest.mark.parametrize(
    ("encoding", "params", "expected"),
    [
        (
            "kendall",
            None,
            "unknown encoding 'kendall'; available: "
            "['geneformer', 'genept', 'pearson', 'scgpt', 'spearman', 'topn']",
        ),
        ("spearman", {"target_sum": 1e4}, "'spearman' has no parameter(s) ['target_sum']"),
        ("pearson", {"targetsum": 1e4}, "its parameters are ['target_sum']"),
    ],
)
def test_unknown_encoding_or_parameter(store, client, encoding, params, expected):
    with pytest.raises(ValueError, match=re.escape(expected)):
        rankdist.neighbors(store, encoding, k=3, params=params, client=client, progress=False)
    assert_no_run(store.path, encoding)


def test_bad_run_name(store, client):
    with pytest.raises(ValueError, match=re.escape("run name '../x' may hold only letters")):
        rankdist.neighbors(store, k=3, client=client, name="../x", progress=False)


def test_cli_rejects_bad_neighbors_arguments(store, capsys):
    # each fails before a cluster is started
    cases = {
        ("--k", "0"): "k must be a positive integer, got 0",
        ("--cutoffs", "0.2,1.5"): "got [1.5]",
        ("--block-size", "1000"): "block size 1000 must be a positive integer multiple of 512",
        ("--name", "a/b"): "run name 'a/b'",
    }
    for args, expected in cases.items():
        assert expected in cli_error(capsys, "neighbors", store.path, "--quiet", *args)
    for args, expected in [
        (("--k", "2.5"), "invalid int value: '2.5'"),
        (("--cutoffs", "a"), "comma-separated numbers"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            main(["neighbors", str(store.path), *args])
        assert exit_.value.code == 2
        assert expected in capsys.readouterr().err
    assert_no_run(store.path, "spearman")


# --- constant cells and failed runs ------------------------------------------------------


def test_constant_cells_are_excluded_and_reported(fresh_store, client):
    constant = constant_mask(fresh_store)
    assert constant[2] and constant[CELL]  # all-zero and all-equal
    n_valid = int((~constant).sum())
    for cached_encoding in (fresh_store.path / "encodings").iterdir():
        if cached_encoding.is_dir():  # an earlier test's: this run encodes in its tiles
            shutil.rmtree(cached_encoding)
    with pytest.warns(rankdist.ExcludedCellsWarning) as caught:
        line = inspect.currentframe().f_lineno + 1
        res = rankdist.neighbors(fresh_store, k=n_valid - 1, client=client, progress=False)
    (warning,) = [w for w in caught if w.category is rankdist.ExcludedCellsWarning]
    assert res.metadata["encoding_pipelined"]  # warned once the block tasks encoded them
    assert (warning.filename, warning.lineno) == (__file__, line)  # at the caller's line
    assert f"{constant.sum()} cell(s) are constant" in str(warning.message)
    first = [f"BC{i:05d}-1" for i in np.flatnonzero(constant)[:5]]
    assert f"First: {first}" in str(warning.message)
    np.testing.assert_array_equal(res.excluded, constant)
    assert (res.indices[constant] == -1).all() and np.isnan(res.similarities[constant]).all()
    valid = ~constant
    assert np.isfinite(res.similarities[valid]).all()  # never NaN elsewhere
    assert np.isin(res.indices[valid], np.flatnonzero(valid)).all()  # never a constant cell
    assert (res.counts["cell_type"].to_numpy()[constant] == 0).all()
    np.testing.assert_array_equal(rankdist.load(fresh_store).excluded, constant)
    # and with the encoding cached, from before the tiles: at the caller's line too
    with pytest.warns(rankdist.ExcludedCellsWarning) as again:
        line = inspect.currentframe().f_lineno + 1
        rankdist.neighbors(fresh_store, k=n_valid - 1, client=client, name="b", progress=False)
    (cached,) = [w for w in again if w.category is rankdist.ExcludedCellsWarning]
    assert (cached.filename, cached.lineno) == (__file__, line)


@pytest.mark.filterwarnings("ignore::rankdist.ExcludedCellsWarning")
def test_failed_run_leaves_no_result_keeps_the_old_one_and_resumes(
    fresh_store, client, monkeypatch
):
    old = rankdist.neighbors(fresh_store, k=4, client=client, name="run", progress=False)
    real_run_tiles = pipeline_module.run_tiles

    def fail_after_tiles(client_, job, out_path, ckpt_dir, **kwargs):
        real_run_tiles(client_, job, out_path, ckpt_dir, **kwargs)
        assert Path(out_path).name.endswith(".partial")  # a hidden work directory
        msg = "worker lost"
        raise RuntimeError(msg)

    monkeypatch.setattr(pipeline_module, "run_tiles", fail_after_tiles)
    for name in ("run", "new"):
        with pytest.raises(RuntimeError, match="worker lost"):
            rankdist.neighbors(fresh_store, k=6, client=client, name=name, progress=False)
    results = fresh_store.path / "results"
    # no visible run appears, the old one is untouched ...
    assert rankdist.list_runs(fresh_store) == ["run"]
    again = rankdist.load(fresh_store, "run")
    assert again.k == 4 and np.array_equal(again.indices, old.indices)
    # ... and the unfinished work stays, hidden, for the same command to resume
    assert (results / ".new.partial" / "job.json").exists()
    monkeypatch.undo()
    new = rankdist.neighbors(fresh_store, k=6, client=client, name="new", progress=False)
    assert new.metadata["tiles_computed"] == 0  # every block was already written
    assert new.metadata["blocks_resumed"] == new.metadata["n_blocks"]
    assert not (results / ".new.partial").exists()
    # the failed k=6 attempt at "run" left its work too; a run with other parameters
    # (here k=4) cannot use it, discards it and computes from scratch
    assert (results / ".run.partial").exists()
    redo = rankdist.neighbors(fresh_store, k=4, client=client, name="run", progress=False)
    assert redo.metadata["tiles_resumed"] == 0 and np.array_equal(redo.indices, old.indices)
    assert_no_run(fresh_store.path, "missing")


@pytest.mark.filterwarnings("ignore::rankdist.ExcludedCellsWarning")
def test_unknown_run_lists_the_runs(fresh_store, client, capsys):
    for name in ("a", "b"):
        rankdist.neighbors(fresh_store, k=3, client=client, name=name, progress=False)
    with pytest.raises(KeyError) as err:
        rankdist.load(fresh_store, "c")
    assert err.value.args[0] == f"no run 'c' in {fresh_store.path}; runs there: ['a', 'b']"
    with pytest.raises(ValueError, match=r"holds runs \['a', 'b'\]; say which one with run=NAME"):
        rankdist.load(fresh_store)
    out = fresh_store.path.parent / "out.h5ad"
    err = cli_error(capsys, "export", fresh_store.path, "--h5ad", out, "--run", "c")
    assert "runs there: ['a', 'b']" in err
    assert not out.exists()
