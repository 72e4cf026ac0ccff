"""compare_encodings and write_tables, against loops over cells."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import rankdist
from rankdist.analysis import (
    batch_mixing,
    batch_summary,
    compare_encodings,
    purity,
    write_tables,
)

from _data import ingest_tricky, tricky_adata

K = 8


@pytest.fixture(scope="module")
def runs(tmp_path_factory, client):
    """Spearman and Pearson runs on the same 300 tricky cells (two constant, excluded)."""
    store = ingest_tricky(tricky_adata(n_cells=300), tmp_path_factory.mktemp("compare") / "t.zarr")
    with pytest.warns(rankdist.ExcludedCellsWarning):
        a = rankdist.neighbors(
            store, "spearman", k=K, cutoffs=(0.5,), client=client, progress=False
        )
        b = rankdist.neighbors(store, "pearson", k=K, cutoffs=(0.5,), client=client, progress=False)
    return a, b


def exclude(res, cell):
    """The same result with one more cell excluded (as a run would mark it)."""
    excluded = res.excluded.copy()
    excluded[cell] = True
    indices, sims = res.indices.copy(), res.similarities.copy()
    indices[cell], sims[cell] = -1, np.nan
    return dataclasses.replace(res, indices=indices, similarities=sims, excluded=excluded)


def test_compare_by_brute_force(runs):
    a, b = runs
    b = exclude(b, 20)  # a cell valid in one run only
    ds = compare_encodings(a, b)
    assert ds.attrs["a"] == "spearman" and ds.attrs["b"] == "pearson"
    t = a.labels["cell_type"].codes
    bt = a.labels["batch"].codes
    jaccard = []
    for i in range(a.n_cells):
        if a.excluded[i] or b.excluded[i]:
            jaccard.append(np.nan)
            continue
        sa, sb = set(a.indices[i].tolist()), set(b.indices[i].tolist())
        jaccard.append(len(sa & sb) / len(sa | sb))
    np.testing.assert_allclose(ds["jaccard"].to_numpy(), jaccard, rtol=1e-12)
    assert np.isnan(ds["jaccard"].to_numpy()[[7, 8, 20]]).all()

    def driven(res, i):
        return np.mean([bt[j] == bt[i] and t[j] != t[i] for j in res.indices[i]])

    names = [*a.labels["cell_type"].categories, "all"]
    for g, name in enumerate(names):
        cells = [i for i in range(a.n_cells) if name == "all" or t[i] == g]
        row = ds.sel(cell_type=name)
        both = [i for i in cells if not (a.excluded[i] or b.excluded[i])]
        assert row["cells"].item() == len(both)
        assert row["jaccard_mean"].item() == pytest.approx(np.mean([jaccard[i] for i in both]))
        da = np.mean([driven(a, i) for i in cells if not a.excluded[i]])
        db = np.mean([driven(b, i) for i in cells if not b.excluded[i]])
        assert row["batch_driven_a"].item() == pytest.approx(da, rel=1e-12, abs=1e-15)
        assert row["batch_driven_b"].item() == pytest.approx(db, rel=1e-12, abs=1e-15)
        want = "equal" if da == db else ("spearman" if da > db else "pearson")
        assert row["more_batch_driven"].item() == want


def test_names_fall_back_to_runs_and_ties(runs):
    a, _ = runs
    twin = dataclasses.replace(a, metadata=a.metadata | {"name": "spearman-again"})
    ds = compare_encodings(a, twin)
    assert (ds.attrs["a"], ds.attrs["b"]) == ("spearman", "spearman-again")
    assert (ds["more_batch_driven"].to_numpy() == "equal").all()
    valid = ~a.excluded
    assert (ds["jaccard"].to_numpy()[valid] == 1).all()


def test_compare_refuses_other_cells_or_k(runs):
    a, b = runs
    fewer = dataclasses.replace(b, indices=b.indices[:, :5], similarities=b.similarities[:, :5])
    with pytest.raises(ValueError, match=r"differ in k \(8 vs 5\)"):
        compare_encodings(a, fewer)
    names = a.cell_names.astype(str).copy()
    names[0] = "other"
    with pytest.raises(ValueError, match="different cells"):
        compare_encodings(a, dataclasses.replace(b, cell_names=names))


def test_write_tables(runs, tmp_path):
    a, b = runs
    tables = {
        "purity": purity(a),
        "batch_cells": batch_mixing(a),
        "batch_types": batch_summary(a),
        "compare": compare_encodings(a, b),
    }
    paths = write_tables(tables, tmp_path / "tables")
    assert paths == [tmp_path / "tables" / f"{key}.csv" for key in tables]
    pur = pd.read_csv(paths[0], keep_default_na=False, na_values=[""])
    want = tables["purity"].to_dataframe().reset_index()
    assert list(pur.columns) == list(want.columns)
    assert len(pur) == 5 * 2 and pur["scope"].tolist()[:2] == ["top-k", ">=0.5"]
    np.testing.assert_allclose(pur["same_type"], want["same_type"], rtol=1e-15)
    assert pur["cells"].dtype == np.int64
    cells = pd.read_csv(paths[1])
    assert len(cells) == a.n_cells + 1  # one row per cell, one row of graph-level scalars
    assert cells["kbet_acceptance"].notna().sum() == 1
    assert cells["cell"].iloc[: a.n_cells].tolist() == a.cell_names.astype(str).tolist()
    np.testing.assert_allclose(
        cells["ilisi"].iloc[: a.n_cells], tables["batch_cells"]["ilisi"], rtol=1e-15
    )
    cmp = pd.read_csv(paths[3], keep_default_na=False, na_values=[""])
    assert len(cmp) == a.n_cells + 5
    per_type = cmp[cmp["cell"].isna()]
    assert per_type["cell_type"].tolist() == ["B", "T", "NK", "Mono", "all"]
    assert per_type["cells"].tolist() == tables["compare"]["cells"].to_numpy().tolist()
    with pytest.raises(ValueError, match="plain file name"):
        write_tables({"../x": tables["purity"]}, tmp_path)


def test_blocks_of_rows_give_the_same_dataset(runs, monkeypatch):
    """Blocks of 7 rows (some with cells excluded in one run only) change nothing."""
    a, b = runs
    b = exclude(b, 20)
    whole = compare_encodings(a, b)
    monkeypatch.setattr("rankdist.analysis.compare._BLOCK_ROWS", 7)
    assert compare_encodings(a, b).identical(whole)


def test_lazy_and_eager_results_give_identical_tables(runs):
    """The runs as loaded (counts over Dask) and held in memory give the same Dataset."""
    import dask

    a, b = runs
    assert any(dask.is_dask_collection(v.data) for v in a.counts.values())
    eager_a, eager_b = (
        dataclasses.replace(r, counts=r.counts.compute(), relations=None) for r in runs
    )
    assert compare_encodings(a, b).identical(compare_encodings(eager_a, eager_b))


def test_without_batch_labels_the_overlap_stays_and_batch_columns_are_nan(runs):
    a, b = runs
    full = compare_encodings(a, b)
    no_batch = {role: lab for role, lab in a.labels.items() if role != "batch"}
    ds = compare_encodings(
        dataclasses.replace(a, labels=no_batch), dataclasses.replace(b, labels=no_batch)
    )
    np.testing.assert_array_equal(ds["jaccard"].to_numpy(), full["jaccard"].to_numpy())
    np.testing.assert_array_equal(ds["jaccard_mean"].to_numpy(), full["jaccard_mean"].to_numpy())
    assert np.isnan(ds["batch_driven_a"].to_numpy()).all()
    assert np.isnan(ds["batch_driven_b"].to_numpy()).all()
    assert (ds["more_batch_driven"].to_numpy() == "").all()
    no_types = {role: lab for role, lab in a.labels.items() if role != "cell_type"}
    with pytest.raises(ValueError, match="no cell_type labels"):
        compare_encodings(dataclasses.replace(a, labels=no_types), b)
