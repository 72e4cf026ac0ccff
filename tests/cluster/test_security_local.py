"""Nobody else gets in: the embedded cluster is in-process, or speaks TLS with per-run credentials.

The default (one worker) runs in this process on Dask's in-process transport: nothing
listens but the two HTTP status pages on 127.0.0.1, and another process that tries those
ports with Dask's protocol is refused. With ``workers=2`` (worker processes), while the
LocalCluster is up, another process on this machine tries, as an outsider would, every
address it listens on (scheduler, workers, nannies): plain TCP, and TLS that trusts the
server's certificate while presenting one of its own. It is refused; with the run's
credentials it gets in, and with ``insecure=True`` it gets in with none, so the probe can
tell an open door from a closed one. A ``tls://``
scheduler is joined with a ``--security`` file; the file's errors, the plain-TCP
warnings and ``rankdist doctor``'s security lines are checked, and a TLS run's results
are bit for bit those of an insecure one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import psutil
import pytest
from distributed.security import Security

import rankdist
from rankdist.cluster.address import join_security
from rankdist.cluster.client import cluster_client, doctor_report
from rankdist.cluster.local import local_client
from rankdist.cluster.security import InsecureClusterWarning, security_from_file, security_lines
from rankdist.datasets.toy import synthetic_counts

#: Run in another process: try every address as an outsider; print {address: {how: result}}.
OUTSIDER = textwrap.dedent(
    """
    import asyncio, json, ssl, sys
    from distributed import Client
    from distributed.comm.addressing import parse_host_port
    from distributed.core import rpc
    from distributed.security import Security

    def attempts(address, credentials):
        scheme, _, location = address.partition("://")
        if credentials:  # the run's own files: the probe must get in with them
            ca, cert, key = credentials
            return {"the run's credentials": (address, Security(
                require_encryption=True, tls_ca_file=ca, tls_client_cert=cert,
                tls_client_key=key))}
        if scheme == "tcp":
            return {"plain tcp": (address, None)}
        own = Security.temporary()
        own.tls_ca_file = ssl.get_server_certificate(parse_host_port(location))
        return {"plain tcp": ("tcp://" + location, None), "own certificate": (address, own)}

    def join_scheduler(address, security):
        try:
            with Client(address, timeout="5s", security=security) as client:
                return f"joined: {len(client.scheduler_info()['workers'])} worker(s)"
        except OSError as err:  # CommClosedError and TimeoutError are OSErrors
            return f"refused: {type(err).__name__}: {err}"

    async def identify(address, security):
        args = security.get_connection_args("client") if security else {}
        server = rpc(address, connection_args=args, timeout=5)
        try:
            return f"joined: {(await asyncio.wait_for(server.identity(), 10))['type']}"
        except OSError as err:
            return f"refused: {type(err).__name__}: {err}"
        finally:
            await server.close_rpc()

    scheduler, *others = sys.argv[1].split(",")
    credentials = sys.argv[2].split(",") if len(sys.argv) > 2 else None
    seen = {scheduler: {how: join_scheduler(*a)
                        for how, a in attempts(scheduler, credentials).items()}}
    for address in others:
        seen[address] = {how: asyncio.run(identify(*a))
                         for how, a in attempts(address, credentials).items()}
    print(json.dumps(seen))
    """
)

#: Run in another process: join an in-process scheduler by its address.
JOIN_INPROC = textwrap.dedent(
    """
    import sys
    from distributed import Client
    try:
        with Client(sys.argv[1], timeout="5s") as client:
            print("joined:", client)
    except (OSError, ValueError) as err:
        print(f"refused: {type(err).__name__}: {err}")
    """
)


def outsider(addresses: list[str], credentials: list[Path] | None = None) -> dict:
    """What another process sees when it connects to ``addresses`` (scheduler first)."""
    argv = [sys.executable, "-c", OUTSIDER, ",".join(addresses)]
    if credentials:
        argv.append(",".join(map(str, credentials)))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def listening(client) -> tuple[list[str], dict[int, str]]:
    """The cluster's comm addresses (scheduler first); the IP each of its ports listens on."""
    workers = client.scheduler_info()["workers"]
    addresses = [client.scheduler.address, *workers, *(w["nanny"] for w in workers.values())]
    ports = {int(a.rsplit(":", 1)[1]) for a in addresses}
    ports.add(int(client.dashboard_link.split(":")[2].split("/")[0]))
    here = psutil.Process()
    bound = {}
    for proc in (here, *here.children(recursive=True)):
        for conn in proc.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port in ports:
                bound[conn.laddr.port] = conn.laddr.ip
    return addresses, bound


def listening_ports(proc: psutil.Process) -> dict[int, str]:
    """The TCP ports ``proc`` listens on, and the IP each is bound to."""
    conns = proc.net_connections(kind="inet")
    return {c.laddr.port: c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN}


def write_credentials(security: Security, folder: Path) -> list[Path]:
    """The run's CA, certificate and key as files only their owner can read."""
    folder.mkdir(mode=0o700)
    paths = []
    for name, pem in (
        ("ca.pem", security.tls_ca_file),
        ("client.pem", security.tls_client_cert),
        ("client.key", security.tls_client_key),
    ):
        path = folder / name
        path.touch(mode=0o600)
        path.write_text(pem)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def tls_client():
    """A client of two local worker processes: TLS with credentials made for the run."""
    with local_client(workers=2, threads_per_worker=1, dashboard_address=":0", quiet=True) as c:
        yield c


def test_the_in_process_default_listens_on_no_dask_port():
    here = psutil.Process()
    before, children = listening_ports(here), set(here.children(recursive=True))
    with local_client(dashboard_address=":0", quiet=True) as client:
        assert client.scheduler.address.startswith("inproc://")
        (worker,) = client.scheduler_info()["workers"].values()
        assert worker["nanny"] is None and worker["type"] == "Worker"
        opened = {p: ip for p, ip in listening_ports(here).items() if p not in before}
        assert set(here.children(recursive=True)) == children  # no process started
        assert client.submit(os.getpid).result() == os.getpid()
        # what listens: the dashboard and the worker's status page, HTTP on 127.0.0.1
        dashboard = int(client.dashboard_link.split(":")[2].split("/")[0])
        assert client.dashboard_link.startswith("http://127.0.0.1:")
        assert opened == {dashboard: "127.0.0.1", worker["services"]["dashboard"]: "127.0.0.1"}
        # they speak HTTP (status pages, metrics), not Dask's protocol
        health = f"http://127.0.0.1:{worker['services']['dashboard']}/health"
        assert urllib.request.urlopen(health, timeout=10).read() == b"ok"
        # and another process cannot reach the scheduler's in-process address at all
        join = subprocess.run(
            [sys.executable, "-c", JOIN_INPROC, client.scheduler.address],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert join.returncode == 0, join.stderr
    assert join.stdout.startswith("refused: ValueError: inproc address "), join.stdout
    assert "does not match host" in join.stdout and "or pid" in join.stdout
    assert listening_ports(here).keys() <= before.keys()  # all closed after the block


def test_another_process_cannot_connect_to_the_local_cluster(tls_client, tmp_path):
    addresses, bound = listening(tls_client)
    assert len(addresses) == 5 and all(a.startswith("tls://127.0.0.1:") for a in addresses)
    # every port of the cluster, the dashboard's included, is on the loopback interface
    assert len(bound) == 6 and set(bound.values()) == {"127.0.0.1"}, bound

    seen = outsider(addresses)
    assert set(seen) == set(addresses)
    for address, tries in seen.items():
        assert set(tries) == {"plain tcp", "own certificate"}
        for how, result in tries.items():
            assert result.startswith("refused: "), f"{how} to {address}: {result}"
    # the outsider trusted the server's certificate; the server refused the outsider's,
    # which its per-run CA did not sign (with an "unknown CA" alert, or by hanging up)
    refusal = seen[addresses[0]]["own certificate"]
    assert re.search(r"ALERT_UNKNOWN_CA|EOF occurred in violation of protocol", refusal), refusal

    # the same probe with the run's credentials gets in: the refusals are about them
    credentials = write_credentials(tls_client.security, tmp_path / "run")
    seen = outsider(addresses, credentials)
    assert seen[addresses[0]] == {"the run's credentials": "joined: 2 worker(s)"}
    kinds = sorted(r for a in addresses[1:] for r in seen[a].values())
    assert kinds == ["joined: Nanny"] * 2 + ["joined: Worker"] * 2
    # rankdist doctor's line for this mode
    (line, _) = security_lines(addresses[0], tls_client.security)
    assert line.startswith(f"security: TLS ({addresses[0]}): scheduler, workers and client hold")


def test_insecure_is_plain_tcp_that_another_process_can_join(recwarn):
    with local_client(
        workers=2, threads_per_worker=1, dashboard_address=":0", insecure=True, quiet=True
    ) as client:
        (warning,) = [w for w in recwarn if w.category is InsecureClusterWarning]
        assert "any user of this machine can connect to it and run code as you" in str(
            warning.message
        )
        addresses, bound = listening(client)
        assert all(a.startswith("tcp://127.0.0.1:") for a in addresses)
        (line,) = security_lines(addresses[0], client.security)
        assert line.startswith(f"security: NONE: plain TCP to {addresses[0]}, no credentials;")
        assert "any user of that machine can connect and run code" in line
        assert set(bound.values()) == {"127.0.0.1"}
        seen = outsider(addresses)
    assert seen[addresses[0]] == {"plain tcp": "joined: 2 worker(s)"}
    assert sorted(r for a in addresses[1:] for r in seen[a].values()) == (
        ["joined: Nanny"] * 2 + ["joined: Worker"] * 2
    )


def test_tls_run_equals_insecure_run_bit_for_bit(tmp_path):
    store = rankdist.ingest(
        synthetic_counts(n_cells=1100, n_genes=300, seed=7),
        tmp_path / "cells.zarr",
        cell_type="cell_type",
        progress=False,
    )
    common = dict(k=12, cutoffs=(0.3, 0.5), cluster="local", workers=2, block_size=512)
    tls = rankdist.neighbors(store, name="tls", progress=False, **common)
    with pytest.warns(InsecureClusterWarning, match="plain TCP on 127.0.0.1"):
        plain = rankdist.neighbors(store, name="plain", insecure=True, progress=False, **common)
    assert tls.metadata["n_tiles"] == plain.metadata["n_tiles"] == 6
    np.testing.assert_array_equal(tls.indices, plain.indices)
    assert tls.similarities.tobytes() == plain.similarities.tobytes()
    assert np.array_equal(tls.excluded, plain.excluded)
    assert tls.counts.identical(plain.counts)


# ------------------------------------------------------------ joining a tls:// scheduler


def security_file(folder: Path, tls: dict) -> Path:
    path = folder / "dask-tls.yaml"
    path.write_text(json.dumps({"distributed": {"comm": {"tls": tls}}}))  # JSON is YAML
    return path


def test_joining_a_tls_scheduler_with_a_security_file(tls_client, tmp_path):
    ca, cert, key = write_credentials(tls_client.security, tmp_path / "creds")
    # relative paths are read from the file's folder
    file = security_file(
        tmp_path, {"ca-file": "creds/ca.pem", "client": {"cert": "creds/client.pem"}}
    )
    cert.write_text(cert.read_text() + key.read_text())  # the key inside the certificate file
    address = tls_client.scheduler.address
    with cluster_client(address, security=file, quiet=True) as joined:
        assert joined.submit(sum, [1, 2]).result() == 3
        lines = security_lines(address, joined.security, str(file))
    assert lines == [
        f"security: TLS ({address}); credentials from {file}:",
        f"  ca-file: {ca} (mode 0600)",
        f"  client.cert: {cert} (mode 0600)",
    ]
    cert.chmod(0o644)
    assert security_lines(address, joined.security, str(file))[-1] == (
        f"  WARNING: other users can read the key in {cert}: chmod 600 it"
    )
    # without --security or Dask's configuration there is nothing to join with
    with pytest.raises(ValueError, match=r"needs TLS credentials: pass --security FILE"):
        join_security(address)


@pytest.mark.parametrize(
    ("content", "error", "match"),
    [
        (None, FileNotFoundError, r"--security file .*dask-tls.yaml does not exist"),
        ("distributed: [comm\n", ValueError, r"dask-tls.yaml is not YAML \(line 2\)"),
        ({"distributed": {"comm": {}}}, ValueError, r"has no distributed: comm: tls: section"),
        ({"client": {"cert": "c.pem"}}, ValueError, r"has no distributed.comm.tls.ca-file; write"),
        ({"ca-file": "ca.pem"}, ValueError, r"has no distributed.comm.tls.client.cert; write"),
        (
            {"ca-file": "missing.pem", "client": {"cert": "ca.pem"}},
            FileNotFoundError,
            r"distributed.comm.tls.ca-file names .*missing.pem, which is not a file",
        ),
    ],
)
def test_security_file_errors_name_the_file_and_the_key(tmp_path, content, error, match):
    (tmp_path / "ca.pem").write_text("")
    path = tmp_path / "dask-tls.yaml"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_text(
            json.dumps(
                content if "distributed" in content else {"distributed": {"comm": {"tls": content}}}
            )
        )
    with pytest.raises(error, match=match):
        security_from_file(path)


# ------------------------------------------------------------ plain TCP, options, doctor


@pytest.mark.parametrize("address", ["tcp://192.0.2.7:8786", "tcp://[2001:db8::7]:8786"])
def test_plain_tcp_off_the_loopback_interface_warns(address):
    # checked before connecting: these documentation-only addresses are never contacted
    with pytest.warns(InsecureClusterWarning) as caught:
        assert join_security(address) is None
    (warning,) = caught
    text = str(warning.message)
    assert "\n" not in text
    assert text.startswith(f"{address} is plain TCP over the network: anyone who reaches")
    assert text.endswith("join it as --cluster tls://HOST:PORT --security FILE")
    assert "anyone who reaches that port" in security_lines(address, Security())[0]


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:8786", "tcp://localhost:1", "tcp://[::1]:9"])
def test_plain_tcp_on_the_loopback_interface_does_not_warn(address):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert join_security(address) is None
    assert "any user of that machine" in security_lines(address, Security())[0]


@pytest.mark.parametrize(
    ("cluster", "kwargs", "match"),
    [
        ("local", {"security": "dask-tls.yaml"}, r"--security joins a running tls:// scheduler"),
        ("slurm", {"security": "dask-tls.yaml"}, r"--cluster slurm starts its own cluster"),
        ("tls://h:1", {"insecure": True}, r"--insecure applies to the clusters rankdist starts"),
        ("tcp://127.0.0.1:1", {"security": "f.yaml"}, r"--security applies to tls:// addresses"),
        ("tls://h", {}, r"--cluster tls://h: missing port number .*; use tls://HOST:PORT"),
    ],
)
def test_security_options_that_do_not_apply_are_refused(cluster, kwargs, match):
    with pytest.raises(ValueError, match=match), cluster_client(cluster, **kwargs):
        pass


def test_doctor_reports_the_local_security_mode():
    report = doctor_report(login_host="login1")
    assert "\nscheduler: inproc://" in report
    assert "\nsecurity: in-process: the scheduler and the worker are threads of this" in report
    assert "so no other process can connect\n" in report
    # in-process there is no network transport for --insecure to open: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        insecure = doctor_report(insecure=True, login_host="login1")
    assert "\nsecurity: in-process: " in insecure and "NONE" not in insecure
