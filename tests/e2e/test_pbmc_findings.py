"""Real data: `rankdist report` on pbmc68k_reduced opens with findings that a direct count confirms.

Every row of ``findings.csv`` for the spearman run (its values, its paired differences from
pearson and its overlap with pearson) is computed again here without rankdist's analysis
code: the top-k shares from ``res.indices`` and the labels, the cutoff shares from the
brute-force correlation matrix, iLISI and kBET from scib-metrics, and the intervals from
the hand-written bootstrap loop of tests/analysis/test_findings.py with the report's seed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from analysis.test_findings import _hand_bootstrap

import rankdist
from rankdist.cli import main
from rankdist.report import build_report

from _data import assert_matches_oracle, oracle_pearson_logcp, oracle_spearman

K = 15
#: No pair of cells lies within 2.5e-5 of these cutoffs (in either encoding), far more than
#: float32's error on a similarity (~1e-6), so the brute-force counts are exact. Lower
#: cutoffs (0.3, 0.4) have pairs within 1e-6 of them on this dataset.
CUTOFFS = (0.5, 0.55)
#: The report's defaults: 1,000 resamples drawn with seed 0, 95 % intervals.
RESAMPLES, SEED = 1000, 0
#: Resamples of the report over cells (no batch labels).
CELL_RESAMPLES = 200
#: bulk_labels -> coarse class: five T-cell types are siblings, and monocytes and
#: dendritic cells (myeloid); B, NK and CD34+ cells are classes of their own.
HIERARCHY = {
    "CD4+/CD25 T Reg": "T",
    "CD4+/CD45RA+/CD25- Naive T": "T",
    "CD4+/CD45RO+ Memory": "T",
    "CD8+ Cytotoxic T": "T",
    "CD8+/CD45RA+ Naive Cytotoxic": "T",
    "CD14+ Monocyte": "myeloid",
    "Dendritic": "myeloid",
    "CD19+ B": "B",
    "CD56+ NK": "NK",
    "CD34+": "progenitor",
}


@pytest.fixture(scope="module")
def pbmc(tmp_path_factory):
    """pbmc68k_reduced in memory and as an .h5ad, and the hierarchy CSV."""
    adata = sc.datasets.pbmc68k_reduced()
    tmp = tmp_path_factory.mktemp("pbmc-findings")
    adata.write_h5ad(tmp / "pbmc.h5ad")
    csv = tmp / "types.csv"
    csv.write_text("fine,coarse\n" + "".join(f"{f},{c}\n" for f, c in HIERARCHY.items()))
    return adata, tmp, csv


def _two_runs(pbmc, client, name: str, **labels) -> tuple[Path, dict]:
    _, tmp, _ = pbmc
    store = rankdist.ingest(
        tmp / "pbmc.h5ad",
        tmp / name,
        cell_type="bulk_labels",
        use_raw=True,
        progress=False,
        **labels,
    )
    runs = {
        enc: rankdist.neighbors(store, enc, k=K, cutoffs=CUTOFFS, client=client, progress=False)
        for enc in ("spearman", "pearson")
    }
    return tmp / name, runs


@pytest.fixture(scope="module")
def reported(pbmc, client):
    """Spearman and pearson runs with cell-cycle phase as the batch, through `rankdist report`."""
    adata, tmp, csv = pbmc
    store, runs = _two_runs(pbmc, client, "pbmc.zarr", batch="phase")
    out = tmp / "report"
    argv = ["report", str(store), "--out", str(out), "--hierarchy", str(csv)]
    assert main([*argv, "--baseline", "pearson"]) == 0
    return adata, runs, out, RESAMPLES


@pytest.fixture(scope="module")
def reported_by_cell(pbmc, client):
    """The same runs without batch labels: the bootstrap resamples the 700 cells.

    Three batches allow only 27 distinct resamples, so their percentiles hardly depend
    on the draws; 700 cells make every draw count. Fewer resamples keep the hand loop short.
    """
    adata, tmp, csv = pbmc
    store, runs = _two_runs(pbmc, client, "nobatch.zarr")
    out = tmp / "report-by-cell"
    build_report(store, out, hierarchy=csv, baseline="pearson", resamples=CELL_RESAMPLES, seed=SEED)
    return adata, runs, out, CELL_RESAMPLES


def test_the_report_opens_with_the_findings(reported):
    out = reported[2]
    html = (out / "report.html").read_text()
    sections = re.findall(r'<section id="([^"]+)"><h2>([^<]+)</h2>', html)
    assert sections[0] == ("findings", "Findings"), sections[:3]
    findings = html[: html.index("</section>")]
    assert "spearman keeps " in findings and "than pearson" in findings
    assert "1,000 bootstrap resamples of the 3 batches (a cluster bootstrap), seed 0" in findings
    assert "Differences are against <b>pearson</b>" in findings


def test_findings_csv_has_the_columns_the_issue_names(reported):
    table = pd.read_csv(reported[2] / "tables" / "findings.csv")
    for column in ("run", "encoding", "metric", "scope", "value", "ci_low", "ci_high", "n"):
        assert column in table.columns
    assert set(table["resampled_over"]) == {"batches"}
    assert set(table["units"]) == {3} and set(table["resamples"]) == {RESAMPLES}
    assert set(table["seed"]) == {SEED}
    assert set(table["run"]) == {"spearman", "pearson"}
    assert {"same_type", "similar_type", "other_class", "batch_driven", "ilisi"} <= set(
        table["metric"]
    )
    assert set(table["scope"]) == {"top-k", ">=0.5", ">=0.55"}


def _expression(adata) -> np.ndarray:
    x = adata.raw.X
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def _direct(res, rho, adata) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """Every metric's per-cell numerator and denominator, counted from the neighbours and ``rho``.

    Top-k: the labels of ``res.indices``. Cutoffs: every other cell with ``rho >= c`` in the
    brute-force matrix. iLISI and kBET: scib-metrics on the exported graph.
    """
    from scib_metrics import kbet, lisi_knn
    from scib_metrics.nearest_neighbors import NeighborsResults

    assert not res.excluded.any()
    t = adata.obs["bulk_labels"].astype(str).to_numpy()
    klass = np.array([HIERARCHY[x] for x in t])
    b = adata.obs["phase"].astype(str).to_numpy() if "batch" in res.labels else None
    nb, n, ones = res.indices, len(t), np.ones(len(t))
    k = np.full(n, float(K))
    same = (t[nb] == t[:, None]).sum(axis=1)
    in_class = (klass[nb] == klass[:, None]).sum(axis=1)
    cols = {
        ("same_type", "top-k"): (same, k),
        ("similar_type", "top-k"): (in_class - same, k),
        ("other_class", "top-k"): (K - in_class, k),
    }
    others = ~np.eye(n, dtype=bool)
    for c in CUTOFFS:
        # float32 similarities cannot move a pair across a cutoff none lies near
        assert np.abs(rho[others] - c).min() > 1e-5, c
        rel = (rho >= c) & others
        total = rel.sum(axis=1)
        same_c = (rel & (t[None, :] == t[:, None])).sum(axis=1)
        class_c = (rel & (klass[None, :] == klass[:, None])).sum(axis=1)
        scope = f">={c:g}"
        cols[("same_type", scope)] = (same_c, total)
        cols[("similar_type", scope)] = (class_c - same_c, total)
        cols[("other_class", scope)] = (total - class_c, total)
    if b is None:
        return cols

    same_batch = (b[nb] == b[:, None]).mean(axis=1)
    of_type = np.array([(t == t[i]).sum() - 1 for i in range(n)])
    in_batch = np.array([((t == t[i]) & (b == b[i])).sum() - 1 for i in range(n)])
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = in_batch / of_type  # NaN for a type of one cell
    has = np.isfinite(expected).astype(float)
    cols[("same_batch", "top-k")] = (same_batch, ones)
    cols[("expected_same_batch", "top-k")] = (np.nan_to_num(expected), has)
    cols[("excess_same_batch", "top-k")] = (np.nan_to_num(same_batch - expected), has)
    driven = (b[nb] == b[:, None]) & (t[nb] != t[:, None])
    cols[("batch_driven", "top-k")] = (driven.mean(axis=1), ones)

    graph = res.to_scib()  # self first, then the k neighbours
    shifted = graph.distances.copy()  # LISI is unchanged by a shift (tests/analysis/test_batch)
    shifted[:, 1:] -= shifted[:, 1:].min(axis=1, keepdims=True)
    ilisi = np.asarray(lisi_knn(NeighborsResults(indices=graph.indices, distances=shifted), b))
    cols[("ilisi", "top-k")] = (ilisi, ones)
    _, _, pvalues = kbet(graph, b)
    pvalues = np.asarray(pvalues)
    assert np.abs(pvalues - 0.05).min() > 1e-4  # no p-value within rounding of alpha
    cols[("kbet_acceptance", "top-k")] = ((pvalues >= 0.05).astype(float), ones)
    return cols


def _interval(replicates: np.ndarray) -> tuple[float, float]:
    return np.quantile(replicates, 0.025), np.quantile(replicates, 0.975)


@pytest.mark.parametrize("report", ["reported", "reported_by_cell"])
def test_every_number_of_the_spearman_run_against_a_direct_computation(report, request):
    adata, runs, out, resamples = request.getfixturevalue(report)
    x = _expression(adata)
    sp_res, pe_res = runs["spearman"], runs["pearson"]
    rho_sp = oracle_spearman(x)
    rho_pe = oracle_pearson_logcp(x, x.sum(axis=1))
    assert_matches_oracle(pe_res.indices, pe_res.similarities, pe_res.excluded, rho_pe, K)
    direct = {"spearman": _direct(sp_res, rho_sp, adata), "pearson": _direct(pe_res, rho_pe, adata)}
    if "batch" in sp_res.labels:
        batch = sp_res.labels["batch"]
        assert (np.asarray(batch.categories)[batch.codes] == adata.obs["phase"].astype(str)).all()
        units, over = batch.codes, "batches"  # the resampling units: the three phases
    else:
        units, over = np.arange(sp_res.n_cells), "cells"
    bootstrapped = {}

    def summary(run, key):
        if (run, key) not in bootstrapped:
            num, den = direct[run][key]
            reps = _hand_bootstrap(num, den, units, SEED, resamples)
            bootstrapped[run, key] = num.sum() / den.sum(), reps, int((den > 0).sum())
        return bootstrapped[run, key]

    # iLISI comes from scib-metrics' float32 calibration: agreement within its rounding
    def rel(metric):
        return 1e-5 if metric == "ilisi" else 1e-12

    pairs = zip(sp_res.indices, pe_res.indices, strict=True)
    shared = np.array([len(set(a) & set(b)) for a, b in pairs])
    jaccard = shared / (2 * K - shared)  # overlap of the two top-k sets
    direct["spearman"][("overlap", "top-k")] = (jaccard, np.ones(len(jaccard)))

    table = pd.read_csv(out / "tables" / "findings.csv")
    rows = table[table["run"] == "spearman"]
    assert set(rows["encoding"]) == {"spearman"} and set(rows["resampled_over"]) == {over}
    assert set(rows["units"]) == {len(np.unique(units))}
    assert set(rows["resamples"]) == {resamples} and set(rows["seed"]) == {SEED}
    values = rows[rows["statistic"] == "value"]
    want = set(direct["spearman"])  # the overlap with pearson too, with or without batches
    assert set(zip(values["metric"], values["scope"], strict=True)) == want
    checked = 0
    for r in rows.itertuples(index=False):
        key = (r.metric, r.scope)
        if r.statistic == "value":
            want_versus = "pearson" if r.metric == "overlap" else None
            assert (r.versus if isinstance(r.versus, str) else None) == want_versus, key
            value, reps, n = summary("spearman", key)
        else:
            assert (r.statistic, r.versus) == ("difference", "pearson")
            va, ra, na = summary("spearman", key)
            vb, rb, nb = summary("pearson", key)
            value, reps, n = va - vb, ra - rb, min(na, nb)
        low, high = _interval(reps)
        tol = {"rel": rel(r.metric), "abs": 1e-12}
        assert r.value == pytest.approx(value, **tol), (r.statistic, key)
        assert r.ci_low == pytest.approx(low, **tol), (r.statistic, key)
        assert r.ci_high == pytest.approx(high, **tol), (r.statistic, key)
        assert r.n == n, (r.statistic, key)
        checked += 1
    # every value (the overlap with pearson among them), and each but the overlap against pearson
    assert checked == len(rows) == 2 * len(want) - (("overlap", "top-k") in want)
