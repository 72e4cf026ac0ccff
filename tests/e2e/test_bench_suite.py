"""The benchmark suite runs end to end at a tiny size and reports sane numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _bench import bench_module


@pytest.fixture(scope="module")
def bench_suite():
    with bench_module("bench_suite") as module:
        yield module


@pytest.fixture(scope="module")
def suite_run(bench_suite, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    rows = bench_suite.run_suite(
        cells=[600],
        genes=200,
        k=5,
        max_seconds=600,
        workdir=tmp_path_factory.mktemp("work"),
        results_dir=out,
        matmul_seconds=0.5,
        echo=lambda s: None,
    )
    return rows, out


def test_every_method_has_a_row_with_sane_numbers(bench_suite, suite_run):
    rows, _ = suite_run
    assert [r["method"] for r in rows] == list(bench_suite.METHODS)
    for r in rows:
        assert r["skipped"] is None, r
        assert r["wall_s"] > 0 and r["peak_rss_mb"] > 0 and r["start_rss_mb"] > 0
        assert 0 <= r["recall"] <= 1 and 0 <= r["set_overlap"] <= 1
    by = {r["method"]: r for r in rows}
    assert by["rankdist"]["recall"] == 1
    assert by["faiss"]["recall"] == 1  # exact search: only ties may pick other cells
    assert by["faiss"]["max_abs_sim_diff"] < 1e-5
    assert by["sklearn"]["recall"] == 1  # float64 brute force, exact
    assert by["rankdist"]["gflops"] > 0
    # the rankdist figure counts its Dask worker processes, so it exceeds this process alone
    assert by["rankdist"]["peak_rss_mb"] > by["rankdist"]["start_rss_mb"]


def test_results_are_written(suite_run):
    rows, out = suite_run
    lines = [json.loads(line) for line in (out / "suite.jsonl").read_text().splitlines()]
    assert [r["method"] for r in lines] == [r["method"] for r in rows]
    assert all(r["cells"] == 600 and r["k"] == 5 for r in lines)
    md = (out / "suite.md").read_text()
    for r in rows:
        assert r["label"] in md
    for package in ("numpy", "faiss-cpu", "scikit-learn", "scanpy", "pynndescent"):
        assert package in md


def test_recall_counts_ties_and_misses(bench_suite):
    # cells 0 and 1 are identical, so for cell 2 they tie; cell 3 is far from everyone
    z = np.array([[1, 0, 0], [1, 0, 0], [0.9, 0.1, 0], [0, 0, 1]], dtype=np.float32)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    kth = np.sort(sim, axis=1)[:, -1]  # k = 1
    exact = np.argmax(sim, axis=1)[:, None]
    assert bench_suite.recall_at_k(z, exact, kth) == 1
    tie = exact.copy()
    tie[2] = 1 - exact[2]  # the other of the two identical cells: still a best neighbour
    assert bench_suite.recall_at_k(z, tie, kth) == 1
    assert bench_suite.set_overlap(tie, exact) == 0.75
    wrong = exact.copy()
    wrong[0] = 3
    assert bench_suite.recall_at_k(z, wrong, kth) == 0.75
    selfish = exact.copy()
    selfish[1] = 1  # a cell is not its own neighbour
    assert bench_suite.recall_at_k(z, selfish, kth) == 0.75


def test_sklearn_is_skipped_over_the_budget(bench_suite, suite_run):
    rows, _ = suite_run
    z = np.random.default_rng(0).standard_normal((300, 50), dtype=np.float32)
    row, found = bench_suite.sklearn_row(z, 5, max_seconds=0, echo=lambda s: None)
    assert found is None
    assert row["method"] == "sklearn" and row["skipped"].startswith("est. ") and row["est_s"] > 0
    table = bench_suite.format_section(
        [{**r, **row} if r["method"] == "sklearn" else r for r in rows], markdown=False
    )
    assert "skipped: est." in table
    row, found = bench_suite.sklearn_row(z, 5, max_seconds=600, echo=lambda s: None)
    assert row["skipped"] is None and found.shape == (300, 5)


def test_unknown_method_is_refused(bench_suite):
    with pytest.raises(ValueError, match="annoy"):
        bench_suite.run_suite(cells=[600], methods=["rankdist", "annoy"], results_dir=None)
