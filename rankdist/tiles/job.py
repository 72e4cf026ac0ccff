"""What every tile, merge and write task of a run needs: :class:`TileJob`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rankdist.tiles.blocks import read_block
from rankdist.tiles.grid import TilePlan


@dataclass(frozen=True)
class TileJob:
    """Everything a tile, merge or write task needs, small enough to ship with each task.

    ``form`` is how the encoding stores Z (``'dense'`` or ``'sparse'``, as
    :class:`rankdist.encode.cache.Encoded` says); the sparse form needs ``n_genes``.
    """

    store_path: str
    z_path: str
    plan: TilePlan
    k: int
    cutoffs: tuple[float, ...]
    roles: tuple[str, ...]
    role_sizes: tuple[int, ...]
    type_hist: bool = False
    form: str = "dense"
    n_genes: int = 0
    kernel: str = "float32"

    def __post_init__(self):
        if self.form not in ("dense", "sparse"):
            msg = f"TileJob form must be the encoding's: 'dense' or 'sparse', not {self.form!r}"
            raise ValueError(msg)
        if self.form == "sparse" and self.n_genes < 1:
            msg = f"a sparse TileJob needs n_genes (the store's genes), got {self.n_genes}"
            raise ValueError(msg)
        if self.kernel not in ("float32", "screen"):
            msg = f"TileJob kernel must be 'float32' or 'screen', not {self.kernel!r}"
            raise ValueError(msg)

    @property
    def hist_types(self) -> int:
        """Cell types in the type x type histogram (0: no histogram)."""
        if not self.type_hist:
            return 0
        return self.role_sizes[self.roles.index("cell_type")]

    @property
    def offsets(self) -> tuple[int, ...]:
        return tuple(int(x) for x in np.cumsum((0,) + self.role_sizes[:-1])) if self.roles else ()

    @property
    def n_values(self) -> int:
        return int(sum(self.role_sizes))

    def block(self, b: int, *, cache: bool = True):
        """``(z, valid, codes)`` of block ``b`` (:func:`rankdist.tiles.blocks.read_block`)."""
        start, stop = self.plan.block_range(b)
        return read_block(
            self.z_path,
            self.store_path,
            self.roles,
            self.offsets,
            start,
            stop,
            form=self.form,
            n_genes=self.n_genes,
            cache=cache,
        )

    def block_key(self, b: int) -> tuple[str, int, int]:
        """How the block reader names block ``b``: ``(z_path, start, stop)``."""
        return (self.z_path, *self.plan.block_range(b))
