"""purity / purity_table / load_hierarchy against brute-force loops over cells and the oracle."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import rankdist
from rankdist.analysis import Hierarchy, load_hierarchy, purity, purity_table

from _data import oracle_spearman, safe_cutoffs, tricky_adata

K = 8


@pytest.fixture(scope="module")
def tricky(tmp_path_factory, client):
    """300 tricky cells (2 constant, 3 duplicates), cutoffs where some cells lose all relations."""
    adata = tricky_adata(n_cells=300)
    rho = oracle_spearman(adata.X)
    cutoffs = safe_cutoffs(rho, [0.3, 0.6, 0.7])
    store = rankdist.ingest(
        adata,
        tmp_path_factory.mktemp("purity") / "t.zarr",
        cell_type="celltype",
        coarse_type="coarse",
        batch="donor",
        progress=False,
    )
    with pytest.warns(rankdist.ExcludedCellsWarning, match="c7"):
        res = rankdist.neighbors(store, k=K, cutoffs=cutoffs, client=client, progress=False)
    return adata, rho, res


def partners(res, rho, i, scope):
    """The relations of cell i: its top-k, or every other valid cell with rho >= cutoff."""
    if scope is None:
        return list(res.indices[i])
    others = np.arange(res.n_cells) != i
    return list(np.flatnonzero(others & ~res.excluded & (rho[i] >= scope)))


def brute_purity(res, rho, fine_to_coarse):
    """Every purity value by loops over cells; fine_to_coarse None means no hierarchy."""
    codes = res.labels["cell_type"].codes
    valid = ~res.excluded
    n_types = len(res.labels["cell_type"].categories)
    n_valid = int(valid.sum())
    out = {}
    for g in [*range(n_types), "all"]:
        cells = [i for i in range(res.n_cells) if valid[i] and (g == "all" or codes[i] == g)]
        chance_same = [(sum(valid & (codes == codes[i])) - 1) / (n_valid - 1) for i in cells]
        chance_sib = (
            [
                sum(
                    valid[j]
                    and j != i
                    and codes[j] != codes[i]
                    and fine_to_coarse[codes[j]] == fine_to_coarse[codes[i]]
                    for j in range(res.n_cells)
                )
                / (n_valid - 1)
                for i in cells
            ]
            if fine_to_coarse is not None
            else []
        )
        for scope in [None, *res.cutoffs]:
            same = similar = total = without = 0
            per_cell = []
            for i in cells:
                rel = partners(res, rho, i, scope)
                if not rel:
                    without += 1
                    continue
                s = sum(codes[j] == codes[i] for j in rel)
                same += s
                total += len(rel)
                per_cell.append(s / len(rel))
                if fine_to_coarse is not None:
                    similar += sum(
                        codes[j] != codes[i]
                        and fine_to_coarse[codes[j]] == fine_to_coarse[codes[i]]
                        for j in rel
                    )
            row = {
                "cells": len(cells),
                "cells_without_relation": without,
                "relations": total,
                "same_type": same / total if total else np.nan,
                "same_type_cell_mean": np.mean(per_cell) if per_cell else np.nan,
                "expected_same_type": np.mean(chance_same) if cells else np.nan,
            }
            row["different_type"] = 1 - row["same_type"]
            if fine_to_coarse is None:
                row["similar_type"] = row["different_coarse"] = np.nan
                row["expected_similar_type"] = np.nan
            else:
                row["similar_type"] = similar / total if total else np.nan
                row["different_coarse"] = 1 - row["same_type"] - row["similar_type"]
                row["expected_similar_type"] = np.mean(chance_sib)
            out[(g, scope)] = row
    return out


def assert_purity_matches(ds, want, res):
    names = list(res.labels["cell_type"].categories)
    scopes = ["top-k"] + [f">={c:g}" for c in res.cutoffs]
    assert list(ds.cell_type.values) == [*names, "all"]
    assert list(ds.scope.values) == scopes
    for (g, scope), row in want.items():
        at = {
            "cell_type": "all" if g == "all" else names[g],
            "scope": "top-k" if scope is None else f">={scope:g}",
        }
        for var, value in row.items():
            got = ds[var].sel(at).item()
            if var in ("cells", "cells_without_relation", "relations"):
                assert got == value, (at, var)
            else:
                np.testing.assert_allclose(
                    got, value, rtol=1e-12, atol=1e-12, err_msg=f"{at} {var}"
                )
        np.testing.assert_allclose(
            ds["expected_different_coarse"].sel(at).item(),
            1 - row["expected_same_type"] - row["expected_similar_type"],
            rtol=1e-12,
            atol=1e-12,
        )


def test_purity_matches_brute_force(tricky):
    _, rho, res = tricky
    hier = load_hierarchy(res)
    assert hier.fine == ("B", "T", "NK", "Mono") and hier.coarse == ("lymphoid", "other")
    assert hier.fine_to_coarse.tolist() == [0, 0, 1, 1]
    ds = purity(res)
    want = brute_purity(res, rho, hier.fine_to_coarse)
    assert_purity_matches(ds, want, res)
    # the cutoffs are where the data has cells without relations and pooled != per-cell mean
    assert ds["cells_without_relation"].sel(cell_type="all").values.tolist()[0] == 0
    assert ds["cells_without_relation"].sel(cell_type="all").values[-1] > 10
    assert list(ds["coarse_type"].values) == ["lymphoid", "lymphoid", "other", "other", ""]


def test_shares_sum_to_one_and_excluded_cells_count_nowhere(tricky):
    _, _, res = tricky
    ds = purity(res)
    assert res.excluded.sum() == 2
    total = ds["same_type"] + ds["similar_type"] + ds["different_coarse"]
    np.testing.assert_allclose(total.to_numpy(), 1.0, rtol=1e-12)
    assert int(ds["cells"].sel(cell_type="all", scope="top-k")) == 298
    types = ds["cells"].sel(scope="top-k").drop_sel(cell_type="all")
    assert int(types.sum()) == 298
    assert int(ds["relations"].sel(cell_type="all", scope="top-k")) == 298 * K


def test_hierarchy_from_csv(tricky, tmp_path):
    _, rho, res = tricky
    csv = tmp_path / "h.csv"
    csv.write_text("fine,coarse\nB,g1\nNK,g1\nT,g2\nMono,g2\n")
    hier = load_hierarchy(res, csv=csv)
    assert hier.fine == ("B", "T", "NK", "Mono") and hier.coarse == ("g1", "g2")
    assert hier.fine_to_coarse.tolist() == [0, 1, 0, 1]
    no_header = tmp_path / "h2.csv"
    no_header.write_text("Mono, g2\nB,g1\nNK,g1\n\nT,g2\nB,g1\n")  # repeats and blanks are fine
    again = load_hierarchy(res, csv=no_header)
    assert again.coarse == ("g2", "g1") and again.fine_to_coarse.tolist() == [1, 0, 1, 0]
    ds = purity(res, hierarchy=csv)
    assert_purity_matches(ds, brute_purity(res, rho, hier.fine_to_coarse), res)
    np.testing.assert_array_equal(purity(res, hierarchy=hier).to_array(), ds.to_array())


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("B,g1\nT,g1\nNK,g2\nMono,g2\nMacro,g2\n", ["Macro"]),
        ("B,g1\nT,g1\nNK,g2\n", ["Mono"]),
        ("B,g1\nT,g1\nNK,g2\nMono,g2\nT,g2\n", ["T"]),
        ("fine,coarse\nB,g1\nT,g1\nnk,g2\nMono,g2\n", ["nk", "NK"]),
    ],
)
def test_bad_hierarchy_csv_names_the_types(tricky, tmp_path, text, named):
    _, _, res = tricky
    csv = tmp_path / "bad.csv"
    csv.write_text(text)
    with pytest.raises(ValueError, match=str(csv)) as err:
        load_hierarchy(res, csv=csv)
    for name in named:
        assert repr(name) in str(err.value)


def test_inconsistent_stored_hierarchy_raises(tricky):
    _, _, res = tricky
    coarse = res.labels["coarse_type"]
    codes = coarse.codes.copy()
    t = res.labels["cell_type"].codes
    codes[np.flatnonzero(t == 2)[0]] = 0  # one NK cell called lymphoid
    bad = dataclasses.replace(
        res, labels=res.labels | {"coarse_type": dataclasses.replace(coarse, codes=codes)}
    )
    with pytest.raises(ValueError, match=r"'NK': \['lymphoid', 'other'\]") as err:
        load_hierarchy(bad)
    assert "'coarse'" in str(err.value) and "'B'" not in str(err.value)
    with pytest.raises(ValueError, match="more than one coarse class"):
        purity(bad)


def test_without_hierarchy(tricky):
    _, rho, res = tricky
    labels = {r: lab for r, lab in res.labels.items() if r != "coarse_type"}
    flat = dataclasses.replace(res, labels=labels)
    with pytest.raises(ValueError, match="--coarse-type"):
        load_hierarchy(flat)
    ds = purity(flat)
    assert_purity_matches(ds, brute_purity(flat, rho, None), flat)
    assert ds["similar_type"].isnull().all() and ds["different_coarse"].isnull().all()
    np.testing.assert_allclose(ds["different_type"], 1 - ds["same_type"])
    with pytest.raises(ValueError, match="not the result's"):
        purity(res, hierarchy=Hierarchy(("a", "b"), ("x",), np.array([0, 0])))


def test_purity_table_agrees(tricky):
    _, rho, res = tricky
    table = purity_table(res, "cell_type")
    ds = purity(res)
    np.testing.assert_allclose(table["topk_same"], ds["same_type"].sel(scope="top-k"))
    np.testing.assert_allclose(table["expected"], ds["expected_same_type"].sel(scope="top-k"))
    for cut in res.cutoffs:
        np.testing.assert_allclose(table[f"same@{cut:g}"], ds["same_type"].sel(scope=f">={cut:g}"))
        assert (
            table[f"none@{cut:g}"].to_numpy()
            == ds["cells_without_relation"].sel(scope=f">={cut:g}").to_numpy()
        ).all()
    # another role, by brute force: the share of relations with the same batch at a cutoff
    batch = purity_table(res, "batch")
    b = res.labels["batch"].codes
    cut = res.cutoffs[1]
    same = total = 0
    for i in np.flatnonzero((b == 1) & ~res.excluded):
        rel = partners(res, rho, i, cut)
        same += sum(b[j] == 1 for j in rel)
        total += len(rel)
    assert batch.loc["d1", f"same@{cut:g}"] == pytest.approx(same / total, rel=1e-12)
    with pytest.raises(KeyError, match="stored roles"):
        purity_table(dataclasses.replace(res, labels={}), "batch")
