"""The rankdist store: one Zarr (format 3) directory per dataset.

Layout (see docs/store.md, which this module must keep true)::

    store.zarr/
      zarr.json                 attrs["rankdist"]: format, shape, label roles, provenance
      X                         cells x genes, source dtype, chunked (chunk_cells, n_genes)
      obs/names                 cell names (str)
      obs/<role>                int32 codes; attrs: column, categories      role in LABEL_ROLES
      var/names                 gene names (str)
      encodings/<name>-<key>/   Z (float32, cells x genes), valid (bool); attrs: params
      results/<run>/            indices, similarities, counts/<role>, excluded; attrs: metadata
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import zarr

# the atomic-output helpers live in rankdist.io.atomic; importable from here as before
from rankdist.io.atomic import (  # noqa: F401
    atomic_directory,
    atomic_file,
    publish_directory,
)
from rankdist.io.verified import StoreError, compressed_codecs, open_group

#: 2: every chunk checksummed (crc32c) and written (docs/store.md, "Integrity").
STORE_FORMAT = 2
#: Label roles a store can carry, in the order their counts are laid out.
LABEL_ROLES = ("cell_type", "coarse_type", "batch")


@dataclass(frozen=True)
class Labels:
    """One categorical obs column, stored as codes into ``categories``."""

    role: str
    column: str
    codes: np.ndarray  # (n_cells,) int32, every code in [0, len(categories))
    categories: tuple[str, ...]


def compressor() -> list:
    """The codecs rankdist writes compressed arrays with: blosc-zstd, then crc32c.

    See :func:`rankdist.io.verified.compressed_codecs`.
    """
    return compressed_codecs()


class Store:
    """Read access to an ingested rankdist store.

    Parameters
    ----------
    path
        Directory written by :func:`rankdist.ingest`.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            msg = f"store {self.path} does not exist; create it with `rankdist ingest`"
            raise StoreError(msg)
        try:
            self.root = open_group(self.path, mode="r")
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError) as err:
            if self.path.is_file():
                msg = (
                    f"{self.path} is a file, not a rankdist store (a directory written by "
                    "`rankdist ingest`); if it holds your data, ingest it first: "
                    f"rankdist ingest {self.path} STORE.zarr"
                )
            else:
                msg = (
                    f"{self.path} is not a rankdist store (no Zarr group there, so "
                    "`rankdist ingest` did not write it); create one with "
                    "`rankdist ingest SOURCE STORE.zarr`"
                )
            raise StoreError(msg) from err
        meta = self.root.attrs.get("rankdist")
        if not isinstance(meta, dict) or "format" not in meta:
            msg = (
                f"{self.path} is a Zarr group but not a rankdist store (no 'rankdist' attrs); "
                f"if it is an AnnData .zarr, ingest it first: rankdist ingest {self.path} "
                "STORE.zarr"
            )
            raise StoreError(msg)
        if meta["format"] != STORE_FORMAT:
            source = (meta.get("provenance") or {}).get("source")
            source = source if isinstance(source, str) else "SOURCE"
            msg = (
                f"{self.path} has store format {meta['format']}, this rankdist reads format "
                f"{STORE_FORMAT} (chunks checksummed); re-ingest it: rankdist ingest "
                f"{source} {self.path} --overwrite"
            )
            raise StoreError(msg)
        self.meta = meta

    def __repr__(self) -> str:
        roles = ", ".join(f"{r}={lab.column!r}" for r, lab in self.labels.items())
        return f"Store({str(self.path)!r}, {self.n_cells} cells x {self.n_genes} genes, {roles})"

    @property
    def n_cells(self) -> int:
        return int(self.root["X"].shape[0])

    @property
    def n_genes(self) -> int:
        return int(self.root["X"].shape[1])

    @property
    def chunk_cells(self) -> int:
        return int(self.root["X"].chunks[0])

    @property
    def provenance(self) -> dict:
        return dict(self.meta.get("provenance", {}))

    @property
    def content_id(self) -> str:
        """Identifies the stored matrix: encodings cached under another id are stale."""
        return str(self.meta["content_id"])

    @cached_property
    def cell_names(self) -> np.ndarray:
        return np.asarray(self.root["obs/names"][:], dtype=object)

    @cached_property
    def gene_names(self) -> np.ndarray:
        return np.asarray(self.root["var/names"][:], dtype=object)

    @cached_property
    def labels(self) -> dict[str, Labels]:
        """Stored label columns by role, in :data:`LABEL_ROLES` order."""
        out = {}
        for role in LABEL_ROLES:
            key = f"obs/{role}"
            if key in self.root:
                arr = self.root[key]
                out[role] = Labels(
                    role=role,
                    column=str(arr.attrs["column"]),
                    codes=np.asarray(arr[:], dtype=np.int32),
                    categories=tuple(arr.attrs["categories"]),
                )
        return out

    def read_x(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of X as a dense array, ``(stop - start, n_genes)``."""
        return np.asarray(self.root["X"][start:stop])


def check_store_path(store_path: str | os.PathLike, overwrite: bool) -> None:
    """An existing ``store_path`` is an error, unless ``overwrite`` and it is safe to replace.

    Only a rankdist store or an empty directory is replaced: overwriting anything else
    (the input file itself, a project directory) would delete the user's data.
    """
    store_path = Path(store_path)
    if not store_path.exists():
        return
    if not overwrite:
        msg = f"store {store_path} already exists; pass overwrite=True (--overwrite) to replace it"
        raise FileExistsError(msg)
    if store_path.is_dir() and not any(store_path.iterdir()):
        return
    try:
        # any rankdist store, including one of an older format that must be re-ingested
        is_store = "rankdist" in open_group(store_path, mode="r").attrs
    except (FileNotFoundError, NotADirectoryError, zarr.errors.GroupNotFoundError, ValueError):
        is_store = False
    if not is_store:
        kind = "a file" if store_path.is_file() else "a directory that is not a rankdist store"
        msg = (
            f"refusing to overwrite {store_path}: it is {kind}, and overwrite=True "
            "(--overwrite) only replaces a rankdist store; choose another store path, "
            "or remove it yourself first"
        )
        raise FileExistsError(msg)


def finish_store(
    root: zarr.Group,
    *,
    cell_names,
    gene_names,
    labels: dict[str, tuple[str, np.ndarray, list[str]]],
    total_counts: np.ndarray,
    content_id: str,
    provenance: dict,
) -> None:
    """Write everything of a store but X: obs, var, the encodings and results groups, attrs.

    Called last, inside :func:`atomic_directory`, once ``root['X']`` is written.

    Parameters
    ----------
    root
        The store's (temporary) root group.
    cell_names, gene_names
        ``(n_cells,)`` and ``(n_genes,)`` names, in X's order.
    labels
        Role -> ``(obs column, (n_cells,) codes, categories)``.
    total_counts
        ``(n_cells,)`` library size of each cell over all source genes.
    content_id, provenance
        Stored in ``attrs['rankdist']`` (see docs/store.md).
    """
    write_names(root, "obs/names", cell_names)
    write_names(root, "var/names", gene_names)
    n = len(total_counts)
    tot = root.create_array(
        "obs/total_counts", shape=(n,), dtype="float64", chunks=(max(1, min(n, 1 << 20)),)
    )
    tot[:] = total_counts
    for role, (column, codes, cats) in labels.items():
        write_labels(root, role, column, codes, cats)
    root.create_group("encodings")
    root.create_group("results")
    root.attrs["rankdist"] = {
        "format": STORE_FORMAT,
        "content_id": content_id,
        "provenance": provenance,
    }


def write_labels(group: zarr.Group, role: str, column: str, codes: np.ndarray, categories) -> None:
    """Write one label column as int32 codes with its categories in the attrs."""
    if role not in LABEL_ROLES:
        msg = f"unknown label role {role!r}; expected one of {LABEL_ROLES}"
        raise ValueError(msg)
    arr = group.create_array(
        f"obs/{role}",
        shape=codes.shape,
        dtype="int32",
        chunks=(max(1, min(len(codes), 1 << 20)),),
        compressors=compressor(),
    )
    arr[:] = codes.astype(np.int32)
    arr.attrs["column"] = column
    arr.attrs["categories"] = [str(c) for c in categories]


def drop_unused_categories(codes: np.ndarray, categories) -> tuple[np.ndarray, list[str]]:
    """Codes into only the categories some cell has, in their original order.

    Parameters
    ----------
    codes
        ``(n_cells,)`` integer codes into ``categories``.
    categories
        The category of each code value.

    Returns
    -------
    codes, categories
        ``(n_cells,)`` int32 codes into the categories that occur (as str), which keep
        the order they had in ``categories``.
    """
    codes = np.asarray(codes)
    present = np.flatnonzero(np.bincount(codes, minlength=len(categories)))
    remap = np.full(len(categories), -1, dtype=np.int32)
    remap[present] = np.arange(len(present), dtype=np.int32)
    return remap[codes], [str(categories[i]) for i in present]


def write_names(group: zarr.Group, key: str, names) -> None:
    """Write a 1-d array of strings (cell or gene names)."""
    names = np.asarray([str(n) for n in names])
    arr = group.create_array(
        key, shape=names.shape, dtype=str, chunks=(max(1, min(len(names), 1 << 18)),)
    )
    arr[:] = names
