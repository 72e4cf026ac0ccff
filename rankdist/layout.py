"""The cell-axis grid that io, encode and tiles share.

Every similarity is computed in a ``SUBTILE x SUBTILE`` GEMM call on a grid aligned to
global cell indices (see tiles/grid.py for why that makes results bit-identical), so the
stored chunks of X, the chunks of each encoding's Z and the tiles' row blocks are all
multiples of ``SUBTILE`` cells.
"""

from __future__ import annotations

#: Rows and columns of one GEMM call. 512 x 512 float32 = 1 MiB: S stays in L2.
SUBTILE = 512

#: Target number of values in one stored chunk of X (16 MiB at float32).
CHUNK_VALUES = 1 << 22


def chunk_rows(n_genes: int, n_cells: int) -> int:
    """Cells per stored chunk of X: a multiple of ``SUBTILE``, about ``CHUNK_VALUES`` values."""
    rows = max(SUBTILE, (CHUNK_VALUES // max(n_genes, 1)) // SUBTILE * SUBTILE)
    return min(rows, max(SUBTILE, -(-n_cells // SUBTILE) * SUBTILE))
