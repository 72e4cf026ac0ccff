"""The parameters of the synthetic atlas, derived from one master seed.

An :class:`AtlasSpec` (cells, donors, genes, seed: four integers) is all a chunk task
receives; every worker rebuilds the same :class:`AtlasModel` from it (cached per process,
a few hundred milliseconds at 33,538 genes). Each random quantity has its own stream,
``numpy.random.default_rng([seed, stream, index])``, so a donor's effect or a block of
cells is the same whichever process draws it and in whatever order.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

from rankdist.datasets.atlas.taxonomy import (
    CLASSES,
    N_DONORS,
    SUBTYPE_CLASS,
    SUBTYPES,
    subtype_shares,
)

#: Bumped whenever a change makes the same spec generate different data.
GENERATOR_VERSION = 1
#: Genes of the 10x Genomics GRCh38 reference (Cell Ranger 3.0) that cortex atlases use.
DEFAULT_GENES = 33_538
#: How many genes ``var['informative']`` marks: the usual size of a highly-variable set.
N_INFORMATIVE = 2000

# Random streams: default_rng([seed, stream, index]).
STREAM_GENES, STREAM_DONORS, STREAM_DONOR_GENES, STREAM_LABELS, STREAM_COUNTS = range(5)

#: Median library size (UMIs) of a cell of library factor 1; neurons have more, glia fewer.
MEDIAN_LIBRARY = 2500.0
#: Spread (sd of log) of library sizes within a subtype and donor; of donor shifts.
LIBRARY_SD, DONOR_LIBRARY_SD = 0.45, 0.25
#: sd of the per-donor, per-gene log effect (lognormal, mean 1).
DONOR_GENE_SD = 0.2
#: Baseline log expression: normal with this sd, plus a few very high genes (heavy tail).
BASE_SD, N_TOP_GENES = 1.5, 30
#: Dense log-scale perturbations of every gene: per class, per subtype (within the class).
CLASS_SD, SUBTYPE_SD = 0.35, 0.12
#: Marker log fold changes: mean and sd, for class markers and for subtype markers.
CLASS_MARKER_FOLD, SUBTYPE_MARKER_FOLD = (2.2, 0.5), (1.4, 0.35)
#: Negative-binomial shape (inverse dispersion) per gene: lognormal median and sd of log.
NB_SHAPE_MEDIAN, NB_SHAPE_SD = 2.0, 0.5
#: Concentration of the donors' cell-type compositions around the atlas shares.
COMPOSITION_CONCENTRATION = 400.0


@dataclass(frozen=True)
class AtlasSpec:
    """Everything that determines the atlas: the same spec gives the same data, bit for bit.

    Parameters
    ----------
    n_cells
        Cells to generate.
    n_donors
        Donors (the batches); cells are grouped by donor, as in an atlas concatenated
        from per-donor samples.
    n_genes
        Genes in the simulated transcriptome (before any gene selection).
    seed
        Master seed (a non-negative integer).
    """

    n_cells: int
    n_donors: int = N_DONORS
    n_genes: int = DEFAULT_GENES
    seed: int = 0

    def __post_init__(self):
        for name in ("n_cells", "n_donors", "n_genes", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool):
                msg = f"{name} must be an integer, got {value!r}"
                raise TypeError(msg)
        if self.n_cells < 2:
            msg = f"n_cells={self.n_cells}: the atlas needs at least 2 cells"
            raise ValueError(msg)
        if self.n_donors < 1:
            msg = f"n_donors={self.n_donors}: there must be at least 1 donor"
            raise ValueError(msg)
        if self.n_genes < 100:
            msg = f"n_genes={self.n_genes}: simulate at least 100 genes (the atlas has 33,538)"
            raise ValueError(msg)
        if self.seed < 0:
            msg = f"seed={self.seed}: the seed must be a non-negative integer"
            raise ValueError(msg)

    def as_dict(self) -> dict:
        return {k: int(v) for k, v in asdict(self).items()}


@dataclass(frozen=True, eq=False)
class AtlasModel:
    """The atlas's parameters (see docs/synth.md); shared by all callers, so do not modify.

    Attributes
    ----------
    profiles
        ``(n_subtypes, n_genes)`` float64: each subtype's expected share of a cell's
        UMIs per gene (rows sum to 1).
    nb_shape
        ``(n_genes,)`` float64: negative-binomial shape (inverse dispersion) per gene.
    subtype_log_library
        ``(n_subtypes,)``: log median library size of each subtype.
    donor_start
        ``(n_donors + 1,)`` int64: donor d holds cells ``donor_start[d]:donor_start[d+1]``.
    donor_composition
        ``(n_donors, n_subtypes)`` float64: cumulative subtype probabilities per donor.
    donor_log_library
        ``(n_donors,)``: each donor's library-size shift (log scale).
    informative
        ``(n_genes,)`` int64: genes from most to least informative (variance over the
        subtypes of the log expected count at the subtype's median library).
    marker_of
        ``(n_genes,)`` str: the class or subtype a gene marks, ``''`` for none.
    """

    spec: AtlasSpec
    profiles: np.ndarray
    nb_shape: np.ndarray
    subtype_log_library: np.ndarray
    donor_start: np.ndarray
    donor_composition: np.ndarray
    donor_log_library: np.ndarray
    informative: np.ndarray
    marker_of: np.ndarray

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in CLASSES)

    @property
    def subtype_names(self) -> tuple[str, ...]:
        return SUBTYPES

    @property
    def subtype_class(self) -> np.ndarray:
        return np.asarray(SUBTYPE_CLASS, dtype=np.int32)

    @property
    def donor_names(self) -> list[str]:
        width = max(3, len(str(self.spec.n_donors)))
        return [f"D{d + 1:0{width}d}" for d in range(self.spec.n_donors)]

    @property
    def gene_names(self) -> list[str]:
        width = max(5, len(str(self.spec.n_genes)))
        return [f"SG{g + 1:0{width}d}" for g in range(self.spec.n_genes)]

    def donor_of(self, cells: np.ndarray) -> np.ndarray:
        """Donor index of each cell index."""
        return np.searchsorted(self.donor_start, cells, side="right") - 1

    def donor_effect(self, donor: int) -> np.ndarray:
        """``(n_genes,)`` float32 multiplicative effect of one donor on every gene (mean 1)."""
        rng = np.random.default_rng([self.spec.seed, STREAM_DONOR_GENES, int(donor)])
        z = rng.standard_normal(self.spec.n_genes)
        return np.exp(DONOR_GENE_SD * z - DONOR_GENE_SD**2 / 2).astype(np.float32)

    def kept_genes(self, n_keep: int | None) -> np.ndarray:
        """Sorted indices of the ``n_keep`` most informative genes (all genes for None)."""
        if n_keep is None or n_keep == self.spec.n_genes:
            return np.arange(self.spec.n_genes, dtype=np.int64)
        if not 1 <= n_keep <= self.spec.n_genes:
            msg = f"genes={n_keep}: keep between 1 and {self.spec.n_genes} genes (or all)"
            raise ValueError(msg)
        return np.sort(self.informative[:n_keep])


@functools.lru_cache(maxsize=4)
def atlas_model(spec: AtlasSpec) -> AtlasModel:
    """Build (once per process and spec) the atlas's parameters from its master seed."""
    n_genes, n_sub = spec.n_genes, len(SUBTYPES)
    rng = np.random.default_rng([spec.seed, STREAM_GENES, 0])
    base = rng.normal(0.0, BASE_SD, n_genes)
    top = rng.choice(n_genes, min(N_TOP_GENES, n_genes // 100), replace=False)
    base[top] += rng.uniform(3.0, 6.0, len(top))  # MALAT1-like genes: the heavy tail
    sub_class = np.asarray(SUBTYPE_CLASS)
    log_expr = (
        base
        + rng.normal(0.0, CLASS_SD, (len(CLASSES), n_genes))[sub_class]
        + rng.normal(0.0, SUBTYPE_SD, (n_sub, n_genes))
    )
    # Markers are drawn among the genes expressed well enough to be seen (top 40 %).
    candidates = rng.permutation(np.argsort(-base, kind="stable")[: int(0.4 * n_genes)])
    per_class, per_subtype = max(4, n_genes // 400), max(2, n_genes // 1600)
    marker_of = np.full(n_genes, "", dtype=object)
    used = 0
    for c, cell_class in enumerate(CLASSES):
        genes = candidates[used : used + per_class]
        used += per_class
        fold = rng.normal(*CLASS_MARKER_FOLD, len(genes))
        log_expr[np.ix_(sub_class == c, genes)] += fold
        marker_of[genes] = cell_class.name
    for t, name in enumerate(SUBTYPES):
        genes = candidates[used : used + per_subtype]
        used += per_subtype
        log_expr[t, genes] += rng.normal(*SUBTYPE_MARKER_FOLD, len(genes))
        marker_of[genes] = name
    profiles = np.exp(log_expr - log_expr.max(axis=1, keepdims=True))
    profiles /= profiles.sum(axis=1, keepdims=True)
    nb_shape = np.exp(rng.normal(np.log(NB_SHAPE_MEDIAN), NB_SHAPE_SD, n_genes))
    factors = np.asarray([CLASSES[c].library_factor for c in sub_class])
    sub_log_lib = np.log(MEDIAN_LIBRARY * factors)
    expected = np.log1p(profiles * np.exp(sub_log_lib)[:, None])
    informative = np.argsort(-expected.var(axis=0), kind="stable").astype(np.int64)
    donor_start, composition, donor_log_lib = _donors(spec)
    model = AtlasModel(
        spec=spec,
        profiles=profiles,
        nb_shape=nb_shape,
        subtype_log_library=sub_log_lib,
        donor_start=donor_start,
        donor_composition=composition,
        donor_log_library=donor_log_lib,
        informative=informative,
        marker_of=marker_of,
    )
    return model


def _donors(spec: AtlasSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Donor sizes (every donor gets a cell while there are enough), compositions, shifts."""
    rng = np.random.default_rng([spec.seed, STREAM_DONORS, 0])
    n, d = spec.n_cells, spec.n_donors
    weights = rng.lognormal(0.0, 0.5, d)
    shares = np.asarray(subtype_shares())
    composition = rng.dirichlet(COMPOSITION_CONCENTRATION * shares, size=d)
    log_lib = rng.normal(0.0, DONOR_LIBRARY_SD, d)
    floor = 1 if n >= d else 0
    quota = (n - floor * d) * weights / weights.sum()
    sizes = floor + np.floor(quota).astype(np.int64)
    # largest remainders, ties by donor index: the sizes sum to n exactly
    order = np.lexsort((np.arange(d), -(quota - np.floor(quota))))
    sizes[order[: n - int(sizes.sum())]] += 1
    start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return start, np.cumsum(composition, axis=1), log_lib
