"""The results/<run>/ format: documented, versioned, written and read by reduce/runstore.py."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

import rankdist
from rankdist.io.store import StoreError
from rankdist.reduce import checkpoint, runstore
from rankdist.reduce.partial import Partial

from _data import ingest_tricky, tricky_adata

DOCS = Path(__file__).resolve().parents[2] / "docs" / "results.md"
MARKER = "<!-- attrs-run:"


@pytest.fixture(scope="module")
def stored(tmp_path_factory, client):
    """A store with one finished run (type_hist, every label role)."""
    store = ingest_tricky(
        tricky_adata(n_cells=600, n_genes=40, seed=2), tmp_path_factory.mktemp("rs") / "s.zarr"
    )
    with pytest.warns(rankdist.ExcludedCellsWarning):
        res = rankdist.neighbors(
            store,
            k=5,
            cutoffs=(0.2, 0.4),
            client=client,
            name="run",
            type_hist=True,
            block_size=512,
            progress=False,
        )
    return store, res


def _documented_run_keys() -> list[str]:
    """The first column of the markdown table that follows the attrs-run marker."""
    lines = DOCS.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(MARKER))
    keys = []
    for line in lines[start + 3 :]:  # the marker, the header row, the |---| row
        if not line.startswith("|"):
            break
        match = re.fullmatch(r"\| `([^`]+)` \|.*", line)
        assert match, f"docs/results.md: attrs-run table row without a `key`: {line!r}"
        keys.append(match.group(1))
    return keys


def test_docs_list_every_run_attribute_and_no_other(stored):
    store, _ = stored
    keys = _documented_run_keys()
    assert len(keys) == len(set(keys)), "a key is documented twice"
    documented = set(keys)
    actual = set(zarr.open_group(store.path / "results" / "run", mode="r").attrs["run"])
    assert not actual - documented, f"undocumented in docs/results.md: {actual - documented}"
    assert not documented - actual, f"documented but not stored: {documented - actual}"
    assert set(runstore.RESUME_KEYS) <= actual


def test_finished_run_carries_its_format_version(stored):
    store, res = stored
    attrs = zarr.open_group(store.path / "results" / "run", mode="r").attrs
    assert attrs["encoding-type"] == "rankdist-run"
    assert attrs["encoding-version"] == runstore.RUN_VERSION == "2"
    assert dict(attrs["run"]) == res.metadata
    assert res.pair_hist is not None


def _copy_run(store, name: str, edit) -> None:
    """Copy the finished run to ``name`` with its group attrs changed by ``edit``."""
    src, dst = store.path / "results" / "run", store.path / "results" / name
    shutil.copytree(src, dst)
    meta = json.loads((dst / "zarr.json").read_text())
    edit(meta["attributes"])
    (dst / "zarr.json").write_text(json.dumps(meta))


def test_run_without_version_reads_as_version_1(stored):
    store, res = stored

    def unversioned(attrs):
        del attrs["encoding-type"], attrs["encoding-version"]

    _copy_run(store, "unversioned", unversioned)
    assert runstore.read_run(store.path, "unversioned").version == "1"
    old = rankdist.load(store, "unversioned")
    assert np.array_equal(old.indices, res.indices)
    assert np.array_equal(old.similarities.view(np.int32), res.similarities.view(np.int32))
    assert old.counts.identical(res.counts) and old.pair_hist.identical(res.pair_hist)
    assert old.metadata == res.metadata


def test_stored_relations_are_the_counts_summed_and_at_the_own_label(stored):
    store, res = stored
    group = zarr.open_group(store.path / "results" / "run", mode="r")
    assert sorted(group["relations"].array_keys()) == [
        "same_batch",
        "same_cell_type",
        "same_coarse_type",
        "total",
    ]
    rows = np.arange(res.n_cells)
    for role, lab in res.labels.items():
        counts = res.counts[role].to_numpy()
        assert np.array_equal(group["relations/total"][:], counts.sum(axis=2))
        want = counts[rows, :, lab.codes]
        assert np.array_equal(group[f"relations/same_{role}"][:], want), role
        assert group[f"relations/same_{role}"].dtype == np.int32
        assert group[f"relations/same_{role}"].chunks == (512, 2)
    assert (group["relations/total"][:][res.excluded] == 0).all()
    assert (group["relations/total"][:][~res.excluded] > 0).any()


def test_version_1_run_without_relations_derives_them_from_the_counts(stored):
    store, res = stored

    def version_1(attrs):
        attrs["encoding-version"] = "1"

    _copy_run(store, "v1", version_1)
    shutil.rmtree(store.path / "results" / "v1" / "relations")
    meta = json.loads((store.path / "results" / "v1" / "zarr.json").read_text())
    assert meta["attributes"]["encoding-version"] == "1"
    old = rankdist.load(store, "v1")
    assert runstore.read_run(store.path, "v1").relations == {}
    assert old.relations.identical(res.relations.compute())
    assert old.counts.identical(res.counts)


def test_unknown_version_is_refused_naming_store_run_and_versions(stored):
    store, _ = stored
    _copy_run(store, "future", lambda attrs: attrs.update({"encoding-version": "7"}))
    with pytest.raises(ValueError, match="results format") as err:
        rankdist.load(store, "future")
    msg = str(err.value)
    assert str(store.path) in msg and "'future'" in msg and "'7'" in msg
    assert "['1', '2']" in msg
    _copy_run(store, "alien", lambda attrs: attrs.update({"encoding-type": "other"}))
    with pytest.raises(ValueError, match="encoding-type 'other'"):
        rankdist.load(store, "alien")


def test_list_runs_takes_a_path_or_a_store(stored):
    store, _ = stored
    assert "run" in rankdist.list_runs(store)
    assert rankdist.list_runs(store.path) == rankdist.list_runs(str(store.path))
    assert rankdist.list_runs(store.path) == rankdist.list_runs(store)
    with pytest.raises(StoreError, match="does not exist"):
        rankdist.list_runs(store.path / "nowhere.zarr")


FINGERPRINT = runstore.resume_fingerprint(
    {
        "content_id": "c0",
        "encoding_key": "e0",
        "form": "dense",
        "k": 2,
        "cutoffs": (0.1, 0.5),
        "labels": {"cell_type": "ct", "batch": "donor"},
        "subtile": 512,
        "n_cells": 5,
        "type_hist": True,
    }
)


def test_work_dir_blocks_and_publish_round_trip(tmp_path):
    """Counts are stored at or above each cutoff; excluded rows as -1 / NaN."""
    work = tmp_path / "results" / ".r.partial"
    sizes = {"cell_type": 2, "batch": 1}
    runstore.create_work_dir(work, FINGERPRINT, block_rows=4, role_sizes=sizes, hist_bins=3)
    assert json.loads((work / "job.json").read_text()) == FINGERPRINT | {"block_rows": 4}
    for b, (start, rows) in enumerate([(0, 4), (4, 1)]):
        part = Partial.empty(b, rows, 2, 2, 3)
        part.top_sim[:] = [0.9, 0.3]
        part.top_idx[:] = [3, 4]
        part.counts[:] = np.arange(6).reshape(2, 3)  # per bin [0.1, 0.5) and [0.5, 1]
        part.pair_hist = np.full((2, 2, 3), b + 1)
        part.pair_hist[0, 1] = 10 if b == 0 else 0  # counted under (lower cell's type, other)
        runstore.write_block(work, part, start, np.arange(rows) != 1, sizes)
    codes = {"cell_type": np.array([1, 0, 0, 1, 1]), "batch": np.zeros(5, int)}
    runstore.publish_run(
        work, runstore.run_path(tmp_path, "r"), {"cutoffs": [0.1, 0.5]}, excluded=[1], codes=codes
    )
    assert not work.exists()
    stored = runstore.read_run(tmp_path, "r")
    assert stored.version == "2" and stored.metadata == {"cutoffs": [0.1, 0.5]}
    assert stored.excluded.tolist() == [False, True, False, False, False]
    assert stored.indices[:, 0].tolist() == [3, -1, 3, 3, 3]
    assert np.isnan(stored.similarities[1]).all() and stored.similarities[0, 0] == np.float32(0.9)
    at_or_above = np.array([[3, 5, 7], [3, 4, 5]])  # bins summed from the top cutoff down
    assert np.array_equal(stored.counts["cell_type"][0], at_or_above[:, :2])
    assert np.array_equal(stored.counts["batch"][4], at_or_above[:, 2:])
    total = stored.relations["total"][:]
    assert total.dtype == np.int32 and total.shape == (5, 2)
    assert total.tolist() == [[8, 7]] * 5  # cell_type's row sum (a real run's roles agree)
    # the own label's column: cell_type 1 -> [5, 4], 0 -> [3, 3]; batch 0 -> [7, 5]
    assert stored.relations["same_cell_type"][:].tolist() == [[5, 4], [3, 3], [3, 3], *[[5, 4]] * 2]
    assert stored.relations["same_batch"][:].tolist() == [[7, 5]] * 5
    want = np.array([[3, 13], [13, 3]])  # summed over blocks; (0, 1) and (1, 0) folded
    assert np.array_equal(stored.pair_hist[..., 0], want)
    assert np.array_equal(stored.bin_edges, np.linspace(-1, 1, 4))


def test_publish_reads_the_codes_from_the_store_and_names_missing_labels(tmp_path):
    work = runstore.work_path(tmp_path, "r")
    sizes = {"cell_type": 2, "batch": 1}
    runstore.create_work_dir(work, FINGERPRINT, block_rows=4, role_sizes=sizes, hist_bins=3)
    store = zarr.open_group(tmp_path, mode="a")
    store.create_array("obs/cell_type", data=np.array([1, 0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"has no labels \['obs/batch'\]") as err:
        runstore.publish_run(
            work, runstore.run_path(tmp_path, "r"), {"cutoffs": [0.1, 0.5]}, excluded=[]
        )
    assert str(tmp_path) in str(err.value)


def test_publish_interrupted_in_the_relations_stays_resumable(tmp_path, monkeypatch):
    """A kill while relations/ is written leaves job.json and the checkpoints: the run
    resumes, and the next publish replaces the half-written relations."""
    from rankdist.reduce import relations

    work = runstore.work_path(tmp_path, "r")
    sizes = {"cell_type": 2}
    runstore.create_work_dir(work, FINGERPRINT, block_rows=4, role_sizes=sizes, hist_bins=3)
    for b, (start, rows) in enumerate([(0, 4), (4, 1)]):
        part = Partial.empty(b, rows, 2, 2, 2)
        part.counts[:] = [[1, 2], [3, 4]]
        runstore.write_block(work, part, start, np.ones(rows, bool), sizes)
    codes = {"cell_type": np.array([0, 1, 0, 1, 0])}
    calls = []

    def killed_after_one_block(counts, block_codes):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        block = relations.relations_block(counts, block_codes)
        return {name: arr + 99 for name, arr in block.items()}

    monkeypatch.setattr(relations, "relations_block", killed_after_one_block)
    final = runstore.run_path(tmp_path, "r")
    with pytest.raises(KeyboardInterrupt):
        runstore.publish_run(work, final, {"cutoffs": [0.1]}, excluded=[], codes=codes)
    assert runstore.resumable_block_rows(work, FINGERPRINT, None) == 4
    assert runstore.checkpoint_path(work).is_dir()
    monkeypatch.undo()
    runstore.publish_run(work, final, {"cutoffs": [0.1]}, excluded=[], codes=codes)
    stored = runstore.read_run(tmp_path, "r")
    assert stored.relations["total"][:].tolist() == [[10, 7]] * 5
    assert stored.relations["same_cell_type"][:].tolist() == [[4, 3], [6, 4]] * 2 + [[4, 3]]


def _finished_work(tmp_path) -> Path:
    """A work directory with both blocks of five cells written, type histogram included."""
    work = runstore.work_path(tmp_path, "r")
    sizes = {"cell_type": 2, "batch": 1}
    runstore.create_work_dir(work, FINGERPRINT, block_rows=4, role_sizes=sizes, hist_bins=3)
    for b, (start, rows) in enumerate([(0, 4), (4, 1)]):
        part = Partial.empty(b, rows, 2, 2, 3)
        part.counts[:] = 1
        part.pair_hist = np.full((2, 2, 3), b + 1)
        runstore.write_block(work, part, start, np.ones(rows, bool), sizes)
        checkpoint.mark_written(runstore.checkpoint_path(work), b)
    return work


@pytest.mark.parametrize("killed", ["before the rename", "after the rename"])
def test_a_publish_killed_anywhere_resumes_or_is_complete(tmp_path, monkeypatch, killed):
    """Killed before the rename (the histogram folded, its block histograms deleted, the
    attrs written), the run still resumes with every block written and publishes the
    same; killed after it, the run is published and complete."""
    from rankdist.reduce import runstore as module

    work, final = _finished_work(tmp_path), runstore.run_path(tmp_path, "r")
    codes = {"cell_type": np.array([1, 0, 0, 1, 1]), "batch": np.zeros(5, int)}
    meta = {"cutoffs": [0.1, 0.5]}

    def kill(*args, **kwargs):
        raise KeyboardInterrupt

    if killed == "before the rename":
        monkeypatch.setattr(module, "publish_directory", kill)
    else:  # where the published run's checkpoints are looked up for deletion
        monkeypatch.setattr(module, "checkpoint_path", kill)
    with pytest.raises(KeyboardInterrupt):
        runstore.publish_run(work, final, meta, excluded=[2], codes=codes)
    monkeypatch.undo()
    if killed == "before the rename":
        assert not final.exists()
        assert runstore.resumable_block_rows(work, FINGERPRINT, None) == 4
        assert checkpoint.scan(runstore.checkpoint_path(work)).written == {0, 1}
        assert "pair_hist_blocks" not in zarr.open_group(work, mode="r")  # already folded
        runstore.publish_run(work, final, meta, excluded=[2], codes=codes)
        assert not (final / "job.json").exists()
    assert not work.exists()
    stored = runstore.read_run(tmp_path, "r")  # complete, whichever instant the kill was
    assert stored.metadata == meta and stored.excluded.tolist() == [0, 0, 1, 0, 0]
    want = np.array([[3, 6], [6, 3]])  # blocks 1 + 2 summed; (0, 1) and (1, 0) folded
    assert np.array_equal(stored.pair_hist[..., 0], want)
    assert stored.relations["total"][:].shape == (5, 2)


def test_work_dir_resumes_only_the_same_job(tmp_path):
    work = tmp_path / ".r.partial"
    make = dict(block_rows=4, role_sizes={"cell_type": 2}, hist_bins=3)
    runstore.create_work_dir(work, FINGERPRINT, **make)
    assert runstore.resumable_block_rows(work, FINGERPRINT, None) == 4
    assert runstore.resumable_block_rows(work, FINGERPRINT, 4) == 4
    assert runstore.resumable_block_rows(work, FINGERPRINT | {"k": 3}, None) is None
    assert not work.exists()  # another job's work is discarded
    runstore.create_work_dir(work, FINGERPRINT, **make)
    assert runstore.resumable_block_rows(work, FINGERPRINT, 8) is None  # another block size
    runstore.create_work_dir(work, FINGERPRINT, **make)
    old = FINGERPRINT | {"format": 1}  # a work directory of the previous job.json format
    (work / "job.json").write_text(json.dumps(old | {"block_rows": 4}))
    assert runstore.resumable_block_rows(work, FINGERPRINT, None) is None
    assert not work.exists()
