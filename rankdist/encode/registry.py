"""The registry of encodings: one function per encoding, expression block in, z out.

Every encoding maps a ``(cells, genes)`` float64 block (plus per-cell library sizes)
to standardised float32 rows, so that for any two cells ``z_a @ z_b`` is the
correlation that encoding defines. Adding an encoding is one decorated function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rankdist.encode import kernels

EncodeFn = Callable[..., tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Encoding:
    """One registered encoding.

    Attributes
    ----------
    name
        Registry key, e.g. ``'spearman'``.
    fn
        ``fn(block_f64, totals_f64, **params) -> (z_f32, valid_bool)``.
    defaults
        Default parameters; the cache key covers the resolved parameters.
    version
        Bumped when ``fn``'s output changes, so stale caches are recomputed.
    summary
        One line for ``--help`` and the docs.
    """

    name: str
    fn: EncodeFn
    defaults: dict = field(default_factory=dict)
    version: int = 1
    summary: str = ""

    def resolve(self, params: dict | None) -> dict:
        """Defaults updated by ``params``; unknown parameter names are an error."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            msg = (
                f"encoding {self.name!r} has no parameter(s) {unknown}; "
                f"its parameters are {sorted(self.defaults) or 'none'}"
            )
            raise ValueError(msg)
        return {**self.defaults, **params}


ENCODINGS: dict[str, Encoding] = {}


def register(name: str, *, defaults: dict | None = None, version: int = 1, summary: str = ""):
    """Decorator adding an encoding function to :data:`ENCODINGS`."""

    def add(fn: EncodeFn) -> EncodeFn:
        ENCODINGS[name] = Encoding(name, fn, dict(defaults or {}), version, summary)
        return fn

    return add


def get_encoding(name: str) -> Encoding:
    """The registered encoding called ``name``; an error lists the available ones."""
    try:
        return ENCODINGS[name]
    except KeyError:
        msg = f"unknown encoding {name!r}; available: {sorted(ENCODINGS)}"
        raise ValueError(msg) from None


@register("spearman", summary="average-tie ranks of the selected genes (Spearman's rho)")
def spearman(block: np.ndarray, totals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return kernels.standardised_ranks(np.ascontiguousarray(block, dtype=np.float64))


@register(
    "pearson",
    defaults={"target_sum": 1e4},
    summary="log1p of counts per 10k (Pearson): the raw-expression baseline",
)
def pearson(
    block: np.ndarray, totals: np.ndarray, target_sum: float
) -> tuple[np.ndarray, np.ndarray]:
    return kernels.standardised_log_cp(
        np.ascontiguousarray(block, dtype=np.float64),
        np.ascontiguousarray(totals, dtype=np.float64),
        float(target_sum),
    )
