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
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import zarr
from distributed import Client

import rankdist
from rankdist.cli import main
from rankdist.datasets.toy import synthetic_counts
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


# --- a Dask scheduler unreachable or lost ---------------------------------------------------

#: Worker preload: tile (0, 1) touches $RANKDIST_TEST_READY and never returns, so the test
#: kills the scheduler while the run is in its tiles, at a point it knows.
PAUSE_TILE = """
import os
import threading
from pathlib import Path

import rankdist.tiles.scheduler as scheduler

_real = scheduler.tile_task


def tile_task(job, i, j):
    if (i, j) == (0, 1):
        Path(os.environ["RANKDIST_TEST_READY"]).touch()
        threading.Event().wait()
    return _real(job, i, j)


scheduler.tile_task = tile_task
"""


def _wait_for(path: Path, *procs: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        for proc in procs:
            assert proc.poll() is None, f"{proc.args} exited early: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _dask(command: str, *args: str) -> list[str]:
    """``dask scheduler ...`` / ``dask worker ...`` of this Python, without a dashboard."""
    return [sys.executable, "-m", f"distributed.cli.dask_{command}", *args, "--no-dashboard"]


@contextlib.contextmanager
def _started(argv: list, **kwargs):
    proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_a_scheduler_lost_mid_run_is_one_line_naming_it(tmp_path):
    store = rankdist.ingest(
        synthetic_counts(n_cells=1100, n_genes=60, seed=3), tmp_path / "s.zarr", progress=False
    )
    (tmp_path / "pause_tile.py").write_text(PAUSE_TILE)
    file, ready = tmp_path / "scheduler.json", tmp_path / "tile-0-1.started"
    env = dict(os.environ, RANKDIST_TEST_READY=str(ready))
    serve = ["--scheduler-file", str(file), "--host", "127.0.0.1", "--port", "0"]
    work = ["--scheduler-file", str(file), "--nthreads", "2"]
    with (
        _started(_dask("scheduler", *serve), stderr=subprocess.DEVNULL) as scheduler,
        _started(
            _dask("worker", *work, "--preload", str(tmp_path / "pause_tile.py")),
            stderr=subprocess.DEVNULL,
            env=env,
        ) as worker,
    ):
        _wait_for(file, scheduler, worker)
        with Client(scheduler_file=str(file), timeout="60s") as probe:
            address = probe.scheduler.address
            probe.wait_for_workers(1, timeout=120)
        argv = ["neighbors", store.path, "--k", "5", "--cluster", address, "--name", "lost"]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        with _started([str(EXE), *map(str, argv), "--quiet"], **pipes) as cli:
            _wait_for(ready, cli)
            os.killpg(scheduler.pid, signal.SIGKILL)  # the scheduler dies mid-run
            out, err = cli.communicate(timeout=120)
    assert cli.returncode == 2, err
    assert err.splitlines() == [
        f"rankdist neighbors: error: lost the Dask scheduler at {address} while the work ran "
        "(it stopped or became unreachable); check that it runs (restart it and its workers if "
        "not), then rerun the same command: a neighbors run resumes from the tiles it finished"
    ]
    assert out == ""
    assert rankdist.list_runs(store) == [] and not runlock.lock_path(store.path, "lost").exists()


@pytest.mark.slow
def test_a_scheduler_unreachable_at_start_is_one_line_naming_it(store, capsys):
    with socket_bound() as port:  # a port nothing will answer on
        address = f"tcp://127.0.0.1:{port}"
        code = main(["neighbors", str(store.path), "--k", "3", "--cluster", address, "--quiet"])
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    expected = f"rankdist neighbors: error: could not reach the Dask scheduler at {address} ("
    assert line.startswith(expected)
    assert line.endswith("is it running?")


@contextlib.contextmanager
def socket_bound():
    """A port on 127.0.0.1 that is bound but never listened on: connections are refused."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
