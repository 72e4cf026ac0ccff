"""The synthetic prefrontal-cortex atlas: its biology, determinism, outputs and failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import rankdist
from rankdist.datasets.atlas import AtlasSpec, atlas_model, synth_atlas
from rankdist.datasets.atlas.cells import _nb_counts, cell_labels, generate_cells

EXE = Path(sys.executable).with_name("rankdist")
#: A small transcriptome for the tests of the plumbing (the biology tests use 33,538 genes).
QUICK = dict(model_genes=3000, progress=False)


def test_hierarchy_has_8_classes_and_54_subtypes_each_in_one_class():
    model = atlas_model(AtlasSpec(n_cells=3000, n_genes=3000))
    assert len(model.class_names) == 8 and len(set(model.class_names)) == 8
    assert len(model.subtype_names) == 54 and len(set(model.subtype_names)) == 54
    cls = model.subtype_class
    assert cls.shape == (54,) and set(cls.tolist()) == set(range(8))
    for name, c in zip(model.subtype_names, cls, strict=True):  # names carry their class
        prefix = {"Immune": ("CAMs", "T cells"), "Vasc": ("End", "Per", "Fib", "SMC")}
        assert name.startswith(prefix.get(model.class_names[c], model.class_names[c]))
    subtype, donor = cell_labels(model, 0, 3000)
    share = np.bincount(cls[subtype], minlength=8) / 3000
    big = np.argsort(share)[::-1][:2]
    assert {model.class_names[i] for i in big} == {"Exc", "Oli"}
    rare = [model.class_names.index(c) for c in ("Immune", "Vasc")]
    assert share[rare].max() < 0.03
    # 427 donors, each a contiguous run of cells, as a per-donor concatenated atlas
    assert np.all(np.diff(donor) >= 0) and len(np.unique(donor)) == 427
    sizes = np.bincount(donor, minlength=427)
    assert np.array_equal(sizes, np.diff(model.donor_start))


def test_counts_are_sparse_snrnaseq_like_at_33k_genes():
    model = atlas_model(AtlasSpec(n_cells=1024, seed=5))
    assert model.spec.n_genes == 33_538
    counts, totals = generate_cells(model, 0, 1024)
    assert counts.shape == (1024, 33_538) and counts.has_sorted_indices
    zeros = 1 - counts.nnz / (1024 * 33_538)
    assert 0.90 <= zeros <= 0.95, zeros
    assert np.array_equal(np.asarray(counts.sum(axis=1)).ravel(), totals)
    assert np.all(counts.data >= 1) and np.array_equal(counts.data, np.round(counts.data))
    assert 1500 <= np.median(totals) <= 5000
    # heavy-tailed gene means: 1 % of the genes hold a large share of all UMIs
    gene_sum = np.sort(np.asarray(counts.sum(axis=0)).ravel())[::-1]
    assert gene_sum[: 33_538 // 100].sum() / gene_sum.sum() > 0.2


def test_types_are_recoverable_and_subtypes_nest_in_classes():
    model = atlas_model(AtlasSpec(n_cells=2048, seed=1))
    counts, totals = generate_cells(model, 0, 2048, model.kept_genes(2000))
    subtype, _ = cell_labels(model, 0, 2048)
    cls = model.subtype_class[subtype]
    y = np.log1p(counts.toarray() / totals[:, None] * 1e4)
    train = np.arange(2048) % 2 == 0
    centroids = np.stack([y[train & (cls == c)].mean(axis=0) for c in range(8)])
    test = y[~train]
    corr = np.corrcoef(test, centroids)[: len(test), len(test) :]
    accuracy = (corr.argmax(axis=1) == cls[~train]).mean()
    assert accuracy > 0.95, accuracy
    present = [t for t in range(54) if (subtype == t).sum() >= 5]
    means = np.corrcoef(np.stack([y[subtype == t].mean(axis=0) for t in present]))
    group = model.subtype_class[present]
    same = (group[:, None] == group[None, :]) & ~np.eye(len(present), dtype=bool)
    assert means[same].mean() > means[group[:, None] != group[None, :]].mean() + 0.1


def test_donor_effects_shift_genes_and_library_sizes():
    model = atlas_model(AtlasSpec(n_cells=6000, n_donors=30, n_genes=3000, seed=2))
    effect = np.stack([model.donor_effect(d) for d in range(30)])
    assert effect.shape == (30, 3000) and np.all(effect > 0)
    assert abs(np.log(effect).std() - 0.2) < 0.02 and abs(effect.mean() - 1) < 0.01
    assert np.array_equal(model.donor_effect(7), model.donor_effect(7))
    _, totals = generate_cells(model, 0, 6000)
    _, donor = cell_labels(model, 0, 6000)
    per_donor = np.array([np.log(totals[donor == d]).mean() for d in range(30)])
    assert np.corrcoef(per_donor, model.donor_log_library)[0, 1] > 0.6


def test_negative_binomial_sampler_matches_its_distribution():
    # one subtype, one donor, fixed library: every cell draws the same 6 NB genes, whose
    # means span both the compound-Poisson walk (mu <= 1) and the direct draw (mu > 1)
    mu = np.array([0.005, 0.05, 0.3, 0.9, 3.0, 20.0])
    shape = np.array([0.5, 2.0, 1.0, 4.0, 2.0, 0.8])
    n = 40_000
    library = np.full(n, mu.sum())
    zeros_i = np.zeros(n, np.int32)
    data, indices, indptr, totals = _nb_counts(
        np.random.default_rng(0),
        library,
        zeros_i,
        zeros_i,
        (mu / mu.sum())[None, :],
        np.ones((1, 6), np.float32),
        shape,
        np.arange(6, dtype=np.int32),
    )
    x = sp.csr_matrix((data, indices, indptr), shape=(n, 6)).toarray().astype(np.float64)
    var = mu + mu**2 / shape
    assert np.all(np.abs(x.mean(axis=0) - mu) < 5 * np.sqrt(var / n))
    p0 = (1 + mu / shape) ** -shape
    assert np.all(np.abs((x == 0).mean(axis=0) - p0) < 5 * np.sqrt(p0 * (1 - p0) / n))
    assert np.all(np.abs(x.var(axis=0) / var - 1) < 0.1)


def test_same_spec_same_cells():
    """The same spec gives the same data across versions: bump GENERATOR_VERSION if not."""
    model = atlas_model(AtlasSpec(n_cells=200, n_donors=5, n_genes=500, seed=3))
    assert model.donor_start.tolist() == [0, 42, 75, 92, 150, 200]
    subtype, _ = cell_labels(model, 0, 200)
    assert subtype[:10].tolist() == [1, 16, 52, 4, 42, 40, 37, 3, 3, 23]
    counts, totals = generate_cells(model, 0, 200)
    assert (int(counts.sum()), counts.nnz) == (633_628, 54_864)
    assert totals[:4].tolist() == [4318, 5813, 693, 7678]


def _same_files(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)


def test_identical_output_whatever_chunks_and_workers(tmp_path, client, client_one):
    kw = dict(genes=2000, seed=9, **QUICK)  # X chunks of 2048 cells: 3 of them
    one = synth_atlas(tmp_path / "one.zarr", 5000, chunk=2048, client=client_one, **kw)
    two = synth_atlas(tmp_path / "two.zarr", 5000, chunk=4096, client=client, **kw)
    assert _same_files(one.path, two.path)
    assert one.root["X"].chunks == (2048, 2000)
    h5 = synth_atlas(tmp_path / "a.h5ad", 5000, chunk=640, client=client, **kw)
    adata = ad.read_h5ad(h5)
    assert np.array_equal(adata.X.toarray(), one.read_x(0, 5000))
    assert np.array_equal(adata.obs_names, one.cell_names)
    other_seed = synth_atlas(tmp_path / "s.zarr", 5000, client=client, **{**kw, "seed": 10})
    assert not np.array_equal(other_seed.read_x(0, 2048), one.read_x(0, 2048))


def test_store_labels_and_provenance(tmp_path, client):
    store = synth_atlas(tmp_path / "atlas.zarr", 3000, genes=500, seed=4, client=client, **QUICK)
    assert (store.n_cells, store.n_genes) == (3000, 500)
    batch = store.labels["batch"]
    assert len(batch.categories) == 427 and np.all(np.diff(batch.codes) >= 0)
    fine, coarse = store.labels["cell_type"], store.labels["coarse_type"]
    model = atlas_model(AtlasSpec(n_cells=3000, n_genes=3000, seed=4))
    class_of = dict(zip(model.subtype_names, model.subtype_class, strict=True))
    fine_names = np.asarray(fine.categories)[fine.codes]
    coarse_names = np.asarray(coarse.categories)[coarse.codes]
    expected = [model.class_names[class_of[f]] for f in fine_names]
    assert np.array_equal(coarse_names, expected)
    kept = model.kept_genes(500)
    assert list(store.gene_names) == [model.gene_names[g] for g in kept]
    totals = store.root["obs/total_counts"][:]
    assert np.all(totals >= store.read_x(0, 3000).sum(axis=1))  # over all 3000 genes
    prov = store.provenance
    assert prov["source_kind"] == "synthetic-atlas" and prov["synth"]["seed"] == 4


def test_h5ad_reads_back_and_ingests_into_the_same_store(tmp_path, client):
    kw = dict(seed=6, client=client, **QUICK)
    h5 = synth_atlas(tmp_path / "atlas.h5ad", 2500, chunk=640, **kw)
    adata = ad.read_h5ad(h5)
    assert adata.shape == (2500, 3000) and isinstance(adata.X, sp.csr_matrix | sp.csr_array)
    for col in ("cell_type", "coarse_type", "batch"):
        assert adata.obs[col].dtype == "category"
    assert adata.var_names[0] == "SG00001" and adata.var["informative"].sum() == 2000
    via = rankdist.ingest(
        h5,
        tmp_path / "via.zarr",
        cell_type="cell_type",
        coarse_type="coarse_type",
        batch="batch",
        progress=False,
    )
    direct = synth_atlas(tmp_path / "direct.zarr", 2500, **kw)
    assert np.array_equal(via.read_x(0, 2500), direct.read_x(0, 2500))
    assert via.root["X"].chunks == direct.root["X"].chunks
    assert np.array_equal(via.cell_names, direct.cell_names)
    assert np.array_equal(via.gene_names, direct.gene_names)
    assert np.array_equal(via.root["obs/total_counts"][:], direct.root["obs/total_counts"][:])
    assert np.array_equal(adata.obs["total_counts"], direct.root["obs/total_counts"][:])
    for role, labels in direct.labels.items():
        got = via.labels[role]
        assert (got.column, got.categories) == (labels.column, labels.categories)
        assert np.array_equal(got.codes, labels.codes)


def _fail_from_cell(first_cell: int) -> None:
    """Make the worker's chunk generation fail from ``first_cell`` on (run on workers)."""
    import rankdist.datasets.atlas.generate as gen

    original = getattr(gen.generate_cells, "original", gen.generate_cells)

    def failing(model, start, stop, keep=None):
        if start >= first_cell:
            msg = f"injected failure at cell {start}"
            raise RuntimeError(msg)
        return original(model, start, stop, keep)

    failing.original = original
    gen.generate_cells = failing


def _restore_generation() -> None:
    import rankdist.datasets.atlas.generate as gen

    gen.generate_cells = getattr(gen.generate_cells, "original", gen.generate_cells)


def test_a_failure_mid_write_leaves_no_store(tmp_path, client, monkeypatch):
    kw = dict(genes=2000, client=client, **QUICK)
    out = tmp_path / "atlas.zarr"
    old = synth_atlas(out, 2100, **kw)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    client.run(_fail_from_cell, 4096)  # the first two of three X chunks are written
    try:
        with pytest.raises(RuntimeError, match="injected failure at cell 4096"):
            synth_atlas(out, 5000, overwrite=True, chunk=2048, **kw)
        with pytest.raises(RuntimeError, match="injected failure"):
            synth_atlas(tmp_path / "new.zarr", 5000, chunk=2048, **kw)
        with pytest.raises(RuntimeError, match="injected failure"):
            synth_atlas(tmp_path / "new.h5ad", 5000, chunk=2048, **kw)
    finally:
        client.run(_restore_generation)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas.zarr"]  # no temporaries
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert old.n_cells == rankdist.Store(out).n_cells == 2100
    # a failure after X is complete (writing obs) is rolled back the same way
    import rankdist.io.store as store_module

    def broken(*args, **kwargs):
        raise OSError("disk full while writing obs")

    monkeypatch.setattr(store_module, "finish_store", broken)
    with pytest.raises(OSError, match="disk full"):
        synth_atlas(tmp_path / "late.zarr", 3000, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas.zarr"]


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="genes='lots'"):
        synth_atlas(tmp_path / "a.zarr", 100, genes="lots", **QUICK)
    with pytest.raises(ValueError, match="suffix .h5ad but format is 'store'"):
        synth_atlas(tmp_path / "a.h5ad", 100, format="store", **QUICK)
    with pytest.raises(ValueError, match="n_cells=1"):
        synth_atlas(tmp_path / "a.zarr", 1, **QUICK)
    with pytest.raises(ValueError, match="applies to .h5ad output only"):
        synth_atlas(tmp_path / "a.zarr", 100, compression="gzip", **QUICK)
    (tmp_path / "notes.h5ad").write_text("my notes")
    with pytest.raises(FileExistsError, match="not HDF5"):
        synth_atlas(tmp_path / "notes.h5ad", 100, overwrite=True, **QUICK)
    assert not (tmp_path / "a.zarr").exists()


def test_taxonomy_imports_without_the_generator():
    """The command line and the planner read the atlas's label sizes at start-up."""
    heavy = ("numpy", "numba", "pandas", "h5py", "zarr", "distributed")
    code = (
        "import sys; from rankdist.datasets.atlas.taxonomy import ATLAS_LABEL_SIZES, N_DONORS; "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    import rankdist.datasets.atlas as atlas

    for name in atlas.__all__:  # imported on first use
        assert getattr(atlas, name) is getattr(atlas, name)
    with pytest.raises(AttributeError, match="no attribute 'synth'"):
        atlas.synth  # noqa: B018


def run(*args):
    env = dict(os.environ, COLUMNS="100")
    return subprocess.run(
        [str(EXE), *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )


def test_cli_synth_store_and_h5ad(tmp_path, client):
    address = client.scheduler.address
    common = ["--cells", "1500", "--genes", "300", "--donors", "40", "--seed", "3", "--quiet"]
    common += ["--cluster", address]
    proc = run("synth", tmp_path / "atlas.zarr", *common)
    assert proc.returncode == 0, proc.stderr
    assert "1500 cells x 300 genes" in proc.stdout
    store = rankdist.Store(tmp_path / "atlas.zarr")
    assert set(store.labels) == {"cell_type", "coarse_type", "batch"}
    assert len(store.labels["batch"].categories) == 40
    proc = run("synth", tmp_path / "atlas.h5ad", *common, "--compression", "gzip")
    assert proc.returncode == 0, proc.stderr
    adata = ad.read_h5ad(tmp_path / "atlas.h5ad")
    assert np.array_equal(adata.X.toarray(), store.read_x(0, 1500))
    proc = run("synth", tmp_path / "atlas.zarr", *common)
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert "--overwrite" in proc.stderr
