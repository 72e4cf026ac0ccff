"""A missing or damaged chunk of any stored array: every command that reads it exits 2 with
one line naming the array and the chunk, and writes nothing that reads as valid.

Before store format 2 a missing chunk read as zeros (zarr's fill value) and these commands
exited 0 with wrong numbers; a damaged one gave blosc's traceback.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import rankdist
from rankdist.cli import main
from rankdist.datasets.toy import synthetic_counts
from rankdist.io.verified import ChunkError
from rankdist.reduce import lock as runlock
from rankdist.reduce.runstore import work_path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A small store: cell types, a dense spearman run 'r' (with the type histogram) and
    a sparse one 'rs', both encodings cached."""
    base = tmp_path_factory.mktemp("chunks")
    adata = synthetic_counts(n_cells=600, n_genes=200, seed=5)
    st = rankdist.ingest(adata, base / "cells.zarr", cell_type="cell_type", progress=False)
    for name, form in (("r", "dense"), ("rs", "sparse")):
        rankdist.neighbors(
            st, "spearman", k=5, cutoffs=(0.5,), name=name, form=form, type_hist=True,
            progress=False,
        )  # fmt: skip
    return st.path


@pytest.fixture
def store(pristine, tmp_path) -> Path:
    """A fresh copy of the pristine store, to damage."""
    return Path(shutil.copytree(pristine, tmp_path / "cells.zarr"))


def _encoding(store: Path, sparse: bool = False) -> str:
    names = sorted(p.name for p in (store / "encodings").glob("spearman-*"))
    return next(n for n in names if n.endswith("-sparse") == sparse)


def _chunk(store: Path, array: str) -> tuple[Path, str]:
    """The first chunk file of ``array`` and its index as the error prints it."""
    if array.endswith("/sparse"):
        return store / array / "0.npz", "(0)"
    files = sorted(p for p in (store / array / "c").rglob("*") if p.is_file())
    index = files[0].relative_to(store / array / "c").parts
    return files[0], "(" + ", ".join(index) + ")"


def _damage(path: Path, how: str) -> None:
    if how == "missing":
        path.unlink()
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x55
        path.write_bytes(bytes(data))


def _run_fails(argv: list[str], array: str, index: str, capsys) -> str:
    """Run the command: exit 2, one error line naming the array and chunk; that line."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    # other lines: Dask's own warnings (a dashboard port in use on a shared machine)
    errors = [line for line in lines if line.startswith(f"rankdist {argv[0]}: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    assert f"array {array}, chunk {index}" in errors[0], errors[0]
    return errors[0]


NEIGHBORS = ["--name", "new", "--k", "5", "--quiet"]

#: array (``{dense}``/``{sparse}``: the cached encodings) -> the neighbors options that read it
READ_BY_NEIGHBORS = {
    "X": ["--encoding", "pearson"],  # not cached: encoding reads X
    "obs/cell_type": [],
    "encodings/{dense}/Z": ["--form", "dense"],
    "encodings/{dense}/valid": ["--form", "dense"],
    "encodings/{sparse}/sparse": ["--form", "sparse"],
}


@pytest.mark.parametrize("how", ["missing", "damaged"])
@pytest.mark.parametrize("array", list(READ_BY_NEIGHBORS))
def test_neighbors_stops_on_a_bad_chunk_and_writes_no_run(store, array, how, capsys):
    options = READ_BY_NEIGHBORS[array]
    array = array.format(dense=_encoding(store), sparse=_encoding(store, sparse=True))
    path, index = _chunk(store, array)
    _damage(path, how)
    err = _run_fails(["neighbors", str(store), *NEIGHBORS, *options], array, index, capsys)
    assert ("ingest" in err) if array in ("X", "obs/cell_type") else ("--repair" in err)
    assert rankdist.list_runs(store) == ["r", "rs"]
    assert not (store / "results" / "new").exists()


def test_a_bad_z_chunk_read_by_worker_processes_reaches_the_user_unchanged(store, capsys):
    array = f"encodings/{_encoding(store)}/Z"
    path, index = _chunk(store, array)
    _damage(path, "damaged")
    argv = ["neighbors", str(store), *NEIGHBORS, "--form", "dense", "--workers", "2"]
    _run_fails(argv, array, index, capsys)
    assert rankdist.list_runs(store) == ["r", "rs"]


#: arrays read when a run is loaded (export, info, report)
READ_BY_LOAD = [
    "obs/cell_type",
    "results/r/indices",
    "results/r/similarities",
    "results/r/excluded",
    "results/r/pair_hist",
]


@pytest.mark.parametrize("how", ["missing", "damaged"])
@pytest.mark.parametrize("array", READ_BY_LOAD)
def test_export_info_and_report_stop_on_a_bad_chunk_and_write_nothing(
    store, array, how, tmp_path, capsys
):
    path, index = _chunk(store, array)
    _damage(path, how)
    out = tmp_path / "out"
    out.mkdir()
    h5ad = out / "graph.h5ad"
    argv = ["export", str(store), "--h5ad", str(h5ad), "--run", "r"]
    err = _run_fails(argv, array, index, capsys)
    if array.startswith("results/"):
        assert f"rankdist neighbors {store} --name r --encoding spearman --k 5" in err
    _run_fails(["info", str(store)], array, index, capsys)
    report = out / "report"
    _run_fails(["report", str(store), "--out", str(report), "--runs", "r"], array, index, capsys)
    assert sorted(p.name for p in out.iterdir()) == []  # no file, folder or temporary


#: arrays a loaded run reads only when used: the report reads the relations
READ_BY_REPORT = ["results/r/relations/total", "results/r/relations/same_cell_type"]


@pytest.mark.parametrize("how", ["missing", "damaged"])
@pytest.mark.parametrize("array", READ_BY_REPORT)
def test_report_stops_on_a_bad_relations_chunk_and_writes_nothing(
    store, array, how, tmp_path, capsys
):
    path, index = _chunk(store, array)
    _damage(path, how)
    report = tmp_path / "report"
    _run_fails(["report", str(store), "--out", str(report), "--runs", "r"], array, index, capsys)
    assert not report.exists() and list(tmp_path.iterdir()) == [tmp_path / "cells.zarr"]


@pytest.mark.parametrize("how", ["missing", "damaged"])
def test_counts_read_lazily_stop_on_a_bad_chunk(store, how):
    """The per-value counts are read only when asked for (no command reads them whole);
    reading a bad chunk then is the same named error, never zeros."""
    array = "results/r/counts/cell_type"
    path, index = _chunk(store, array)
    _damage(path, how)
    res = rankdist.load(store, "r")
    with pytest.raises(ChunkError, match=rf"array {array}, chunk \({index[1:-1]}\)"):
        res.counts["cell_type"].to_numpy()


# --- rankdist verify -----------------------------------------------------------------------


def test_verify_an_intact_store(store, capsys):
    assert main(["verify", str(store)]) == 0
    out = capsys.readouterr().out
    for array in ("X", "obs/cell_type", "obs/names", "var/names", "results/r/indices"):
        assert any(
            line.split()[:1] == [array] and line.endswith("intact") for line in out.splitlines()
        ), (array, out)
    assert f"encodings/{_encoding(store, sparse=True)}/sparse" in out
    assert out.rstrip().endswith(f"{store}: intact")
    report = rankdist.verify(store)
    assert report.intact and all(a.state == "intact" for a in report.arrays)


@pytest.mark.parametrize("how", ["missing", "damaged"])
def test_verify_names_each_bad_chunk_and_exits_1(store, how, capsys):
    for array in ("X", "results/r/similarities", f"encodings/{_encoding(store)}/Z"):
        _damage(_chunk(store, array)[0], how)
    assert main(["verify", str(store)]) == 1
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line}
    for array in ("X", "results/r/similarities", f"encodings/{_encoding(store)}/Z"):
        assert rows[array].endswith(f"{how} 1"), rows[array]
    assert rows["results/r/indices"].endswith("intact")
    assert f"rankdist ingest SOURCE {store} --overwrite" in out  # ingested from an AnnData
    assert f"rankdist neighbors {store} --name r " in out
    assert f"rankdist verify {store} --repair" in out
    assert out.rstrip().endswith(f"{store}: DAMAGED")


def test_verify_one_run(store, capsys):
    _damage(_chunk(store, "X")[0], "missing")
    assert main(["verify", str(store), "--run", "r"]) == 0  # X is not the run's
    out = capsys.readouterr().out
    assert "results/r/indices" in out and "results/rs/" not in out and "\nX " not in out
    _damage(_chunk(store, "results/r/counts/cell_type")[0], "damaged")
    assert main(["verify", str(store), "--run", "r"]) == 1
    assert main(["verify", str(store), "--run", "nope"]) == 2
    assert "no run 'nope'" in capsys.readouterr().err


def test_repair_removes_a_damaged_encoding_and_debris_but_keeps_x_and_finished_runs(store, capsys):
    dense = _encoding(store)
    _damage(_chunk(store, f"encodings/{dense}/Z")[0], "damaged")
    _damage(_chunk(store, "results/r/indices")[0], "missing")
    dead = 2**22 + 12345  # above any pid this machine hands out
    import socket

    host = socket.gethostname()
    debris = [
        store.parent / f".{store.name}.tmp-{host}-{dead}-0123abcd",  # a killed ingest
        store / "results" / f".r.tmp-{host}-{dead}-89abcdef",
        store / "results" / ".r.old-0badc0de",
        work_path(store, "killed"),  # a killed run's work directory, its lock stale
    ]
    for path in debris:
        path.mkdir(parents=True)
    (store / "results" / ".killed.lock").write_text(
        f'{{"host": "{host}", "pid": {dead}, "since": "then"}}'
    )
    live = work_path(store, "running")  # a run a live process is writing: kept
    live.mkdir()
    with runlock.hold(store, "running"):
        assert main(["verify", str(store), "--repair"]) == 1  # results/r stays damaged
    out = capsys.readouterr().out
    for path in debris:
        assert not path.exists(), path
        assert f"removed {path}" in out
    assert not (store / "encodings" / dense).exists()
    assert f"removed {store / 'encodings' / dense}" in out
    assert live.exists() and (store / "X").exists()
    assert (store / "results" / "r" / "similarities").exists()  # a finished run is kept
    assert f"rankdist neighbors {store} --name r " in out
    # rerunning the damaged run as told makes the store intact again
    argv = ["neighbors", str(store), "--name", "r", "--k", "5", "--cutoffs", "0.5",
            "--type-hist", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    shutil.rmtree(live)
    assert main(["verify", str(store)]) == 0


def test_verify_reports_a_store_of_format_1_as_without_checksums(tmp_path, capsys):
    import zarr

    old = zarr.open_group(tmp_path / "old.zarr", mode="w")  # as rankdist wrote format 1
    old.attrs["rankdist"] = {"format": 1, "provenance": {"source": "/d/a.h5ad"}}
    old.create_array("X", shape=(4, 2), dtype="float32", chunks=(4, 2))
    assert main(["verify", str(tmp_path / "old.zarr")]) == 1
    out = capsys.readouterr().out
    assert any(line.startswith("X ") and line.endswith("no checksums") for line in out.splitlines())
    assert f"rankdist ingest /d/a.h5ad {tmp_path / 'old.zarr'} --overwrite" in out
