"""Several sources as one: common genes, cell names, label categories, provenance.

Each source becomes a :class:`_Part` that records which of its genes and cells go into
the store and where; the helpers here build the parts and combine the sources' obs
(labels, cell names) and provenance. Streaming the matrix itself is in ``ingest.py``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

from rankdist.io.source import Source

#: The obs "column" recorded for batches taken from the source names.
SOURCE_BATCH_COLUMN = "source"


@dataclass
class _Part:
    """One source of an ingest and where its cells and genes go in the store."""

    source: Source
    label: str  # the file's stem (or anndata_<i>): the default batch and the name prefix
    genes: np.ndarray | None  # source columns of the common genes, None: all, in order
    n_dropped: int  # source genes not in every source
    offset: int = 0  # first store row of this source's cells
    rows: np.ndarray | None = None  # kept source rows (sorted), None: all

    @property
    def n_kept(self) -> int:
        return self.source.n_cells if self.rows is None else len(self.rows)

    def columns(self, genes: np.ndarray | None) -> np.ndarray | None:
        """Source columns of the common genes ``genes`` (indices into them; None: all)."""
        if self.genes is None:
            return genes
        return self.genes if genes is None else self.genes[genes]

    def n_blocks(self, chunk_cells: int) -> int:
        if self.rows is None:
            return -(-self.source.n_cells // chunk_cells)
        return len(np.unique(self.rows // chunk_cells))


def _source_label(src: Source, position: int) -> str:
    return Path(src.path).stem if src.path is not None else f"anndata_{position}"


def _plan_parts(srcs: list[Source]) -> list[_Part]:
    """One part per source, with the genes common to all sources (first source's order)."""
    labels = [_source_label(src, i) for i, src in enumerate(srcs)]
    if len(srcs) == 1:
        return [_Part(srcs[0], labels[0], genes=None, n_dropped=0)]
    for src in srcs:
        dup = src.var.index[src.var.index.duplicated()]
        if len(dup):
            msg = (
                f"{src.name} has {len(dup)} duplicate gene name(s), e.g. "
                f"{list(dup.unique()[:5])}; several sources are matched by gene name, so "
                "make them unique (AnnData.var_names_make_unique()) before ingest"
            )
            raise ValueError(msg)
    common = srcs[0].var.index
    for src in srcs[1:]:
        common = common[common.isin(src.var.index)]
    if len(common) == 0:
        examples = "; ".join(f"{s.name}: {list(s.var.index[:3])}" for s in srcs)
        msg = (
            f"no gene is in every one of the {len(srcs)} sources (genes are matched by var "
            f"name; first names: {examples}); use the same gene naming in all sources"
        )
        raise ValueError(msg)
    parts = []
    for src, label in zip(srcs, labels, strict=True):
        cols = src.var.index.get_indexer(common).astype(np.int64)
        in_order = np.array_equal(cols, np.arange(src.n_genes))
        parts.append(_Part(src, label, None if in_order else cols, src.n_genes - len(common)))
    offset = 0
    for part in parts:
        part.offset = offset
        offset += part.n_kept
    return parts


def _require_distinct_labels(parts: list[_Part], why: str) -> None:
    seen: dict[str, Source] = {}
    for part in parts:
        other = seen.setdefault(part.label, part.source)
        if other is not part.source:
            msg = (
                f"sources {other.name} and {part.source.name} have the same name "
                f"{part.label!r} (file name without suffix), which {why}; rename or "
                "symlink one of them"
            )
            raise ValueError(msg)


def _union_labels(parts: list[_Part], column: str) -> tuple[str, np.ndarray, list[str]]:
    """Codes over all parts into the union of their categories (first-seen order)."""
    per_source = [_label_codes(p.source, column) for p in parts]
    categories = list(dict.fromkeys(c for _, _, cats in per_source for c in cats))
    index = {c: i for i, c in enumerate(categories)}
    codes = [
        np.asarray([index[c] for c in cats], dtype=np.int32)[codes] for _, codes, cats in per_source
    ]
    return column, np.concatenate(codes).astype(np.int32), categories


def _source_batches(parts: list[_Part]) -> tuple[str, np.ndarray, list[str]]:
    """Batch labels from the sources' names: one batch per source."""
    _require_distinct_labels(parts, "the batches are named after (pass batch=COLUMN)")
    codes = np.repeat(np.arange(len(parts), dtype=np.int32), [p.source.n_cells for p in parts])
    return SOURCE_BATCH_COLUMN, codes, [p.label for p in parts]


def _cell_names(parts: list[_Part]) -> tuple[np.ndarray, bool]:
    """Cell names of all parts, prefixed ``'<label>:'`` when any name is in two sources."""
    for part in parts:
        _check_cell_names(part.source)
    names = np.concatenate([np.asarray(p.source.obs.index, dtype=object) for p in parts])
    if len(parts) == 1 or not pd.Index(names).duplicated().any():
        return names, False
    _require_distinct_labels(parts, "prefixes the cell names that occur in several sources")
    names = np.concatenate(
        [np.asarray([f"{p.label}:{n}" for n in p.source.obs.index], dtype=object) for p in parts]
    )
    dup = pd.Index(names)[pd.Index(names).duplicated()]
    if len(dup):
        msg = (
            f"cell names are not unique even prefixed with their source's name, e.g. "
            f"{list(dup.unique()[:5])}; make them unique before ingest"
        )
        raise ValueError(msg)
    return names, True


def _provenance(parts: list[_Part], params: dict, prefixed: bool, subsample) -> dict:
    """The store's provenance: every source with its sha256, and what was kept of it."""
    sources = []
    for part in parts:
        src = part.source
        sources.append(
            {
                "source": str(Path(src.path).resolve()) if src.path is not None else None,
                "source_kind": src.kind,
                "sha256": _sha256(src.path) if src.path is not None else None,
                "source_shape": [src.n_cells, src.n_genes],
                "label": part.label,
                "n_cells": part.n_kept,
                "genes_dropped": part.n_dropped,
            }
        )
    # one source: its fields at the top level; several: a list of each field
    flat = ("source", "source_kind", "sha256", "source_shape")
    single = len(sources) == 1
    return {
        **{key: sources[0][key] if single else [s[key] for s in sources] for key in flat},
        "sources": sources,
        "genes_common": int(parts[0].source.n_genes - parts[0].n_dropped),
        "cell_names": "prefixed with the source label" if prefixed else "as in the source",
        "subsample": subsample,
        "parameters": params,
        "rankdist_version": version("rankdist"),
    }


def _label_codes(src: Source, column: str) -> tuple[str, np.ndarray, list[str]]:
    """Codes and categories of obs[column]; errors name the column and the file."""
    if column not in src.obs.columns:
        msg = f"column {column!r} not in obs of {src.name}; available: {list(src.obs.columns)}"
        raise KeyError(msg)
    values = src.obs[column]
    missing = values.isna()
    if missing.any():
        first = list(src.obs.index[missing.to_numpy()][:3])
        msg = (
            f"obs column {column!r} of {src.name} has {int(missing.sum())} missing value(s) "
            f"(first cells: {first}); fill or drop them before ingest"
        )
        raise ValueError(msg)
    cat = pd.Categorical(
        values.astype(str)
        if not isinstance(values.dtype, pd.CategoricalDtype)
        else values.cat.remove_unused_categories()
    )
    return column, np.asarray(cat.codes, dtype=np.int32), [str(c) for c in cat.categories]


def _check_cell_names(src: Source) -> None:
    names = src.obs.index
    dup = names[names.duplicated()]
    if len(dup):
        msg = (
            f"{src.name} has {len(dup)} duplicate cell name(s), e.g. {list(dup.unique()[:5])}; "
            "make them unique (AnnData.obs_names_make_unique()) before ingest"
        )
        raise ValueError(msg)


def _sha256(path: os.PathLike) -> str:
    """sha256 of a file, or of every file under a directory (names and contents)."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()
