"""The cell-type hierarchy of the synthetic prefrontal-cortex atlas: 8 classes, 54 subtypes.

Class shares follow single-nucleus atlases of the aged human dorsolateral prefrontal
cortex (Mathys et al., Cell 2023, 2.3 M nuclei from 427 donors): excitatory neurons and
oligodendrocytes are the most common; vascular and immune cells are rare. Subtype names
are those atlases' style (layer, then marker genes); within a class, the relative weights
make a few subtypes common and the rest rare. Library sizes are larger in neurons than in
glia, as in single-nucleus data.
"""

from __future__ import annotations

from dataclasses import dataclass

from rankdist.datasets.labels import ROLES


@dataclass(frozen=True)
class CellClass:
    """A major class: its name, share of all cells and library-size factor."""

    name: str
    share: float
    library_factor: float
    subtypes: tuple[tuple[str, float], ...]  # (subtype name, relative weight in the class)


CLASSES: tuple[CellClass, ...] = (
    CellClass("Exc", 0.36, 1.8, (
        ("Exc L2-3 CBLN2 LINC02306", 9.0), ("Exc L3-4 RORB CUX2", 7.0),
        ("Exc L3-5 RORB PLCH1", 6.0), ("Exc L4-5 RORB GABRG1", 5.0),
        ("Exc L4-5 RORB IL1RAPL2", 4.0), ("Exc L5-6 RORB LINC02196", 3.5),
        ("Exc L6 THEMIS NFIA", 3.0), ("Exc L5-6 IT Car3", 2.5), ("Exc L6 CT", 2.5),
        ("Exc L5-6 NP", 1.5), ("Exc L6b", 1.2), ("Exc L5 ET", 0.6), ("Exc L3-5 FEZF2", 1.0),
        ("Exc L2-3 CUX2 RASGRF2", 2.0), ("Exc NRGN", 0.8), ("Exc RELN CHD7", 0.5),
    )),
    CellClass("Inh", 0.12, 1.5, (
        ("Inh PVALB CA8", 5.0), ("Inh PVALB HTR4", 3.0), ("Inh PVALB SULF1", 2.0),
        ("Inh L3-5 SST MAFB", 3.0), ("Inh L6 SST NPY", 1.0), ("Inh L5-6 SST TH", 0.8),
        ("Inh SST HGF", 0.8), ("Inh VIP ABI3BP", 2.5), ("Inh VIP CLSTN2", 2.5),
        ("Inh VIP THSD7B", 1.5), ("Inh VIP TSHZ2", 1.5), ("Inh LAMP5 NRG1", 2.0),
        ("Inh LAMP5 RELN", 1.5), ("Inh L1-6 LAMP5 CA13", 1.0), ("Inh PAX6 RELN", 0.8),
        ("Inh CUX2 MSR1", 0.7), ("Inh ALCAM TRPM3", 0.7), ("Inh ENOX2 SPHKAP", 0.6),
        ("Inh GPC5 RIT2", 0.6), ("Inh SORCS1 TTN", 0.4),
    )),
    CellClass("Ast", 0.10, 0.7, (
        ("Ast GRM3", 5.0), ("Ast DPP10", 3.0), ("Ast CHI3L1", 1.0), ("Ast DCLK1", 1.0),
    )),
    CellClass("Oli", 0.30, 0.6, (
        ("Oli OPALIN", 5.0), ("Oli RBFOX1", 3.0), ("Oli PLP1 S100B", 1.0),
    )),
    CellClass("OPC", 0.05, 0.9, (("OPC PDGFRA", 6.0), ("OPC DOCK5", 1.0))),
    CellClass("Mic", 0.05, 0.5, (("Mic P2RY12", 6.0), ("Mic TPT1", 2.0), ("Mic MKI67", 0.3))),
    CellClass("Immune", 0.006, 0.45, (("CAMs MRC1", 3.0), ("T cells CD247", 1.0))),
    CellClass("Vasc", 0.014, 0.5, (
        ("End CLDN5", 4.0), ("Per PDGFRB", 3.0), ("Fib FLRT2", 2.0), ("SMC MYH11", 1.0),
    )),
)  # fmt: skip

#: Subtype names, class by class, in the order of :data:`CLASSES`.
SUBTYPES: tuple[str, ...] = tuple(name for c in CLASSES for name, _ in c.subtypes)
#: Index into :data:`CLASSES` of each subtype.
SUBTYPE_CLASS: tuple[int, ...] = tuple(i for i, c in enumerate(CLASSES) for _ in c.subtypes)
#: Donors of the aged prefrontal-cortex atlas (Mathys et al. 2023): its batches.
N_DONORS = 427
#: The atlas's label roles and their category counts (54 subtypes, 8 classes, 427 donors):
#: the sizes the planner and the scale simulation assume unless told otherwise.
ATLAS_ROLES: tuple[str, ...] = ROLES
ATLAS_LABEL_SIZES: tuple[int, ...] = (len(SUBTYPES), len(CLASSES), N_DONORS)


def subtype_shares() -> tuple[float, ...]:
    """Share of all cells of each subtype (class share times the weight within the class)."""
    out = []
    for c in CLASSES:
        total = sum(w for _, w in c.subtypes)
        out.extend(c.share * w / total for _, w in c.subtypes)
    return tuple(out)
