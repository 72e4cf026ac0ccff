"""rankdist: exact all-pairs rank (Spearman) correlation of single cells, on Dask.

Other encodings (Pearson on log counts, Geneformer's, top-n genes) are in
:data:`ENCODINGS`. docs/architecture.md lists every module of the package by layer.

The public names are imported on first use (PEP 562), so that a Dask worker, which
imports only the modules its tasks run (encode, tiles, reduce, the store), starts
without loading the analysis stack (scipy.stats, xarray): about 2.5 s less per worker
process.
"""

from importlib.metadata import version as _version

from rankdist._lazy import lazy_exports

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
    "verify": "rankdist.reduce.verify",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, submodules=("analysis", "pp", "tl"))
