"""Negative-binomial counts, drawn as a gamma-Poisson mixture.

The toy data and the tests' count factories draw their counts with
:func:`gamma_poisson`. The atlas draws the same distribution (negative binomial of mean
mu and shape r) in its own numba kernel (:mod:`rankdist.datasets.atlas.cells`) and must
keep it: a vectorised draw takes every gamma variate first and then every Poisson one,
whereas the kernel takes a cell's values gene by gene, a gamma and a Poisson variate in
turn for genes of mean above 1 and the sparse compound-Poisson form for the rest (most
of them). From one seed the two orders give different counts, so sharing the draw would
change every value of one generator: the toy's (the demo's tables, the tests' data) or
the atlas's (its bit-identity for a given spec, at a dense draw's cost per value).
"""

from __future__ import annotations

import numpy as np


def gamma_poisson(rng: np.random.Generator, mean: np.ndarray, shape: float) -> np.ndarray:
    """Negative-binomial counts of the given means: ``Poisson(Gamma(shape, mean / shape))``.

    Parameters
    ----------
    rng
        The generator to draw from: one gamma variate per value (all of them first, in C
        order of ``mean``), then one Poisson variate per value.
    mean
        Expected count of each value (any shape).
    shape
        Inverse dispersion r: the variance is ``mean + mean**2 / shape``.

    Returns
    -------
    numpy.ndarray
        int64 counts, the shape of ``mean``.
    """
    return rng.poisson(rng.gamma(shape, mean / shape))
