"""Atomic outputs of the command line: an export or report appears whole where asked, or
not at all. A full disk, SIGTERM or SIGKILL at each stage: tests/faults/."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import pytest

import rankdist
from rankdist.cli import main
from rankdist.datasets.toy import synthetic_counts


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A small store with one finished run (computed in this process)."""
    base = tmp_path_factory.mktemp("atomic")
    adata = synthetic_counts(n_cells=600, n_genes=200, seed=5)
    st = rankdist.ingest(adata, base / "cells.zarr", cell_type="cell_type", progress=False)
    rankdist.neighbors(st, "spearman", k=5, cutoffs=(0.5,), progress=False)
    return st.path


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_export_succeeds_whole(store, tmp_path):
    target = tmp_path / "graph.h5ad"
    target.write_bytes(b"the previous export")
    assert main(["export", str(store), "--h5ad", str(target)]) == 0
    assert _names(tmp_path) == ["graph.h5ad"]
    assert ad.read_h5ad(target).obsp["distances"].shape == (600, 600)


def test_export_into_a_missing_folder_names_the_folder(store, tmp_path, capsys):
    target = tmp_path / "no" / "such" / "graph.h5ad"
    assert main(["export", str(store), "--h5ad", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"the folder {target.parent} does not exist" in err and err.count("\n") == 1
    assert "h5py" not in err and _names(tmp_path) == []


def test_report_refuses_a_folder_of_other_files(store, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["report", str(store), "--out", str(tmp_path)]) == 2
    assert "holds other files and no report.html" in capsys.readouterr().err
    assert _names(tmp_path) == ["notes.txt"]
