"""Generate the synthetic atlas in parallel on Dask, straight into a store or an .h5ad.

Each Dask task generates one chunk of whole random-stream blocks from the small
:class:`~rankdist.datasets.atlas.model.AtlasSpec`, so the output does not depend on the chunk
size, the number of workers or the order tasks run in. For a store, workers write their
chunk of X themselves (chunks are aligned to the store's X chunks, so no two tasks touch
one); only library sizes come back. For an .h5ad, tasks return CSR blocks that this
process appends in cell order, with at most a few chunks in flight.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

from rankdist import _progress
from rankdist.cluster._docs import CLUSTER_PARAMS, doc_params
from rankdist.datasets.atlas.cells import BLOCK_CELLS, cell_labels, generate_cells
from rankdist.datasets.atlas.h5ad import check_h5ad_path, h5ad_writer
from rankdist.datasets.atlas.model import (
    DEFAULT_GENES,
    GENERATOR_VERSION,
    N_INFORMATIVE,
    AtlasModel,
    AtlasSpec,
    atlas_model,
)
from rankdist.datasets.atlas.taxonomy import N_DONORS
from rankdist.datasets.labels import ROLES, nested_labels, obs_frame

FORMATS = ("store", "h5ad")
#: Target values (cells x kept genes) generated per task.
TASK_VALUES = 1 << 24
#: Seconds to let running tasks finish after a failure, before the output is removed.
DRAIN_SECONDS = 300


@doc_params(**CLUSTER_PARAMS)
def synth_atlas(
    out: str | os.PathLike,
    n_cells: int,
    *,
    genes: int | str | None = None,
    n_donors: int = N_DONORS,
    seed: int = 0,
    format: str | None = None,
    chunk: int | None = None,
    client=None,
    cluster: str = "local",
    workers: int | None = None,
    overwrite: bool = False,
    compression: str | None = None,
    progress: bool = True,
    model_genes: int = DEFAULT_GENES,
):
    """Generate a synthetic aged-prefrontal-cortex atlas into a rankdist store or an .h5ad.

    Parameters
    ----------
    out
        The store directory (``.zarr``) or ``.h5ad`` file to create; it appears only
        when generation succeeds.
    n_cells
        Cells to generate (the real atlas has 2.3 M).
    genes
        None or ``'all'``: every simulated gene; an integer N: the N most informative
        genes (largest variance over subtypes of the expected log count), in gene order.
        Library sizes (``obs/total_counts``) always count every gene.
    n_donors
        Donors, stored as the batch label.
    seed
        Master seed: the same seed and sizes give identical output, whatever ``chunk``,
        ``workers`` or ``client``.
    format
        ``'store'`` or ``'h5ad'``; default from the suffix of ``out`` (``.h5ad`` or a store).
    chunk
        Cells per task; rounded up to a multiple of the store's X chunk rows (a store) or
        of 64 (an .h5ad). Default: about 16 M values per task.
    client
        A ``distributed.Client`` to use. If None, a cluster is started from ``cluster``
        and ``workers`` for this call and closed afterwards; with a client, those two are
        not used. For batch jobs of your own number and profile, pass the client of
        ``rankdist.cluster.client.cluster_client(system, jobs=..., profile=...)``.
    %(cluster)s
    %(workers)s
    overwrite
        Replace an existing store or .h5ad (atomically).
    compression
        .h5ad only: None, ``'gzip'`` or ``'lzf'`` for X.
    progress
        Show a progress bar counting chunks.
    model_genes
        Genes in the simulated transcriptome (33,538, as 10x GRCh38; fewer for quick tests).

    Returns
    -------
    rankdist.Store or pathlib.Path
        The store, opened for reading, or the path of the .h5ad.
    """
    out = Path(out)
    fmt = _output_format(out, format)
    spec = AtlasSpec(n_cells=n_cells, n_donors=n_donors, n_genes=model_genes, seed=seed)
    n_keep = _n_keep(genes, model_genes)
    if fmt == "store":
        from rankdist.io.store import check_store_path

        check_store_path(out, overwrite)
    else:
        check_h5ad_path(out, overwrite)
    if compression is not None and fmt != "h5ad":
        msg = f"compression={compression!r} applies to .h5ad output only, not to the store {out}"
        raise ValueError(msg)
    if chunk is not None and chunk < 1:
        msg = f"chunk={chunk}: cells per task must be a positive integer"
        raise ValueError(msg)
    model = atlas_model(spec)
    with _client(client, cluster, workers, progress) as cl:
        if fmt == "store":
            return _write_store(cl, model, n_keep, out, chunk, overwrite, progress)
        return _write_h5ad(cl, model, n_keep, out, chunk, overwrite, compression, progress)


def _output_format(out: Path, fmt: str | None) -> str:
    suffix = out.suffix.lower()
    if fmt is None:
        return "h5ad" if suffix == ".h5ad" else "store"
    if fmt not in FORMATS:
        msg = f"format {fmt!r}: choose 'store' or 'h5ad'"
        raise ValueError(msg)
    if (fmt == "store" and suffix == ".h5ad") or (fmt == "h5ad" and suffix == ".zarr"):
        msg = f"{out} has suffix {suffix} but format is {fmt!r}; change one of them"
        raise ValueError(msg)
    return fmt


def _n_keep(genes, model_genes: int) -> int | None:
    if genes is None or (isinstance(genes, str) and genes == "all"):
        return None
    text = str(genes)
    if not text.isdigit() or not 1 <= int(text) <= model_genes:
        msg = f"genes={genes!r}: give 'all' or a number of genes in 1..{model_genes}"
        raise ValueError(msg)
    return None if int(text) == model_genes else int(text)


@contextlib.contextmanager
def _client(client, cluster: str, workers: int | None, progress: bool):
    if client is not None:
        yield client
        return
    from rankdist.cluster.client import cluster_client

    with cluster_client(cluster, workers=workers, quiet=not progress) as started:
        yield started


def _chunks(n_cells: int, chunk: int) -> list[tuple[int, int]]:
    return [(a, min(a + chunk, n_cells)) for a in range(0, n_cells, chunk)]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _default_chunk(n_keep: int, multiple: int) -> int:
    return _round_up(max(1024, TASK_VALUES // n_keep), multiple)


def _write_store(cl, model: AtlasModel, n_keep, out: Path, chunk, overwrite, progress):
    from rankdist.io.store import Store, atomic_directory, compressor, finish_store
    from rankdist.io.verified import open_group
    from rankdist.layout import chunk_rows

    spec = model.spec
    keep = model.kept_genes(n_keep)
    rows = chunk_rows(len(keep), spec.n_cells)
    chunk = _round_up(chunk, rows) if chunk else _default_chunk(len(keep), rows)
    with atomic_directory(out, replace=overwrite) as tmp:
        root = open_group(tmp, mode="w")
        root.create_array(
            "X",
            shape=(spec.n_cells, len(keep)),
            dtype="float32",
            chunks=(rows, len(keep)),
            compressors=compressor(),
        )
        totals = np.empty(spec.n_cells, dtype=np.float64)
        nnz = 0

        def collect(bounds: tuple[int, int], result) -> None:
            nonlocal nnz
            totals[bounds[0] : bounds[1]] = result[0]
            nnz += result[1]

        x_path = str(tmp / "X")
        _run_chunks(
            cl,
            _store_task,
            (spec, n_keep, x_path),
            _chunks(spec.n_cells, chunk),
            collect,
            f"synth {out.name}",
            progress,
        )
        names, labels = _obs(model)
        finish_store(
            root,
            cell_names=names,
            gene_names=np.asarray(model.gene_names, dtype=object)[keep],
            labels={role: (role, codes, cats) for role, (codes, cats) in labels.items()},
            total_counts=totals,
            content_id=_content_id(spec, n_keep),
            provenance=_provenance(model, n_keep, len(keep), nnz),
        )
    return Store(out)


def _write_h5ad(cl, model: AtlasModel, n_keep, out: Path, chunk, overwrite, compression, progress):
    spec = model.spec
    keep = model.kept_genes(n_keep)
    chunk = _round_up(chunk, BLOCK_CELLS) if chunk else _default_chunk(len(keep), BLOCK_CELLS)
    totals = np.empty(spec.n_cells, dtype=np.float64)
    with h5ad_writer(
        out, spec.n_cells, len(keep), compression=compression, overwrite=overwrite
    ) as writer:

        def append(bounds: tuple[int, int], result) -> None:
            counts, block_totals = result
            writer.append(counts)
            totals[bounds[0] : bounds[1]] = block_totals

        _run_chunks(
            cl,
            _csr_task,
            (spec, n_keep),
            _chunks(spec.n_cells, chunk),
            append,
            f"synth {out.name}",
            progress,
        )
        names, labels = _obs(model)
        obs = obs_frame(labels, index=pd.Index(names, dtype=object))
        obs["total_counts"] = totals
        top = np.zeros(spec.n_genes, dtype=bool)
        top[model.informative[:N_INFORMATIVE]] = True
        var = pd.DataFrame(
            {"informative": top[keep], "marker_of": model.marker_of[keep].astype(str)},
            index=pd.Index(np.asarray(model.gene_names, dtype=object)[keep], dtype=object),
        )
        writer.finish(obs, var)
    return out


def _store_task(spec: AtlasSpec, n_keep, x_path: str, start: int, stop: int):
    """Generate cells ``start:stop`` and write them into the store's X (runs on a worker)."""
    from rankdist.io.verified import open_array

    model = atlas_model(spec)
    counts, totals = generate_cells(model, start, stop, model.kept_genes(n_keep))
    # r+: if a failed run already removed the store's temporary directory, fail here
    # rather than recreate part of it
    x = open_array(x_path, mode="r+")
    x[start:stop] = counts.toarray()
    return totals, int(counts.nnz)


def _csr_task(spec: AtlasSpec, n_keep, start: int, stop: int):
    """Generate cells ``start:stop`` as CSR (runs on a worker)."""
    model = atlas_model(spec)
    return generate_cells(model, start, stop, model.kept_genes(n_keep))


def _run_chunks(
    cl,
    task: Callable,
    args: tuple,
    chunks: list[tuple[int, int]],
    consume: Callable,
    description: str,
    progress: bool,
) -> None:
    """Run ``task(*args, start, stop)`` per chunk; ``consume(bounds, result)`` in chunk order.

    At most ``window`` tasks are in flight, so this process holds at most that many
    results. After a failure, the tasks still running are waited for (their writes
    land before the temporary output is removed), then the error is raised.
    """
    import uuid

    from distributed import as_completed, wait

    threads = sum(cl.nthreads().values()) or 1
    window = max(2, 2 * threads)
    token = uuid.uuid4().hex[:8]
    todo = iter(enumerate(chunks))
    in_flight: dict[str, tuple[int, object]] = {}
    results: dict[int, object] = {}  # finished, waiting for an earlier chunk
    next_index = 0
    queue = as_completed()

    def submit() -> None:
        item = next(todo, None)
        if item is not None:
            i, (start, stop) = item
            key = f"rankdist-synth-{token}-{i}"
            future = cl.submit(task, *args, start, stop, key=key, pure=False)
            in_flight[key] = (i, future)
            queue.add(future)

    try:
        with _progress.bar(description, len(chunks), enabled=progress) as bar:
            for _ in range(window):
                submit()
            for future in queue:
                i, _ = in_flight.pop(future.key)
                results[i] = future.result()
                future.release()
                submit()
                while next_index in results:
                    consume(chunks[next_index], results.pop(next_index))
                    next_index += 1
                    bar.advance()
    except BaseException:
        with contextlib.suppress(Exception):
            wait([f for _, f in in_flight.values()], timeout=DRAIN_SECONDS)
        raise


def _obs(model: AtlasModel):
    """Cell names and labels (only categories that occur, in taxonomy order)."""
    from rankdist.io.store import drop_unused_categories

    spec = model.spec
    subtype, donor = cell_labels(model, 0, spec.n_cells)
    donor_names = model.donor_names
    width = len(str(spec.n_cells - 1))
    names = np.asarray([f"{donor_names[d]}_{i:0{width}d}" for i, d in enumerate(donor)], object)
    labels = nested_labels(
        subtype, model.subtype_names, model.subtype_class, model.class_names, donor, donor_names
    )
    return names, {
        role: drop_unused_categories(codes, cats) for role, (codes, cats) in labels.items()
    }


def _content_id(spec: AtlasSpec, n_keep) -> str:
    """The same spec and gene selection give the same matrix, so the same id."""
    key = json.dumps([spec.as_dict(), n_keep, GENERATOR_VERSION], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _provenance(model: AtlasModel, n_keep, n_genes: int, nnz: int) -> dict:
    spec = model.spec
    shape = [spec.n_cells, spec.n_genes]
    source = {"source": None, "source_kind": "synthetic-atlas", "sha256": None}
    genes = (
        {"mode": "all", "n_genes": n_genes}
        if n_keep is None
        else {"mode": "synth-informative", "n_top": n_keep, "n_genes": n_genes}
    )
    return {
        **source,
        "source_shape": shape,
        "sources": [
            {
                **source,
                "source_shape": shape,
                "label": "synthetic-atlas",
                "n_cells": spec.n_cells,
                "genes_dropped": 0,
            }
        ],
        "genes_common": spec.n_genes,
        "cell_names": "as generated: <donor>_<cell index>",
        "subsample": None,
        "parameters": {
            "genes": genes,
            "use_raw": False,
            "layer": None,
            "labels": {role: role for role in ROLES},
        },
        "synth": {
            **spec.as_dict(),
            "generator_version": GENERATOR_VERSION,
            "zero_fraction_stored": 1.0 - nnz / (spec.n_cells * n_genes),
        },
        "rankdist_version": version("rankdist"),
    }
