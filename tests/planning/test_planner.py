"""The capacity planner's arithmetic, its size parsing, the CLI and its errors.

Expected values are computed by hand from the formulas in docs/planning.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from pathlib import Path

import pytest

from rankdist.cli import main
from rankdist.planning.calibration import Calibration, load_calibration, packaged_calibration_path
from rankdist.planning.describe import format_seconds, parse_count, parse_memory, plan_capacity
from rankdist.planning.model import (
    Layout,
    RunSpec,
    flops,
    min_memory_per_node,
    n_merges,
    n_tasks,
    plan_run,
    result_bytes,
    storage_bytes,
    tile_makespan,
    wall_time_model,
)
from rankdist.tiles.grid import TilePlan, choose_block_rows, worker_memory_needed

ATLAS = ["--cells", "2.3M", "--genes", "2000", "--jobs", "50", "--cores-per-node", "32"]

#: Round numbers, so that times can be checked by hand.
CAL = Calibration(
    gemm_gflops_per_core=100.0,  # 2 G / 1e11 s per pair
    fused_ns_per_pair=10.0,
    encode_ns_per_value=1.0,
    tile_fixed_s=0.0,
    worker_s_per_task=0.0,
    driver_s_per_task=0.001,
    merge_fixed_s=0.0,
    merge_s_per_mb=0.01,
    write_fixed_s=0.0,
    write_s_per_mb=0.02,
    startup_s=5.0,
)


def test_flops_of_the_atlas_match_the_design_brief():
    assert flops(2_300_000, 2000) == 2 * 2000 * 2_300_000 * 2_300_001 / 2
    assert flops(2_300_000, 2000) == pytest.approx(1.058e16, rel=1e-3)
    assert flops(50_000, 2000) == pytest.approx(5.0e12, rel=1e-3)


def test_atlas_with_16k_blocks_has_141_blocks_and_10011_tiles():
    spec = RunSpec(2_300_000, 2000)
    plan = plan_run(spec, Layout(50, 32, 128e9), CAL, block_rows=16384)
    assert plan.n_blocks == 141  # ceil(2.3e6 / 16384) = ceil(140.38)
    assert plan.n_tiles == 141 * 142 // 2 == 10011
    # each block folds 141 tile sides, 4 at a time: ceil(140 / 3) = 47 merges per block
    assert plan.n_merges == n_merges(141) == 141 * 47
    assert plan.n_tasks == n_tasks(TilePlan(2_300_000, 16384)) == 10011 + 141 * 47 + 141


def test_block_size_is_what_neighbors_would_choose_for_the_layout():
    # 1,600 threads: sqrt(2 * 8 * 1600) = 160 blocks -> 2.3e6 / 160 = 14375 -> 14336 (x512);
    # 128 GB per 32-thread worker does not bind.
    plan = plan_capacity(
        "2.3M", 2000, nodes=50, cores_per_node=32, mem_per_node="128GB", calibration=CAL
    )
    assert plan.block_rows == 14336 and plan.block_rows_chosen
    assert plan.n_blocks == 161 and plan.n_tiles == 161 * 162 // 2
    # 8 GB per 32-thread worker binds: 0.6 * 8e9 - 350 MiB over
    # 4 * 8000 + 32 * (2 * 8000 + 4 * 2316) bytes per row = 5274.2 rows -> 5120
    small = plan_capacity(
        "2.3M", 2000, nodes=50, cores_per_node=32, mem_per_node="8GB", calibration=CAL
    )
    assert small.block_rows == 5120


def test_storage_sizes_by_hand():
    spec = RunSpec(1000, 100, k=10, n_cutoffs=1, label_values=(5, 3))
    sizes = storage_bytes(spec, block_rows=512)
    assert sizes["store X"] == 1000 * 100 * 4
    assert sizes["encoded Z"] == 1000 * 100 * 4 + 1000
    # indices int64 + similarities float32 (N x k), counts int32 (N x 1 x 8), excluded
    assert sizes["results"] == 1000 * 10 * 12 + 1000 * 8 * 4 + 1000
    assert result_bytes(spec) == {
        "indices": 1000 * 10 * 8,
        "similarities": 1000 * 10 * 4,
        "counts": 1000 * 8 * 4,
        "excluded": 1000,
    }
    # 2 blocks x 4 partials x 512 rows x (10 * 12 + 8 * 4) bytes
    assert sizes["checkpoints at peak"] == 2 * 4 * 512 * 152
    assert spec.partial_bytes_per_row == 152


def test_atlas_partials_and_results():
    spec = RunSpec(2_300_000, 2000, k=30, label_values=(54, 8, 427))
    assert spec.partial_bytes_per_row == 30 * 12 + 489 * 4 == 2316
    sizes = storage_bytes(spec, block_rows=16384)
    assert sizes["encoded Z"] == 2_300_000 * 2000 * 4 + 2_300_000
    assert sizes["results"] == 2_300_000 * (30 * 12 + 489 * 4 + 1)


def test_makespan_by_hand():
    # Three blocks of 512 on two threads; an off-diagonal tile costs 1 s, a diagonal one
    # 512 * 513 / 2 / 512^2 = 0.50098 s. In plan order (0,1) (0,2) (0,0) (1,2) (1,1) (2,2),
    # each to the first free thread: ends at 1, 1, 1.50098, 2, 2.00196, 2.50098.
    plan = TilePlan(1536, 512)
    diag = 513 / 1024
    makespan, balanced = tile_makespan(plan, 2, 1 / 512**2, 0.0)
    assert makespan == pytest.approx(2 + diag)
    assert balanced == pytest.approx((3 + 3 * diag) / 2)
    # one thread: no tail
    makespan, balanced = tile_makespan(plan, 1, 1 / 512**2, 0.25)
    assert makespan == pytest.approx(balanced) == pytest.approx(3 + 3 * diag + 6 * 0.25)


def test_wall_time_model_by_hand():
    spec = RunSpec(1024, 1000, k=10, label_values=(2,))
    layout = Layout(1, 1, 64e9, scheduler="local")
    w = wall_time_model(spec, layout, 512, CAL)
    pairs = 1024 * 1025 // 2
    per_pair = 2 * 1000 / 1e11 + 10e-9
    assert w.startup == 5.0
    assert w.encode == pytest.approx(1024 * 1000 * 1e-9)  # one chunk of 1024 cells
    assert w.tiles == pytest.approx(pairs * per_pair) and w.tail == pytest.approx(0.0)
    partial_mb = 512 * (10 * 12 + 2 * 4) / 1e6
    merges = 2 * math.ceil(1 / 3)
    assert w.reduce == pytest.approx((merges * 0.01 + 2 * 0.02) * partial_mb)
    tasks = 3 + merges + 2
    assert w.scheduler == pytest.approx(tasks * 0.001)  # local: on the same cores
    assert w.total == pytest.approx(5.0 + w.encode + w.tiles + w.reduce + w.scheduler)
    # fixed costs: per tile, per merge, per write, and Dask's per task on each
    fixed = dataclasses.replace(
        CAL, tile_fixed_s=0.5, worker_s_per_task=0.1, merge_fixed_s=0.2, write_fixed_s=0.3
    )
    wf = wall_time_model(spec, layout, 512, fixed)
    assert wf.tiles == pytest.approx(w.tiles + 3 * (0.5 + 0.1))
    assert wf.reduce == pytest.approx(w.reduce + merges * (0.2 + 0.1) + 2 * (0.3 + 0.1))


def test_a_slow_scheduler_bounds_a_batch_run():
    slow = dataclasses.replace(CAL, driver_s_per_task=10.0)
    spec = RunSpec(100_000, 2000)
    plan = plan_run(spec, Layout(4, 8, 64e9), slow, block_rows=4096)
    w = plan.wall
    assert w.driver_bound
    # the tile phase lasts as long as the scheduler needs for every task
    assert w.tiles + w.tail + w.reduce + w.scheduler == pytest.approx(plan.n_tasks * 10.0)
    fast = plan_run(spec, Layout(4, 8, 64e9), CAL, block_rows=4096).wall
    assert not fast.driver_bound and fast.scheduler == 0.0


def test_a_scheduler_bound_plan_suggests_larger_blocks():
    from rankdist.planning.describe import describe_plan

    slow = dataclasses.replace(CAL, driver_s_per_task=0.05)
    plan = plan_capacity(
        "2.3M", 2000, nodes=200, cores_per_node=32, mem_per_node="128GB", calibration=slow
    )
    assert plan.wall.driver_bound and plan.block_rows < 16384
    text = describe_plan(plan)
    assert "the scheduler is the bottleneck" in text
    assert f"hint         with --block-size 16384: {10011 + 141 * 47 + 141:,} tasks" in text


def test_more_nodes_never_slow_the_tiles():
    spec = RunSpec(500_000, 2000)
    times = [
        plan_run(spec, Layout(n, 32, 128e9), CAL, block_rows=8192).wall.tiles for n in (1, 2, 8, 32)
    ]
    assert times == sorted(times, reverse=True)
    assert times[0] == pytest.approx(2 * times[1], rel=1e-6)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2.3M", 2_300_000),
        ("1.15M", 1_150_000),
        ("500k", 500_000),
        ("2,300,000", 2_300_000),
        ("2.3e6", 2_300_000),
        ("2000", 2000),
        (" 16K ", 16_000),
        (42, 42),
    ],
)
def test_parse_count(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize("text", ["1.5", "2.3x", "M", "", "1.0005k", "nan"])
def test_parse_count_rejects(text):
    with pytest.raises(ValueError, match="--cells"):
        parse_count(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.04, "0.0 s"),
        (9.94, "9.9 s"),
        (10, "10 s"),
        (89.4, "89 s"),
        (90, "1.5 min"),
        (5399, "90.0 min"),
        (5400, "1.5 h"),
        (936_000, "260.0 h"),
    ],
)
def test_format_seconds_picks_the_unit_that_reads_best(seconds, text):
    assert format_seconds(seconds) == text


def test_parse_memory_reads_sizes_as_dask_jobqueue():
    assert parse_memory("128GB") == 128e9
    assert parse_memory("96GiB") == 96 * 2**30
    assert parse_memory("512 MB") == 512e6
    with pytest.raises(ValueError, match="--mem-per-node takes a size"):
        parse_memory("lots")


def test_min_memory_per_node_by_hand():
    # per row: 4 cached Z rows + 32 threads x (2 Z rows + 4 partial rows) bytes
    per_row = 4 * 8000 + 32 * (2 * 8000 + 4 * 2316)
    need = (per_row * 512 + 350 * 2**20) / 0.6
    assert min_memory_per_node(RunSpec(2_300_000, 2000), 32) == pytest.approx(need)
    assert 1.3e9 < need < 1.4e9


def test_worker_memory_needed_is_the_inverse_of_choose_block_rows():
    sizes = {"threads_per_worker": 32, "bytes_per_row_partial": 2316}
    need = worker_memory_needed(5120, 2000, **sizes)
    per_row = 4 * 8000 + 32 * (2 * 8000 + 4 * 2316)
    assert need == pytest.approx((5120 * per_row + 350 * 2**20) / 0.6)

    def chosen(memory):
        return choose_block_rows(10**9, 2000, threads=1, worker_memory=memory, **sizes)

    assert chosen(need * (1 + 1e-9)) == 5120
    assert chosen(need * (1 - 1e-9)) == 4608


def test_cli_prints_the_plan_and_the_jobqueue_command(capsys):
    assert main(["plan", *ATLAS, "--mem-per-node", "128GB"]) == 0
    out = capsys.readouterr().out
    assert (
        "rankdist neighbors STORE --cluster slurm --jobs 50 --profile deploy/slurm.yaml "
        "--block-size 14336 --encoding spearman --k 30 --cutoffs 0.5"
    ) in out
    assert "14,336 cells per block" in out and "13,041 tiles" in out
    assert "1.06e16 FLOPs" in out
    assert "encoded Z (float32)" in out and "18.4 GB" in out
    assert "checkpoints at peak" in out and "wall time" in out


def test_cli_other_batch_systems_and_options(capsys):
    args = [*ATLAS, "--mem-per-node", "96GiB", "--cluster", "pbs", "--store", "pfc.zarr"]
    args += ["--k", "15", "--cutoffs", "0.3,0.5", "--block-size", "8192", "--encoding", "pearson"]
    assert main(["plan", *args]) == 0
    out = capsys.readouterr().out
    assert (
        "rankdist neighbors pfc.zarr --cluster pbs --jobs 50 --profile deploy/pbs.yaml "
        "--block-size 8192 --encoding pearson --k 15 --cutoffs 0.3,0.5"
    ) in out
    assert "(as given)" in out


def test_cli_counts_size_follows_the_label_values(capsys):
    base = [*ATLAS, "--mem-per-node", "128GB", "--block-size", "16384"]
    assert main(["plan", *base, "--label-values", "10"]) == 0
    small = capsys.readouterr().out
    assert main(["plan", *base, "--label-values", "54,8,427"]) == 0
    atlas = capsys.readouterr().out
    # counts: 2.3e6 cells x 10 values x 4 bytes = 92 MB; x 489 values = 4.5 GB
    assert "counts 92 MB" in small and "counts 4.5 GB" in atlas


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cells", "0", "--genes", "2000"], "--cells must be a positive integer"),
        (["--cells", "2.3M", "--genes", "0"], "--genes must be a positive integer"),
        (["--cells", "1.5", "--genes", "2000"], "not a whole number"),
        (["--cells", "2.3M", "--genes", "2000", "--k", "0"], "--k must be a positive"),
        (["--cells", "100", "--genes", "2000", "--k", "100"], "smaller than --cells"),
    ],
)
def test_cli_rejects_bad_sizes(capsys, args, message):
    full = [*args, "--jobs", "2", "--cores-per-node", "8", "--mem-per-node", "32GB"]
    assert main(["plan", *full]) == 2
    assert message in capsys.readouterr().err


def test_cli_rejects_memory_too_small_for_one_block(capsys):
    assert main(["plan", *ATLAS, "--mem-per-node", "1GB"]) == 2
    err = capsys.readouterr().err
    assert "cannot hold one block of 512 cells for 32 threads" in err
    assert "at least 1.33 GB per node" in err
    assert main(["plan", *ATLAS, "--mem-per-node", "2GB"]) == 0


def test_cli_rejects_a_bad_job_layout(capsys):
    job = ["--cores-per-node", "8", "--mem-per-node", "32GB"]
    assert main(["plan", "--cells", "2.3M", "--genes", "2000", "--jobs", "0", *job]) == 2
    assert "--jobs must be a positive integer, got 0" in capsys.readouterr().err
    assert (
        main(
            [
                "plan",
                "--cells",
                "2.3M",
                "--genes",
                "2000",
                "--cores-per-node",
                "0",
                "--mem-per-node",
                "32GB",
            ]
        )
        == 2
    )
    assert "--cores-per-node must be a positive integer, got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"^--cluster 'htcondor' is not one of slurm, "):
        Layout(1, 8, 32e9, scheduler="htcondor")


def test_cli_needs_the_job_size_on_a_batch_system(capsys):
    assert main(["plan", "--cells", "2.3M", "--genes", "2000", "--jobs", "4"]) == 2
    assert (
        "--cores-per-node and --mem-per-node needed for --cluster slurm: what one job asks for"
    ) in capsys.readouterr().err
    assert main(["plan", "--genes", "2000"]) == 2
    assert "give --cells and --genes" in capsys.readouterr().err


def test_local_plan_uses_this_machine_and_no_jobqueue(capsys):
    assert main(["plan", "--cells", "20k", "--genes", "2000", "--cluster", "local"]) == 0
    out = capsys.readouterr().out
    assert "this machine" in out and "--cluster" not in out
    assert (
        main(["plan", "--cells", "20k", "--genes", "2000", "--cluster", "local", "--jobs", "3"])
        == 2
    )
    err = capsys.readouterr().err
    assert "--cluster local runs on one machine; got --jobs 3: leave --jobs out" in err


def test_old_spellings_still_plan_and_warn(capsys):
    # --scheduler and --nodes are deprecated spellings of --cluster and --jobs: they still
    # work, warn, and the errors they lead to name the new options
    assert main(["plan", "--cells", "20k", "--genes", "2000", "--scheduler", "local"]) == 0
    out, err = capsys.readouterr()
    assert "this machine" in out
    assert "warning: --scheduler is deprecated; use --cluster" in err
    assert (
        main(["plan", "--cells", "20k", "--genes", "2000", "--scheduler", "local", "--nodes", "3"])
        == 2
    )
    err = capsys.readouterr().err
    assert "warning: --nodes is deprecated; use --jobs" in err
    assert "--cluster local runs on one machine; got --jobs 3" in err


def test_packaged_calibration_loads_and_is_package_data():
    cal = load_calibration()
    for f in dataclasses.fields(Calibration):
        if f.name != "measured":
            assert getattr(cal, f.name) >= 0, f.name
    assert cal.gemm_gflops_per_core > 1 and cal.startup_s > 0
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").exists():  # a source checkout: the file ships in wheels
        pyproject = tomllib.loads((root / "pyproject.toml").read_text())
        patterns = pyproject["tool"]["setuptools"]["package-data"]["rankdist"]
        rel = packaged_calibration_path().relative_to(root / "rankdist").as_posix()
        assert any(Path(rel).match(p) for p in patterns)


def test_calibration_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="rankdist plan --calibrate"):
        load_calibration(tmp_path / "none.json")
    bad = tmp_path / "old.json"
    bad.write_text(json.dumps({"gemm_gflops_per_core": 1.0}))
    with pytest.raises(ValueError, match="lacks"):
        load_calibration(bad)
    bad.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_calibration(bad)
    path = CAL.save(tmp_path / "sub" / "cal.json")
    assert load_calibration(path) == CAL


@pytest.mark.slow
def test_calibrate_measures_every_constant(tmp_path):
    from rankdist.planning.calibrate import calibrate

    lines: list[str] = []
    out = tmp_path / "cal.json"
    cal = calibrate(out, cells=3072, genes=300, block_rows=1024, workdir=tmp_path, log=lines.append)
    assert load_calibration(out) == cal
    for f in dataclasses.fields(Calibration):
        if f.name != "measured":
            assert getattr(cal, f.name) >= 0, f.name
    assert cal.gemm_gflops_per_core > 0 and cal.startup_s > 0 and cal.driver_s_per_task > 0
    # 3 blocks of 1024 cells (6 tiles), and 6 blocks of 512 (21 tiles), 3 passes each
    assert cal.measured["tiles"]["n_tiles"] == [6, 21]
    assert [len(p) for p in cal.measured["tiles"]["tile_thread_s"]] == [3, 3]
    assert cal.measured["workload"] == {"cells": 3072, "genes": 300, "block_rows": 1024}
    assert lines[-1] == f"wrote {out}"
