"""Smaller errors that must surface as one clear line: the argument, the file or the address.

Each CLI case runs :func:`rankdist.cli.main` in this process and reads stderr; the library
cases check the exception the CLI turns into that line.
"""

from __future__ import annotations

import pytest

import rankdist
from rankdist.cli import main

from _data import counts_adata


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    adata = counts_adata(600, 30, seed=5)
    return rankdist.ingest(adata, tmp_path_factory.mktemp("errors") / "s.zarr", progress=False)


# --- cutoffs ------------------------------------------------------------------------------


@pytest.mark.parametrize("cutoffs", [(), [], set()])
def test_no_cutoffs_is_an_error_in_the_library(store, cutoffs):
    # a run with no cutoff would store counts of no cutoff: refused before any cluster starts
    expected = r"cutoffs must hold at least one correlation in \[-1, 1\]"
    with pytest.raises(ValueError, match=expected):
        rankdist.neighbors(store, k=3, cutoffs=cutoffs, progress=False)
    assert rankdist.list_runs(store) == []


@pytest.mark.parametrize("text", ["", ",", " , "])
def test_no_cutoffs_is_an_error_on_the_command_line(store, capsys, text):
    with pytest.raises(SystemExit) as exit_:
        main(["neighbors", str(store.path), "--quiet", "--cutoffs", text])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "rankdist neighbors: error: argument --cutoffs: --cutoffs needs at least one correlation "
        f"cutoff, like 0.5 or 0.3,0.5,0.7, got {text!r} (leave the option out for the default 0.5)"
    )
    assert rankdist.list_runs(store) == []
