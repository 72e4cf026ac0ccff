"""The toy data of the tests and the demo, and the label helpers it shares with the atlas."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankdist.datasets.atlas.taxonomy import ATLAS_ROLES
from rankdist.datasets.counts import gamma_poisson
from rankdist.datasets.labels import ROLES, letters, nested_labels, obs_frame
from rankdist.datasets.toy import synthetic_counts


def test_letters_name_classes_like_spreadsheet_columns():
    assert [letters(i) for i in (0, 1, 25, 26, 27, 51, 52, 701, 702)] == [
        "A",
        "B",
        "Z",
        "AA",
        "AB",
        "AZ",
        "BA",
        "ZZ",
        "AAA",
    ]
    names = [letters(i) for i in range(1000)]
    assert len(set(names)) == 1000


def test_nested_labels_read_the_class_from_the_type():
    cell_type = np.array([0, 3, 2, 1, 3])
    batch = np.array([1, 0, 0, 1, 1])
    labels = nested_labels(
        cell_type,
        ["A1", "A2", "B1", "B2"],
        np.array([0, 0, 1, 1]),
        ["A", "B"],
        batch,
        ["batch0", "batch1"],
    )
    assert list(labels) == list(ROLES) == list(ATLAS_ROLES)
    assert labels["coarse_type"][0].tolist() == [0, 1, 1, 0, 1]
    assert labels["cell_type"] == (cell_type, ["A1", "A2", "B1", "B2"])
    assert labels["batch"][1] == ["batch0", "batch1"]
    obs = obs_frame(labels, index=[f"c{i}" for i in range(5)])
    assert list(obs.columns) == list(ROLES)
    assert obs["coarse_type"].tolist() == ["A", "B", "B", "A", "B"]
    # every category is kept, even one no cell has
    assert list(obs["cell_type"].cat.categories) == ["A1", "A2", "B1", "B2"]
    unused = obs_frame(nested_labels(np.array([0]), ["A1", "A2"], [0, 0], ["A"], [0], ["b"]), ["c"])
    assert list(unused["cell_type"].cat.categories) == ["A1", "A2"]


def test_toy_types_nest_in_classes_and_are_seeded():
    adata = synthetic_counts(400, 120, n_coarse=28, types_per_coarse=2, n_batches=3, seed=5)
    obs = adata.obs
    assert list(obs.columns) == list(ROLES)
    assert all(isinstance(obs[role].dtype, pd.CategoricalDtype) for role in ROLES)
    assert list(obs["coarse_type"].cat.categories[-3:]) == ["Z", "AA", "AB"]
    assert list(obs["cell_type"].cat.categories[:3]) == ["A1", "A2", "B1"]
    assert len(obs["cell_type"].cat.categories) == 56
    # a type's name starts with its class's name: the class is read from the type
    for fine, coarse in zip(obs["cell_type"], obs["coarse_type"], strict=True):
        assert fine[:-1] == coarse
    assert list(obs["batch"].cat.categories) == ["batch0", "batch1", "batch2"]
    x = adata.X
    assert x.dtype == np.float32 and np.array_equal(x, np.round(x)) and (x >= 0).all()
    again = synthetic_counts(400, 120, n_coarse=28, types_per_coarse=2, n_batches=3, seed=5)
    assert np.array_equal(again.X, x) and again.obs.equals(obs)
    other = synthetic_counts(400, 120, n_coarse=28, types_per_coarse=2, n_batches=3, seed=6)
    assert not np.array_equal(other.X, x)


def test_toy_draws_stay_the_same_for_a_seed():
    """The demo's printed tables and many tests' expected values come from these draws.

    A change to the toy data (or to the helpers it shares with the atlas) that moves them
    changes all of those: keep the draws, or update every number that depends on them.
    """
    adata = synthetic_counts(200, 60, seed=0)
    x = adata.X
    assert (int(x.sum()), int((x > 0).sum())) == (532_513, 11_516)
    assert x[0, :8].tolist() == [9, 2, 104, 19, 49, 1, 20, 58]
    assert np.bincount(adata.obs["cell_type"].cat.codes).tolist() == [31, 34, 32, 32, 39, 32]
    assert np.bincount(adata.obs["batch"].cat.codes).tolist() == [95, 105]


def test_gamma_poisson_is_the_negative_binomial():
    mean = np.array([0.05, 0.5, 3.0, 40.0])
    shape = 2.0
    n = 40_000
    counts = gamma_poisson(np.random.default_rng(0), np.tile(mean, (n, 1)), shape)
    assert counts.shape == (n, 4) and counts.dtype.kind == "i"
    x = counts.astype(np.float64)
    var = mean + mean**2 / shape
    assert np.all(np.abs(x.mean(axis=0) - mean) < 5 * np.sqrt(var / n))
    p0 = (1 + mean / shape) ** -shape
    assert np.all(np.abs((x == 0).mean(axis=0) - p0) < 5 * np.sqrt(p0 * (1 - p0) / n))
    assert np.all(np.abs(x.var(axis=0) / var - 1) < 0.1)
    # the documented order: every gamma variate first, then every Poisson one
    rng = np.random.default_rng(1)
    want = rng.poisson(rng.gamma(shape, mean / shape))
    assert np.array_equal(gamma_poisson(np.random.default_rng(1), mean, shape), want)
