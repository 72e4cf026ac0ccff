"""Which of a store's runs a report covers, and which of them is the baseline of the others."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rankdist.io.store import Labels, Store
from rankdist.io.verified import open_group
from rankdist.reduce.runstore import list_runs, run_path, run_version


@dataclass(frozen=True)
class RunInfo:
    """What the report says about a run without reading its arrays: its metadata.

    Attributes
    ----------
    name
        The run's name.
    metadata
        The run's stored metadata (``attrs["run"]``).
    labels
        The store's label columns by role (what :func:`rankdist.analysis.load_hierarchy`
        reads).
    n_excluded
        Cells the run excluded (constant).
    """

    name: str
    metadata: dict
    labels: dict[str, Labels]
    n_excluded: int

    @property
    def k(self) -> int:
        return int(self.metadata["k"])

    @property
    def cutoffs(self) -> tuple[float, ...]:
        return tuple(float(c) for c in self.metadata["cutoffs"])


def run_info(store: Store, name: str) -> RunInfo:
    """The metadata of the finished run ``name`` and its excluded cells, no other array."""
    group = open_group(run_path(store.path, name), mode="r")
    run_version(group.attrs, store.path, name)
    return RunInfo(
        name=name,
        metadata=dict(group.attrs["run"]),
        labels=store.labels,
        n_excluded=int(np.count_nonzero(group["excluded"][:])),
    )


def select_runs(store: Store, runs: str | Sequence[str] | None) -> list[str]:
    """The runs to report, in the order given (default: all, sorted); errors list the runs."""
    available = list_runs(store)
    if not available:
        msg = (
            f"{store.path} holds no finished runs; compute one first, e.g. "
            f"`rankdist neighbors {store.path} --encoding spearman` (Python: "
            "rankdist.neighbors(store, 'spearman', type_hist=True))"
        )
        raise ValueError(msg)
    if runs is None:
        return available
    if isinstance(runs, str):
        runs = [r.strip() for r in runs.split(",") if r.strip()]
    runs = list(dict.fromkeys(runs))
    if not runs:
        msg = f"no run names given; runs in {store.path}: {available}"
        raise ValueError(msg)
    unknown = [r for r in runs if r not in available]
    if unknown:
        msg = (
            f"no run(s) {unknown} in {store.path}; available runs: {available} "
            f"(e.g. --runs {','.join(available)})"
        )
        raise ValueError(msg)
    return runs


def baseline_run(runs: dict[str, RunInfo], baseline: str | None) -> str | None:
    """The run the others are compared with: ``baseline`` if given, else the first pearson run.

    Raises
    ------
    ValueError
        ``baseline`` is not one of the runs reported (the message lists them).
    """
    if baseline is not None:
        if baseline not in runs:
            msg = (
                f"--baseline {baseline!r} is not among the runs reported {list(runs)}; "
                f"name one of them (or add it to --runs)"
            )
            raise ValueError(msg)
        return baseline
    return next((n for n, r in runs.items() if r.metadata.get("encoding") == "pearson"), None)


def rank_encoding_first(results: dict[str, RunInfo]) -> dict[str, RunInfo]:
    """The runs reordered: spearman, then pearson (its raw-expression baseline), then the rest.

    The order among runs of one encoding is kept.
    """
    order = {"spearman": 0, "pearson": 1}
    names = sorted(results, key=lambda n: order.get(results[n].metadata.get("encoding"), 2))
    return {name: results[name] for name in names}
