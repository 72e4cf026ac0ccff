"""Cut the cells into row blocks and list the upper-triangle tiles to compute.

Similarities are computed in canonical ``SUBTILE x SUBTILE`` GEMM calls on a grid
aligned to global cell indices, so every pair's float32 value comes from a BLAS call
of the same shape whatever the block size or the number of workers. OpenBLAS's
result for one element depends on the call's shape (measured: bit differences between
block sizes), so this grid is what makes results bit-identical across configurations.
Block sizes are therefore multiples of ``SUBTILE``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rankdist.layout import SUBTILE

#: Largest block: two blocks of Z plus partials must fit one worker thread's memory.
MAX_BLOCK_ROWS = 16384
#: Aim for at least this many tiles per worker thread, so the last tiles balance.
TILES_PER_THREAD = 8


@dataclass(frozen=True)
class TilePlan:
    """Row blocks of ``block_rows`` cells and the tiles (i <= j) over them."""

    n_cells: int
    block_rows: int

    def __post_init__(self):
        if self.block_rows <= 0 or self.block_rows % SUBTILE:
            msg = f"block size {self.block_rows} must be a positive multiple of {SUBTILE}"
            raise ValueError(msg)

    @property
    def n_blocks(self) -> int:
        return -(-self.n_cells // self.block_rows)

    def block_range(self, b: int) -> tuple[int, int]:
        start = b * self.block_rows
        return start, min(start + self.block_rows, self.n_cells)

    def tiles(self) -> list[tuple[int, int]]:
        """All (i, j) with i <= j, row by row, off-diagonal (full-cost) tiles of a row first.

        Row-major order keeps block i in the worker's block cache. Odd rows run their
        off-diagonal tiles from the last block back, so the blocks a row ends with are
        the ones the next row starts with (still cached). Within a row the cheaper
        diagonal tile (half the pairs) goes last, which balances the final tiles.
        """
        out = []
        for i in range(self.n_blocks):
            cols = range(i + 1, self.n_blocks)
            out.extend((i, j) for j in (reversed(cols) if i % 2 else cols))
            out.append((i, i))
        return out

    @property
    def n_tiles(self) -> int:
        return self.n_blocks * (self.n_blocks + 1) // 2

    def tile_pairs(self, i: int, j: int) -> int:
        """Cell pairs of tile (i, j): ``n_i * n_j``, or ``n_i (n_i + 1) / 2`` on the diagonal.

        Summed over all tiles this is ``N (N + 1) / 2``, the pair count of the FLOP model.
        """
        si, ei = self.block_range(i)
        sj, ej = self.block_range(j)
        ni, nj = ei - si, ej - sj
        return ni * (ni + 1) // 2 if i == j else ni * nj


#: Decoded Z blocks each worker process keeps (see tiles/blocks.py), and as many of their
#: 8-bit forms with the screen kernel (tiles/screen.py).
CACHED_BLOCKS = 4
#: Bytes per value of a block's 8-bit forms: level 1 and 2 of the left operand (1 + 2)
#: and both levels of the right (2).
QUANTISED_BYTES = 5
#: Share of a worker's memory limit that the resident blocks it holds may fill, on top of
#: the memory plan of :func:`choose_block_rows` (:data:`WORKER_MEMORY_SHARE`: the blocks
#: of running tiles, partials), so that both together stay within Dask's spill mark (70 %).
RESIDENT_SHARE = 0.1
#: Memory a worker process uses before any rankdist data (interpreter, numba, Dask).
WORKER_BASE_BYTES = 350 * 2**20
#: Share of a worker's memory limit rankdist plans to fill: below Dask's spill (70 %) and
#: pause (80 %) marks.
WORKER_MEMORY_SHARE = 0.6


def worker_bytes_per_block_row(
    n_genes: int, *, threads_per_worker: int, bytes_per_row_partial: int, screen: bool = False
) -> int:
    """Bytes a worker process holds per cell of block size.

    A worker holds its block cache (:data:`CACHED_BLOCKS` Z blocks, and with the screen
    kernel as many of their 8-bit forms) and, per running tile, two Z blocks (the
    diagonal's copy) and about four partials (two sides, merge inputs and output).

    Parameters
    ----------
    n_genes
        Genes of the encoded matrix (a Z row is ``4 * n_genes`` bytes of float32).
    threads_per_worker
        Threads of the worker, each running one tile at a time.
    bytes_per_row_partial
        Bytes per row of one partial result
        (:func:`rankdist.reduce.partial.partial_bytes_per_row`).
    screen
        The tiles run the 8-bit screen (``--kernel screen``).

    Returns
    -------
    int
        Bytes per row of one block.
    """
    z_row = n_genes * 4
    per_tile = 2 * z_row + 4 * bytes_per_row_partial
    cached = CACHED_BLOCKS * (z_row + (QUANTISED_BYTES * n_genes if screen else 0))
    return cached + threads_per_worker * per_tile


def worker_memory_needed(
    block_rows: int, n_genes: int, *, threads_per_worker: int, bytes_per_row_partial: int
) -> float:
    """The least worker memory limit that holds blocks of ``block_rows`` cells.

    The inverse of :func:`choose_block_rows`'s memory bound: the worker's base memory and
    ``block_rows`` times :func:`worker_bytes_per_block_row` within
    :data:`WORKER_MEMORY_SHARE` of the limit. Parameters as for
    :func:`worker_bytes_per_block_row`.

    Returns
    -------
    float
        Bytes of memory limit.
    """
    per_row = worker_bytes_per_block_row(
        n_genes, threads_per_worker=threads_per_worker, bytes_per_row_partial=bytes_per_row_partial
    )
    return (block_rows * per_row + WORKER_BASE_BYTES) / WORKER_MEMORY_SHARE


def choose_block_rows(
    n_cells: int,
    n_genes: int,
    *,
    threads: int,
    worker_memory: float | None,
    threads_per_worker: int = 1,
    bytes_per_row_partial: int = 0,
    screen: bool = False,
) -> int:
    """Pick a block size: large enough to amortise reads, small enough to fit and balance.

    Parameters
    ----------
    n_cells, n_genes
        Shape of the encoded matrix.
    threads
        Worker threads in the whole cluster (each runs one tile at a time).
    worker_memory
        Memory limit of one worker process in bytes, or None if unlimited.
    threads_per_worker
        Threads sharing that memory.
    bytes_per_row_partial
        Bytes per row of one partial result (top-k, counts, histogram share).
    screen
        The tiles run the 8-bit screen, whose block forms are cached too.

    Returns
    -------
    int
        A multiple of :data:`SUBTILE`.
    """
    # Balance: n_blocks^2 / 2 >= TILES_PER_THREAD * threads.
    target_blocks = math.sqrt(2 * TILES_PER_THREAD * max(threads, 1))
    rows = n_cells / target_blocks
    if worker_memory:
        budget = WORKER_MEMORY_SHARE * worker_memory - WORKER_BASE_BYTES
        per_row = worker_bytes_per_block_row(
            n_genes,
            threads_per_worker=threads_per_worker,
            bytes_per_row_partial=bytes_per_row_partial,
            screen=screen,
        )
        rows = min(rows, max(budget, 0) / max(per_row, 1))
    rows = int(rows) // SUBTILE * SUBTILE
    return max(SUBTILE, min(rows, MAX_BLOCK_ROWS))


@dataclass(frozen=True)
class Residence:
    """Where the tiles find their blocks: ``'resident'`` (Dask data) or ``'streamed'`` (store)."""

    mode: str
    reason: str

    def metadata(self) -> dict:
        """The run metadata's ``blocks`` and ``blocks_reason`` (docs/results.md)."""
        return {"blocks": self.mode, "blocks_reason": self.reason}


def choose_residence(z_bytes: float, memory_limits: list[float | None]) -> Residence:
    """Keep the blocks in worker memory when the blocks each worker must hold fit it.

    With tiles placed by owner (:class:`OwnerLayout`) a worker holds the blocks of its
    units, :attr:`OwnerLayout.block_share` of Z (all of it on one or two workers, a fifth
    on 50), until its last tile that uses them has run.

    Parameters
    ----------
    z_bytes
        Bytes of all blocks (:func:`rankdist.tiles.blocks.encoded_bytes`).
    memory_limits
        Memory limit of each worker in bytes; ``None`` or 0 for an unlimited worker.

    Returns
    -------
    Residence
        ``resident`` when that share of ``z_bytes`` is at most :data:`RESIDENT_SHARE` of the
        smallest limit (or a worker is unlimited), else ``streamed``; the reason in words.
    """
    gb = f"Z ({z_bytes / 1e9:.3g} GB)"
    if not memory_limits or not all(memory_limits):
        return Residence("resident", f"{gb}: a worker without a memory limit")
    held = z_bytes * OwnerLayout(len(memory_limits)).block_share
    budget = RESIDENT_SHARE * min(memory_limits)
    what = f"{gb}: the blocks a worker holds ({held / 1e9:.3g} GB)"
    share = f"{RESIDENT_SHARE:.0%} of its memory ({budget / 1e9:.3g} GB)"
    if held <= budget:
        return Residence("resident", f"{what} fit in {share}")
    return Residence("streamed", f"{what} exceed {share}; each tile reads its blocks")


#: Most work one worker may own against the mean, when units are shared out (at most
#: one unit more than another worker).
OWNER_IMBALANCE = 1.15


@dataclass(frozen=True)
class OwnerLayout:
    """Which worker owns each tile: a 2D cyclic layout over groups of blocks.

    Blocks fall into ``s`` groups cyclically (block ``b`` in group ``b % s``, ``s`` even).
    A *unit* is either a pair of groups ``a < b`` (all tiles between them) or two diagonal
    groups ``2m, 2m + 1`` (the tiles within each): ``s^2 / 2`` units of equal work, each
    needing the blocks of two groups, ``2 N / s`` cells. The units go to the ``P`` workers
    in turn; ``s`` is the least even number from ``2 round(sqrt(P / 2))`` up whose units
    share out within :data:`OWNER_IMBALANCE` (at 50 workers ``s = 10``: one unit each, a
    worker needs ``N / 5 = 2 N / sqrt(2 P)`` cells of Z rather than every block, and all of
    Z moves about ``s - 1`` times in all).
    """

    n_workers: int

    @property
    def groups(self) -> int:
        """``s``: the even number of block groups, ``s^2 / 2`` near the number of workers."""
        s = max(2, 2 * round(math.sqrt(self.n_workers / 2)))
        while True:
            units = s * s // 2
            if math.ceil(units / self.n_workers) * self.n_workers / units <= OWNER_IMBALANCE:
                return s
            s += 2

    def unit(self, i: int, j: int) -> int:
        """The unit of tile ``(i, j)``: off-diagonal group pairs first, then diagonal pairs."""
        s = self.groups
        a, b = sorted((i % s, j % s))
        if a == b:
            return s * (s - 1) // 2 + a // 2
        return a * s - a * (a + 1) // 2 + (b - a - 1)

    @property
    def block_share(self) -> float:
        """Share of all blocks the busiest worker needs: its units' two groups each."""
        s = self.groups
        return min(1.0, math.ceil(s * s / 2 / self.n_workers) * 2 / s)

    def owner(self, i: int, j: int) -> int:
        """Index of the worker (in a fixed order of the workers) that owns tile ``(i, j)``."""
        return self.unit(i, j) % self.n_workers
