"""Synthetic data: ``toy`` (the demo's small labelled counts) and ``atlas`` (the
prefrontal-cortex-shaped atlas generated on Dask)."""
