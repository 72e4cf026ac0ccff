"""A failed tile, merge or write task: its own error reaches the caller and the CLI user.

(A full disk at each stage, the write task's included: tests/faults/test_full_disk.py.)

The tasks run on an in-process cluster, so a stand-in tile function (the ``tile_fn``
seam of :func:`rankdist.tiles.scheduler.run_tiles`) reaches the worker as written, and
each failure happens on a chosen tile: nothing is timed.
"""

from __future__ import annotations

import contextlib
import time

import pytest

import rankdist
import rankdist.api as api
import rankdist.tiles.scheduler as scheduler
from rankdist.cli import main

from _data import counts_adata

ARGS = dict(k=5, cutoffs=(0.5,), block_size=512, progress=False)
FAILING_TILE = (1, 2)


class TileBrokenError(Exception):
    """The error the stand-in tile function raises: a type no library code raises."""


def failing_tile(job, i, j):
    """The real tile task, except that :data:`FAILING_TILE` raises TileBrokenError."""
    if (i, j) == FAILING_TILE:
        msg = f"tile ({i}, {j}) is broken on purpose"
        raise TileBrokenError(msg)
    return scheduler.tile_task(job, i, j)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """1,500 cells: 3 row blocks of 512, so 6 tiles and a merge per block."""
    adata = counts_adata(1500, 60, seed=5)
    return rankdist.ingest(adata, tmp_path_factory.mktemp("errors") / "s.zarr", progress=False)


def _run(store, client, name, tile_fn=scheduler.tile_task):
    request = api.NeighborsRequest.checked(
        store,
        "spearman",
        ARGS["k"],
        ARGS["cutoffs"],
        params=None,
        name=name,
        block_size=ARGS["block_size"],
        type_hist=False,
        form="dense",
        progress=False,
    )
    return api._run(request, client, time.perf_counter(), tile_fn=tile_fn)


@pytest.fixture
def cli_on(monkeypatch, inproc_client):
    """Make ``rankdist neighbors`` run on the in-process cluster instead of starting one."""
    monkeypatch.setattr(
        api, "cluster_client", lambda *a, **kw: contextlib.nullcontext(inproc_client)
    )


def _error_lines(err: str) -> list[str]:
    """The CLI's error lines of ``err``, checked to carry no traceback.

    The in-process workers' own log ("Compute Failed") shares this process's stderr, so
    only the CLI's lines are compared.
    """
    assert "Traceback (most recent call last)" not in err
    return [line for line in err.splitlines() if line.startswith("rankdist neighbors: error")]


def test_tile_error_reaches_caller_unchanged(store, inproc_client):
    with pytest.raises(TileBrokenError, match=r"tile \(1, 2\) is broken on purpose"):
        _run(store, inproc_client, "broken", failing_tile)
    assert not (store.path / "results" / "broken").exists()
    # the cluster is usable afterwards: nothing of the failed run is left running
    assert _run(store, inproc_client, "after").k == ARGS["k"]


def test_cli_prints_task_error_as_one_line(store, cli_on, monkeypatch, capsys):
    run_tiles = api.run_tiles
    monkeypatch.setattr(
        api, "run_tiles", lambda *a, **kw: run_tiles(*a, **(kw | {"tile_fn": failing_tile}))
    )
    argv = ["neighbors", str(store.path), "--name", "clibroken", "--k", "5", "--quiet"]
    assert main([*argv, "--block-size", "512"]) == 1
    assert _error_lines(capsys.readouterr().err) == [
        "rankdist neighbors: error: TileBrokenError: tile (1, 2) is broken on purpose "
        "(rerun with --debug for the traceback)"
    ]
    assert main([*argv, "--block-size", "512", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "in failing_tile" in err
    assert err.splitlines()[-1].startswith("rankdist neighbors: error: TileBrokenError: ")


def test_every_command_takes_debug():
    from rankdist.cli import COMMANDS, build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command in COMMANDS:
        flags = {f for a in sub.choices[command]._actions for f in a.option_strings}
        assert "--debug" in flags, command
