"""A synthetic aged human prefrontal-cortex atlas, generated in parallel at full size.

``synth_atlas(out, n_cells, ...)`` writes a rankdist store or an .h5ad; see docs/synth.md.

The names below are imported on first use (PEP 562), so that the taxonomy's constants
(:mod:`rankdist.datasets.atlas.taxonomy`: ``N_DONORS``, ``ATLAS_LABEL_SIZES``), which the
command line and the planner read, import without the generator (numba, pandas, h5py).
"""

from rankdist._lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
