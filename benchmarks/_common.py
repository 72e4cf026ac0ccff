"""Pieces the benchmarks share: data, warm-up, the encoding cache, timing, memory, machine.

The scripts in this folder are run as ``python benchmarks/<script>.py``, which puts this
folder first on ``sys.path``, so they import these helpers as ``from _common import ...``.
"""

from __future__ import annotations

import gc
import os
import platform
import shutil
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

MB = 1e6

#: Packages whose versions a benchmark records.
VERSIONED = (
    "rankdist",
    "numpy",
    "scipy",
    "numba",
    "dask",
    "distributed",
    "faiss-cpu",
    "scikit-learn",
    "scanpy",
    "pynndescent",
    "anndata",
)


def matmul_rate(n: int = 4096, g: int = 2000, seconds: float = 3.0) -> float:
    """float32 GFLOP/s of an (n x g) @ (g x n) product on all cores (numpy's BLAS)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, g), dtype=np.float32)
    b = rng.standard_normal((n, g), dtype=np.float32)  # distinct operand: general GEMM, not syrk
    out = np.empty((n, n), np.float32)
    np.matmul(a, b.T, out=out)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        np.matmul(a, b.T, out=out)
        reps += 1
    return 2 * n * n * g * reps / (time.perf_counter() - t0) / 1e9


def synthetic_store(path: Path, n_cells: int, n_genes: int, seed: int = 0):
    """Ingest ``rankdist.datasets.toy.synthetic_counts`` into a store at ``path`` (replaced)."""
    import rankdist
    from rankdist.datasets.toy import synthetic_counts

    adata = synthetic_counts(n_cells, n_genes, seed=seed)
    store = rankdist.ingest(adata, path, cell_type="cell_type", overwrite=True, progress=False)
    del adata
    gc.collect()
    return store


def warm_up_rankdist(work: Path, n_genes: int, k: int) -> None:
    """Run ``rankdist.neighbors`` once on a small store so numba's JIT is compiled.

    The kernels are cached on disk, so later runs (and their fresh worker processes)
    load them instead of compiling.
    """
    import rankdist

    store = synthetic_store(work / "warm.zarr", 1200, n_genes, seed=1)
    rankdist.neighbors(store, k=min(k, 100), progress=False)
    shutil.rmtree(store.path, ignore_errors=True)


def clear_encodings(store) -> None:
    """Delete a store's cached encodings, so the next ``neighbors`` call times encoding."""
    from rankdist.io.verified import open_group

    shutil.rmtree(store.path / "encodings")
    (store.path / "encodings").mkdir()
    open_group(store.path / "encodings", mode="w")


def cached_spearman(store) -> tuple[np.ndarray, np.ndarray]:
    """The standardised ranks of a store, read from its encoding cache.

    Returns
    -------
    z
        ``(n_cells, n_genes)`` float32, each row mean 0 and norm 1, so that the
        Spearman correlation of cells a and b is ``z[a] @ z[b]``.
    valid
        ``(n_cells,)`` bool: False for constant cells (no defined correlation).
    """
    from rankdist.io.verified import open_group

    paths = sorted((store.path / "encodings").glob("spearman-*"))
    if not paths:
        msg = f"no spearman encoding cached under {store.path / 'encodings'}; run neighbors first"
        raise FileNotFoundError(msg)
    group = open_group(paths[-1], mode="r")
    return np.asarray(group["Z"][:]), np.asarray(group["valid"][:])


def faiss_knn(z: np.ndarray, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product with faiss ``IndexFlatIP``, the query cell removed.

    Searches k+1 and drops each row's own index (or, where exact ties pushed it out of
    the k+1, the last hit).

    Returns
    -------
    indices, similarities
        ``(n, k)`` int64 and float32, best first.
    """
    import faiss

    faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatIP(z.shape[1])
    index.add(z)
    sim, idx = index.search(z, k + 1)
    return drop_self(idx, sim)


def drop_self(idx: np.ndarray, sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From ``(n, k+1)`` search results of every row against all rows, drop the row itself."""
    n = idx.shape[0]
    own = idx == np.arange(n)[:, None]
    own[~own.any(axis=1), -1] = True
    keep = ~own
    return idx[keep].reshape(n, -1).astype(np.int64), sim[keep].reshape(n, -1)


class RssSampler(threading.Thread):
    """Samples the RSS of a process (default: this one) and its descendants every ``interval`` s.

    Keeps each process's peak and the peak of their sum. Processes that appear later (a
    restarted worker, a LocalCluster's workers) are picked up at the next sample.
    """

    def __init__(self, interval: float = 0.2, pid: int | None = None):
        super().__init__(name="rss-sampler", daemon=True)
        import psutil

        self.me = psutil.Process(pid)
        self.interval = interval
        self.peak: dict[int, int] = {}
        self.peak_total = 0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        import psutil

        total = 0
        try:
            tree = [self.me, *self.me.children(recursive=True)]
        except psutil.Error:  # the sampled process has exited
            return
        for proc in tree:
            try:
                rss = proc.memory_info().rss
            except psutil.Error:  # exited between listing and reading
                continue
            self.peak[proc.pid] = max(self.peak.get(proc.pid, 0), rss)
            total += rss
        self.peak_total = max(self.peak_total, total)

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample()


def measure(fn, *args, interval: float = 0.1, **kwargs) -> dict:
    """Run ``fn(*args, **kwargs)``: its value, wall time and memory of this process tree.

    Returns
    -------
    dict
        ``value``; ``wall_s``; ``peak_rss_mb``, the peak summed RSS of this process and
        its children while ``fn`` ran; ``start_rss_mb``, that sum when it started.
    """
    gc.collect()
    sampler = RssSampler(interval)
    sampler.sample()
    start = sampler.peak_total
    sampler.start()
    t0 = time.perf_counter()
    try:
        value = fn(*args, **kwargs)
    finally:
        wall = time.perf_counter() - t0
        sampler.stop()
    return {
        "value": value,
        "wall_s": wall,
        "peak_rss_mb": sampler.peak_total / MB,
        "start_rss_mb": start / MB,
    }


def machine() -> dict:
    """Cores this process may use, CPU model, memory, the OS and the current load."""
    import psutil

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(
                (line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")),
                model,
            )
    except OSError:  # not Linux
        pass
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "cores": len(affinity(0)) if affinity else os.cpu_count(),
        "cpu": model,
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "os": platform.platform(terse=True),
        # other work on the machine slows every method; worth knowing when comparing runs
        "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
    }


def versions(packages=VERSIONED) -> dict[str, str]:
    """Installed version of each package ('-' where it is not installed)."""
    out = {}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "-"
    return out
