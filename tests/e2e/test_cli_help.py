"""The command line's parser: every command documented, shared options written once."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import rankdist.cli
from rankdist.cli import COMMANDS, build_parser, main, options
from rankdist.cli.parser import PLAN_CLUSTERS
from rankdist.cluster.profile import SYSTEMS
from rankdist.datasets.atlas import taxonomy
from rankdist.encode.registry import ENCODINGS
from rankdist.tiles.sparse import FORMS

#: Options that mean different things in different commands, each with its own help.
DIFFERENT_MEANINGS = {"--cells", "--genes", "--seed", "--out", "store", "--run"}
#: plan's --cluster chooses among batch systems (no scheduler address): its own option.
OWN_OPTIONS = {("plan", "--cluster")}


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


def test_every_command_is_parsed_and_run():
    assert list(commands()) == list(COMMANDS)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_is_in_the_docstring_and_has_help(command, capsys):
    assert f"* ``{command}``: " in rankdist.cli.__doc__
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: rankdist {command} ")


def test_shared_options_read_the_same_in_every_command():
    helps: dict[str, set[str]] = {}
    for command, parser in commands().items():
        for a in parser._actions:
            flag = a.option_strings[0] if a.option_strings else a.dest
            if not isinstance(a, argparse._HelpAction) and (command, flag) not in OWN_OPTIONS:
                helps.setdefault(flag, set()).add(a.help)
    twice = {flag: texts for flag, texts in helps.items() if len(texts) > 1}
    assert set(twice) <= DIFFERENT_MEANINGS, twice
    shared = (options.STORE, *options.CLUSTER_OPTIONS, *options.NEIGHBOUR_OPTIONS)
    for flags, kwargs in (*shared, *options.OUTPUT_OPTIONS):
        if flags[0] not in DIFFERENT_MEANINGS:
            assert helps[flags[0]] == {kwargs["help"]}, flags


CLUSTER = ["--cluster", "--workers", "--jobs", "--profile", "--insecure", "--security"]
NEIGHBOUR = ["--encoding", "--k", "--cutoffs", "--block-size"]


@pytest.mark.parametrize(
    ("command", "shared"),
    [
        ("neighbors", ["store", *NEIGHBOUR, *CLUSTER, "--quiet"]),
        ("plan", [*NEIGHBOUR, "--cluster", "--jobs", "--profile"]),
        ("doctor", ["--cluster", "--jobs", "--profile", "--insecure", "--security"]),
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
    assert actions("plan")["--cluster"].choices == PLAN_CLUSTERS == (*SYSTEMS, "local")


def test_plan_clusters_are_the_planners_schedulers():
    # parser.py builds the tuple itself so that the parser does not import the planner
    from rankdist.planning.model import SCHEDULERS

    assert PLAN_CLUSTERS == SCHEDULERS


def test_building_the_parser_leaves_the_heavy_modules_alone():
    # `rankdist --help` stays fast: no Dask distributed, zarr or planner behind the parser
    code = (
        "import sys; from rankdist.cli import build_parser; build_parser(); "
        "print(sorted({'distributed', 'zarr', 'rankdist.planning.model'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_atlas_defaults_come_from_the_taxonomy(monkeypatch):
    assert actions("synth")["--donors"].default == taxonomy.N_DONORS == 427
    assert actions("plan")["--label-values"].default == "54,8,427"
    # one definition: the parser reads it when built, and its help shows the value
    monkeypatch.setattr(taxonomy, "N_DONORS", 300)
    monkeypatch.setattr(taxonomy, "ATLAS_LABEL_SIZES", (54, 8, 300))
    donors, values = actions("synth")["--donors"], actions("plan")["--label-values"]
    assert donors.default == 300 and "(default 300)" in donors.help
    assert values.default == "54,8,300" and "(default 54,8,300: " in values.help


def test_plan_calibration_help_says_which_file_is_read_and_written(monkeypatch, tmp_path):
    from rankdist.planning.calibration import user_calibration_path

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    mine = user_calibration_path().relative_to(tmp_path).as_posix()
    monkeypatch.delenv("XDG_CONFIG_HOME")
    home = user_calibration_path().relative_to(tmp_path / "home").as_posix()
    read, write = actions("plan")["--calibration"].help, actions("plan")["--calibrate"].help
    assert (
        f"(default: your own file, $XDG_CONFIG_HOME/{mine}, else ~/{home}, if it exists; "
        "else the file shipped with rankdist)"
    ) in read
    assert "write them to your own file (see --calibration), unless --calibration FILE" in write


def test_an_unknown_encoding_is_refused_before_anything_runs(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["neighbors", str(tmp_path / "none.zarr"), "--encoding", "kendall"])
    assert exit_.value.code == 2
    assert "invalid choice: 'kendall'" in capsys.readouterr().err


# ---------------------------------------------------------------- plan: --cluster, --jobs

PLAN = [
    "plan",
    "--cells",
    "2.3M",
    "--genes",
    "2000",
    "--cores-per-node",
    "32",
    "--mem-per-node",
    "96GiB",
    "--store",
    "pfc.zarr",
]


def test_plan_takes_cluster_and_jobs_as_neighbors_does(capsys):
    assert main([*PLAN, "--cluster", "pbs", "--jobs", "50"]) == 0
    out, err = capsys.readouterr()
    assert "rankdist neighbors pfc.zarr --cluster pbs --jobs 50 --profile deploy/pbs.yaml" in out
    assert "50 pbs jobs (one per node)" in out
    assert "deprecated" not in err


def test_plan_keeps_scheduler_and_nodes_as_deprecated_spellings(capsys):
    assert main([*PLAN, "--cluster", "pbs", "--jobs", "50"]) == 0
    new = capsys.readouterr().out
    assert main([*PLAN, "--scheduler", "pbs", "--nodes", "50"]) == 0
    out, err = capsys.readouterr()
    assert out == new
    assert "rankdist plan: warning: --scheduler is deprecated; use --cluster" in err
    assert "rankdist plan: warning: --nodes is deprecated; use --jobs" in err
    parser = build_parser()
    old = parser.parse_args(["plan", "--scheduler", "local", "--nodes", "3"])
    assert old == parser.parse_args(["plan", "--cluster", "local", "--jobs", "3"])
    assert (old.cluster, old.jobs) == ("local", 3)
    assert parser.parse_args(["plan"]).cluster == "slurm"  # the default, as before
    assert "use --cluster" in actions("plan")["--scheduler"].help
    assert "use --jobs" in actions("plan")["--nodes"].help


def test_plan_on_this_machine_takes_one_job(capsys):
    assert main(["plan", "--cells", "20k", "--genes", "2000", "--cluster", "local"]) == 0
    assert "this machine" in capsys.readouterr().out
    assert (
        main(["plan", "--cells", "20k", "--genes", "2000", "--cluster", "local", "--jobs", "3"])
        == 2
    )
    assert "one machine" in capsys.readouterr().err


def test_plan_cluster_is_a_batch_system_or_local(capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*PLAN, "--cluster", "tcp://host:8786"])
    assert exit_.value.code == 2
    assert "invalid choice: 'tcp://host:8786'" in capsys.readouterr().err
