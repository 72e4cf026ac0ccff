"""One call of :func:`rankdist.neighbors`, checked before any cluster starts."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from rankdist.encode.cache import Encoded, PendingEncoding
from rankdist.encode.registry import get_encoding
from rankdist.io.store import Store
from rankdist.layout import SUBTILE
from rankdist.reduce import runstore
from rankdist.tiles.arguments import check_block_size, check_cutoffs, check_k
from rankdist.tiles.kernel_choice import check_kernel
from rankdist.tiles.sparse import FORMS, Form


@dataclass(frozen=True)
class NeighborsRequest:
    """One call of :func:`neighbors`, checked once: what to compute and how.

    The run's resume fingerprint (job.json) and its ``attrs["run"]`` are both derived
    from it (:meth:`run_spec`). The fields are those of :func:`neighbors`, normalised:
    ``store`` a :class:`Store`, ``cutoffs`` sorted and unique, ``name`` filled in.
    """

    store: Store
    encoding: str
    params: dict | None
    k: int
    cutoffs: tuple[float, ...]
    name: str
    block_size: int | None
    type_hist: bool
    form: Form
    progress: bool
    wait: bool = False
    kernel: str = "auto"

    @classmethod
    def checked(
        cls,
        store: str | os.PathLike | Store,
        encoding: str,
        k,
        cutoffs,
        *,
        params: dict | None,
        name: str | None,
        block_size,
        type_hist: bool,
        form: str,
        progress: bool,
        wait: bool = False,
        kernel: str = "auto",
    ) -> NeighborsRequest:
        """Validate the arguments of :func:`neighbors` (before any cluster starts)."""
        store = store if isinstance(store, Store) else Store(store)
        k = check_k(k)
        cutoffs = check_cutoffs(cutoffs)
        get_encoding(encoding).resolve(params)  # fail now, before any cluster starts
        name = runstore.check_run_name(name or encoding)
        block_size = check_block_size(block_size)
        if form not in FORMS:
            msg = f"form must be one of {', '.join(map(repr, FORMS))}, not {form!r}"
            raise ValueError(msg)
        check_kernel(kernel, type_hist=bool(type_hist), form=form)
        if type_hist and "cell_type" not in store.labels:
            msg = (
                f"type_hist needs cell-type labels, and {store.path} has none; "
                "re-ingest with --cell-type COLUMN"
            )
            raise ValueError(msg)
        return cls(
            store=store,
            encoding=encoding,
            params=params,
            k=k,
            cutoffs=cutoffs,
            name=name,
            block_size=block_size,
            type_hist=bool(type_hist),
            form="dense" if kernel == "screen" and form == "auto" else form,
            kernel=kernel,
            progress=bool(progress),
            wait=bool(wait),
        )

    @property
    def role_sizes(self) -> dict[str, int]:
        """Label role -> number of categories, in the order the counts are laid out."""
        return {role: len(lab.categories) for role, lab in self.store.labels.items()}

    def run_spec(self, enc: Encoded | PendingEncoding, sparse_cost: float) -> dict:
        """The ``attrs["run"]`` entries fixed before any tile runs (docs/results.md).

        Parameters
        ----------
        enc
            The encoding, computed or begun (its key, resolved parameters and form).
        sparse_cost
            Predicted sparse / dense cost of the tiles; NaN when not estimated.
        """
        store = self.store
        return {
            "name": self.name,
            "encoding": self.encoding,
            "encoding_params": enc.params,
            "encoding_key": enc.key,
            "content_id": store.content_id,
            "form": enc.form,
            "form_requested": self.form,
            "sparse_cost_estimate": None if np.isnan(sparse_cost) else round(sparse_cost, 4),
            "k": self.k,
            "cutoffs": list(self.cutoffs),
            "labels": {role: lab.column for role, lab in store.labels.items()},
            "subtile": SUBTILE,
            "type_hist": self.type_hist,
            "n_cells": store.n_cells,
            "n_genes": store.n_genes,
        }
