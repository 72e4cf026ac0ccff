"""rankdist: exact all-pairs rank (Spearman) correlation of single cells, on Dask."""

from importlib.metadata import version as _version

from rankdist import analysis  # noqa: F401  (rankdist.analysis.* is public)
from rankdist.analysis.purity import purity_table
from rankdist.encode.registry import ENCODINGS
from rankdist.io.ingest import ingest
from rankdist.io.store import Store
from rankdist.pipeline import ExcludedCellsWarning, neighbors
from rankdist.reduce.result import NeighborResult, list_runs, load

__version__ = _version("rankdist")

__all__ = [
    "ENCODINGS",
    "ExcludedCellsWarning",
    "NeighborResult",
    "Store",
    "ingest",
    "list_runs",
    "load",
    "neighbors",
    "purity_table",
]
