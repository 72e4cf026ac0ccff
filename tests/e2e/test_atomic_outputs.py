"""Atomic outputs of the command line: a failed or killed export, report or ingest leaves
no target (or the previous one untouched) and no hidden temporary beside it."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anndata as ad
import pytest

import rankdist
from rankdist.cli import main
from rankdist.datasets.toy import synthetic_counts
from rankdist.report import sections


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


def _disk_full_after_part(self, filename, *args, **kwargs):
    """An AnnData.write_h5ad that writes part of the file, then finds the disk full."""
    Path(filename).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 4096)
    raise OSError(errno.ENOSPC, "No space left on device", str(filename))


def test_export_with_a_full_disk_leaves_no_file_and_keeps_an_old_one(
    store, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(ad.AnnData, "write_h5ad", _disk_full_after_part)
    target = tmp_path / "graph.h5ad"
    assert main(["export", str(store), "--h5ad", str(target)]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and err.count("\n") == 1
    assert _names(tmp_path) == []  # no target, no .graph.h5ad.tmp-*
    target.write_bytes(b"the previous export")
    assert main(["export", str(store), "--h5ad", str(target)]) == 2
    assert _names(tmp_path) == ["graph.h5ad"]
    assert target.read_bytes() == b"the previous export"


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


def _failing_figure(monkeypatch):
    def fail(self, fig, stem):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.figures_dir / stem))

    monkeypatch.setattr(sections.ReportContext, "figure", fail)


def test_report_failing_part_way_leaves_no_folder(store, tmp_path, monkeypatch, capsys):
    _failing_figure(monkeypatch)
    out = tmp_path / "rep"
    assert main(["report", str(store), "--out", str(out)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert _names(tmp_path) == []


def test_report_failing_part_way_keeps_the_previous_report(store, tmp_path, monkeypatch):
    out = tmp_path / "rep"
    assert main(["report", str(store), "--out", str(out)]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert Path("report.html") in before and any(p.parts[0] == "figures" for p in before)
    _failing_figure(monkeypatch)
    assert main(["report", str(store), "--out", str(out)]) == 2
    assert _names(tmp_path) == ["rep"]
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    page = (out / "report.html").read_text(encoding="utf-8")
    assert f"--out {out} " in page and ".tmp-" not in page  # the final path, not the temporary


def test_report_refuses_a_folder_of_other_files(store, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["report", str(store), "--out", str(tmp_path)]) == 2
    assert "holds other files and no report.html" in capsys.readouterr().err
    assert _names(tmp_path) == ["notes.txt"]


#: Runs ``rankdist ingest`` whose reading blocks, once its temporary store exists, until
#: the file ``go`` appears (it never does): the test sends SIGTERM at that point.
BLOCKING_INGEST = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from rankdist.io.source import Source
    from rankdist.cli import main

    work = Path(sys.argv[1])
    original = Source.iter_chunks

    def blocking(self, *args, **kwargs):
        if list(work.glob(".s.zarr.tmp-*")):
            (work / "ready").touch()
            deadline = time.monotonic() + 120
            while not (work / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        yield from original(self, *args, **kwargs)

    Source.iter_chunks = blocking
    sys.exit(main(["ingest", str(work / "cells.h5ad"), str(work / "s.zarr"), "--quiet"]))
    """
)


def test_sigterm_during_ingest_exits_143_and_leaves_nothing(tmp_path):
    synthetic_counts(n_cells=300, n_genes=100, seed=2).write_h5ad(tmp_path / "cells.h5ad")
    proc = subprocess.Popen(
        [sys.executable, "-c", BLOCKING_INGEST, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "ready").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "ingest never reached its temporary store"
        time.sleep(0.05)
    assert list(tmp_path.glob(".s.zarr.tmp-*"))  # the kill point: mid-write
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == [
        "rankdist ingest: terminated (SIGTERM); its unfinished outputs were removed"
    ]
    assert _names(tmp_path) == ["cells.h5ad", "ready"]
