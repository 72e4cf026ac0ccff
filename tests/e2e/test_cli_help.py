"""The command line's parser: every command documented, shared options written once."""

from __future__ import annotations

import argparse

import pytest

from rankdist.cli import build_parser, main, options
from rankdist.cluster.profile import SYSTEMS
from rankdist.encode.registry import ENCODINGS
from rankdist.tiles.sparse import FORMS

#: Options that mean different things in different commands, each with its own help.
DIFFERENT_MEANINGS = {"--cells", "--genes", "--seed", "--out", "store"}


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def actions(command: str) -> dict[str, argparse.Action]:
    """The command's options by their first flag (positionals by dest)."""
    return {
        (a.option_strings[0] if a.option_strings else a.dest): a
        for a in commands()[command]._actions
    }


def test_shared_options_read_the_same_in_every_command():
    helps: dict[str, set[str]] = {}
    for parser in commands().values():
        for a in parser._actions:
            if a.help is not argparse.SUPPRESS and not isinstance(a, argparse._HelpAction):
                flag = a.option_strings[0] if a.option_strings else a.dest
                helps.setdefault(flag, set()).add(a.help)
    twice = {flag: texts for flag, texts in helps.items() if len(texts) > 1}
    assert set(twice) <= DIFFERENT_MEANINGS, twice
    shared = (options.STORE, *options.CLUSTER_OPTIONS, *options.NEIGHBOUR_OPTIONS)
    for flags, kwargs in (*shared, *options.OUTPUT_OPTIONS):
        if flags[0] not in DIFFERENT_MEANINGS:
            assert helps[flags[0]] == {kwargs["help"]}, flags


CLUSTER = ["--cluster", "--workers", "--jobs", "--profile"]
NEIGHBOUR = ["--encoding", "--k", "--cutoffs", "--block-size"]


@pytest.mark.parametrize(
    ("command", "shared"),
    [
        ("neighbors", ["store", *NEIGHBOUR, *CLUSTER, "--quiet"]),
        ("plan", [*NEIGHBOUR, "--profile"]),
        ("doctor", ["--cluster", "--jobs", "--profile"]),
        ("synth", ["--cluster", "--workers", "--quiet", "--overwrite"]),
        ("demo", ["--workers"]),
        ("ingest", ["--quiet", "--overwrite"]),
        ("export", ["store"]),
        ("info", ["store"]),
        ("report", ["store"]),
    ],
)
def test_each_command_takes_its_shared_options(command, shared):
    assert set(shared) <= set(actions(command))


def test_choices_come_from_the_library():
    assert actions("neighbors")["--form"].choices == FORMS
    for command in ("neighbors", "plan"):
        assert tuple(actions(command)["--encoding"].choices) == tuple(ENCODINGS)
    assert "local" in actions("plan")["--scheduler"].choices
    assert set(actions("plan")["--scheduler"].choices) == {*SYSTEMS, "local"}


def test_an_unknown_encoding_is_refused_before_anything_runs(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["neighbors", str(tmp_path / "none.zarr"), "--encoding", "kendall"])
    assert exit_.value.code == 2
    assert "invalid choice: 'kendall'" in capsys.readouterr().err
