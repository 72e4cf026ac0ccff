"""The embedded cluster: Dask workers on this machine, as threads of this process by default.

With one worker (the default) the scheduler and the worker run as threads in the calling
process and speak Dask's in-process transport (``inproc://``): nothing listens on a
network port but the scheduler's dashboard and the worker's status page, both HTTP on
127.0.0.1, so no other process can connect, and nothing is pickled between processes. A
plain script, a notebook and ``python -c`` work alike. BLAS is limited to one thread per
task for the cluster's lifetime and restored afterwards (:func:`single_threaded_blas`).

With ``workers=N`` (N > 1) the workers are processes. They speak TLS on 127.0.0.1 with
credentials made for the run and held in memory (``Security.temporary()``; distributed
writes the key only while it loads it, into a temporary folder only the user can read):
another process, another user's included, cannot connect. ``insecure=True`` gives plain
TCP on 127.0.0.1, which any user of the machine can reach, and warns so. Worker processes
are started with ``spawn``, which re-runs the calling script from the top: a script that
does so without an ``if __name__ == "__main__":`` guard is stopped first, with one line
saying so (:class:`MainGuardError`).
"""

from __future__ import annotations

import ast
import contextlib
import logging
import os
import sys
import threading
import tokenize
import warnings
from collections.abc import Iterator

import dask
from distributed import Client, LocalCluster
from distributed.security import Security

from rankdist.cluster.describe import describe_client
from rankdist.cluster.security import InsecureClusterWarning
from rankdist.cluster.stealing import own_scheduler

__all__ = [
    "LOOPBACK",
    "MainGuardError",
    "available_cores",
    "blas_limited_here",
    "local_client",
    "single_threaded_blas",
]

#: The only interface the LocalCluster and its dashboard listen on.
LOOPBACK = "127.0.0.1"

_blas_lock = threading.Lock()
_blas_holders = 0  # with-blocks of single_threaded_blas open in this process
_blas_limiter = None


class MainGuardError(SystemExit):
    """A script without a main guard asked for worker processes, which would re-run it.

    A ``SystemExit``, so that the script stops with its one-line message (exit status 1)
    rather than a traceback; raised before any process starts.
    """


def available_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS has one, e.g. a batch job)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS limited to one thread in this process for the block, then as it was.

    Each task thread runs its own tile, so BLAS must not start threads of its own. The
    limit is process-wide (threadpoolctl), so overlapping blocks (two in-process clusters
    at once) share it: the first sets it, the last restores what the first found.
    """
    global _blas_holders, _blas_limiter
    from threadpoolctl import threadpool_limits

    with _blas_lock:
        if _blas_holders == 0:
            _blas_limiter = threadpool_limits(1, user_api="blas")
        _blas_holders += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_holders -= 1
            if _blas_holders == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


def blas_limited_here() -> bool:
    """Whether a :func:`single_threaded_blas` block is open in this process."""
    return _blas_holders > 0


@contextlib.contextmanager
def local_client(
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | float | None = "auto",
    dashboard_address: str | None = f"{LOOPBACK}:8787",
    insecure: bool = False,
    quiet: bool = False,
) -> Iterator[Client]:
    """A client of a LocalCluster started for the block and closed after it.

    Parameters
    ----------
    workers
        None or 1 (default): one worker whose threads run in this process (in-process
        transport, no guard needed in a script). N > 1: N worker processes over TLS on
        127.0.0.1; a script that starts them needs an ``if __name__ == "__main__":``
        guard.
    threads_per_worker
        Threads per worker (default: this machine's cores divided among the workers).
        Each thread runs one tile with single-threaded BLAS.
    memory_limit
        Per-worker memory limit (Dask's syntax, e.g. ``'4GB'``).
    dashboard_address
        Where the dashboard is served (another port is taken if busy); a port alone
        (``':8787'``) is on 127.0.0.1. None: no dashboard.
    insecure
        Worker processes only: plain TCP without credentials instead of TLS with per-run
        credentials; any user of this machine can then connect and run code as you.
        Warns. An in-process cluster has no network transport to secure: no effect.
    quiet
        Do not print the workers and the dashboard link, nor Dask's start-up chatter:
        the warning that the dashboard's port is taken (another one is used) and
        distributed's log warnings (its errors still show).

    Yields
    ------
    distributed.Client
        Connected to the LocalCluster.

    Raises
    ------
    MainGuardError
        ``workers`` > 1 asked for at the top level of a script without a main guard.

    Warns
    -----
    InsecureClusterWarning
        With ``insecure=True`` and worker processes.
    """
    n_workers = workers or 1
    threads = threads_per_worker or max(1, available_cores() // n_workers)
    if dashboard_address is not None and dashboard_address.startswith(":"):
        dashboard_address = LOOPBACK + dashboard_address
    if n_workers == 1:
        cluster = _in_process_cluster(threads, memory_limit, dashboard_address, quiet)
    else:
        _check_main_guard(n_workers)
        cluster = _process_cluster(
            n_workers, threads, memory_limit, dashboard_address, insecure, quiet
        )
    with cluster as client:
        if not quiet:
            print(describe_client(client), file=sys.stderr, flush=True)
        yield client


@contextlib.contextmanager
def _in_process_cluster(threads, memory_limit, dashboard_address, quiet) -> Iterator[Client]:
    """Scheduler and one worker as threads of this process, on ``inproc://``."""
    # The dashboard link would name the machine's address (an inproc address has no
    # port); the dashboard and the worker's status page listen on 127.0.0.1 only.
    link = f"{{scheme}}://{LOOPBACK}:{{port}}/status"
    with (
        _quiet_distributed_logs(quiet),
        single_threaded_blas(),
        dask.config.set({"distributed.dashboard.link": link}),
        own_scheduler(),
    ):
        with _quiet_start(quiet):
            cluster = LocalCluster(
                n_workers=1,
                threads_per_worker=threads,
                processes=False,
                protocol="inproc://",
                memory_limit=memory_limit,
                dashboard_address=dashboard_address,
                worker_dashboard_address=f"{LOOPBACK}:0",
            )
        with cluster, Client(cluster) as client:
            yield client


@contextlib.contextmanager
def _process_cluster(
    n_workers, threads, memory_limit, dashboard_address, insecure, quiet
) -> Iterator[Client]:
    """Worker processes on 127.0.0.1: TLS with per-run credentials, or plain TCP."""
    if insecure:
        warnings.warn(
            f"insecure: the LocalCluster listens in plain TCP on {LOOPBACK} without "
            "credentials; any user of this machine can connect to it and run code as you "
            "(without --insecure it uses TLS with credentials made for the run)",
            InsecureClusterWarning,
            stacklevel=5,
        )
    with _quiet_distributed_logs(quiet), own_scheduler():
        with _quiet_start(quiet):
            cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=threads,
                processes=True,
                memory_limit=memory_limit,
                host=LOOPBACK,
                protocol="tcp://" if insecure else "tls://",
                security=None if insecure else Security.temporary(),
                dashboard_address=dashboard_address,
            )
        with cluster, Client(cluster) as client:
            yield client


def _check_main_guard(n_workers: int) -> None:
    """Stop a script that would be re-run from the top by each spawned worker process.

    ``spawn`` and ``forkserver`` start a worker by importing the ``__main__`` file again;
    code at its top level outside ``if __name__ == "__main__":`` runs again there (it
    would ingest again, then fail to start its own cluster). Notebooks, ``python -c`` and
    calls from inside the guard pass.
    """
    if dask.config.get("distributed.worker.multiprocessing-method") not in ("spawn", "forkserver"):
        return
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None:
        return
    frame = sys._getframe(1)
    while frame is not None and not (
        frame.f_globals is vars(main) and frame.f_code.co_name == "<module>"
    ):
        frame = frame.f_back
    if frame is None or _inside_main_guard(path, frame.f_lineno):
        return
    msg = (
        f"{path}, line {frame.f_lineno}: workers={n_workers} starts worker processes, which "
        'run this script again from the top: put its code under `if __name__ == "__main__":` '
        "(or leave workers at 1: threads in this process, no guard needed)"
    )
    raise MainGuardError(msg)


def _inside_main_guard(path: str, line: int) -> bool:
    """Whether ``line`` of the script ``path`` is inside a top-level main guard."""
    try:
        with tokenize.open(path) as f:
            tree = ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return True  # cannot tell: let the processes start
    for node in tree.body:
        if isinstance(node, ast.If) and _is_main_test(node.test):
            if node.lineno <= line <= node.end_lineno:
                return True
    return False


def _is_main_test(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return False
    if not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s.id for s in sides if isinstance(s, ast.Name)]
    values = [s.value for s in sides if isinstance(s, ast.Constant)]
    return names == ["__name__"] and values == ["__main__"]


#: Dask's warning when the dashboard's port is taken (it then serves on another port).
_PORT_IN_USE = r"Port \d+ is already in use"


@contextlib.contextmanager
def _quiet_start(quiet: bool):
    """While a cluster starts: with ``quiet``, no warning that the dashboard port is taken."""
    with warnings.catch_warnings():
        if quiet:
            warnings.filterwarnings("ignore", message=_PORT_IN_USE, category=UserWarning)
        yield


@contextlib.contextmanager
def _quiet_distributed_logs(quiet: bool = False):
    """Keep LocalCluster start/stop chatter out of the user's terminal.

    Its warnings still show, unless ``quiet``: then only its errors do.
    """
    loggers = [
        logging.getLogger(n) for n in ("distributed", "distributed.nanny", "distributed.scheduler")
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR if quiet else logging.WARNING)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)
