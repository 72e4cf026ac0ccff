"""rankdist: exact all-pairs rank (Spearman) correlation of single cells, on Dask.

The public names are imported on first use (PEP 562), so that a Dask worker, which
imports only the tile and encode modules it runs, starts without loading the analysis
stack (scipy.stats, xarray): about 2.5 s less per worker process.
"""

from importlib import import_module
from importlib.metadata import version as _version

__version__ = _version("rankdist")

#: Public name -> module that defines it.
_EXPORTS = {
    "ENCODINGS": "rankdist.encode.registry",
    "ExcludedCellsWarning": "rankdist.api",
    "NeighborResult": "rankdist.reduce.result",
    "Store": "rankdist.io.store",
    "ingest": "rankdist.io.ingest",
    "list_runs": "rankdist.reduce.runstore",
    "load": "rankdist.reduce.result",
    "neighbors": "rankdist.api",
    "purity_table": "rankdist.analysis.purity",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
    elif name == "analysis":  # rankdist.analysis.* is public
        value = import_module("rankdist.analysis")
    else:
        msg = f"module 'rankdist' has no attribute {name!r}"
        raise AttributeError(msg)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, "analysis"])
