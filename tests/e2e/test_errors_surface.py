"""Smaller errors that must surface as one clear line: the argument, the file or the address.

Each CLI case runs :func:`rankdist.cli.main` in this process and reads stderr; the library
cases check the exception the CLI turns into that line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import zarr

import rankdist
from rankdist.cli import main
from rankdist.reduce import lock as runlock

from _data import counts_adata

EXE = Path(sys.executable).with_name("rankdist")


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


# --- permissions ------------------------------------------------------------------------------


def _deny(path: Path) -> PermissionError:
    return PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))


@pytest.mark.parametrize("kind", ["h5ad", "zarr"])
def test_an_unreadable_source_is_one_line_naming_it(tmp_path, capsys, monkeypatch, kind):
    # injected: the tests may run as root, who can read any file
    adata = counts_adata(40, 12, seed=2)
    if kind == "h5ad":
        src = tmp_path / "locked.h5ad"
        adata.write_h5ad(src)
        culprit, real_open = src, pathlib.Path.open

        def open_(self, *args, **kwargs):
            if self == src:
                raise _deny(self)
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "open", open_)
    else:
        src = tmp_path / "locked.zarr"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # anndata: zarr v2 by default
            adata.write_zarr(src)
        culprit = src / "zarr.json"

        def open_group(*args, **kwargs):
            raise _deny(culprit)

        monkeypatch.setattr(zarr, "open_group", open_group)
    out = tmp_path / "s.zarr"
    assert main(["ingest", str(src), str(out), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"rankdist ingest: error: {culprit}: Permission denied; check its owner and permissions "
        f"(ls -ld {culprit}) or use a path you may read and write"
    )
    assert not out.exists()


@contextlib.contextmanager
def _read_only(*folders: Path):
    """No entry can be created in ``folders``: chmod, or for root (whom modes do not stop)
    the immutable attribute."""
    if os.geteuid() != 0:
        modes = [f.stat().st_mode for f in folders]
        for f in folders:
            f.chmod(0o555)
        try:
            yield
        finally:
            for f, mode in zip(folders, modes, strict=True):
                f.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", *folders]).returncode != 0:
        pytest.skip("root without chattr +i here: no way to make a folder read-only")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", *folders], check=True)


def test_a_read_only_store_is_one_line_naming_it(store, capsys):
    results = store.path / "results"
    with _read_only(store.path, results):
        code = main(["neighbors", str(store.path), "--k", "3", "--name", "ro", "--quiet"])
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(
        f"rankdist neighbors: error: cannot write run 'ro' into the store {store.path}: "
    )
    assert line.endswith("or copy the store (cp -r) and run on the copy")
    assert f" on {results / '.ro.lock.'}" in line  # the file it could not create
    assert not runlock.lock_path(store.path, "ro").exists()
    assert "ro" not in rankdist.list_runs(store)
