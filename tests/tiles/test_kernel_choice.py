"""--kernel: auto picks by a measured cost model, the metadata says which ran and why."""

from __future__ import annotations

import numpy as np
import pytest
from distributed import Client, LocalCluster

import rankdist
import rankdist.tiles.screen as screen
from rankdist.cli import main
from rankdist.tiles.kernel_choice import MIN_GAIN, estimate_screen
from rankdist.tiles.screen import REFINE_SHARE

from _data import counts_adata

pytestmark = pytest.mark.filterwarnings("ignore::rankdist.ExcludedCellsWarning")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    adata = counts_adata(n_cells=1200, n_genes=150, seed=4)
    return rankdist.ingest(
        adata, tmp_path_factory.mktemp("kern") / "s.zarr", cell_type="cell_type", progress=False
    )


def test_auto_records_the_kernel_it_chose_and_why(store, inproc_client):
    res = rankdist.neighbors(store, k=8, cutoffs=(0.3, 0.5), client=inproc_client, progress=False)
    meta = res.metadata
    share, gain = meta["kernel_rescore_share"], meta["kernel_predicted_gain"]
    assert 0 < share < 1 and gain > 0
    if gain >= MIN_GAIN:
        assert (meta["kernel"], meta["kernel_reason"]) == (
            "screen",
            f"predicted {gain:.2f}x faster",
        )
    else:
        assert meta["kernel"] == "float32"
        assert meta["kernel_reason"] == f"the screen was predicted {gain:.2f}x as fast"
    screened = rankdist.neighbors(
        store,
        k=8,
        cutoffs=(0.3, 0.5),
        client=inproc_client,
        progress=False,
        kernel="screen",
        name="screened",
    )
    assert screened.metadata["kernel_reason"] == "requested"
    assert np.array_equal(res.indices, screened.indices)
    assert np.array_equal(res.similarities.view(np.int32), screened.similarities.view(np.int32))
    assert res.counts.identical(screened.counts)


def test_the_estimate_counts_more_pairs_near_more_cutoffs(store):
    z_path = str(next((store.path / "encodings").glob("spearman-*")))
    one = estimate_screen(z_path, 8, (0.5,))
    three = estimate_screen(z_path, 8, (0.1, 0.3, 0.5))
    for est in (one, three):
        assert 0 < est.shares[1] < est.shares[0] < 1  # the refined margin is tighter
        assert est.refined == (est.shares[0] > REFINE_SHARE)
        assert est.share == est.shares[int(est.refined)]
        assert est.gain > 0
    assert one.shares[0] < three.shares[0] and one.shares[1] < three.shares[1]


def test_the_type_histogram_runs_on_float32(store, inproc_client):
    res = rankdist.neighbors(
        store, k=8, client=inproc_client, progress=False, type_hist=True, name="hist"
    )
    assert res.metadata["kernel"] == "float32"
    assert res.metadata["kernel_reason"] == "the type x type histogram bins every pair"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(kernel="int4"), "unknown kernel 'int4': choose one of auto, float32, screen"),
        (dict(kernel="screen", type_hist=True), "--kernel screen cannot count the type x type"),
        (dict(kernel="screen", form="sparse"), "--kernel screen multiplies the dense form"),
    ],
)
def test_impossible_kernel_requests_fail_before_any_work(store, kwargs, message):
    with pytest.raises(ValueError, match=message):
        rankdist.neighbors(store, k=8, client=None, progress=False, cluster="nonexistent", **kwargs)


def test_a_screen_that_cannot_run_is_one_line_and_auto_falls_back(store, monkeypatch):
    why = "the screen kernel needs onnxruntime and onnx (onnxruntime is not installed): ..."
    monkeypatch.setattr(screen, "_state", {"levels": why})  # in-process workers see it
    # a cluster of its own: nothing of the shared clients' state meets the patched one
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        res = rankdist.neighbors(store, k=8, client=client, progress=False, name="fallback")
        assert (res.metadata["kernel"], res.metadata["kernel_reason"]) == ("float32", why)
        with pytest.raises(screen.ScreenUnavailable, match="onnxruntime is not installed"):
            rankdist.neighbors(
                store, k=8, client=client, progress=False, kernel="screen", name="refused"
            )
    assert "refused" not in rankdist.list_runs(store)


def test_the_cli_takes_and_reports_the_kernel(store, capsys):
    argv = ["neighbors", str(store.path), "--k", "8", "--kernel", "screen", "--name", "cli"]
    assert main([*argv, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert ", screen kernel, " in out
    assert rankdist.load(store, "cli").metadata["kernel"] == "screen"


def test_the_screen_s_cached_block_forms_count_in_the_block_size():
    from rankdist.tiles.grid import (
        CACHED_BLOCKS,
        QUANTISED_BYTES,
        choose_block_rows,
        worker_bytes_per_block_row,
    )

    kw = dict(threads_per_worker=2, bytes_per_row_partial=1000)
    extra = worker_bytes_per_block_row(2000, screen=True, **kw) - worker_bytes_per_block_row(
        2000, **kw
    )
    assert extra == CACHED_BLOCKS * QUANTISED_BYTES * 2000
    sizes = {
        screen: choose_block_rows(
            1_000_000, 2000, threads=2, worker_memory=2e9, screen=screen, **kw
        )
        for screen in (False, True)
    }
    assert sizes[True] < sizes[False]


def test_a_screened_run_has_room_for_its_block_forms(store, inproc_client):
    res = rankdist.neighbors(
        store, k=8, client=inproc_client, progress=False, kernel="screen", name="room"
    )
    assert res.metadata["kernel"] == "screen"  # the block size was chosen knowing it
