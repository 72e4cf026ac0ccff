"""benchmarks/bench_end_to_end.py runs every user step at a tiny size, and records them."""

from __future__ import annotations

import json

import anndata as ad
import pytest
from _bench import bench_module

STEPS = ["synth", "neighbors spearman", "neighbors pearson", "report", "export"]


@pytest.fixture(scope="module")
def bench_end_to_end():
    with bench_module("bench_end_to_end") as module:
        yield module


def test_small_run_records_every_step(bench_end_to_end, tmp_path, capsys):
    out, work = tmp_path / "rows.json", tmp_path / "w"
    argv = ["--cells", "3000", "--genes", "60", "--cutoffs", "0.5", "--k", "10"]
    argv += ["--workdir", str(work), "--results", str(tmp_path / "results")]
    bench_end_to_end.main([*argv, "--json", str(out)])
    rows = json.loads(out.read_text())
    assert [r["step"] for r in rows] == STEPS
    for r in rows:
        assert r["status"] == "ok", r
        assert r["seconds"] > 0 and 0.05 < r["peak_rss_gb"] < 6, r
        assert r["cells"] == 3000 and r["genes"] == 60 and r["cutoffs"] == [0.5]
    # what each neighbors run recorded of itself comes with its row
    runs = [r["run"] for r in rows if r["step"].startswith("neighbors")]
    assert all(run["n_tiles"] >= 1 and run["kernel"] in ("float32", "screen") for run in runs)
    # the steps' products are the user's: a report page and an AnnData of every cell
    assert (work / "out" / "report" / "report.html").is_file()
    adata = ad.read_h5ad(work / "out" / "spearman.h5ad", backed="r")
    assert adata.n_obs == 3000 and "distances" in adata.obsp
    lines = (tmp_path / "results" / "end_to_end.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == STEPS
    assert "| export |" in capsys.readouterr().out


def test_a_failing_step_stops_the_run_and_is_recorded(bench_end_to_end, tmp_path):
    out = tmp_path / "rows.json"
    argv = ["--cells", "3000", "--genes", "60", "--k", "5000", "--workdir", str(tmp_path / "w")]
    argv += ["--results", str(tmp_path / "results")]
    bench_end_to_end.main([*argv, "--json", str(out)])
    rows = json.loads(out.read_text())
    assert [r["step"] for r in rows] == ["synth", "neighbors spearman"]
    assert rows[1]["status"].startswith("failed (exit 2)") and "k=5000" in rows[1]["status"]
