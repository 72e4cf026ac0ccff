"""A synthetic aged human prefrontal-cortex atlas, generated in parallel at full size.

``synth_atlas(out, n_cells, ...)`` writes a rankdist store or an .h5ad; see docs/synth.md.
"""

from rankdist.datasets.atlas.generate import synth_atlas
from rankdist.datasets.atlas.model import AtlasModel, AtlasSpec, atlas_model
from rankdist.datasets.atlas.taxonomy import CLASSES, SUBTYPES

__all__ = ["CLASSES", "SUBTYPES", "AtlasModel", "AtlasSpec", "atlas_model", "synth_atlas"]
