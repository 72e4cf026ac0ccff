"""Who can reach a batch run: profile security keys, warnings, doctor's security lines,
the dashboard's binding and the SSH tunnel to it (no batch system needed)."""

from __future__ import annotations

import getpass
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from rankdist.cli import main
from rankdist.cluster.access import (
    dashboard_link,
    security_report,
    start_warnings,
    tunnel_command,
)
from rankdist.cluster.credentials import run_credentials
from rankdist.cluster.jobqueue import make_cluster
from rankdist.cluster.profile import DASHBOARD_ADDRESS, dashboard_on_loopback, resolve_profile

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
USER = getpass.getuser()


def profile_at(tmp_path: Path, **section) -> Path:
    path = tmp_path / "p.yaml"
    base = {"cores": 1, "memory": "1GB", "processes": 1, "interface": "lo"}
    path.write_text(yaml.safe_dump({"jobqueue": {"slurm": base | section}}))
    return path


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:8787", True),
        ("127.0.0.1:0", True),
        ("localhost:8787", True),
        ("[::1]:8787", True),
        (":8787", False),  # every interface
        ("0.0.0.0:8787", False),
        ("10.1.2.3:8787", False),
        ("node042:8787", False),
        ("8787", False),
        (8787, False),
        (None, False),  # Dask binds the scheduler's interface
    ],
)
def test_dashboard_on_loopback(address, loopback):
    assert dashboard_on_loopback(address) is loopback


@pytest.mark.parametrize("system", ["slurm", "pbs", "sge", "lsf"])
def test_deploy_profiles_are_secure_as_shipped(system, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    profile = resolve_profile(system, DEPLOY / f"{system}.yaml")
    assert profile.options["scheduler_options"]["dashboard_address"] == "127.0.0.1:8787"
    assert profile.insecure is False
    assert profile.credentials_directory == tmp_path / ".rankdist" / "credentials"
    assert not {"insecure", "credentials_directory"} & set(profile.options)  # rankdist's own


def test_a_profile_without_dashboard_address_gets_loopback(tmp_path):
    profile = resolve_profile("slurm", profile_at(tmp_path, **{"scheduler-options": {}}))
    assert profile.options["scheduler_options"] == {"dashboard_address": DASHBOARD_ADDRESS}
    assert profile.credentials_directory is None and profile.insecure is False
    chosen = profile_at(tmp_path, **{"scheduler-options": {"dashboard_address": ":9999"}})
    assert resolve_profile("slurm", chosen).options["scheduler_options"] == {
        "dashboard_address": ":9999"
    }


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"insecure": "yes"}, r"insecure is 'yes'; write true or false"),
        ({"credentials-directory": 5}, r"credentials-directory is 5; write a directory"),
        ({"insecur": True}, r"unknown key\(s\) \['insecur'\].*rankdist reads \['credentials-"),
    ],
)
def test_bad_security_keys(tmp_path, section, match):
    with pytest.raises(ValueError, match=r"p\.yaml.*" + match):
        resolve_profile("slurm", profile_at(tmp_path, **section))


def test_security_report_tls(tmp_path):
    root = tmp_path / "creds"
    profile = resolve_profile("slurm", profile_at(tmp_path, **{"credentials-directory": str(root)}))
    lines = security_report(profile)
    assert lines[0].startswith("security: TLS (tls://) with per-run credentials")
    assert f"under {root} (<host>-<pid>-<random>, 0700, cert.pem and key.pem 0600)" in lines[1]
    assert f"{root}: does not exist yet; filesystem " in lines[2]
    assert lines[-1].startswith("dashboard binding: 127.0.0.1:8787, the loopback interface")
    with run_credentials(root):  # made as a run makes it
        pass
    assert re.search(
        r": drwx------ \(0700\), owner \S+; filesystem \S+ mounted at /",
        "\n".join(security_report(profile)),
    )
    root.chmod(0o777)
    assert "is writable by others" in "\n".join(security_report(profile))


def test_security_report_and_warnings_insecure(tmp_path):
    path = profile_at(
        tmp_path, insecure=True, **{"scheduler-options": {"dashboard_address": ":8787"}}
    )
    profile = resolve_profile("slurm", path)
    lines = security_report(profile)
    assert lines[0].startswith(f"security: NONE, plain tcp:// (insecure: true in {path})")
    assert lines[1] == "credentials: none"
    assert lines[2].startswith("dashboard binding: WARNING: the dashboard listens on ':8787'")
    warnings = start_warnings(profile, False, "tcp://10.1.2.3:4567")
    assert len(warnings) == 2
    assert re.match(
        r"rankdist: warning: insecure run \(insecure: true in .*p\.yaml\): the Dask scheduler "
        r"at tcp://10\.1\.2\.3:4567 speaks plain TCP; .*run code as you$",
        warnings[0],
    )
    assert "set it to '127.0.0.1:8787' and use the SSH tunnel" in warnings[1]


def test_insecure_argument_is_the_same_as_the_profile_key(tmp_path):
    profile = resolve_profile("slurm", profile_at(tmp_path))
    assert start_warnings(profile, False, "tls://127.0.0.1:1") == []  # TLS, loopback: quiet
    [line] = start_warnings(profile, True, "tcp://127.0.0.1:1")
    assert "insecure run (--insecure)" in line
    assert security_report(profile, insecure=True)[0].startswith(
        "security: NONE, plain tcp:// (--insecure)"
    )


def test_doctor_reports_security_and_removes_its_credentials(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "creds"
    path = profile_at(tmp_path, **{"credentials-directory": str(root)})
    assert main(["doctor", "--cluster", "slurm", "--profile", str(path)]) == 0
    out = capsys.readouterr().out
    assert "security: TLS (tls://)" in out and f"{root}: drwx------ (0700)" in out
    assert re.search(r"this check bound tls://127\.0\.0\.1:\d+", out)
    worker = next(line for line in out.splitlines() if "distributed.cli.dask_worker" in line)
    assert "--protocol tls://" in worker
    key = re.search(r"--tls-key (\S+)", worker).group(1)
    assert Path(key).parent.parent == root and Path(key).name == "key.pem"
    assert list(root.iterdir()) == []  # the check's credentials are gone


def test_doctor_insecure_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            ["doctor", "--cluster", "slurm", "--profile", str(profile_at(tmp_path, insecure=True))]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "security: NONE, plain tcp://" in out and "this check bound tcp://" in out
    assert "--tls-" not in out


def test_an_unencrypted_protocol_is_refused_with_tls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    profile = resolve_profile("slurm", profile_at(tmp_path, protocol="tcp://"))
    with run_credentials(tmp_path / "creds") as made:
        with pytest.raises(ValueError, match=r"protocol 'tcp://' is not encrypted.*insecure: true"):
            make_cluster(profile, security=made.security)


def test_dashboard_link_names_the_loopback_it_listens_on(tmp_path):
    cluster = SimpleNamespace(dashboard_link="http://10.1.2.3:8787/status")
    for address, link in [
        ("127.0.0.1:8787", "http://127.0.0.1:8787/status"),
        ("localhost:8787", "http://127.0.0.1:8787/status"),
        ("[::1]:8787", "http://[::1]:8787/status"),
        (":8787", "http://10.1.2.3:8787/status"),  # every interface: the scheduler's address
    ]:
        path = profile_at(tmp_path, **{"scheduler-options": {"dashboard_address": address}})
        assert dashboard_link(cluster, resolve_profile("slurm", path)) == link


def test_tunnel_command():
    loop, node = "http://127.0.0.1:8787/status", "http://10.1.2.3:8787/status"
    assert tunnel_command(loop, "login") == f"ssh -N -L 8787:127.0.0.1:8787 {USER}@login"
    assert tunnel_command(loop, "login", "node042") == (
        f"ssh -N -L 8787:127.0.0.1:8787 -J {USER}@login {USER}@node042"
    )
    assert tunnel_command(node, "login", "node042") == f"ssh -N -L 8787:10.1.2.3:8787 {USER}@login"
    assert tunnel_command(loop, "login", "login") == f"ssh -N -L 8787:127.0.0.1:8787 {USER}@login"
