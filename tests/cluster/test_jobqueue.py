"""Batch-system clusters through dask-jobqueue: the deploy/ profiles, `doctor`, a real SLURM."""

from __future__ import annotations

import getpass
import re
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import dask
import numpy as np
import pytest
import yaml
from dask.utils import parse_timedelta

import rankdist
from rankdist.cli import main
from rankdist.cluster.client import cluster_client
from rankdist.cluster.jobqueue import jobqueue_client, make_cluster, resolve_profile
from rankdist.datasets.toy import synthetic_counts

from _slurm import slurm_profile, write_profile

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SYSTEMS = ("slurm", "pbs", "sge", "lsf")
# How each system's job script asks for what the profile says (beyond the worker command).
DIRECTIVES = {
    "slurm": [
        "#SBATCH -J {name}",
        "#SBATCH -p {queue}",
        "#SBATCH -A {account}",
        "#SBATCH -t {walltime}",
        "#SBATCH --cpus-per-task={cores}",
        "#SBATCH --mem=",
    ],
    "pbs": [
        "#PBS -N {name}",
        "#PBS -q {queue}",
        "#PBS -A {account}",
        "#PBS -l walltime={walltime}",
        "#PBS -l select=1:ncpus={cores}:mem=",
    ],
    "sge": [
        "#$ -N {name}",
        "#$ -q {queue}",
        "#$ -P {project}",
        "#$ -l h_rt={walltime}",
        "#$ -l {resource-spec}",
    ],
    "lsf": [
        "#BSUB -J {name}",
        "#BSUB -q {queue}",
        '#BSUB -P "{project}"',
        "#BSUB -W {walltime}",
        "#BSUB -n {cores}",
        "#BSUB -M ",
    ],
}


def deploy_section(system: str) -> dict:
    return yaml.safe_load((DEPLOY / f"{system}.yaml").read_text())["jobqueue"][system]


def local_copy(tmp_path: Path, system: str) -> Path:
    """A deploy/ profile with this machine's loopback interface (no ib0 here), any free
    dashboard port on loopback (other test sessions may hold 8787), and the TLS
    credentials under ``tmp_path/creds`` rather than in the home directory."""
    section = deploy_section(system)
    section["interface"] = "lo"
    section["scheduler-options"] = {"dashboard_address": "127.0.0.1:0"}
    section["credentials-directory"] = str(tmp_path / "creds")
    return write_profile(tmp_path / f"{system}.yaml", system, section)


def walltime_s(system: str, text: str) -> float:
    parts = [int(p) for p in text.split(":")]
    units = [3600, 60] if system == "lsf" else [3600, 60, 1]  # LSF: HH:MM
    assert len(parts) == len(units), f"{system} walltime {text!r}"
    return sum(p * u for p, u in zip(parts, units, strict=True))


# ---------------------------------------------------------------- profiles


@pytest.mark.parametrize("system", SYSTEMS)
def test_profile_builds_its_job_script(system, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # log-directory is relative: keep it out of the repository
    section = deploy_section(system)
    for key in (
        "interface",
        "cores",
        "memory",
        "processes",
        "walltime",
        "worker-extra-args",
        "local-directory",
        "job-script-prologue",
        "log-directory",
    ):
        assert section.get(key) is not None, f"deploy/{system}.yaml lacks {key}"
    assert section.get("queue") and (section.get("account") or section.get("project"))

    profile = resolve_profile(system, local_copy(tmp_path, system))
    with make_cluster(profile) as cluster:
        script = cluster.job_script()
    for template in DIRECTIVES[system]:
        assert template.format_map(section) in script, (template, script)
    worker = next(line for line in script.splitlines() if "distributed.cli.dask_worker" in line)
    assert f"--nthreads {section['cores']}" in worker
    assert f"--local-directory {section['local-directory']}" in worker
    assert " ".join(section["worker-extra-args"]) in worker
    assert "--interface lo" in worker
    assert "--nworkers" not in worker  # processes: 1
    for line in section["job-script-prologue"]:
        assert line in script.splitlines()
    assert str(tmp_path / section["log-directory"]) in script  # made absolute, here


@pytest.mark.parametrize("system", SYSTEMS)
def test_profile_lifetime_ends_before_walltime(system):
    section = deploy_section(system)
    args = [str(a) for a in section["worker-extra-args"]]
    lifetime = parse_timedelta(args[args.index("--lifetime") + 1])
    stagger = parse_timedelta(args[args.index("--lifetime-stagger") + 1])
    assert isinstance(section["walltime"], str)
    margin = walltime_s(system, section["walltime"]) - (lifetime + stagger)
    assert margin >= 60, f"deploy/{system}.yaml: a worker may live until {margin} s before walltime"


def test_lifetime_reaching_walltime_is_refused(tmp_path):
    section = deploy_section("slurm") | {"walltime": "00:50:00"}
    path = write_profile(tmp_path / "p.yaml", "slurm", section)
    with pytest.raises(ValueError, match=r"p\.yaml.*--lifetime 55m.*reaches the walltime 00:50"):
        resolve_profile("slurm", path)


def test_profile_keys_may_use_either_spelling(tmp_path):
    section = {"cores": 2, "memory": "4GB", "local_directory": "/scratch", "job-mem": "5G"}
    profile = resolve_profile("slurm", write_profile(tmp_path / "p.yaml", "slurm", section))
    assert profile.options["local_directory"] == "/scratch"
    assert profile.options["job_mem"] == "5G"
    assert profile.options["job_name"] == "dask-worker"  # dask-jobqueue's default


def test_without_profile_dask_jobqueue_config_applies(tmp_path):
    with dask.config.set({"jobqueue.pbs.cores": 3, "jobqueue.pbs.memory": "6GB"}):
        profile = resolve_profile("pbs")
    assert profile.path is None
    assert (profile.options["cores"], profile.options["memory"]) == (3, "6GB")


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"cluster": "slurmx"}, ValueError, r"unknown --cluster 'slurmx'.*slurm, pbs, sge, lsf"),
        ({"cluster": "slurm", "jobs": 0}, ValueError, r"jobs must be a positive integer.*got 0"),
        ({"cluster": "slurm", "jobs": -2}, ValueError, r"positive integer.*got -2"),
        ({"cluster": "slurm", "jobs": 1.5}, ValueError, r"positive integer.*got 1\.5"),
        ({"cluster": "local", "jobs": 2}, ValueError, r"--jobs/--profile apply to slurm"),
        ({"cluster": "slurm", "workers": 2}, ValueError, r"--workers/threads apply only"),
        ({"cluster": "slurm", "profile": "nope.yaml"}, FileNotFoundError, r"profile nope\.yaml"),
    ],
)
def test_cluster_client_errors(kwargs, error, match):
    with pytest.raises(error, match=match), cluster_client(**kwargs):
        pass


def test_profile_without_the_section(tmp_path):
    path = write_profile(tmp_path / "pbs.yaml", "pbs", {"cores": 1, "memory": "1GB"})
    with pytest.raises(
        ValueError, match=r"pbs\.yaml has no 'jobqueue: slurm:' section.*it has: pbs"
    ):
        resolve_profile("slurm", path)
    path.write_text("cores: 1\n")
    with pytest.raises(ValueError, match=r"pbs\.yaml has no 'jobqueue: slurm:' section"):
        resolve_profile("slurm", path)


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"cores": 1, "memory": "1GB", "walltme": "01:00:00"}, r"unknown key\(s\) \['walltme'\]"),
        ({"cores": 1}, r"does not set memory"),
        ({"cores": 1, "memory": "1GB", "walltime": 3600}, r"walltime is 3600.*quote it"),
    ],
)
def test_bad_profile_values(tmp_path, section, match):
    path = write_profile(tmp_path / "p.yaml", "slurm", section)
    with pytest.raises(ValueError, match=r"p\.yaml.*" + match):
        resolve_profile("slurm", path)


def test_unquoted_walltime_in_yaml_is_caught(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("jobqueue:\n  slurm:\n    cores: 1\n    memory: 1GB\n    walltime: 12:00:00\n")
    with pytest.raises(ValueError, match=r"walltime is 43200, not a string.*quote it"):
        resolve_profile("slurm", path)


def test_missing_interface_names_the_profile(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the cluster makes the log-directory before it fails
    section = deploy_section("slurm") | {"interface": "nosuchif0"}
    path = write_profile(tmp_path / "p.yaml", "slurm", section)
    with pytest.raises(
        ValueError, match=r"p\.yaml \(jobqueue\.slurm\): 'nosuchif0' is not a valid"
    ):
        make_cluster(resolve_profile("slurm", path))


# ---------------------------------------------------------------- doctor


@pytest.mark.parametrize("system", SYSTEMS)
def test_doctor_prints_script_dashboard_and_tunnel(system, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for var in ("SLURM_SUBMIT_HOST", "PBS_O_HOST", "SGE_O_HOST", "LSB_SUB_HOST"):
        monkeypatch.delenv(var, raising=False)
    profile = local_copy(tmp_path, system)
    assert main(["doctor", "--cluster", system, "--profile", str(profile), "--jobs", "3"]) == 0
    out = capsys.readouterr().out
    assert "nothing is submitted" in out and "jobs: 3 x (16 cores, 64GB" in out
    assert "interface lo, address 127.0.0.1" in out
    link = re.search(r"dashboard: (http://127\.0\.0\.1:(\d+)/status)", out)
    assert link, out
    port = link.group(2)
    assert f"ssh -N -L {port}:127.0.0.1:{port} {getpass.getuser()}@<login-host>" in out
    assert "job script" in out and "distributed.cli.dask_worker" in out
    assert "--lifetime 55m --lifetime-stagger 4m" in out


def test_doctor_login_host(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    profile = str(local_copy(tmp_path, "slurm"))
    monkeypatch.setenv("SLURM_SUBMIT_HOST", "login7.hpc.example.org")  # inside a batch job
    assert main(["doctor", "--cluster", "slurm", "--profile", profile]) == 0
    assert "@login7.hpc.example.org" in capsys.readouterr().out
    args = ["doctor", "--cluster", "slurm", "--profile", profile, "--login-host", "hpc.example"]
    assert main(args) == 0
    # Inside a batch job the scheduler runs on this compute node, its dashboard on this
    # node's loopback: the tunnel jumps through the login host to this node.
    node = re.escape(socket.gethostname())
    tunnel = rf"ssh -N -L (\d+):127\.0\.0\.1:\1 -J \S+@hpc\.example \S+@{node}\n"
    assert re.search(tunnel, capsys.readouterr().out)
    monkeypatch.delenv("SLURM_SUBMIT_HOST")  # on the login host: straight there
    assert main(args) == 0
    assert re.search(r"ssh -N -L (\d+):127\.0\.0\.1:\1 \S+@hpc\.example\n", capsys.readouterr().out)


def test_doctor_on_the_deploy_profile_as_shipped(tmp_path, monkeypatch, capsys):
    """deploy/slurm.yaml names ib0: doctor either shows the script or says the interface is
    missing here, naming the file and the interfaces that exist."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))  # its credentials-directory is ~/.rankdist/...
    code = main(["doctor", "--cluster", "slurm", "--profile", str(DEPLOY / "slurm.yaml")])
    out, err = capsys.readouterr()
    if code == 0:
        assert "#SBATCH" in out and "ssh -N -L" in out and "dashboard: http" in out
    else:
        assert code == 2
        assert "slurm.yaml (jobqueue.slurm): 'ib0' is not a valid network interface" in err
        assert "set interface:" in err


def test_doctor_local(capsys):
    assert main(["doctor", "--login-host", "me.example"]) == 0
    out = capsys.readouterr().out
    assert "--cluster local" in out and "dashboard: http://" in out
    assert re.search(r"ssh -N -L (\d+):\S+:\1 \S+@me\.example", out)
    assert "no job script" in out


def test_doctor_errors(tmp_path, capsys):
    assert main(["doctor", "--cluster", "slurm", "--profile", str(tmp_path / "x.yaml")]) == 2
    assert "x.yaml not found" in capsys.readouterr().err
    assert main(["doctor", "--cluster", "sge", "--jobs", "0"]) == 2
    assert "jobs must be a positive integer" in capsys.readouterr().err


# ---------------------------------------------------------------- a real SLURM


def slurm_jobs(name: str) -> list[str]:
    """Ids of the jobs called ``name``, finished ones included (kept MinJobAge, 300 s)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-n", name, "-o", "%i"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return out.split()


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    adata = synthetic_counts(n_cells=1500, n_genes=200, seed=1)
    path = tmp_path_factory.mktemp("slurm") / "cells.zarr"
    return rankdist.ingest(adata, path, cell_type="cell_type", progress=False)


@pytest.mark.needs("slurm")
def test_neighbors_on_slurm_equal_local_bit_for_bit(small_store, client, tmp_path):
    name = f"rankdist-test-{uuid.uuid4().hex[:8]}"
    profile = slurm_profile(tmp_path, name)
    args = dict(k=10, cutoffs=(0.45,), block_size=512, progress=False)
    # the 8-bit screen in the SLURM jobs' worker processes, float32 here: the same bits
    res = rankdist.neighbors(
        small_store, cluster="slurm", jobs=2, profile=profile, name="slurm", kernel="screen", **args
    )
    ref = rankdist.neighbors(small_store, client=client, name="local", kernel="float32", **args)

    assert len(slurm_jobs(name)) == 2, "two SLURM jobs should have run"
    assert res.metadata["workers"] == 2 and res.metadata["n_tiles"] == 6
    assert res.metadata["work_stealing"] is False  # its scheduler was started here
    assert (res.metadata["kernel"], ref.metadata["kernel"]) == ("screen", "float32")
    assert np.array_equal(res.indices, ref.indices)
    assert np.array_equal(res.similarities.view(np.int32), ref.similarities.view(np.int32))
    assert res.counts.identical(ref.counts)


@pytest.mark.needs("slurm")
def test_slurm_refusing_a_job_says_why(tmp_path):
    profile = slurm_profile(tmp_path, "rankdist-refused", queue="nosuchpartition")
    with (
        pytest.raises(ChildProcessError, match=r"(?s)sbatch refused.*invalid partition.*--profile"),
        cluster_client("slurm", profile=profile),
    ):
        pass


@pytest.mark.needs("slurm")
def test_slurm_jobs_that_never_start_time_out_with_directions(tmp_path):
    name = f"rankdist-pending-{uuid.uuid4().hex[:8]}"
    profile = slurm_profile(tmp_path, name, **{"job-extra-directives": ["--begin=now+1hour"]})
    with (
        pytest.raises(TimeoutError, match=r"within 3 s.*squeue -u \$USER.*output files in"),
        jobqueue_client("slurm", jobs=1, profile=profile, start_timeout=3, quiet=True),
    ):
        pass
    ids = slurm_jobs(name)
    assert len(ids) == 1
    state = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", ids[0], "-o", "%T"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    assert state == "CANCELLED"  # closing the cluster cancelled the pending job


@pytest.mark.needs("slurm")
def test_slurm_worker_retiring_at_lifetime_is_replaced(tmp_path):
    """The walltime story: a worker leaves at --lifetime and a new job takes its place."""
    name = f"rankdist-lifetime-{uuid.uuid4().hex[:8]}"
    lifetime = {"worker-extra-args": ["--lifetime", "3s"]}
    profile = slurm_profile(tmp_path, name, **lifetime)
    seen: set[str] = set()
    with (
        dask.config.set({"distributed.deploy.lost-worker-timeout": "1s"}),
        jobqueue_client("slurm", jobs=1, profile=profile, quiet=True) as client,
    ):
        deadline = time.monotonic() + 45
        while len(seen) < 2 and time.monotonic() < deadline:
            seen.update(client.scheduler_info()["workers"])
            time.sleep(0.2)
    assert len(seen) >= 2, "no replacement worker joined after the first one retired"
    assert len(slurm_jobs(name)) >= 2


@pytest.mark.needs("slurm")
def test_slurm_job_cancelled_mid_run_changes_nothing(client, tmp_path):
    """scancel of one of two worker jobs mid-run: Dask recomputes, the result is unchanged."""
    adata = synthetic_counts(n_cells=8000, n_genes=400, seed=2)
    store = rankdist.ingest(adata, tmp_path / "c.zarr", cell_type="cell_type", progress=False)
    args = dict(k=10, cutoffs=(0.45,), block_size=512, progress=False)
    ref = rankdist.neighbors(store, client=client, name="local", **args)
    name = f"rankdist-test-{uuid.uuid4().hex[:8]}"
    profile = slurm_profile(tmp_path, name)
    ckpt = store.path / "results" / ".slurm.partial" / "checkpoint"
    cancelled = {}

    def cancel_one_job_mid_run():
        # dask-jobqueue needs the main thread for its signal handlers, so the run stays
        # there and this watcher cancels a job once merged partials are on disk
        deadline = time.monotonic() + 180
        while not (ckpt.exists() and len(list(ckpt.glob("b*.npz"))) >= 4):
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        running = subprocess.run(
            ["squeue", "-h", "-t", "running", "-n", name, "-o", "%i"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.split()
        cancelled["running"] = running
        if running:
            subprocess.run(["scancel", running[0]], check=True, timeout=30)
            cancelled["job"] = running[0]
            cancelled["remaining_checkpoint_files"] = len(list(ckpt.glob("b*.npz")))

    watcher = threading.Thread(target=cancel_one_job_mid_run)
    watcher.start()
    res = rankdist.neighbors(store, cluster="slurm", jobs=2, profile=profile, name="slurm", **args)
    watcher.join(timeout=60)
    assert len(cancelled.get("running", [])) == 2, cancelled  # both jobs ran when one was cancelled
    assert "job" in cancelled, "the run finished before a job could be cancelled"
    state = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", cancelled["job"], "-o", "%T"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    assert state in ("CANCELLED", ""), state  # "" once SLURM has forgotten the job
    assert np.array_equal(res.indices, ref.indices)
    assert np.array_equal(res.similarities.view(np.int32), ref.similarities.view(np.int32))
    assert res.counts.identical(ref.counts)
