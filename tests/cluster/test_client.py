"""cluster_client: one function per kind of cluster, chosen by --cluster; shared parameter docs."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from rankdist.cluster import client
from rankdist.cluster._docs import CLUSTER_PARAMS, doc_params
from rankdist.cluster.client import cluster_client, doctor_report


def test_doc_params_fills_whole_line_placeholders_at_their_indentation():
    @doc_params(**CLUSTER_PARAMS)
    def run(cluster="local", workers=None):
        """Run somewhere; 100% of the cells.

        Parameters
        ----------
        %(cluster)s
        %(workers)s
        """

    doc = run.__doc__
    assert "%(" not in doc and "100% of the cells" in doc
    assert "\n        cluster\n            Where the work runs: ``'local'``" in doc
    assert "``'slurm'``, ``'pbs'``, ``'sge'``, ``'lsf'``" in doc
    assert "\n        workers\n            ``cluster='local'`` only" in doc


def test_doc_params_names_a_placeholder_it_was_not_given():
    def run():
        """Run.

        %(cluster_parameters)s
        """

    with pytest.raises(KeyError, match=r"run's docstring names %\(cluster_parameters\)s"):
        doc_params(**CLUSTER_PARAMS)(run)


def test_cluster_params_stands_for_all_four_in_order():
    @doc_params(**CLUSTER_PARAMS)
    def run(cluster="local", workers=None, jobs=None, profile=None):
        """Run.

        Parameters
        ----------
        %(cluster_params)s
        """

    lines = run.__doc__.splitlines()
    names = [s.strip() for s in lines[4:] if s.strip() and len(s) - len(s.lstrip()) == 8]
    assert names == ["cluster", "workers", "jobs", "profile"]


@pytest.mark.parametrize("fn", [cluster_client, doctor_report])
def test_every_parameter_is_documented(fn):
    doc = inspect.getdoc(fn)
    assert "%(" not in doc
    lines = doc.splitlines()
    for param in inspect.signature(fn).parameters:
        assert param in lines, f"{fn.__name__}: parameter {param!r} not in its docstring"


def test_batch_systems_go_to_dask_jobqueue(monkeypatch):
    calls = []
    monkeypatch.setattr(client, "jobqueue_client", lambda *a, **kw: calls.append((a, kw)))
    cluster_client("pbs", profile="deploy/pbs.yaml")
    cluster_client("lsf", jobs=3, quiet=True)
    cluster_client("slurm", insecure=True)
    assert calls == [
        (("pbs",), {"jobs": 1, "profile": "deploy/pbs.yaml", "quiet": False, "insecure": False}),
        (("lsf",), {"jobs": 3, "profile": None, "quiet": True, "insecure": False}),
        (("slurm",), {"jobs": 1, "profile": None, "quiet": False, "insecure": True}),
    ]


def test_options_of_another_kind_fail_before_anything_starts():
    with pytest.raises(ValueError, match=r"--workers/threads apply only.*\(tcp://h:1\) has"):
        cluster_client("tcp://h:1", workers=2)
    with pytest.raises(ValueError, match=r"--jobs/--profile apply to slurm, pbs, sge, lsf"):
        cluster_client("tcp://h:1", profile="deploy/slurm.yaml")
    with pytest.raises(ValueError, match=r"unknown --cluster 'sslurm'"):
        cluster_client("sslurm")


def test_local_cluster_and_joining_it_by_address(capsys):
    with cluster_client(
        "local", workers=2, threads_per_worker=1, dashboard_address=":0", quiet=True
    ) as local:
        assert len(local.scheduler_info()["workers"]) == 2
        address = local.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        # joined with the run's credentials (another process has none: test_security_local)
        with cluster_client(address, security=local.security) as joined:
            assert joined.scheduler.address == address
            assert len(joined.scheduler_info()["workers"]) == 2
        assert "Dask: 2 worker(s), 2 thread(s); dashboard: http" in capsys.readouterr().err
        # leaving the joined client leaves the running cluster as it was
        assert local.submit(sum, [1, 2]).result() == 3


def test_reading_the_batch_systems_does_not_load_distributed():
    code = (
        "import sys; from rankdist.cluster.profile import SYSTEMS; "
        "assert 'distributed' not in sys.modules, 'distributed loaded'; print(list(SYSTEMS))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['slurm', 'pbs', 'sge', 'lsf']"
