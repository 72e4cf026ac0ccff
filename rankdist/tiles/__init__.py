"""Tiles: the block plan, the GEMM + fused-pass kernel and the Dask scheduler that drives it."""
