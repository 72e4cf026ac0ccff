"""Benchmark: all-genes Spearman, dense GEMM against the sparse product ``z = s + c``.

Usage::

    nice -n 10 python benchmarks/bench_sparse.py [--genes 33000] [--tile 2048]
        [--cells 4096] [--zeros 0.93] [--k 30] [--workdir DIR]

Data: negative-binomial counts (gamma-Poisson, inverse dispersion 2) of ``--genes``
genes with log-normal (heavy-tailed) gene means, scaled so that about ``--zeros`` of
the matrix is zero, and log-normal library sizes. Measured:

1. one tile of ``--tile`` x ``--tile`` cells, single-threaded (threadpoolctl limit 1):
   the dense path's 512 x 512 GEMM calls (``np.matmul`` as in
   ``rankdist.tiles.kernel``) against the sparse path (slab preparation plus
   ``sparse_subtile`` per sub-tile); also the per-operation rates behind
   ``SCATTER_OVER_GEMM`` and the cost model's prediction;
2. the whole ``rankdist.neighbors`` on ``--cells`` cells in each form (encode
   included, on a fresh store), one worker process.

Prints a table and appends one JSON line to benchmarks/results/sparse.jsonl.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

RESULTS = Path(__file__).parent / "results" / "sparse.jsonl"


def all_genes_counts(n_cells: int, n_genes: int, zeros: float, seed: int = 0) -> np.ndarray:
    """float32 NB counts with heavy-tailed gene means and about ``zeros`` zero fraction."""
    rng = np.random.default_rng(seed)
    log_means = rng.normal(0.0, 2.0, n_genes)
    library = rng.lognormal(0.0, 0.4, (n_cells, 1))
    # Zero fraction of NB(r=2) with mean m is (1 + m/2)^-2; pick the shift that hits
    # ``zeros`` on average over genes and cells (bisection on the expected value).
    lo, hi = -15.0, 5.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        m = np.exp(log_means + mid)[None, :] * library[:64]
        if np.mean((1 + m / 2) ** -2) > zeros:
            lo = mid
        else:
            hi = mid
    means = np.exp(log_means + lo)
    x = np.empty((n_cells, n_genes), np.float32)
    for r0 in range(0, n_cells, 512):
        lam = means[None, :] * library[r0 : r0 + 512]
        x[r0 : r0 + 512] = rng.poisson(rng.gamma(2.0, lam / 2.0))
    return x


def _best(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_tile(x: np.ndarray, tile: int) -> dict:
    from rankdist.encode.kernels import standardised_ranks
    from rankdist.encode.sparse import sparse_standardised_ranks
    from rankdist.layout import SUBTILE
    from rankdist.tiles.sparse import (
        Slab,
        SparseRows,
        dense_genes,
        predicted_cost_ratio,
        sparse_subtile,
    )

    g = x.shape[1]
    xs = x[: 2 * tile]
    t0 = time.perf_counter()
    z, _ = standardised_ranks(xs)
    t_enc_dense = time.perf_counter() - t0
    t0 = time.perf_counter()
    indptr, indices, data, c, _ = sparse_standardised_ranks(xs)
    t_enc_sparse = time.perf_counter() - t0
    rows = SparseRows(indptr, indices, data, c, g)
    zi, zj = z[:tile], z[tile:].copy()
    out = np.empty((SUBTILE, SUBTILE), np.float32)

    def dense():
        for p in range(0, tile, SUBTILE):
            for q in range(0, tile, SUBTILE):
                np.matmul(zi[p : p + SUBTILE], zj[q : q + SUBTILE].T, out=out)

    def sparse():
        si = [Slab.of(rows.rows(p, p + SUBTILE)) for p in range(0, tile, SUBTILE)]
        sj = [Slab.of(rows.rows(tile + q, tile + q + SUBTILE)) for q in range(0, tile, SUBTILE)]
        for a in si:
            for b in sj:
                sparse_subtile(a, b, out)

    with threadpool_limits(1):
        dense()
        sparse()  # compiles
        t_dense = _best(dense)
        t_sparse = _best(sparse)
        # per-operation rates: one sub-tile with every gene scattered
        a = Slab.of(rows.rows(0, SUBTILE))
        b = Slab.of(rows.rows(tile, tile + SUBTILE))
        scattered = int((a.gene_counts * b.gene_counts).sum())
        t_scatter = _best(lambda: sparse_subtile(a, b, out, fraction=np.inf), 1)
        n_dense = len(dense_genes(a, b))
    density = np.count_nonzero(x, axis=0) / len(x)
    pairs = tile * tile
    return {
        "zero fraction": float(1 - len(indices) / xs.size),
        "tile cells": tile,
        "dense GEMM tile (s)": t_dense,
        "sparse product tile (s)": t_sparse,
        "sparse / dense (measured)": t_sparse / t_dense,
        "sparse / dense (predicted)": predicted_cost_ratio(density),
        "dense GEMM ns per multiply-add": t_dense / (pairs * g) * 1e9,
        "scattered ns per multiply-add": t_scatter / scattered * 1e9,
        "dense genes in first sub-tile": n_dense,
        "encode dense (s per 1k cells)": t_enc_dense / len(xs) * 1000,
        "encode sparse (s per 1k cells)": t_enc_sparse / len(xs) * 1000,
        "Z bytes per cell dense": 4 * g,
        "Z bytes per cell sparse": 8 * len(indices) / len(xs) + 16,
    }


def bench_neighbors(x: np.ndarray, k: int, workdir: Path) -> dict:
    import anndata as ad
    import pandas as pd

    import rankdist
    from rankdist.cluster.client import cluster_client

    rng = np.random.default_rng(1)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical.from_codes(rng.integers(0, 8, len(x)), list("ABCDEFGH"))},
        index=[f"c{i}" for i in range(len(x))],
    )
    adata = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(x.shape[1])]))
    store = rankdist.ingest(adata, workdir / "s.zarr", cell_type="cell_type", progress=False)
    out, results = {}, {}
    with cluster_client("local", workers=1, quiet=True) as client:
        for form in ("dense", "sparse"):
            t0 = time.perf_counter()
            res = rankdist.neighbors(
                store, k=k, client=client, form=form, name=form, progress=False
            )
            out[f"neighbors {form} (s)"] = time.perf_counter() - t0
            results[form] = res
        auto = rankdist.neighbors(store, k=k, client=client, name="auto", progress=False)
    out["neighbors sparse / dense"] = out["neighbors sparse (s)"] / out["neighbors dense (s)"]
    out["auto chose"] = auto.metadata["form"]
    out["auto predicted sparse / dense"] = auto.metadata["sparse_cost_estimate"]
    ok = ~results["dense"].excluded
    out["max |sim sparse - sim dense|"] = float(
        np.nanmax(np.abs(results["sparse"].similarities[ok] - results["dense"].similarities[ok]))
    )
    out["same neighbours (fraction)"] = float(
        np.mean(results["sparse"].indices[ok] == results["dense"].indices[ok])
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genes", type=int, default=33000)
    ap.add_argument("--tile", type=int, default=2048)
    ap.add_argument("--cells", type=int, default=4096)
    ap.add_argument("--zeros", type=float, default=0.93)
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    x = all_genes_counts(max(args.cells, 2 * args.tile), args.genes, args.zeros)
    row = {"date": time.strftime("%Y-%m-%d %H:%M"), "genes": args.genes}
    row |= bench_tile(x, args.tile)
    work = Path(tempfile.mkdtemp(dir=args.workdir, prefix="bench_sparse-"))
    try:
        row |= {"cells": args.cells, "k": args.k}
        row |= bench_neighbors(x[: args.cells], args.k, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    width = max(map(len, row))
    for key, value in row.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown}")
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as fh:
        fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
