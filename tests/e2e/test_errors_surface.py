"""Smaller errors that must surface as one clear line: the argument, the file or the address.

Each CLI case runs :func:`rankdist.cli.main` in this process and reads stderr; the library
cases check the exception the CLI turns into that line.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest

import rankdist
from rankdist.cli import main

from _data import counts_adata


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    adata = counts_adata(600, 30, seed=5)
    return rankdist.ingest(adata, tmp_path_factory.mktemp("errors") / "s.zarr", progress=False)


# --- cutoffs ------------------------------------------------------------------------------


@pytest.mark.parametrize("cutoffs", [(), [], set()])
def test_no_cutoffs_is_an_error_in_the_library(store, cutoffs):
    # a run with no cutoff would store counts of no cutoff: refused before any cluster starts
    expected = r"cutoffs must hold at least one correlation in \[-1, 1\]"
    with pytest.raises(ValueError, match=expected):
        rankdist.neighbors(store, k=3, cutoffs=cutoffs, progress=False)
    assert "spearman" not in rankdist.list_runs(store)


@pytest.mark.parametrize("text", ["", ",", " , "])
def test_no_cutoffs_is_an_error_on_the_command_line(store, capsys, text):
    with pytest.raises(SystemExit) as exit_:
        main(["neighbors", str(store.path), "--quiet", "--cutoffs", text])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "rankdist neighbors: error: argument --cutoffs: --cutoffs needs at least one correlation "
        f"cutoff, like 0.5 or 0.3,0.5,0.7, got {text!r} (leave the option out for the default 0.5)"
    )
    assert "spearman" not in rankdist.list_runs(store)


# --- a continuous column as labels -------------------------------------------------------


def _with_column(values) -> ad.AnnData:
    adata = counts_adata(40, 12, seed=2)
    adata.obs["score"] = values
    return adata


def test_a_float_column_with_a_value_per_cell_is_refused_as_cell_type(tmp_path, capsys):
    values = np.linspace(0.0, 1.0, 40)  # e.g. a pseudotime: every cell its own "type"
    src = tmp_path / "scored.h5ad"
    _with_column(values).write_h5ad(src)
    out = tmp_path / "s.zarr"
    assert main(["ingest", str(src), str(out), "--cell-type", "score", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"rankdist ingest: error: obs column 'score' of {src} holds continuous values (float64, "
        "40 distinct values over 40 cells) but labels are categories: every cell would be its "
        "own cell_type; pass a column of cell type names or integer codes instead "
        "(--cell-type COLUMN), or bin this one first"
    )
    assert not out.exists()


def test_a_float_column_with_fractions_warns_in_one_line(tmp_path, capsys):
    values = np.repeat([0.5, 1.25, 2.75, 3.5], 10)  # repeated, but not categories
    src = tmp_path / "scored.h5ad"
    _with_column(values).write_h5ad(src)
    out = tmp_path / "s.zarr"
    assert main(["ingest", str(src), str(out), "--batch", "score", "--quiet"]) == 0
    assert capsys.readouterr().err.strip() == (
        f"rankdist ingest: warning: obs column 'score' of {src} holds continuous values "
        "(float64, 4 distinct values over 40 cells) but labels are categories; pass a column of "
        "batch names or integer codes instead (--batch COLUMN), or bin this one first"
    )
    assert list(rankdist.Store(out).labels["batch"].categories) == ["0.5", "1.25", "2.75", "3.5"]


def test_whole_floats_and_strings_are_categories_without_a_word(tmp_path):
    adata = _with_column(np.repeat([0.0, 1.0, 2.0, 3.0], 10))  # integer codes as floats
    adata.obs["type"] = [f"T{i % 3}" for i in range(40)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store = rankdist.ingest(
            adata, tmp_path / "s.zarr", cell_type="type", batch="score", progress=False
        )
    assert len(store.labels["batch"].categories) == 4


# --- entry points take a path or a Store ---------------------------------------------------


def test_list_runs_takes_a_path_as_well_as_a_store(store, inproc_client):
    with pytest.warns(rankdist.ExcludedCellsWarning):  # counts_adata's cell 2 is empty
        rankdist.neighbors(store, k=3, name="listed", client=inproc_client, progress=False)
    assert rankdist.list_runs(store) == ["listed"]
    assert rankdist.list_runs(store.path) == ["listed"]
    assert rankdist.list_runs(str(store.path)) == ["listed"]
    with pytest.raises(ValueError, match="nowhere.zarr"):
        rankdist.list_runs(store.path.parent / "nowhere.zarr")
