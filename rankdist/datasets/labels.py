"""The labels of a nested design, as both synthetic generators write them.

Each cell has a fine type, the coarse class its type belongs to, and a batch. The toy
data (:mod:`rankdist.datasets.toy`) names classes by letters and types after their class
(``A1``, ``A2``, ``B1``, ...); the atlas (:mod:`rankdist.datasets.atlas`) takes its names
from its taxonomy. Both store the three labels under the roles ``rankdist.ingest`` reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

#: The label roles of a nested design: fine type, its coarse class, batch.
ROLES: tuple[str, ...] = ("cell_type", "coarse_type", "batch")


def letters(i: int) -> str:
    """0 -> 'A', 25 -> 'Z', 26 -> 'AA': short class names that fit in a table."""
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(65 + r) + out
    return out


def nested_labels(
    cell_type: np.ndarray,
    type_names: Sequence[str],
    type_class: np.ndarray,
    class_names: Sequence[str],
    batch: np.ndarray,
    batch_names: Sequence[str],
) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Codes and categories of each role, the class of a cell read from its type.

    Parameters
    ----------
    cell_type
        ``(n_cells,)`` integer codes into ``type_names``.
    type_names
        Name of each fine type.
    type_class
        ``(n_types,)`` integer: index into ``class_names`` of each type's class.
    class_names
        Name of each coarse class.
    batch
        ``(n_cells,)`` integer codes into ``batch_names``.
    batch_names
        Name of each batch.

    Returns
    -------
    dict
        ``{role: (codes, categories)}`` for the roles of :data:`ROLES`, in that order;
        every category is listed, whether or not a cell has it.
    """
    # numpy is imported here, not above: the taxonomy imports ROLES from this module and
    # the command line reads the taxonomy, without loading numpy
    import numpy as np

    coarse = np.asarray(type_class)[cell_type]
    codes = (cell_type, coarse, batch)
    names = (type_names, class_names, batch_names)
    return {role: (c, list(n)) for role, c, n in zip(ROLES, codes, names, strict=True)}


def obs_frame(labels: dict[str, tuple[np.ndarray, Sequence[str]]], index):
    """An AnnData ``obs`` table with one categorical column per role of ``labels``.

    Parameters
    ----------
    labels
        ``{role: (codes, categories)}``, as :func:`nested_labels` returns.
    index
        Cell names.

    Returns
    -------
    pandas.DataFrame
    """
    import pandas as pd

    columns = {
        role: pd.Categorical.from_codes(codes, cats) for role, (codes, cats) in labels.items()
    }
    return pd.DataFrame(columns, index=index)
