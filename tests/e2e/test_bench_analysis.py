"""benchmarks/bench_analysis.py runs end to end at a tiny size: rows, JSON list, JSON lines."""

from __future__ import annotations

import json

import pytest
from _bench import bench_module


@pytest.fixture(scope="module")
def bench_analysis():
    with bench_module("bench_analysis") as module:
        yield module


def test_small_run_writes_every_step(bench_analysis, tmp_path, capsys):
    out = tmp_path / "rows.json"
    argv = ["--cells", "3000", "--steps", "load,compare", "--workdir", str(tmp_path / "w")]
    argv += ["--results", str(tmp_path / "results")]  # not the repository's results/
    bench_analysis.main([*argv, "--json", str(out)])
    rows = json.loads(out.read_text())
    assert [r["step"] for r in rows] == ["fixture", "load", "compare"]
    for r in rows:
        assert r["status"] == "ok", r
        assert r["seconds"] > 0 and 0.05 < r["peak_rss_gb"] < 4, r
        assert r["cells"] == 3000 and r["k"] == 30
    lines = (tmp_path / "results" / "analysis.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == ["fixture", "load", "compare"]
    assert all("machine" in json.loads(line) for line in lines)
    assert "| compare |" in capsys.readouterr().out
    # the fixture is reused when asked and built with the same parameters
    bench_analysis.main([*argv, "--steps", "load", "--reuse", "--json", str(out)])
    assert len((tmp_path / "results" / "analysis.jsonl").read_text().splitlines()) == 5
    assert [r["status"] for r in json.loads(out.read_text())] == ["reused", "ok"]


def test_fixture_is_a_real_run_of_the_atlas_layout(bench_analysis, tmp_path):
    import numpy as np

    import rankdist

    store = bench_analysis.build_fixture(
        tmp_path / "s.zarr", 2000, k=10, cutoffs=[0.3, 0.5], genes=3, seed=1
    )
    assert rankdist.list_runs(store) == ["pearson", "spearman"]
    res = rankdist.load(store, "spearman")
    assert res.k == 10 and res.cutoffs == (0.3, 0.5) and not res.excluded.any()
    rows = np.arange(res.n_cells)[:, None]
    assert (res.indices != rows).all()
    assert all(len(set(r)) == 10 for r in res.indices[:200])
    assert sorted(store.labels) == ["batch", "cell_type", "coarse_type"]
    assert len(store.labels["cell_type"].categories) == 54
    assert len(store.labels["coarse_type"].categories) == 8
    assert res.pair_hist is not None
