"""TLS on the real one-node SLURM: outsiders are refused, the credentials stay private and go.

The TLS run is a separate process (``rankdist.neighbors`` in a subprocess), so that the
ports it listens on are the run's alone. It holds still, with its scheduler, its two
worker jobs and its credentials up, until the test has probed it: a stand-in for
``run_tiles`` in that process writes a ``ready`` file and waits for a ``go`` file.
"""

from __future__ import annotations

import asyncio
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest
from distributed import Client
from distributed.comm import connect
from distributed.security import Security

import rankdist
from rankdist.cluster.credentials import run_credentials
from rankdist.cluster.jobqueue import jobqueue_client
from rankdist.datasets.toy import synthetic_counts

from _slurm import slurm_profile

ARGS = dict(k=10, cutoffs=(0.45,), block_size=512, progress=False)
PROBE_TIMEOUT_S = 5.0

HELD_RUN = """
import sys, time
from pathlib import Path

import rankdist
from rankdist import api

store, profile, ready, go = sys.argv[1:5]
run_tiles = api.run_tiles


def held_run_tiles(*args, **kwargs):
    # Scheduler, workers and credentials are up and no tile has started: let the test
    # probe the run, and go on when it says so.
    Path(ready).write_text("")
    deadline = time.monotonic() + 300
    while not Path(go).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never released the run")
        time.sleep(0.05)
    return run_tiles(*args, **kwargs)


api.run_tiles = held_run_tiles
rankdist.neighbors(
    store, cluster="slurm", jobs=2, profile=profile, name="tls",
    k=10, cutoffs=(0.45,), block_size=512, progress=False,
)
"""

HELD_CLIENT = """
import sys
from pathlib import Path

from rankdist.cluster.jobqueue import jobqueue_client

profile, ready = sys.argv[1:3]
with jobqueue_client("slurm", jobs=1, profile=profile, quiet=True):
    Path(ready).write_text("")
    sys.stdin.read()  # until SIGTERM
"""


def job_state(name: str) -> list[str]:
    """States of the jobs called ``name``, finished ones included."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-n", name, "-o", "%T"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return out.split()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    """Until ``path`` exists; fail with the process's output if it ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) first:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {path.name} within {timeout} s:\n{log.read_text()}")
        time.sleep(0.1)


def listening(pid: int) -> list[str]:
    """``host:port`` of every TCP port process ``pid`` listens on."""
    found = []
    for conn in psutil.Process(pid).net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN:
            ip = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(conn.laddr.ip, conn.laddr.ip)
            found.append(f"[{ip}]:{conn.laddr.port}" if ":" in ip else f"{ip}:{conn.laddr.port}")
    return found


def client_session(address: str, security: Security | None = None):
    """The scheduler's identity if a ``distributed.Client`` gets a session at
    ``address``; else a string saying how it failed (refused, or timed out)."""

    async def session():
        client = Client(address, security=security, asynchronous=True, timeout="4s")
        try:
            await client
            return await client.scheduler.identity(n_workers=-1)
        finally:
            await client.close()

    return _bounded(session())


def rpc_identity(address: str, security: Security | None = None):
    """A Dask server's answer to ``identity`` (workers and nannies too); else why not."""

    async def identity():
        args = (security or Security()).get_connection_args("client")
        comm = await connect(address, timeout=PROBE_TIMEOUT_S - 1, **args)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    return _bounded(identity())


def _bounded(attempt):
    async def run():
        try:
            return await asyncio.wait_for(attempt, PROBE_TIMEOUT_S)
        except TimeoutError:
            return "timed out"
        except Exception as err:  # any failure to connect is what an outsider should get
            return f"{type(err).__name__}: {err}"

    return asyncio.run(run())


def run_security(directory: Path) -> Security:
    """A Security from a run's credentials files, as its own client has it."""
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    return Security(
        require_encryption=True, tls_ca_file=cert, tls_client_cert=cert, tls_client_key=key
    )


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    adata = synthetic_counts(n_cells=1500, n_genes=200, seed=1)
    path = tmp_path_factory.mktemp("security") / "cells.zarr"
    return rankdist.ingest(adata, path, cell_type="cell_type", progress=False)


@pytest.mark.needs("slurm")
def test_tls_run_refuses_outsiders_and_equals_local(small_store, client, tmp_path):
    name = f"rankdist-tls-{uuid.uuid4().hex[:8]}"
    profile = slurm_profile(tmp_path, name)
    creds, ready, go, log = (tmp_path / n for n in ("creds", "ready", "go", "run.log"))
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                HELD_RUN,
                str(small_store.path),
                str(profile),
                str(ready),
                str(go),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(ready, proc, log)
        # The credentials: one directory of this run, 0700, two files 0600.
        [run_dir] = list(creds.iterdir())
        assert mode(run_dir) == 0o700
        assert sorted(p.name for p in run_dir.iterdir()) == ["cert.pem", "key.pem"]
        assert all(mode(p) == 0o600 and p.is_file() for p in run_dir.iterdir())

        # With the run's credentials a client gets a session: the probe can succeed.
        ports = listening(proc.pid)
        own = run_security(run_dir)
        sessions = {p: client_session(f"tls://{p}", own) for p in ports}
        scheduler = [p for p, s in sessions.items() if isinstance(s, dict)]
        assert len(scheduler) == 1, sessions
        workers = sessions[scheduler[0]]["workers"]
        assert len(workers) == 2 and all(w.startswith("tls://") for w in workers)
        servers = [*workers, *(w["nanny"] for w in workers.values())]
        assert all(isinstance(rpc_identity(s, own), dict) for s in servers)

        # Without them, or with credentials of one's own, nobody gets in anywhere.
        with run_credentials(tmp_path / "outsider") as theirs:
            refusals = {}
            for port in ports:
                refusals[f"tcp://{port}"] = client_session(f"tcp://{port}")
                refusals[f"tls://{port} (own certificate)"] = client_session(
                    f"tls://{port}", theirs.security
                )
            for server in servers:
                hostport = server.split("://", 1)[1]
                refusals[f"tcp://{hostport}"] = rpc_identity(f"tcp://{hostport}")
                refusals[f"{server} (own certificate)"] = rpc_identity(server, theirs.security)
        admitted = {a: r for a, r in refusals.items() if not isinstance(r, str)}
        assert not admitted, f"an outsider got in: {admitted}"
        # The scheduler turns them away at once: TLS, and a certificate it does not trust.
        assert "Connection reset" in refusals[f"tcp://{scheduler[0]}"], refusals
        assert "certificate" in refusals[f"tls://{scheduler[0]} (own certificate)"], refusals
        assert len(refusals) == 2 * (len(ports) + len(servers)) and len(ports) >= 2  # + dashboard

        go.write_text("")
        assert proc.wait(timeout=300) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: the run cancels its jobs and removes its credentials
            proc.wait(timeout=60)
    assert list(creds.iterdir()) == [], "the run's credentials outlived it"
    output = log.read_text()  # quiet: progress=False
    assert "rankdist: warning" not in output, output
    assert len(job_state(name)) == 2

    res = rankdist.load(small_store, "tls")
    ref = rankdist.neighbors(small_store, client=client, name="local", **ARGS)
    assert res.metadata["workers"] == 2
    assert np.array_equal(res.indices, ref.indices)
    assert np.array_equal(res.similarities.view(np.int32), ref.similarities.view(np.int32))
    assert res.counts.identical(ref.counts)


@pytest.mark.needs("slurm")
def test_sigterm_cancels_the_jobs_and_removes_the_credentials(tmp_path):
    name = f"rankdist-term-{uuid.uuid4().hex[:8]}"
    profile = slurm_profile(tmp_path, name)
    creds, ready, log = tmp_path / "creds", tmp_path / "ready", tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", HELD_CLIENT, str(profile), str(ready)],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(ready, proc, log)
        assert len(list(creds.iterdir())) == 1
        proc.send_signal(signal.SIGTERM)  # as scancel or the walltime of the job running it
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert list(creds.iterdir()) == []
    assert "SIGTERM: cancelling the jobs" in log.read_text()
    deadline = time.monotonic() + 30  # scancel is asynchronous
    while (states := job_state(name)) != ["CANCELLED"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert states in (["CANCELLED"], []), states  # [] once SLURM has forgotten it


@pytest.mark.needs("slurm")
def test_insecure_argument_warns_and_lets_anyone_in(tmp_path, capsys):
    """The threat TLS closes, shown: a plain client with no credentials gets a session."""
    profile = slurm_profile(tmp_path, f"rankdist-insecure-{uuid.uuid4().hex[:8]}")
    with jobqueue_client("slurm", jobs=1, profile=profile, quiet=True, insecure=True) as c:
        address = c.scheduler.address
        assert address.startswith("tcp://")
        session = client_session(address)
        assert isinstance(session, dict) and len(session["workers"]) == 1, session
    [warning] = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warning.startswith("rankdist: warning: insecure run (--insecure): the Dask scheduler")
    assert address in warning and "run code as you" in warning
    assert not (tmp_path / "creds").exists()  # no credentials made


@pytest.mark.needs("slurm")
def test_insecure_profile_runs_and_warns(small_store, client, tmp_path, capsys):
    name = f"rankdist-insecure-{uuid.uuid4().hex[:8]}"
    profile = slurm_profile(tmp_path, name, insecure=True)
    res = rankdist.neighbors(
        small_store, cluster="slurm", jobs=1, profile=profile, name="insecure", **ARGS
    )
    err = capsys.readouterr().err
    assert f"rankdist: warning: insecure run (insecure: true in {profile})" in err
    ref = rankdist.neighbors(small_store, client=client, name="local-insecure", **ARGS)
    assert np.array_equal(res.indices, ref.indices)
    assert np.array_equal(res.similarities.view(np.int32), ref.similarities.view(np.int32))
    assert not (tmp_path / "creds").exists()
