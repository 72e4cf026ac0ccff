"""The ``results/<run>/`` format: the one module that writes and reads it (docs/results.md).

A run is computed in a hidden work directory and renamed into place when complete::

    results/.<run>.partial/       while it runs (or after it was killed)
      indices, similarities,      the result arrays, created empty, filled block by block
      counts/<role>               (``excluded`` is written when the run is published)
      pair_hist_blocks            (with type_hist) one type x type histogram per row block
      checkpoint/                 merged partials (reduce/checkpoint.py)
      job.json                    what the arrays belong to; written last, atomically
    results/<run>/                the finished run
      indices, similarities, excluded, counts/<role>, pair_hist (with type_hist)
      relations/total, relations/same_<role>   (format 2) written when the run is published
      attrs: encoding-type, encoding-version, run (the run's metadata)

The finished run is versioned as anndata versions its elements: the group's attrs
carry ``encoding-type`` (:data:`RUN_TYPE`) and ``encoding-version``
(:data:`RUN_VERSION`). A run written before the version was recorded reads as
version ``"1"``. Version 1 lacks ``relations/`` (derived from the counts when read).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from rankdist.io.store import Store, atomic_file, compressor, publish_directory
from rankdist.io.verified import open_group
from rankdist.reduce.partial import Partial
from rankdist.reduce.relations import store_codes, write_relations

#: ``encoding-type`` of a finished run's group.
RUN_TYPE = "rankdist-run"
#: ``encoding-version`` this rankdist writes: 2 adds ``relations/`` to version 1.
RUN_VERSION = "2"
#: Versions this rankdist reads; a run without the attrs predates them and is version 1.
READ_VERSIONS = ("1", "2")
#: Format of a work directory's job.json; a work directory of another format is discarded.
JOB_FORMAT = 2
#: The attrs["run"] keys that decide whether a work directory's checkpoints can be resumed.
RESUME_KEYS = (
    "content_id",
    "encoding_key",
    "form",
    "k",
    "cutoffs",
    "labels",
    "subtile",
    "n_cells",
    "type_hist",
)

_JOB_FILE = "job.json"
_CHECKPOINT_DIR = "checkpoint"


#: Names a run may not take: the zarr metadata files a ``results/`` group may hold.
#: Names starting with ``.`` (``.zattrs``, ``.zgroup``, work directories, locks) are
#: refused by :func:`check_run_name`'s pattern.
RESERVED_NAMES = ("zarr.json", ".zattrs", ".zgroup", ".zarray", ".zmetadata")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_run_name(name: str) -> str:
    """``name`` if it can name a run: a folder of ``results/`` that nothing else uses.

    Raises
    ------
    ValueError
        If ``name`` holds other characters than letters, digits, ``_``, ``.`` and ``-``,
        starts with ``.`` (the work directories and locks are hidden names), or is one of
        :data:`RESERVED_NAMES` in any case.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        msg = (
            f"run name {name!r} may hold only letters, digits, '_', '.' and '-', and must "
            "start with a letter or digit"
        )
        raise ValueError(msg)
    if name.lower() in RESERVED_NAMES:
        msg = f"run name {name!r} is a file of the store's format; choose another --name"
        raise ValueError(msg)
    return name


def run_path(store_path: str | os.PathLike, name: str) -> Path:
    """Where the finished run ``name`` lives."""
    return Path(store_path) / "results" / name


def work_path(store_path: str | os.PathLike, name: str) -> Path:
    """The work directory of run ``name`` while it is computed."""
    return Path(store_path) / "results" / f".{name}.partial"


def checkpoint_path(work: str | os.PathLike) -> Path:
    """The checkpoint directory inside a work directory (see reduce/checkpoint.py)."""
    return Path(work) / _CHECKPOINT_DIR


def resume_fingerprint(spec: dict) -> dict:
    """The part of a run's metadata that must match for its checkpoints to be reused.

    ``spec``: the run's ``attrs["run"]`` entries known before the tiles run (every key of
    :data:`RESUME_KEYS`). JSON-plain (tuples become lists), so that it compares equal to
    a job.json read back.
    """
    return json.loads(json.dumps({"format": JOB_FORMAT} | {k: spec[k] for k in RESUME_KEYS}))


def resumable_block_rows(work: Path, fingerprint: dict, block_size: int | None) -> int | None:
    """The block size of an unfinished run of the same job in ``work``, if it can resume.

    A work directory of another job (other parameters, another ingest, an older job.json
    format) or of another explicit block size is removed: its partial results do not
    apply.
    """
    if not work.exists():
        return None
    try:
        previous = json.loads((work / _JOB_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        previous = None
    if isinstance(previous, dict):
        rows = previous.pop("block_rows", None)
        if previous == fingerprint and block_size in (None, rows):
            return rows
    shutil.rmtree(work)
    return None


def create_work_dir(
    work: Path,
    fingerprint: dict,
    *,
    block_rows: int,
    role_sizes: dict[str, int],
    hist_bins: int,
) -> None:
    """Create the run's work directory: empty result arrays, then job.json (last).

    Parameters
    ----------
    work
        The work directory (:func:`work_path`); must not exist.
    fingerprint
        :func:`resume_fingerprint` of the run (gives n_cells, k, cutoffs, type_hist).
    block_rows
        Cells per row block: the chunk rows of the result arrays.
    role_sizes
        Label role -> number of categories, in the order of the partials' count axis.
    hist_bins
        Similarity bins of the type x type histogram (used with ``type_hist``).
    """
    n, k, rows = fingerprint["n_cells"], fingerprint["k"], block_rows
    n_cutoffs = len(fingerprint["cutoffs"])
    out = open_group(work, mode="w")
    checkpoint_path(work).mkdir()
    for key, shape, dtype in [("indices", (n, k), "int64"), ("similarities", (n, k), "float32")]:
        out.create_array(key, shape=shape, dtype=dtype, chunks=(rows, k), compressors=compressor())
    for role, size in role_sizes.items():
        out.create_array(
            f"counts/{role}",
            shape=(n, n_cutoffs, size),
            dtype="int32",
            chunks=(rows, n_cutoffs, size),
            compressors=compressor(),
        )
    if fingerprint["type_hist"]:
        t = role_sizes["cell_type"]
        n_blocks = -(-n // rows)
        out.create_array(
            "pair_hist_blocks",
            shape=(n_blocks, t, t, hist_bins),
            dtype="int64",
            chunks=(1, t, t, hist_bins),
            compressors=compressor(),
        )
    with atomic_file(work / _JOB_FILE, mode="w") as fh:
        json.dump(fingerprint | {"block_rows": block_rows}, fh)


def write_block(
    work: str | os.PathLike,
    part: Partial,
    start: int,
    valid: np.ndarray,
    role_sizes: dict[str, int],
) -> None:
    """Write one row block's final top-k, counts and histogram into the work directory.

    Parameters
    ----------
    work
        The work directory.
    part
        The block's partial with every tile folded in.
    start
        First cell of the block.
    valid
        ``(rows,)`` bool: the block's cells with a defined correlation; the others are
        written as ``-1`` / NaN.
    role_sizes
        Label role -> categories, in the order of ``part.counts``' last axis.

    Notes
    -----
    ``part.counts`` holds relations per cutoff *bin*; the result holds them *at or
    above* each cutoff, so the bins are cumulated from the top.
    """
    stop = start + len(valid)
    sim = part.top_sim.copy()
    idx = part.top_idx.copy()
    sim[~valid] = np.nan
    idx[~valid] = -1
    out = open_group(work, mode="r+")
    out["similarities"][start:stop] = sim
    out["indices"][start:stop] = idx
    at_or_above = np.flip(np.cumsum(np.flip(part.counts, axis=1), axis=1), axis=1)
    off = 0
    for role, size in role_sizes.items():
        out[f"counts/{role}"][start:stop] = at_or_above[:, :, off : off + size]
        off += size
    if part.pair_hist is not None:
        out["pair_hist_blocks"][part.block] = part.pair_hist


def publish_run(
    work: Path, final: Path, metadata: dict, *, excluded, codes: dict | None = None
) -> None:
    """Finish a work directory whose blocks are all written, and rename it to ``final``.

    While job.json and the checkpoints keep ``work`` resumable it writes ``excluded`` (the
    cells without a defined correlation, by index), ``relations/`` (label ``codes`` by
    role, default ``obs/<role>``), ``pair_hist`` and the attrs, each step repeatable by a
    run that resumes a killed one; then replaces ``final`` (``io.store.publish_directory``)
    and only then drops checkpoints and job.json from it. A kill at any instant leaves a
    run that resumes or a complete published one.
    """
    out = open_group(work, mode="r+")
    n = out["indices"].shape[0]
    mask = np.zeros(n, dtype=bool)
    mask[np.asarray(excluded, dtype=np.int64)] = True
    chunks = (max(1, min(n, 1 << 20)),)  # overwrite: a publish the last run was killed in
    out.create_array("excluded", shape=(n,), dtype="bool", chunks=chunks, overwrite=True)[:] = mask
    if "counts" in out and (roles := [role for role, _ in out["counts"].arrays()]):
        write_relations(out, codes if codes is not None else store_codes(work.parents[1], roles))
    if "pair_hist_blocks" in out:
        _finish_pair_hist(out)
    out.attrs["encoding-type"] = RUN_TYPE
    out.attrs["encoding-version"] = RUN_VERSION
    out.attrs["run"] = metadata
    publish_directory(work, final)
    shutil.rmtree(checkpoint_path(final))  # a kill before these leaves a complete run
    (final / _JOB_FILE).unlink()


def _finish_pair_hist(out: zarr.Group) -> None:
    """Sum the per-block histograms and fold them into unordered type pairs.

    A pair (a, b) of cells was counted once, under (type of the lower-index cell, type of
    the other); ``pair_hist[s, t]`` (= ``pair_hist[t, s]``) counts the pairs of one cell
    of type s and one of type t, ``pair_hist[t, t]`` the pairs within type t. Its
    ``bin_edges``, written last, mark it complete: a publish killed while the block
    histograms were being deleted only finishes deleting them.
    """
    if "pair_hist" not in out or "bin_edges" not in out["pair_hist"].attrs:
        blocks = out["pair_hist_blocks"]
        n_types, bins = blocks.shape[1], blocks.shape[3]
        total = np.zeros((n_types, n_types, bins), np.int64)
        for b in range(blocks.shape[0]):
            total += np.asarray(blocks[b])
        sym = total + total.transpose(1, 0, 2)
        diag = np.arange(n_types)
        sym[diag, diag] = total[diag, diag]
        arr = out.create_array(
            "pair_hist", shape=sym.shape, dtype="int64", chunks=sym.shape,
            compressors=compressor(), overwrite=True,
        )  # fmt: skip
        arr[:] = sym
        arr.attrs["bin_edges"] = np.linspace(-1.0, 1.0, bins + 1).tolist()
    del out["pair_hist_blocks"]


@dataclass(frozen=True)
class StoredRun:
    """The arrays and metadata of a finished run, as stored.

    Attributes
    ----------
    indices, similarities
        ``(n_cells, k)`` int64 and float32, read.
    excluded
        ``(n_cells,)`` bool, read.
    counts
        Label role -> ``(n_cells, n_cutoffs, n_categories)`` int32 zarr array (opened,
        read where indexed), at or above each cutoff.
    relations
        ``total``, ``same_<role>`` -> ``(n_cells, n_cutoffs)`` int32 zarr arrays; {} in v1.
    pair_hist
        ``(types, types, bins)`` int64, or None without ``type_hist``.
    bin_edges
        ``(bins + 1,)`` float64 edges of ``pair_hist``'s bins, or None.
    metadata
        ``attrs["run"]``.
    version
        The run's ``encoding-version``.
    """

    indices: np.ndarray
    similarities: np.ndarray
    excluded: np.ndarray
    counts: dict[str, zarr.Array]
    relations: dict[str, zarr.Array]
    pair_hist: np.ndarray | None
    bin_edges: np.ndarray | None
    metadata: dict
    version: str


def run_version(attrs, store_path: str | os.PathLike, run: str) -> str:
    """The ``encoding-version`` of a finished run's attrs, checked to be readable.

    Raises
    ------
    ValueError
        If the group is not a rankdist run, or of a version this rankdist cannot read.
    """
    kind = attrs.get("encoding-type")
    if kind is None and "encoding-version" not in attrs:
        return "1"  # written before runs carried a version
    if kind != RUN_TYPE:
        msg = (
            f"results/{run} in {store_path} has encoding-type {kind!r}, not {RUN_TYPE!r}: it "
            "was not written by rankdist neighbors; move it out of results/ or recompute it"
        )
        raise ValueError(msg)
    version = str(attrs.get("encoding-version"))
    if version not in READ_VERSIONS:
        msg = (
            f"run {run!r} in {store_path} has results format (encoding-version) {version!r}; "
            f"this rankdist reads {list(READ_VERSIONS)}. Upgrade rankdist, or recompute the "
            f"run with `rankdist neighbors {store_path} --name {run}`"
        )
        raise ValueError(msg)
    return version


def read_run(store_path: str | os.PathLike, run: str) -> StoredRun:
    """Read the finished run ``run`` of a store, checking its version.

    Parameters
    ----------
    store_path
        The store's directory.
    run
        The run's name (a folder of ``results/``).

    Returns
    -------
    StoredRun
        Top-k and excluded read, counts and relations opened (read when indexed), metadata.
    """
    group = open_group(run_path(store_path, run), mode="r")
    version = run_version(group.attrs, store_path, run)
    counts = dict(group["counts"].arrays()) if "counts" in group else {}
    relations = dict(group["relations"].arrays()) if "relations" in group else {}
    pair_hist = bin_edges = None
    if "pair_hist" in group:
        pair_hist = np.asarray(group["pair_hist"][:])
        bin_edges = np.asarray(group["pair_hist"].attrs["bin_edges"])
    return StoredRun(
        indices=_read_rows(group["indices"]),
        similarities=_read_rows(group["similarities"]),
        excluded=np.asarray(group["excluded"][:]),
        counts=counts,
        relations=relations,
        pair_hist=pair_hist,
        bin_edges=bin_edges,
        metadata=dict(group.attrs["run"]),
        version=version,
    )


def _read_rows(arr: zarr.Array, slab_bytes: int = 1 << 24) -> np.ndarray:
    """A whole array, read ~``slab_bytes`` at a time into one allocation.

    (``arr[:]`` also holds every decoded chunk: +140 MB on 2.3 M x 30 int64 indices.)"""
    out = np.empty(arr.shape, dtype=arr.dtype)
    step = arr.chunks[0] * max(1, slab_bytes // max(1, out[: arr.chunks[0]].nbytes))
    for start in range(0, arr.shape[0], step):
        out[start : start + step] = arr[start : start + step]
    return out


def list_runs(store: str | os.PathLike | Store) -> list[str]:
    """Names of the finished runs in a store.

    Parameters
    ----------
    store
        The store (path or :class:`~rankdist.io.store.Store`).

    Returns
    -------
    list of str
        Sorted run names (the work directories of unfinished runs are not listed).
    """
    store = store if isinstance(store, Store) else Store(store)
    path = store.path / "results"
    if not path.exists():
        return []
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
