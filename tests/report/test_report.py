"""The report: files the page references exist, CSVs equal the analyses, the page renders."""

from __future__ import annotations

import base64
import html
import os
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import rankdist
from rankdist.analysis import batch_mixing, batch_summary, compare_encodings, findings, purity
from rankdist.analysis.similarity import type_similarity
from rankdist.cli import main
from rankdist.datasets.toy import synthetic_counts
from rankdist.report import build_report
from rankdist.report.findings import BOX
from rankdist.report.runs import rank_encoding_first
from rankdist.report.sections import GRAPH_SCALARS

CUTOFFS = (0.5, 0.55, 0.6)
FIGURES = ("purity", "similarity_spearman", "similarity_pearson", "batch", "sparsity")
ARTIFACTS = Path(
    os.environ.get("RANKDIST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")
)


@pytest.fixture(scope="module")
def built(tmp_path_factory, client):
    """A store with a spearman and a pearson run (both with the type histogram), reported."""
    base = tmp_path_factory.mktemp("report")
    adata = synthetic_counts(n_cells=1500, n_genes=300, n_batches=3, seed=11)
    store = rankdist.ingest(
        adata,
        base / "cells.zarr",
        cell_type="cell_type",
        coarse_type="coarse_type",
        batch="batch",
        progress=False,
    )
    runs = {
        enc: rankdist.neighbors(
            store, enc, k=10, cutoffs=CUTOFFS, client=client, type_hist=True, progress=False
        )
        for enc in ("spearman", "pearson")
    }
    page = build_report(store.path, base / "out")
    return adata, store, runs, page


class _Refs(HTMLParser):
    """Every tag's attributes, in document order."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _parse(page: Path) -> list[tuple[str, dict]]:
    parser = _Refs()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.tags


def test_every_referenced_file_exists_and_figures_are_embedded(built):
    _, _, _, page = built
    tags = _parse(page)
    refs = [a[key] for _, a in tags for key in ("href", "src", "data-file") if key in a]
    local = [r for r in refs if not r.startswith(("data:", "#"))]
    assert not [r for r in local if "://" in r], "the page must need no network"
    assert not [t for t, a in tags if t in ("script", "link") and ("src" in a or "href" in a)]
    for ref in local:
        assert (page.parent / ref).is_file(), ref
    for stem in FIGURES + ("compare_spearman_pearson",):
        assert f"figures/{stem}.png" in local and f"figures/{stem}.svg" in local, stem
    images = [a for t, a in tags if t == "img"]
    assert len(images) == len(FIGURES) + 1
    for img in images:  # the embedded PNG is the file the page links to
        head, data = img["src"].split(",", 1)
        assert head == "data:image/png;base64"
        assert base64.b64decode(data) == (page.parent / img["data-file"]).read_bytes()
    svg = (page.parent / "figures" / "purity.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg


def _assert_table_equals(path: Path, ds: xr.Dataset) -> None:
    """A tidy CSV holds every variable of ``ds`` at every coordinate, exactly."""
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""], float_precision="round_trip")
    all_dims = sorted({d for v in ds.data_vars.values() for d in v.dims})
    for name, var in ds.data_vars.items():
        assert name in frame.columns, (path.name, name)
        dims = list(var.dims)
        others = [d for d in all_dims if d not in dims]
        rows = frame[frame[dims].notna().all(axis=1) & frame[others].isna().all(axis=1)]
        if not dims:
            got = rows[name].to_numpy()
            assert len(got) == 1, (path.name, name)
            np.testing.assert_array_equal(got.astype(float), [float(var.item())])
            continue
        got = rows.set_index(dims)[name]
        want = var.to_series()
        assert not got.index.duplicated().any(), (path.name, name)
        assert set(got.index) == set(want.index), (path.name, name)
        got = got.reindex(want.index)
        if var.dtype.kind in "OUS":
            assert list(got.fillna("").astype(str)) == list(want.astype(str)), (path.name, name)
        else:
            np.testing.assert_array_equal(
                got.to_numpy(float), want.to_numpy(float), err_msg=f"{path.name}: {name}"
            )


def test_tables_equal_the_analysis_functions(built):
    adata, _, runs, page = built
    tables = page.parent / "tables"
    want = {}
    for name, res in runs.items():
        mixing = batch_mixing(res)
        want[f"purity_{name}"] = purity(res)
        want[f"batch_{name}"] = batch_summary(res)
        want[f"batch_graph_{name}"] = xr.Dataset({v: mixing[v].variable for v in GRAPH_SCALARS})
        want[f"similarity_{name}"] = type_similarity(res)
    want["compare_spearman_pearson"] = compare_encodings(runs["spearman"], runs["pearson"])
    assert {p.stem for p in tables.glob("*.csv")} == set(want) | {"sparsity", "findings"}
    for stem, ds in want.items():
        _assert_table_equals(tables / f"{stem}.csv", ds)
    # the findings, against the analysis function (itself checked against loops)
    got = pd.read_csv(tables / "findings.csv", keep_default_na=False, na_values=[""])
    expected = findings(runs)
    assert list(got.columns) == list(expected.columns)
    for column in ("run", "encoding", "statistic", "metric", "scope", "resampled_over"):
        assert got[column].tolist() == expected[column].tolist(), column
    assert got["versus"].fillna("").tolist() == expected["versus"].tolist()
    for column in ("value", "ci_low", "ci_high", "n", "units", "resamples"):
        np.testing.assert_allclose(got[column], expected[column], rtol=1e-12, err_msg=column)
    assert set(got["scope"]) == {"top-k", *(f">={c:g}" for c in CUTOFFS)}
    assert (got["resampled_over"] == "batches").all() and (got["units"] == 3).all()
    # sparsity, against the counts themselves
    zeros = (np.asarray(adata.X) == 0).mean(axis=1)
    types = adata.obs["cell_type"].to_numpy()
    sparsity = pd.read_csv(tables / "sparsity.csv").set_index("cell_type")
    for t in [*adata.obs["cell_type"].cat.categories, "all"]:
        sel = zeros if t == "all" else zeros[types == t]
        assert sparsity.loc[t, "cells"] == len(sel)
        np.testing.assert_allclose(sparsity.loc[t, "zero_fraction_mean"], sel.mean(), rtol=1e-12)
        np.testing.assert_allclose(sparsity.loc[t, "zero_fraction_median"], np.median(sel))


def test_page_opens_with_the_findings_in_words(built):
    _, _, runs, page = built
    text = page.read_text(encoding="utf-8")
    assert text.index('<section id="') == text.index('<section id="findings">')
    for sentence in findings(runs).attrs["readings"]:
        assert html.escape(sentence, quote=True) in text
    assert "spearman keeps " in text
    assert " than pearson" in text or "from pearson" in text


def test_page_explains_each_figure_and_records_provenance(built):
    _, store, runs, page = built
    text = page.read_text(encoding="utf-8")
    for anchor in ("purity", "similarity", "batch", "compare", "sparsity", "runs", "provenance"):
        assert f'<section id="{anchor}">' in text
    assert text.count('class="explain"') >= 6
    assert store.content_id in text
    assert runs["spearman"].metadata["finished"] in text
    assert 'class="note"' not in text  # both runs have everything every figure needs


def test_missing_inputs_become_notes(built, client, tmp_path):
    _, store, _, _ = built
    rankdist.neighbors(
        store, "spearman", k=5, cutoffs=(0.5,), name="nohist", client=client, progress=False
    )
    page = build_report(store, tmp_path / "out", runs="nohist")
    text = page.read_text(encoding="utf-8")
    assert "--type-hist" in text and "type_hist=True" in text
    assert "needs a spearman and a pearson run" in text
    assert not (tmp_path / "out" / "figures" / "similarity_nohist.png").exists()
    assert (tmp_path / "out" / "figures" / "purity.png").is_file()


def test_errors_name_the_runs(built, tmp_path):
    _, store, _, _ = built
    with pytest.raises(ValueError, match=r"no run\(s\) \['nope'\].*available runs: \[.*'pearson'"):
        build_report(store, tmp_path / "x", runs=["spearman", "nope"])
    empty = rankdist.ingest(
        synthetic_counts(n_cells=60, n_genes=40, seed=1),
        tmp_path / "empty.zarr",
        cell_type="cell_type",
        progress=False,
    )
    with pytest.raises(ValueError, match="holds no finished runs.*rankdist neighbors"):
        build_report(empty, tmp_path / "y")
    assert not (tmp_path / "y").exists()


def test_default_order_puts_the_rank_encoding_first():
    class Run:  # rank_encoding_first reads only the metadata's encoding
        def __init__(self, encoding):
            self.metadata = {"encoding": encoding}

    runs = {
        n: Run(e)
        for n, e in [
            ("a", "topn"),
            ("b", "pearson"),
            ("c", "spearman"),
            ("d", "geneformer"),
            ("e", "spearman"),
        ]
    }
    assert list(rank_encoding_first(runs)) == ["c", "e", "b", "a", "d"]


def test_cli_report_with_a_hierarchy_csv(built, tmp_path, capsys):
    _, store, runs, _ = built
    csv = tmp_path / "lineages.csv"  # A and B types in one class, C types in another
    csv.write_text("fine,coarse\nA1,AB\nA2,AB\nB1,AB\nB2,AB\nC1,C\nC2,C\n")
    out = tmp_path / "cli"
    argv = ["report", str(store.path), "--out", str(out), "--runs", "spearman"]
    assert main([*argv, "--hierarchy", str(csv)]) == 0
    assert str(out / "report.html") in capsys.readouterr().out
    want = purity(runs["spearman"], hierarchy=str(csv))
    assert not np.allclose(want["similar_type"], purity(runs["spearman"])["similar_type"])
    _assert_table_equals(out / "tables" / "purity_spearman.csv", want)
    assert main(["report", str(store.path), "--out", str(out), "--runs", "raw"]) == 2
    err = capsys.readouterr().err
    assert "rankdist report: error: no run(s) ['raw']" in err and "'spearman'" in err


@pytest.mark.needs("chromium")
def test_page_renders_in_headless_chromium(built, tmp_path):
    from PIL import Image

    _, _, _, page = built
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    cmd = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--hide-scrollbars",
        "--window-size=1280,2400",
        f"--screenshot={shot}",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-3000:]
    (ARTIFACTS / "report.html").write_bytes(page.read_bytes())  # self-contained: one file
    with Image.open(shot) as image:
        rgb = np.asarray(image.convert("RGB"))
    assert rgb.shape == (2400, 1280, 3)
    colours = np.unique(rgb.reshape(-1, 3), axis=0)
    assert len(colours) > 500, f"{len(colours)} distinct colours: blank or unstyled page?"
    ink = (rgb < 200).any(axis=2).mean()
    assert ink > 0.03, f"only {ink:.1%} of the screenshot is not near-white"


def test_report_reads_each_run_once_and_never_holds_two_for_long(built, tmp_path, monkeypatch):
    """One read per run for its own tables (nothing else held), then the compared pair.

    A run read earlier must be gone (garbage) by the time the next is read, except the
    first of the compared pair while the second is read.
    """
    import gc
    import weakref

    import rankdist.report.sections as sections

    _, store, _, _ = built
    held = []
    alive_at_read = []

    def tracked_load(store_, name):
        gc.collect()
        alive_at_read.append((name, sum(ref() is not None for ref in held)))
        res = rankdist.load(store_, name)
        held.append(weakref.ref(res))
        return res

    monkeypatch.setattr(sections, "load", tracked_load)
    build_report(store, tmp_path / "out", runs="spearman,pearson")
    assert alive_at_read == [("spearman", 0), ("pearson", 0), ("spearman", 0), ("pearson", 1)]


def test_more_runs_side_by_side_against_a_named_baseline(built, client, tmp_path, monkeypatch):
    """Three runs: one ranking table and figure, every run compared with --baseline only."""
    import gc
    import weakref

    import rankdist.report.sections as sections

    _, store, _, _ = built
    rankdist.neighbors(store, "geneformer", k=10, cutoffs=CUTOFFS, client=client, progress=False)
    held, alive_at_read = [], []

    def tracked_load(store_, name):
        gc.collect()
        alive_at_read.append((name, sum(ref() is not None for ref in held)))
        res = rankdist.load(store_, name)
        held.append(weakref.ref(res))
        return res

    monkeypatch.setattr(sections, "load", tracked_load)
    out = tmp_path / "three"
    names = "spearman,pearson,geneformer"
    page = build_report(store, out, runs=names, baseline="spearman", resamples=50)
    # each run read once for its own tables; then each pair (run, baseline), two at most
    assert alive_at_read == [
        ("spearman", 0),
        ("pearson", 0),
        ("geneformer", 0),
        ("pearson", 0),
        ("spearman", 1),
        ("geneformer", 0),
        ("spearman", 1),
    ]
    text = page.read_text(encoding="utf-8")
    assert "Every run side by side, ranked on each metric" in text
    assert (out / "figures" / "findings_ranking.png").is_file()
    for other in ("pearson", "geneformer"):
        assert (out / "tables" / f"compare_{other}_spearman.csv").is_file()
        assert f"{other} keeps " in text
    assert not (out / "tables" / "compare_spearman_pearson.csv").exists()
    table = pd.read_csv(out / "tables" / "findings.csv", keep_default_na=False)
    overlap = table[table["metric"] == "overlap"]
    assert overlap["run"].tolist() == ["pearson", "geneformer"]
    assert set(overlap["versus"]) == {"spearman"}
    pairs = table[table["statistic"] == "difference"][["run", "versus"]].drop_duplicates()
    assert len(pairs) == 3  # every pair of the three runs
    assert (table["resamples"] == 50).all()
    assert "--baseline spearman" in text  # the reproducing command keeps the choice


def test_cli_baseline_must_be_a_reported_run(built, tmp_path, capsys):
    _, store, _, _ = built
    argv = ["report", str(store.path), "--out", str(tmp_path / "o"), "--runs", "spearman"]
    assert main([*argv, "--baseline", "pearson"]) == 2
    err = capsys.readouterr().err
    assert "rankdist report: error: --baseline 'pearson' is not among the runs" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.needs("chromium")
def test_findings_fill_the_first_screen_in_headless_chromium(built, tmp_path):
    """At 1280 x 800, the first screen shows the findings box (its background colour)."""
    from PIL import Image

    _, _, _, page = built
    shot = tmp_path / "first-screen.png"
    proc = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--hide-scrollbars",
            "--window-size=1280,800",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-3000:]
    with Image.open(shot) as image:
        rgb = np.asarray(image.convert("RGB"))
    assert rgb.shape == (800, 1280, 3)
    box = np.array([int(BOX[i : i + 2], 16) for i in (1, 3, 5)])
    share = (rgb == box).all(axis=2).mean()
    assert share > 0.05, f"findings box covers {share:.1%} of the first screen"
