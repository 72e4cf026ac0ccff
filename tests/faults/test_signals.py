"""SIGTERM and SIGKILL of a ``rankdist`` command at ingest, encode and tiles.

Each command runs as a subprocess paused at a fixed point of its stage (tests/faults/
_hooks.py: a function wrapped to wait for a ``go`` file), and the signal is sent once the
pause is reached, so what the command had done when it was killed does not depend on
timing:

- ingest: the temporary store exists, no row of X is written yet;
- encode: the encode task has written its chunk of Z into the temporary encoding;
- tiles: two blocks are merged and checkpointed, so some tiles are durable.

SIGTERM: exit 143, one line, and the command's temporary outputs removed. SIGKILL: the
debris stays (a dead process removes nothing); the next run of the same command removes
it, takes over the stale run lock, and gives the clean run's results, recomputing no
tile that was durable.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from faults import _hooks
from faults._checks import INGEST_ARGS, NEIGHBORS_ARGS, same_result, stderr_lines
from faults._hooks import debris, durable_tiles

import rankdist
from rankdist.cli import main
from rankdist.reduce.runstore import list_runs

#: Where each stage is paused, and what its SIGTERM removes (relative to the work folder).
PAUSES = {"ingest": _hooks.INGEST, "encode": _hooks.ENCODE, "tiles": _hooks.merged(2)}


def _argv(stage: str, cells_h5ad: Path, store: Path) -> list[str]:
    if stage == "ingest":
        return ["ingest", str(cells_h5ad), str(store), *INGEST_ARGS]
    return ["neighbors", str(store), *NEIGHBORS_ARGS]


@pytest.fixture
def setup(request, cells_h5ad, tmp_path):
    """(stage, the command's argv, the store, the hook folder) for one stage."""
    stage = request.param
    store = tmp_path / "s.zarr"
    if stage != "ingest":
        rankdist.ingest(cells_h5ad, store, cell_type="cell_type", progress=False)
    return stage, _argv(stage, cells_h5ad, store), store, tmp_path / "hook"


def _wait_for(condition, what: str) -> None:
    """Wait until ``condition()`` holds (a state the command reaches on its own)."""
    deadline = time.monotonic() + _hooks.DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"{what} not seen in {_hooks.DEADLINE_S} s"
        time.sleep(0.02)


def _temporaries(store: Path, stage: str) -> list[Path]:
    """The hidden temporary a command of ``stage`` writes under until it finishes."""
    if stage == "ingest":
        return list(store.parent.glob(f".{store.name}.tmp-*"))
    return list((store / "encodings").glob(".spearman-*.tmp-*"))


@pytest.mark.parametrize("setup", list(PAUSES), indirect=True)
def test_sigterm_exits_143_and_removes_its_outputs(setup):
    stage, argv, store, hook = setup
    proc = _hooks.start(hook, PAUSES[stage], argv)
    _hooks.wait_ready(hook, proc)
    lock = store / "results" / ".spearman.lock"
    if stage != "tiles":
        assert _temporaries(store, stage)  # the kill point: mid-write
    else:
        assert lock.exists()
    proc.send_signal(signal.SIGTERM)
    # The command's own cleanup first (its temporary removed, its lock released); only
    # then may the paused worker calls end, as running tasks would after a SIGTERM.
    if stage == "ingest":
        pass  # paused in the command's own thread: the signal interrupts the pause
    elif stage == "encode":
        _wait_for(lambda: not _temporaries(store, stage), "the temporary encoding removed")
    else:
        _wait_for(lambda: not lock.exists(), "the run's lock released")
    _hooks.release(hook)
    _, err = proc.communicate(timeout=_hooks.DEADLINE_S)
    assert proc.returncode == 143, err
    command = argv[0]
    assert stderr_lines(err) == [
        f"rankdist {command}: terminated (SIGTERM); its unfinished outputs were removed"
    ]
    if stage == "ingest":
        assert sorted(p.name for p in store.parent.iterdir()) == ["hook"]
        return
    assert list_runs(store) == []
    if stage == "encode":  # the block tasks encode: the run's work directory exists
        assert [p.name for p in (store / "encodings").iterdir()] == ["zarr.json"]
    # the work directory stays, for the next run to resume from; nothing half-written
    assert debris(store) == ["results/.spearman.partial"]


@pytest.mark.parametrize("setup", list(PAUSES), indirect=True)
def test_sigkill_then_the_same_command_cleans_up_and_completes(setup, clean, cli_on, capsys):
    stage, argv, store, hook = setup
    proc = _hooks.start(hook, PAUSES[stage], argv)
    _hooks.wait_ready(hook, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the command and its in-process cluster
    proc.communicate(timeout=_hooks.DEADLINE_S)
    assert proc.returncode == -signal.SIGKILL

    # what a dead process leaves: its temporary, its lock, its work directory
    work = store / "results" / ".spearman.partial"
    if stage == "ingest":
        assert len(_temporaries(store, stage)) == 1
    elif stage == "encode":  # encoded by the run's block tasks: its work directory exists
        assert len(_temporaries(store, stage)) == 1
        assert debris(store)[-2:] == ["results/.spearman.lock", "results/.spearman.partial"]
    else:
        assert debris(store) == ["results/.spearman.lock", "results/.spearman.partial"]
        n_blocks = clean.metadata["n_blocks"]
        durable = durable_tiles(work / "checkpoint", n_blocks)
        assert durable > 0

    # the same command again, in this process (its cluster: cli_on)
    assert main(argv) == 0
    err = capsys.readouterr().err
    if stage == "ingest":
        assert debris(store.parent) == []
        assert main(["neighbors", str(store), *NEIGHBORS_ARGS]) == 0
    else:
        assert f"taking over the stale lock of run 'spearman' (host {os.uname().nodename}, " in err
    assert debris(store) == []
    res = rankdist.load(store, "spearman")
    assert same_result(res, clean)
    if stage == "tiles":
        assert res.metadata["tiles_resumed"] == durable
        assert res.metadata["tiles_computed"] == res.metadata["n_tiles"] - durable
