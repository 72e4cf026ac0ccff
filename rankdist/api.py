"""``neighbors``: store -> encoding -> tiles -> results/<run>, on a Dask cluster."""

from __future__ import annotations

import os
import shutil
import sys
import time
import warnings
from importlib.metadata import version

from distributed import Client
from distributed.security import Security

from rankdist.cluster._docs import CLUSTER_PARAMS, doc_params
from rankdist.cluster.client import cluster_client
from rankdist.cluster.stealing import steals
from rankdist.encode.cache import Encoded, PendingEncoding, start_encoding
from rankdist.encode.registry import get_encoding
from rankdist.encode.sparse import sample_gene_density
from rankdist.io.atomic import naming_path
from rankdist.io.store import Store
from rankdist.reduce import checkpoint, runstore
from rankdist.reduce import lock as runlock
from rankdist.reduce.partial import partial_bytes_per_row
from rankdist.reduce.result import NeighborResult, load
from rankdist.request import NeighborsRequest
from rankdist.tiles.blocks import encoded_bytes
from rankdist.tiles.grid import TilePlan, choose_block_rows, choose_residence
from rankdist.tiles.kernel import HIST_BINS
from rankdist.tiles.kernel_choice import choose_kernel
from rankdist.tiles.scheduler import TileJob, run_tiles, tile_task
from rankdist.tiles.sparse import MIN_SPARSE_GENES, Form, choose_form, predicted_cost_ratio


class ExcludedCellsWarning(UserWarning):
    """Some cells are constant over the selected genes and have no rank correlation."""


@doc_params(**CLUSTER_PARAMS)
def neighbors(
    store: str | os.PathLike | Store,
    encoding: str = "spearman",
    k: int = 30,
    cutoffs=(0.5,),
    client: Client | None = None,
    *,
    params: dict | None = None,
    name: str | None = None,
    block_size: int | None = None,
    cluster: str = "local",
    workers: int | None = None,
    jobs: int | None = None,
    profile: str | os.PathLike | None = None,
    insecure: bool = False,
    security: str | os.PathLike | Security | None = None,
    type_hist: bool = False,
    form: Form = "auto",
    kernel: str = "auto",
    progress: bool = True,
    wait: bool = False,
) -> NeighborResult:
    """Exact top-k neighbours and cutoff counts of every cell of a store.

    Parameters
    ----------
    store
        Store written by :func:`rankdist.ingest` (path or :class:`Store`).
    encoding
        ``'spearman'`` (ranks), ``'pearson'`` (log1p CP10k), ``'geneformer'`` or
        ``'topn'``; see ``rankdist.ENCODINGS`` and docs/encodings.md.
    k
        Neighbours per cell, the cell itself excluded. Must be below the number of
        cells with a defined correlation.
    cutoffs
        Correlation cutoffs in [-1, 1] at which relations are counted per label value;
        at least one (the counts at each cutoff are half of what a run stores).
    client
        A Dask client to run on. If None, a cluster is started (or joined) from
        ``cluster``, ``workers``, ``jobs``, ``profile``, ``insecure`` and ``security``
        for this call and closed afterwards; with a client, those are not used.
    params
        Encoding parameters (e.g. ``{'target_sum': 1e4}`` for pearson).
    name
        Run name under ``results/`` (default: the encoding's name). An existing run of
        the same name is replaced when this one finishes.
    block_size
        Cells per row block, a multiple of 512 (default: chosen from worker memory).
    %(cluster_params)s
    %(insecure)s
    %(security)s
    type_hist
        Also count every pair of cells by (cell type, cell type, similarity bin of 0.005)
        in the tile pass: the cell type x cell type similarity distributions
        (``result.pair_hist``, :func:`rankdist.analysis.type_similarity`). Costs about an
        eighth more tile time; needs cell-type labels.
    form
        How Z is stored and multiplied: ``'dense'`` (float32 array, BLAS GEMM),
        ``'sparse'`` (``z = s + c``: CSR of the expressed genes plus one value for the
        rest, for all-genes spearman; docs/encodings.md) or ``'auto'``: sparse when the
        encoding has a sparse form and the per-gene density of a sample of cells predicts
        it faster. ``result.metadata['form']`` records the form that ran.
    kernel
        How tiles multiply dense Z: ``'float32'`` (BLAS GEMM), ``'screen'`` (an 8-bit
        product with a certified error bound, exact rescoring of the pairs that could
        matter; needs ``rankdist[fast]``) or ``'auto'``: the screen where a sample
        predicts it faster. Results are the same bit for bit; ``result.metadata['kernel']``
        records the kernel that ran and why (docs/performance.md).
    progress
        Show progress bars.
    wait
        If another process is writing a run of the same name in this store, wait for it
        to finish (saying so once) instead of raising :class:`rankdist.reduce.lock.RunLockedError`.

    Returns
    -------
    NeighborResult
        Also stored, and readable with :func:`rankdist.load`.

    Raises
    ------
    RunLockedError
        Without ``wait``, when another live process holds the run's lock
        (``results/.<name>.lock``, naming its host, pid and start).
    """
    started = time.perf_counter()
    request = NeighborsRequest.checked(
        store,
        encoding,
        k,
        cutoffs,
        params=params,
        name=name,
        block_size=block_size,
        type_hist=type_hist,
        form=form,
        kernel=kernel,
        progress=progress,
        wait=wait,
    )
    if not request.wait:
        runlock.check_free(request.store.path, request.name)  # before any cluster starts
    if client is None:
        with cluster_client(
            cluster,
            workers=workers,
            jobs=jobs,
            profile=profile,
            insecure=insecure,
            security=security,
            quiet=not progress,
        ) as own:
            return _run(request, own, started)
    return _run(request, client, started)


def _choose_form(store: Store, encoding: str, form: str, client: Client) -> tuple[str, float]:
    """The form to run and the predicted sparse/dense cost (NaN when not estimated)."""
    if form != "auto":
        return form, float("nan")
    if get_encoding(encoding).sparse is None or store.n_genes < MIN_SPARSE_GENES:
        return "dense", float("nan")
    density = client.submit(
        sample_gene_density, str(store.path.resolve()), key=f"rankdist-density-{store.content_id}"
    ).result()
    return choose_form(density), predicted_cost_ratio(density)


def _run(
    request: NeighborsRequest, client: Client, started: float, *, tile_fn=tile_task
) -> NeighborResult:
    """Encode, run every tile not yet durable in the work directory, publish the run.

    ``started`` is the ``time.perf_counter()`` of the call, for ``wall_time_s``;
    ``tile_fn`` the tile task (:func:`rankdist.tiles.scheduler.run_tiles`; tests pass a
    stand-in that fails or pauses on a chosen tile). The run's lock is held throughout
    (:mod:`rankdist.reduce.lock`); a full disk that names no file is raised naming the run.
    """
    final = runstore.run_path(request.store.path, request.name)
    with runlock.hold(request.store.path, request.name, wait=request.wait), naming_path(final):
        return _compute(request, client, started, tile_fn)


def _compute(request: NeighborsRequest, client: Client, started: float, tile_fn) -> NeighborResult:
    """The body of :func:`_run`, under the run's lock.

    A dense encoding not yet cached is computed by the tiles' own block tasks where the
    blocks stay in worker memory (docs/architecture.md, "Encoding pipelined into the
    tiles"); otherwise it is computed (or read) first.
    """
    store = request.store
    form, sparse_cost = _choose_form(store, request.encoding, request.form, client)
    enc = start_encoding(
        store, request.encoding, request.params, client, progress=request.progress, form=form
    )
    begun = enc
    try:
        width = enc.n_columns or store.n_genes  # Z's width: the embedding's for genept
        n_roles = len(request.role_sizes)
        z_bytes = encoded_bytes(str(enc.path), store.n_cells, width, n_roles, form=enc.form)
        residence = choose_residence(z_bytes, _memory_limits(client))
        if isinstance(enc, PendingEncoding) and (
            residence.mode != "resident" or request.k >= store.n_cells
        ):
            enc = enc.run(client, progress=request.progress)  # the tiles read the finished Z
        if isinstance(enc, Encoded):
            _check_encoded(request, enc)
        return _tiles(request, client, started, tile_fn, enc, sparse_cost, residence)
    finally:
        if isinstance(begun, PendingEncoding):
            begun.abandon()  # nothing, once published


def _check_encoded(request: NeighborsRequest, enc: Encoded, stacklevel: int = 5) -> None:
    """k below the cells with a correlation; the excluded cells named in a warning.

    ``stacklevel`` points the warning at the caller of :func:`neighbors` (5 frames up
    from :func:`_compute`'s call, 8 from the tiles' own, through ``run_tiles``).
    """
    store = request.store
    if request.k >= enc.n_valid:
        msg = (
            f"k={request.k} must be smaller than the number of cells with a defined "
            f"correlation ({enc.n_valid} of {store.n_cells} in {store.path}); choose "
            f"k <= {enc.n_valid - 1}"
        )
        raise ValueError(msg)
    if len(enc.excluded):
        names = list(store.cell_names[enc.excluded[:5]])
        warnings.warn(
            f"{len(enc.excluded)} cell(s) are constant over the {store.n_genes} selected genes "
            f"or express none the encoding uses, and have no defined {request.encoding} "
            f"similarity; they are excluded (indices "
            f"-1, similarities NaN, result.excluded True). First: {names}",
            ExcludedCellsWarning,
            stacklevel=stacklevel,
        )


def _tiles(request, client, started, tile_fn, enc, sparse_cost, residence) -> NeighborResult:
    """Every tile not yet durable, then the run published; ``enc`` may still be computing."""
    store = request.store
    role_sizes = request.role_sizes
    threads, worker_memory, threads_per_worker = _worker_capacity(client)
    pending = enc if isinstance(enc, PendingEncoding) else None
    spec = request.run_spec(enc, sparse_cost)
    choice = choose_kernel(
        request.kernel,
        form=enc.form,
        type_hist=request.type_hist,
        z_path=str(enc.path.resolve()),
        k=request.k,
        cutoffs=request.cutoffs,
        client=client,
        n_roles=len(request.role_sizes),
        encode_from=None if pending is None else pending.sample_args(),
    )
    fingerprint = runstore.resume_fingerprint(spec)
    work = runstore.work_path(store.path, request.name)
    block_rows = runstore.resumable_block_rows(work, fingerprint, request.block_size)
    resuming = block_rows is not None
    if block_rows is None:
        per_row = partial_bytes_per_row(request.k, len(request.cutoffs), sum(role_sizes.values()))
        block_rows = request.block_size or choose_block_rows(
            store.n_cells,
            enc.n_columns or store.n_genes,  # Z's width: the embedding's for genept
            threads=threads,
            worker_memory=worker_memory,
            threads_per_worker=threads_per_worker,
            bytes_per_row_partial=per_row,
            screen=choice.kernel == "screen",
        )
        runstore.create_work_dir(
            work, fingerprint, block_rows=block_rows, role_sizes=role_sizes, hist_bins=HIST_BINS
        )
    plan = TilePlan(store.n_cells, block_rows)
    job = TileJob(
        store_path=str(store.path.resolve()),
        z_path=str(enc.path.resolve()),
        plan=plan,
        k=request.k,
        cutoffs=request.cutoffs,
        roles=tuple(role_sizes),
        role_sizes=tuple(role_sizes.values()),
        type_hist=request.type_hist,
        form=enc.form,
        n_genes=store.n_genes,
        kernel=choice.kernel,
    )
    ckpt = runstore.checkpoint_path(work)
    if resuming:  # even without progress bars, like the run lock's messages
        print(
            f"rankdist: resuming run {request.name!r} in {store.path}: "
            f"{checkpoint.describe_progress(ckpt, plan.n_blocks)}",
            file=sys.stderr,
            flush=True,
        )
    published: list[Encoded] = [] if pending else [enc]

    def on_encoded() -> None:
        published.append(pending.finish())
        try:
            _check_encoded(request, published[0], stacklevel=8)
        except ValueError:
            shutil.rmtree(work)  # a run of this k can never finish: nothing to resume
            raise

    stats = run_tiles(
        client, job, str(work), str(ckpt), progress=request.progress, tile_fn=tile_fn,
        blocks=residence.mode,
        encoding=pending,
        on_encoded=on_encoded,
    )  # fmt: skip
    (enc,) = published
    measured = {
        "n_excluded": len(enc.excluded),
        "block_rows": block_rows,
        "n_blocks": plan.n_blocks,
        "n_tiles": plan.n_tiles,
        "tiles_computed": stats.tiles_computed,
        "tiles_resumed": stats.tiles_resumed,
        "blocks_resumed": stats.blocks_resumed,
        **choice.metadata(),
        **residence.metadata(),
        "encoding_pipelined": pending is not None,
        "work_stealing": steals(client),
        "workers": len(client.scheduler_info().get("workers", {})),
        "threads": threads,
        "wall_time_s": round(time.perf_counter() - started, 3),
        "versions": {
            p: version(p) for p in ("rankdist", "numpy", "numba", "dask", "distributed", "zarr")
        },
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    final = runstore.run_path(store.path, request.name)
    runstore.publish_run(work, final, spec | measured, excluded=enc.excluded)
    return load(store, request.name)


def _memory_limits(client: Client) -> list[float | None]:
    """Each worker's memory limit in bytes (None or 0: unlimited)."""
    return [w.get("memory_limit") for w in client.scheduler_info().get("workers", {}).values()]


def _worker_capacity(client: Client) -> tuple[int, float | None, int]:
    """Total worker threads; the tightest worker's memory limit (None if unlimited) and threads."""
    workers = client.scheduler_info().get("workers", {})
    if not workers:
        msg = f"the Dask cluster at {client.scheduler.address} has no workers"
        raise RuntimeError(msg)
    threads = sum(w.get("nthreads", 1) for w in workers.values())
    limited = [w for w in workers.values() if w.get("memory_limit")]
    if not limited:
        return threads, None, max(w.get("nthreads", 1) for w in workers.values())
    tight = min(limited, key=lambda w: w["memory_limit"] / max(w.get("nthreads", 1), 1))
    return threads, float(tight["memory_limit"]), max(tight.get("nthreads", 1), 1)
