"""The command line as a user runs it: the installed `rankdist` executable, end to end."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

import rankdist
from rankdist.cli import COMMANDS
from rankdist.datasets.toy import synthetic_counts

EXE = Path(sys.executable).with_name("rankdist")


def run(*args, cwd=None, check=True):
    env = dict(os.environ, COLUMNS="100")
    proc = subprocess.run(
        [str(EXE), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"rankdist {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def h5ad(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "cells.h5ad"
    synthetic_counts(n_cells=900, n_genes=300, seed=4).write_h5ad(path)
    return path


def test_ingest_neighbors_export_info(h5ad, tmp_path):
    store = tmp_path / "cells.zarr"
    out = run(
        "ingest",
        h5ad,
        store,
        "--cell-type",
        "cell_type",
        "--coarse-type",
        "coarse_type",
        "--batch",
        "batch",
        "--genes",
        "hvg:200",
        "--quiet",
    )
    assert "900 cells x 200 genes" in out.stdout
    out = run(
        "neighbors",
        store,
        "--k",
        "10",
        "--cutoffs",
        "0.45,0.5",
        "--workers",
        "1",
        "--block-size",
        "512",
        "--name",
        "rank",
    )
    assert "dashboard: http://127.0.0.1:" in out.stderr  # the link is printed at start
    assert "NeighborResult(900 cells, k=10" in out.stdout
    res = rankdist.load(store, "rank")
    assert res.metadata["n_tiles"] == 3 and res.cutoffs == (0.45, 0.5)
    # --insecure concerns worker processes (the in-process default has no network transport)
    out = run(
        "neighbors",
        store,
        "--encoding",
        "pearson",
        "--k",
        "10",
        "--quiet",
        "--insecure",
        "--workers",
        "2",
    )
    (warned,) = [line for line in out.stderr.splitlines() if "insecure" in line]
    assert warned.startswith("rankdist neighbors: warning: insecure: the LocalCluster listens in")
    assert rankdist.list_runs(rankdist.Store(store)) == ["pearson", "rank"]
    target = tmp_path / "knn.h5ad"
    out = run("export", store, "--h5ad", target, "--run", "rank", "--key-added", "rank")
    exported = ad.read_h5ad(target)
    assert exported.obsp["rank_distances"].shape == (900, 900)
    assert exported.uns["rank"]["params"]["n_neighbors"] == 11
    assert np.array_equal(exported.obsm["rankdist_indices"][:, 1:], res.indices)
    assert list(exported.obs["cell_type"].cat.categories) == ["A1", "A2", "B1", "B2", "C1", "C2"]
    out = run("info", store)
    assert "run rank:" in out.stdout and "run pearson:" in out.stdout and "sha256" in out.stdout


def test_export_needs_run_when_several(h5ad, tmp_path):
    store = tmp_path / "s.zarr"
    run("ingest", h5ad, store, "--cell-type", "cell_type", "--quiet")
    run("neighbors", store, "--k", "5", "--quiet", "--name", "a")
    run("neighbors", store, "--k", "5", "--quiet", "--name", "b")
    out = run("export", store, "--h5ad", tmp_path / "x.h5ad", check=False)
    assert out.returncode == 2 and "say which one with run=NAME" in out.stderr
    assert not (tmp_path / "x.h5ad").exists()


def test_demo_prints_purity_tables(tmp_path):
    out = run("demo", "--cells", "1200", "--out", tmp_path / "demo", cwd=tmp_path)
    text = out.stdout
    assert "spearman: share of relations with the same cell type" in text
    assert "pearson: share of relations with the same cell type" in text
    for name in ("A1", "B2", "C2", "all"):
        assert name in text
    res = rankdist.load(tmp_path / "demo" / "synthetic.zarr", "spearman")
    table = rankdist.purity_table(res)
    # the printed top-15 share for 'all' is the table's value
    line = next(row for row in text.splitlines() if "│ all" in row)
    assert f"{table.loc['all', 'topk_same']:.2f}" in line


def test_plan_reads_the_sessions_config_home_not_the_developers(config_home):
    # tests/conftest.py sets XDG_CONFIG_HOME for every test, subprocesses included
    from rankdist.planning.calibration import load_calibration, packaged_calibration_path

    assert os.environ["XDG_CONFIG_HOME"] == str(config_home)
    assert not (config_home / "rankdist").exists()  # no test left a calibration there
    user = config_home / "rankdist" / "calibration.json"
    packaged = load_calibration(packaged_calibration_path())
    mine = dataclasses.replace(packaged, measured={"date": "then", "host": "session", "cores": 3})
    mine.save(user)
    try:
        out = run("plan", "--cells", "20k", "--genes", "2000", "--cluster", "local")
    finally:
        user.unlink()
        user.parent.rmdir()
    assert "calibration  then on session (3 cores)" in out.stdout


def test_help_lists_commands():
    out = run("--help")
    for cmd in COMMANDS:
        assert cmd in out.stdout


def test_neighbors_encoding_params_and_type_hist(h5ad, tmp_path):
    store = tmp_path / "p.zarr"
    run("ingest", h5ad, store, "--cell-type", "cell_type", "--quiet")
    run(
        "neighbors",
        store,
        "--encoding",
        "topn",
        "--param",
        "n=50",
        "--k",
        "5",
        "--type-hist",
        "--quiet",
        "--name",
        "top50",
    )
    res = rankdist.load(store, "top50")
    assert res.metadata["encoding"] == "topn" and res.metadata["encoding_params"] == {"n": 50}
    pairs = res.pair_hist.sum("bin").to_numpy()  # symmetric: each type pair once above
    assert pairs[np.triu_indices(len(pairs))].sum() == 900 * 899 // 2
    out = run("neighbors", store, "--encoding", "topn", "--param", "m=5", check=False)
    assert out.returncode == 2 and "has no parameter(s) ['m']" in out.stderr
    out = run("neighbors", store, "--param", "top", check=False)
    assert out.returncode == 2 and "NAME=VALUE" in out.stderr


def test_neighbors_form_sparse_matches_dense(h5ad, tmp_path):
    store = tmp_path / "f.zarr"
    run("ingest", h5ad, store, "--quiet")
    out = run("neighbors", store, "--k", "5", "--form", "sparse", "--name", "sp", "--quiet")
    assert "sparse form" in out.stdout
    run("neighbors", store, "--k", "5", "--form", "dense", "--name", "de", "--quiet")
    sp, de = rankdist.load(store, "sp"), rankdist.load(store, "de")
    assert sp.metadata["form"] == "sparse" and de.metadata["form"] == "dense"
    np.testing.assert_allclose(sp.similarities, de.similarities, atol=1e-5)
    out = run("neighbors", store, "--form", "csr", check=False)
    assert out.returncode == 2 and "invalid choice: 'csr'" in out.stderr


def test_a_bad_security_file_is_one_line(tmp_path):
    file = tmp_path / "dask-tls.yaml"
    file.write_text("distributed: {comm: {tls: {ca-file: ca.pem}}}\n")
    # refused before anything connects: nothing listens at this address
    proc = run("doctor", "--cluster", "tls://127.0.0.1:9", "--security", file, check=False)
    assert proc.returncode == 2
    assert proc.stderr == (
        f"rankdist doctor: error: --security file {file} has no "
        "distributed.comm.tls.client.cert; write distributed: {comm: {tls: {ca-file: ca.pem, "
        "client: {cert: client.pem, key: client.key}}}}\n"
    )


@pytest.fixture
def dashboard_port_taken():
    """Port 8787 on 127.0.0.1 (the dashboard's default) held by someone else."""
    import contextlib
    import socket

    with socket.socket() as sock:
        with contextlib.suppress(OSError):  # already taken: just as good
            sock.bind(("127.0.0.1", 8787))
            sock.listen()
        yield


def test_quiet_silences_dasks_port_warning(h5ad, tmp_path, dashboard_port_taken):
    store = tmp_path / "q.zarr"
    run("ingest", h5ad, store, "--quiet")
    quiet = run("neighbors", store, "--k", "5", "--quiet", "--name", "quiet")
    assert quiet.stderr == ""
    lines = quiet.stdout.splitlines()
    assert lines[0].startswith("NeighborResult(900 cells, k=5") and len(lines) == 2
    # without --quiet, Dask's warning is shown as before (another port is used)
    loud = run("neighbors", store, "--k", "5", "--name", "loud")
    assert "rankdist neighbors: warning: Port 8787 is already in use." in loud.stderr
    assert "Dask: 1 worker(s)" in loud.stderr
