"""Checkpoints of merged partials, so that a killed run resumes without redoing tiles.

Layout inside a run's work directory (``results/.<run>.partial/checkpoint/``)::

    b<block>-<id>.npz    one merged partial: top_sim, top_idx, counts, tiles (i, j, side)
    written-<block>      the block's final rows are in the result arrays

A merge writes its output (to a temporary name, flushed, then renamed) before it deletes
the checkpoints it consumed, so at any instant the files of a block are pairwise nested
or disjoint in the tiles they cover, never partly overlapping. A reader keeps the
maximal ones (:func:`scan`), which are disjoint and lose nothing that was durable.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rankdist.io.store import atomic_file
from rankdist.reduce.partial import Partial

_SIDE = {"row": 0, "col": 1}
_SIDE_NAME = {0: "row", 1: "col"}
_FILE = re.compile(r"b(\d+)-[0-9a-f]+\.npz")


def save_partial(ckpt_dir: str | os.PathLike, part: Partial) -> str:
    """Write ``part`` atomically and durably as a new checkpoint file; return its path.

    The file is written under a temporary name, flushed to disk and renamed
    (:func:`rankdist.io.store.atomic_file`); if writing fails, nothing is left behind.
    """
    path = Path(ckpt_dir) / f"b{part.block}-{uuid.uuid4().hex[:12]}.npz"
    tiles = np.array([(i, j, _SIDE[s]) for i, j, s in sorted(part.tiles)], dtype=np.int64)
    extra = {} if part.pair_hist is None else {"pair_hist": part.pair_hist}
    # durable before the merge deletes the checkpoints it consumed
    with atomic_file(path, mode="wb", fsync=True) as fh:
        np.savez(
            fh, top_sim=part.top_sim, top_idx=part.top_idx, counts=part.counts, tiles=tiles, **extra
        )
    return str(path)


def load_partial(path: str | os.PathLike, block: int) -> Partial:
    """Read a checkpoint file back (it stays on disk until a superset replaces it)."""
    with np.load(path) as data:
        tiles = frozenset((int(i), int(j), _SIDE_NAME[int(s)]) for i, j, s in data["tiles"])
        return Partial(
            block=block,
            top_sim=data["top_sim"],
            top_idx=data["top_idx"],
            counts=data["counts"],
            tiles=tiles,
            checkpoint=str(path),
            pair_hist=data["pair_hist"] if "pair_hist" in data.files else None,
        )


def tiles_of(path: str | os.PathLike) -> frozenset:
    with np.load(path) as data:
        return frozenset((int(i), int(j), _SIDE_NAME[int(s)]) for i, j, s in data["tiles"])


def mark_written(ckpt_dir: str | os.PathLike, block: int) -> None:
    """Record that a block's rows are in the result, and drop its partial checkpoints."""
    ckpt_dir = Path(ckpt_dir)
    (ckpt_dir / f"written-{block}").touch()
    for f in ckpt_dir.glob(f"b{block}-*.npz"):
        f.unlink(missing_ok=True)


@dataclass
class Resume:
    """What a run directory already holds: written blocks and durable partials."""

    written: set[int] = field(default_factory=set)
    files: dict[int, list[tuple[str, frozenset]]] = field(default_factory=dict)

    def covered(self, block: int) -> frozenset:
        """Tile sides already durable for ``block`` (excluding written blocks)."""
        out: set = set()
        for _, tiles in self.files.get(block, []):
            out |= tiles
        return frozenset(out)

    @property
    def n_files(self) -> int:
        return sum(len(v) for v in self.files.values())

    def durable_tiles(self, n_blocks: int) -> int:
        """Tiles of the ``n_blocks`` x ``n_blocks`` upper triangle that need no recomputing.

        A tile ``(i, j)`` is durable when each of its sides (the row side for block ``i``,
        the column side for block ``j``; one side when ``i == j``) is in a written block or
        a kept checkpoint file: what the scheduler counts as resumed.
        """
        covered = {b: self.covered(b) for b in range(n_blocks) if b not in self.written}
        done = 0
        for i in range(n_blocks):
            for j in range(i, n_blocks):
                sides = [(i, "row")] if i == j else [(i, "row"), (j, "col")]
                if all(b in self.written or (i, j, s) in covered[b] for b, s in sides):
                    done += 1
        return done


def scan(ckpt_dir: str | os.PathLike) -> Resume:
    """Written blocks and, per other block, its maximal (hence disjoint) checkpoint files."""
    ckpt_dir = Path(ckpt_dir)
    state = Resume()
    if not ckpt_dir.exists():
        return state
    for f in ckpt_dir.glob("written-*"):
        state.written.add(int(f.name.split("-")[1]))
    by_block: dict[int, list[tuple[str, frozenset]]] = {}
    for f in ckpt_dir.iterdir():
        m = _FILE.fullmatch(f.name)
        if m is None:
            continue
        block = int(m.group(1))
        if block not in state.written:
            by_block.setdefault(block, []).append((str(f), tiles_of(f)))
    for block, files in by_block.items():
        files.sort(key=lambda ft: -len(ft[1]))
        kept: list[tuple[str, frozenset]] = []
        for path, tiles in files:
            if all(not (tiles & other) for _, other in kept):
                kept.append((path, tiles))
        state.files[block] = kept
    return state


def describe_progress(ckpt_dir: str | os.PathLike, n_blocks: int) -> str:
    """How far an interrupted run got, as the run resuming it says.

    For example ``'37 of 120 tiles already done (3 of 15 row blocks written)'``, the tiles
    counted as :meth:`Resume.durable_tiles` does.
    """
    state = scan(ckpt_dir)
    n_tiles = n_blocks * (n_blocks + 1) // 2
    return (
        f"{state.durable_tiles(n_blocks)} of {n_tiles} tiles already done "
        f"({len(state.written)} of {n_blocks} row blocks written)"
    )
