"""cluster_client: one function per kind of cluster, chosen by --cluster; shared parameter docs."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import rankdist
from rankdist.cluster import client, local
from rankdist.cluster._docs import CLUSTER_PARAMS, doc_params
from rankdist.cluster.client import cluster_client, doctor_report
from rankdist.cluster.stealing import steals
from rankdist.datasets.toy import synthetic_counts


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
        assert steals(local) is False  # rankdist's own scheduler: tiles stay by their blocks
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


UNGUARDED = """\
import rankdist
from rankdist.cluster.client import cluster_client

print("top of the script")
with cluster_client(workers=2, dashboard_address=":0", quiet=True) as client:
    print("started")
"""


def test_worker_processes_from_a_script_without_a_main_guard_stop_with_one_line(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(UNGUARDED)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 1
    assert proc.stdout == "top of the script\n"  # run once, and no worker process started
    assert proc.stderr == (
        f"{script}, line 5: workers=2 starts worker processes, which run this script again "
        'from the top: put its code under `if __name__ == "__main__":` (or leave workers at '
        "1: threads in this process, no guard needed)\n"
    )


def test_a_call_inside_the_main_guard_passes(tmp_path):
    script = tmp_path / "guarded.py"
    lines = UNGUARDED.replace("\n", "\n    ").rstrip() + "\n"
    script.write_text(f"def run():\n    {lines}\n\nif '__main__' == __name__:\n    run()\n")
    source = script.read_text().splitlines()
    call = source.index("if '__main__' == __name__:") + 2
    assert source[call - 1] == "    run()"
    assert local._inside_main_guard(str(script), call)
    assert not local._inside_main_guard(str(script), 1)  # the def line is outside it


def test_in_process_and_process_workers_give_identical_results(client, tmp_path):
    store = rankdist.ingest(
        synthetic_counts(n_cells=1100, n_genes=300, seed=11),
        tmp_path / "cells.zarr",
        cell_type="cell_type",
        progress=False,
    )
    common = dict(k=12, cutoffs=(0.3, 0.5), block_size=512, progress=False)
    # this process's BLAS runs 2 threads; the in-process run limits it to 1 and restores it
    with threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        assert before and set(before) == {2}
        seen = []
        with cluster_client("local", dashboard_address=":0", quiet=True) as inproc:
            assert inproc.scheduler.address.startswith("inproc://")
            assert steals(inproc) is False
            seen.append(inproc.submit(blas_threads, pure=False).result())
            threads = rankdist.neighbors(store, name="threads", client=inproc, **common)
        assert seen == [[1] * len(before)]
        assert blas_threads() == before
        # the same through rankdist.neighbors starting the default itself
        default = rankdist.neighbors(store, name="default", cluster="local", **common)
        assert blas_threads() == before
    processes = rankdist.neighbors(store, name="processes", client=client, **common)
    assert default.metadata["n_tiles"] == processes.metadata["n_tiles"] == 6
    assert default.metadata["work_stealing"] is False  # started by rankdist
    assert processes.metadata["work_stealing"] is True  # Dask's default, kept when joined
    for res in (threads, default):
        np.testing.assert_array_equal(res.indices, processes.indices)
        assert res.similarities.tobytes() == processes.similarities.tobytes()
        assert res.counts.identical(processes.counts)


def blas_threads() -> list[int]:
    """Threads of each BLAS library loaded in this process."""
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_a_joined_run_keeps_dasks_handler_tracebacks_out_of_the_terminal(client, caplog):
    """As a scheduler dies, Dask's client can log a traceback for a half-made message;
    the run's own error says what happened, in one line (tests/e2e/test_errors_surface.py)."""
    import logging

    log = logging.getLogger("distributed.client")

    def _handle_report():  # named as the client's message loop
        log.error("a handler failed", exc_info=(AssertionError, AssertionError(), None))

    with caplog.at_level(logging.INFO, logger="distributed.client"):
        with cluster_client(client.scheduler.address, quiet=True):
            _handle_report()
            log.warning("any other line")
        _handle_report()  # after the run, Dask's logging is as it was
    lines = [(r.funcName, r.getMessage()) for r in caplog.records if r.name == log.name]
    assert lines == [
        ("test_a_joined_run_keeps_dasks_handler_tracebacks_out_of_the_terminal", "any other line"),
        ("_handle_report", "a handler failed"),
    ]
