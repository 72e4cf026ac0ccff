"""purity / purity_table / load_hierarchy against brute-force loops over cells and the oracle."""

from __future__ import annotations

import dataclasses
import shutil

import dask
import numpy as np
import pandas as pd
import pytest

import rankdist
from rankdist.analysis import Hierarchy, load_hierarchy, purity, purity_table
from rankdist.analysis.purity import pooled_relations
from rankdist.io.verified import MissingChunkError

from _data import ingest_tricky, oracle_spearman, safe_cutoffs, tricky_adata

K = 8


@pytest.fixture(scope="module")
def tricky_run(tmp_path_factory, client):
    """300 tricky cells (2 constant, 3 duplicates), cutoffs where some cells lose all relations.

    The store, the data and its oracle correlations, and the run (as neighbors returns it).
    """
    adata = tricky_adata(n_cells=300)
    rho = oracle_spearman(adata.X)
    cutoffs = safe_cutoffs(rho, [0.3, 0.6, 0.7])
    store = ingest_tricky(adata, tmp_path_factory.mktemp("purity") / "t.zarr")
    with pytest.warns(rankdist.ExcludedCellsWarning, match="c7"):
        res = rankdist.neighbors(store, k=K, cutoffs=cutoffs, client=client, progress=False)
    return store, adata, rho, res


@pytest.fixture(scope="module")
def tricky(tricky_run):
    _, adata, rho, res = tricky_run
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


def dense_pooled(res, role, fine_to_coarse=None):
    """The pooled sums the straightforward way: whole (cells, labels) arrays in numpy.

    Per scope, ``(relations, same, sibling, cells without relation, per-cell share sum,
    cells with a share)``, each ``(n_labels + 1,)`` with the overall value last.
    """
    codes = res.labels[role].codes.astype(np.int64)
    n = len(res.labels[role].categories)
    valid = ~res.excluded
    rows = np.arange(res.n_cells)
    topk = np.zeros((res.n_cells, n), np.int64)
    for i in np.flatnonzero(valid):
        np.add.at(topk[i], codes[res.indices[i]], 1)
    counts = res.counts[role].transpose("cell", "cutoff", f"neighbor_{role}").to_numpy()
    scopes = [topk] + [counts[:, c].astype(np.int64) for c in range(len(res.cutoffs))]
    out = []
    for by_label in scopes:
        total = by_label.sum(axis=1)
        same = by_label[rows, codes]
        sibling = np.zeros_like(same)
        if fine_to_coarse is not None:
            in_class = fine_to_coarse[None, :] == fine_to_coarse[codes][:, None]
            sibling = (by_label * in_class).sum(axis=1) - same
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(total > 0, same / total, np.nan)
        has = valid & (total > 0)

        def per_group(values, mask):
            values = np.broadcast_to(np.asarray(values, float), mask.shape)[mask]
            return np.append(np.bincount(codes[mask], values, minlength=n), values.sum())

        out.append(
            (
                per_group(total, valid),
                per_group(same, valid),
                per_group(sibling, valid),
                per_group(total == 0, valid),
                per_group(share, has),
                per_group(1.0, has),
            )
        )
    return out


@pytest.mark.parametrize("block_cells", [None, 64, 77])
@pytest.mark.parametrize(
    ("role", "csv"),
    [("cell_type", None), ("cell_type", "B,g1\nNK,g1\nT,g2\nMono,g2\n"), ("batch", None)],
)
def test_streamed_sums_match_the_dense_computation(tricky, tmp_path, block_cells, role, csv):
    """Blocks of 64 and 77 cells (not the run's 512-cell chunks) give the dense sums; with a
    CSV hierarchy unlike the stored classes the siblings come from the counts."""
    _, _, res = tricky
    hier = None
    if role == "cell_type":
        path = None
        if csv is not None:
            path = tmp_path / "h.csv"
            path.write_text(csv)
        hier = load_hierarchy(res, csv=path)
    sums = pooled_relations(res, role, hier, block_cells=block_cells)
    want = dense_pooled(res, role, None if hier is None else hier.fine_to_coarse)
    assert [name for name, _ in sums.names] == ["top-k"] + [f">={c:g}" for c in res.cutoffs]
    for s, (relations, same, sibling, without, share_sum, share_cells) in enumerate(want):
        assert np.array_equal(sums.relations[:, s], relations)
        assert np.array_equal(sums.same[:, s], same)
        assert np.array_equal(sums.sibling[:, s], sibling)
        assert np.array_equal(sums.without[:, s], without)
        assert np.array_equal(sums.share_cells[:, s], share_cells)
        np.testing.assert_allclose(sums.share_sum[:, s], share_sum, rtol=1e-13)
    assert sums.without[:, 1:].sum() > 0  # the cutoffs leave cells without relation


def test_loaded_lazy_result_gives_the_in_memory_tables(tricky_run, tmp_path):
    """The run as loaded (counts and relations over the stored chunks) and the same run in
    memory (relations derived from in-memory counts) give identical tables."""
    store, _, _, res = tricky_run
    lazy = rankdist.load(store, res.metadata["name"])
    assert dask.is_dask_collection(lazy.relations["total"].data)
    eager = dataclasses.replace(lazy, counts=lazy.counts.compute(), relations=None)
    assert not dask.is_dask_collection(eager.relations["total"].data)
    csv = tmp_path / "h.csv"
    csv.write_text("B,g1\nNK,g1\nT,g2\nMono,g2\n")
    for hierarchy in (None, csv):
        assert purity(lazy, hierarchy=hierarchy).identical(purity(eager, hierarchy=hierarchy))
    for role in ("cell_type", "coarse_type", "batch"):
        got, want = purity_table(lazy, role), purity_table(eager, role)
        pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_purity_reads_relations_not_counts(tricky_run):
    """Loaded, then the stored counts removed: purity with the stored classes and every
    purity_table are unchanged, so they never read the per-value counts."""
    store, _, _, res = tricky_run
    run = store.path / "results" / res.metadata["name"]
    shutil.copytree(run, run.parent / "no-counts")
    lazy = rankdist.load(store, "no-counts")
    chunks = [p for p in (run.parent / "no-counts" / "counts").rglob("*") if p.is_file()]
    for path in chunks:
        if path.name != "zarr.json":
            path.unlink()
    with pytest.raises(MissingChunkError):  # the counts are gone: reading them is an error
        lazy.counts["batch"].to_numpy()
    assert purity(lazy).identical(purity(res))
    for role in ("cell_type", "coarse_type", "batch"):
        got, want = purity_table(lazy, role), purity_table(res, role)
        pd.testing.assert_frame_equal(got, want, check_exact=True)
