"""A synthetic aged human prefrontal-cortex atlas, generated in parallel at full size.

``synth_atlas(out, n_cells, ...)`` writes a rankdist store or an .h5ad; see docs/synth.md.

The names below are imported on first use (PEP 562), so that the taxonomy's constants
(:mod:`rankdist.datasets.atlas.taxonomy`: ``N_DONORS``, ``ATLAS_LABEL_SIZES``), which the
command line and the planner read, import without the generator (numba, pandas, h5py).
"""

from importlib import import_module

#: Public name -> module that defines it.
_EXPORTS = {
    "CLASSES": "rankdist.datasets.atlas.taxonomy",
    "SUBTYPES": "rankdist.datasets.atlas.taxonomy",
    "AtlasModel": "rankdist.datasets.atlas.model",
    "AtlasSpec": "rankdist.datasets.atlas.model",
    "atlas_model": "rankdist.datasets.atlas.model",
    "synth_atlas": "rankdist.datasets.atlas.generate",
}

__all__ = ["CLASSES", "SUBTYPES", "AtlasModel", "AtlasSpec", "atlas_model", "synth_atlas"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        msg = f"module 'rankdist.datasets.atlas' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
