"""Findings: every value against the analyses, the bootstrap against a hand-written loop."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import rankdist
from rankdist.analysis import (
    batch_mixing,
    batch_summary,
    compare_encodings,
    findings,
    findings_table,
    purity,
    reading,
    run_statistics,
)
from rankdist.analysis.readings import COLUMNS

from _data import ingest_tricky, tricky_adata

K = 8
R = 40


@pytest.fixture(scope="module")
def runs(tmp_path_factory, client):
    """Spearman and Pearson runs on 300 tricky cells (two excluded), 3 batches, 2 classes."""
    store = ingest_tricky(tricky_adata(n_cells=300), tmp_path_factory.mktemp("findings") / "t.zarr")
    with pytest.warns(rankdist.ExcludedCellsWarning):
        return {
            enc: rankdist.neighbors(
                store, enc, k=K, cutoffs=(0.3, 0.5), client=client, progress=False
            )
            for enc in ("spearman", "pearson")
        }


def _value(st, metric, scope="top-k"):
    return st.value[st.keys.index((metric, scope))]


def test_values_equal_the_analyses(runs):
    res = runs["spearman"]
    st = run_statistics(res, resamples=0)
    pur = purity(res).sel(cell_type="all")
    for scope in pur["scope"].to_numpy():
        assert _value(st, "same_type", scope) == pytest.approx(pur["same_type"].sel(scope=scope))
        want = pur["similar_type"].sel(scope=scope)
        assert _value(st, "similar_type", scope) == pytest.approx(want)
        want = pur["different_coarse"].sel(scope=scope)
        assert _value(st, "other_class", scope) == pytest.approx(want)
    summary = batch_summary(res).sel(cell_type="all")
    for metric in ("same_batch", "expected_same_batch", "excess_same_batch", "ilisi"):
        assert _value(st, metric) == pytest.approx(summary[metric].item(), rel=1e-12)
    driven = compare_encodings(res, runs["pearson"])["batch_driven_a"].sel(cell_type="all")
    assert _value(st, "batch_driven") == pytest.approx(driven.item(), rel=1e-12)
    kbet = batch_mixing(res)["kbet_acceptance"].item()
    assert _value(st, "kbet_acceptance") == pytest.approx(kbet, rel=1e-12)
    valid = int((~res.excluded).sum())
    assert st.cells[st.keys.index(("same_type", "top-k"))] == valid
    assert st.over == "batches" and st.n_units == 3


def _per_cell_same_type(res):
    """By hand: per cell, same-type neighbours and k (0 and 0 for excluded cells)."""
    t = res.labels["cell_type"].codes
    num = np.zeros(res.n_cells)
    den = np.zeros(res.n_cells)
    for i in range(res.n_cells):
        if not res.excluded[i]:
            num[i] = sum(t[j] == t[i] for j in res.indices[i])
            den[i] = res.k
    return num, den


def _hand_bootstrap(num, den, units, seed, resamples):
    """The cluster bootstrap as a plain loop: draw units, pool their cells' sums."""
    rng = np.random.default_rng(seed)
    names = np.unique(units)
    out = []
    for _ in range(resamples):
        drawn = rng.integers(0, len(names), len(names))
        n = sum(num[units == names[u]].sum() for u in drawn)
        d = sum(den[units == names[u]].sum() for u in drawn)
        out.append(n / d)
    return np.array(out)


def test_batch_bootstrap_against_a_loop(runs):
    res = runs["spearman"]
    st = run_statistics(res, resamples=R, seed=7)
    num, den = _per_cell_same_type(res)
    want = _hand_bootstrap(num, den, res.labels["batch"].codes, 7, R)
    got = st.replicates[:, st.keys.index(("same_type", "top-k"))]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    table = findings_table([st])
    row = table[(table["metric"] == "same_type") & (table["scope"] == "top-k")].iloc[0]
    assert row["ci_low"] == pytest.approx(np.quantile(want, 0.025), rel=1e-12)
    assert row["ci_high"] == pytest.approx(np.quantile(want, 0.975), rel=1e-12)
    assert (row["resampled_over"], row["units"], row["resamples"]) == ("batches", 3, R)


def test_cell_bootstrap_without_batches(runs):
    res = runs["spearman"]
    labels = {k: v for k, v in res.labels.items() if k != "batch"}
    st = run_statistics(dataclasses.replace(res, labels=labels), resamples=R, seed=3)
    assert st.over == "cells" and st.n_units == res.n_cells
    assert not any(m == "same_batch" for m, _ in st.keys)
    num, den = _per_cell_same_type(res)
    want = _hand_bootstrap(num, den, np.arange(res.n_cells), 3, R)
    got = st.replicates[:, st.keys.index(("same_type", "top-k"))]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_paired_differences_and_overlap(runs):
    table = findings(runs, resamples=R, seed=5)
    assert list(table.columns) == list(COLUMNS)
    sp = run_statistics(runs["spearman"], resamples=R, seed=5)
    pe = run_statistics(runs["pearson"], resamples=R, seed=5)
    j = sp.keys.index(("batch_driven", "top-k"))
    diff = sp.replicates[:, j] - pe.replicates[:, j]
    row = table[(table["statistic"] == "difference") & (table["metric"] == "batch_driven")]
    row = row.iloc[0]
    assert (row["run"], row["versus"]) == ("spearman", "pearson")
    assert row["value"] == pytest.approx(sp.value[j] - pe.value[j], rel=1e-12)
    assert row["ci_low"] == pytest.approx(np.quantile(diff, 0.025), rel=1e-12)
    assert row["ci_high"] == pytest.approx(np.quantile(diff, 0.975), rel=1e-12)
    overlap = table[table["metric"] == "overlap"].iloc[0]
    cmp = compare_encodings(runs["spearman"], runs["pearson"])
    assert overlap["value"] == pytest.approx(cmp["jaccard_mean"].sel(cell_type="all").item())
    assert (overlap["run"], overlap["versus"]) == ("spearman", "pearson")
    sentences = table.attrs["readings"]
    assert sentences[0].startswith("spearman keeps ") and "pearson" in sentences[0]
    assert any("mean Jaccard" in s for s in sentences)


def test_runs_that_cannot_be_paired_are_refused(runs):
    a = run_statistics(runs["spearman"], resamples=R, seed=1)
    b = run_statistics(runs["pearson"], resamples=R, seed=2)
    with pytest.raises(ValueError, match="cannot be paired"):
        findings_table([a, b])


@pytest.mark.parametrize(
    ("difference", "want"),
    [
        ((-0.034, -0.046, -0.021), ", 3.4 points [2.1, 4.6] fewer than pearson."),
        ((0.034, 0.021, 0.046), ", 3.4 points [2.1, 4.6] more than pearson."),
        (
            (-0.004, -0.012, 0.005),
            ", no clear difference from pearson (-0.4 points [-1.2, 0.5]: the interval holds 0).",
        ),
        (
            (0.004, -0.002, 0.011),
            ", no clear difference from pearson (+0.4 points [-0.2, 1.1]: the interval holds 0).",
        ),
        ((0.004, np.nan, np.nan), "; 0.4 points against pearson, with no interval."),
        (
            (-0.0004, -0.012, 0.005),
            ", no clear difference from pearson (0.0 points [-1.2, 0.5]: the interval holds 0).",
        ),
    ],
)
def test_wording_follows_the_sign_and_the_interval(difference, want):
    text = reading("same_type", "spearman", (0.812, 0.801, 0.823), "pearson", difference)
    head = "spearman keeps 81.2 % [80.1, 82.3] of its top-k neighbours in the same cell type"
    assert text == head + want


def test_wording_of_plain_numbers_and_no_comparison():
    text = reading("ilisi", "topn", (1.5, 1.4, 1.61), "pearson", (-0.2, -0.3, -0.1))
    want = "topn has a mean iLISI of 1.50 [1.40, 1.61], 0.20 [0.10, 0.30] lower than pearson."
    assert text == want
    text = reading("ilisi", "topn", (1.5, 1.4, 1.61), "pearson", (0.2, 0.1, 0.3))
    assert text.endswith("0.20 [0.10, 0.30] higher than pearson.")
    assert reading("batch_driven", "geneformer", (0.05, 0.04, 0.06)) == (
        "geneformer has 5.0 % [4.0, 6.0] batch-driven neighbours (same batch, other cell type)."
    )


def _by_hand(res, mixing):
    """Every metric's per-cell numerator and denominator, by loops over cells and neighbours."""
    t = res.labels["cell_type"].codes
    c = res.labels["coarse_type"].codes
    bt = res.labels["batch"].codes
    n, k = res.n_cells, res.k
    cols = {}

    def col(metric, scope):
        return cols.setdefault((metric, scope), (np.zeros(n), np.zeros(n)))

    total = res.relations["total"].transpose("cell", "cutoff").to_numpy()
    same_t = res.relations["same_cell_type"].transpose("cell", "cutoff").to_numpy()
    same_c = res.relations["same_coarse_type"].transpose("cell", "cutoff").to_numpy()
    ms = {v: mixing[v].to_numpy() for v in ("same_batch", "expected_same_batch", "ilisi")}
    pvalue = mixing["kbet_pvalue"].to_numpy()
    for i in range(n):
        if res.excluded[i]:
            continue
        nb = res.indices[i]
        same = sum(t[j] == t[i] for j in nb)
        klass = sum(c[j] == c[i] for j in nb)
        for metric, value in (
            ("same_type", same),
            ("similar_type", klass - same),
            ("other_class", k - klass),
        ):
            num, den = col(metric, "top-k")
            num[i], den[i] = value / k, 1
        for s, cut in enumerate(res.cutoffs):
            if total[i, s] == 0:
                continue
            scope = f">={cut:g}"
            for metric, value in (
                ("same_type", same_t[i, s]),
                ("similar_type", same_c[i, s] - same_t[i, s]),
                ("other_class", total[i, s] - same_c[i, s]),
            ):
                num, den = col(metric, scope)
                num[i], den[i] = value, total[i, s]
        for metric, value in (
            ("same_batch", ms["same_batch"][i]),
            ("expected_same_batch", ms["expected_same_batch"][i]),
            ("excess_same_batch", ms["same_batch"][i] - ms["expected_same_batch"][i]),
            ("batch_driven", np.mean([bt[j] == bt[i] and t[j] != t[i] for j in nb])),
            ("ilisi", ms["ilisi"][i]),
            ("kbet_acceptance", float(pvalue[i] >= 0.05)),
        ):
            if np.isfinite(value):
                num, den = col(metric, "top-k")
                num[i], den[i] = value, 1
    return cols


def test_every_metric_and_its_resamples_against_loops(runs):
    res = runs["pearson"]
    mixing = batch_mixing(res)
    st = run_statistics(res, mixing=mixing, resamples=20, seed=11)
    cols = _by_hand(res, mixing)
    assert sorted(st.keys) == sorted(cols)
    units = res.labels["batch"].codes
    for key, (num, den) in cols.items():
        j = st.keys.index(key)
        assert st.value[j] == pytest.approx(num.sum() / den.sum(), rel=1e-12), key
        assert st.cells[j] == int((den > 0).sum()), key
        want = _hand_bootstrap(num, den, units, 11, 20)
        np.testing.assert_allclose(st.replicates[:, j], want, rtol=1e-12, err_msg=str(key))


def test_overlap_resamples_against_a_loop(runs):
    from rankdist.analysis.findings import neighbour_overlap, overlap_statistics

    a, b = runs["spearman"], runs["pearson"]
    jac = neighbour_overlap(a, b)
    want = compare_encodings(a, b)["jaccard"].to_numpy()
    np.testing.assert_array_equal(np.isnan(jac), np.isnan(want))
    np.testing.assert_allclose(jac[~np.isnan(jac)], want[~np.isnan(want)], rtol=1e-15)
    st = overlap_statistics(
        jac,
        a.labels["batch"].codes,
        run="spearman",
        encoding="spearman",
        versus="pearson",
        resamples=20,
        seed=4,
    )
    keep = np.isfinite(jac)
    num, den = np.where(keep, jac, 0.0), keep.astype(float)
    np.testing.assert_allclose(
        st.replicates[:, 0], _hand_bootstrap(num, den, a.labels["batch"].codes, 4, 20), rtol=1e-12
    )


def test_a_csv_hierarchy_counts_siblings_from_the_counts(runs, tmp_path):
    res = runs["spearman"]
    csv = tmp_path / "other.csv"  # grouped otherwise than the stored coarse labels
    csv.write_text("fine,coarse\nB,x\nNK,x\nT,y\nMono,y\n")
    st = run_statistics(res, hierarchy=csv, resamples=0)
    pur = purity(res, hierarchy=csv).sel(cell_type="all")
    stored = run_statistics(res, resamples=0)
    for scope in pur["scope"].to_numpy():
        want = pur["similar_type"].sel(scope=scope).item()
        assert _value(st, "similar_type", scope) == pytest.approx(want, rel=1e-12)
        assert _value(st, "similar_type", scope) != pytest.approx(
            _value(stored, "similar_type", scope)
        )
        want = pur["different_coarse"].sel(scope=scope).item()
        assert _value(st, "other_class", scope) == pytest.approx(want, rel=1e-12)
