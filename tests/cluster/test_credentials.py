"""Per-run TLS credentials: private files, a working key pair, removal, stale directories."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from rankdist.cluster.credentials import (
    credentials_root,
    describe_mode,
    remove_stale,
    run_credentials,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_are_private_and_removed_after(tmp_path):
    root = tmp_path / "creds"
    old_umask = os.umask(0)  # permissions must not depend on the user's umask
    try:
        with run_credentials(root) as made:
            directory = made.directory
            assert directory.parent == root
            assert directory.name.startswith(f"{socket.gethostname()}-{os.getpid()}-")
            assert mode(directory) == 0o700
            assert sorted(p.name for p in directory.iterdir()) == ["cert.pem", "key.pem"]
            assert all(mode(p) == 0o600 for p in directory.iterdir())
            assert "PRIVATE KEY" in (directory / "key.pem").read_text()
            worker = made.security.get_tls_config_for_role("worker")
            assert worker["key"] == str(directory / "key.pem")  # by path: a job script names it
            assert describe_mode(directory).startswith("drwx------ (0700), owner ")
    finally:
        os.umask(old_umask)
    assert not directory.exists()
    assert list(root.iterdir()) == []


def test_removed_when_the_run_fails(tmp_path):
    with pytest.raises(KeyboardInterrupt), run_credentials(tmp_path) as made:
        raise KeyboardInterrupt
    assert not made.directory.exists()


def test_the_credentials_secure_a_cluster(tmp_path):
    """Scheduler, worker and client accept each other; a client without them gets nothing."""
    with (
        run_credentials(tmp_path) as made,
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=False,
            protocol="tls://",
            security=made.security,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        assert cluster.scheduler_address.startswith("tls://")
        assert client.submit(sum, [1, 2]).result() == 3
        with pytest.raises((OSError, TypeError)):  # no TLS context: refused before any request
            Client(cluster.scheduler_address, timeout="2s")


def test_a_root_that_cannot_be_made_names_the_profile_key(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match=r"under .*file.*set credentials-directory: in the profile"):
        with run_credentials(blocker / "creds"):
            pass


def test_default_root_is_in_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert credentials_root() == tmp_path / ".rankdist" / "credentials"
    assert credentials_root("$HOME/x") == tmp_path / "x"


HOLD = """
import sys
from pathlib import Path
from rankdist.cluster.credentials import run_credentials

with run_credentials(sys.argv[1]) as made:
    print(made.directory, flush=True)
    sys.stdin.read()  # until the test closes stdin or kills this process
"""


def test_a_crashed_runs_directory_is_removed_at_the_next_start(tmp_path):
    root = tmp_path / "creds"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    left = Path(proc.stdout.readline().strip())
    assert left.is_dir()
    alive = root / f"{socket.gethostname()}-{os.getpid()}-live"  # this process: running
    other_host = root / f"another-node-{os.getpid() + 1}-abc"  # cannot be checked from here
    for d in (alive, other_host):
        d.mkdir()
    proc.kill()  # SIGKILL: no clean-up runs
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert left.is_dir()

    with run_credentials(root) as made:
        assert not left.exists()
        assert alive.is_dir() and other_host.is_dir()
        assert sorted(p.name for p in root.iterdir()) == sorted(
            [made.directory.name, alive.name, other_host.name]
        )


def test_a_reused_pid_does_not_keep_a_directory(tmp_path):
    """The pid is alive again, but its process started after the directory was made."""
    stale = tmp_path / f"{socket.gethostname()}-{os.getpid()}-old"
    stale.mkdir()
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    assert remove_stale(tmp_path) == [stale]
    assert not stale.exists()


def test_stale_removal_leaves_files_and_links_alone(tmp_path):
    dead_pid = _dead_pid()
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_text("")
    link = tmp_path / f"{socket.gethostname()}-{dead_pid}-link"
    link.symlink_to(target)
    plain = tmp_path / f"{socket.gethostname()}-{dead_pid}-file"
    plain.write_text("")
    assert remove_stale(tmp_path) == []
    assert (target / "keep").exists() and link.is_symlink() and plain.exists()


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    return int(proc.stdout)
