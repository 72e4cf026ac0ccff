"""The 8-bit screen: its bound holds, and tiles through it equal the float32 tiles bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import rankdist.tiles.kernel as kernel
import rankdist.tiles.screen as screen
from rankdist.layout import SUBTILE
from rankdist.tiles.kernel import tile_counts, tile_partials
from rankdist.tiles.screen import (
    REFINE_SHARE,
    ScreenUnavailable,
    quantise,
    refine_subtile,
    screen_subtile,
    subtile_margin,
)

from _data import oracle_spearman, tricky_adata


def standardise_rows(x: np.ndarray) -> np.ndarray:
    """Unit rows in float32 (all-zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norm > 0, norm, 1)).astype(np.float32)


def _spearman_rows(x: np.ndarray) -> np.ndarray:
    """Unit rows of centred average ranks (ties share their mean rank), as float32."""
    from scipy.stats import rankdata

    r = rankdata(x, axis=1)
    return standardise_rows(r - r.mean(axis=1, keepdims=True))


def _rows(kind: str, n: int, genes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "ranks with ties":
        return _spearman_rows(rng.poisson(0.7, (n, genes)).astype(np.float64))
    if kind == "gaussian":
        return standardise_rows(rng.standard_normal((n, genes)))
    if kind == "one spike":  # a row dominated by one gene: the coarsest quantisation step
        x = rng.standard_normal((n, genes)) * 1e-3
        x[np.arange(n), rng.integers(0, genes, n)] = 1.0
        return standardise_rows(x - x.mean(axis=1, keepdims=True))
    if kind == "clustered":  # many pairs near every cutoff
        base = rng.standard_normal((6, genes))
        return _spearman_rows(base[rng.integers(0, 6, n)] + 0.8 * rng.standard_normal((n, genes)))
    raise AssertionError(kind)


KINDS = ["ranks with ties", "gaussian", "one spike", "clustered"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("left_levels", [127, 63])
@pytest.mark.parametrize("refined", [False, True])
def test_every_screened_value_lies_within_the_bound(kind, left_levels, refined):
    z = _rows(kind, 2 * SUBTILE, 300, seed=1)
    q = quantise(z, left_levels)
    exact = z.astype(np.float64) @ z.astype(np.float64).T
    out = np.empty((SUBTILE, SUBTILE), np.float32)
    worst = 0.0
    for p, r in [(0, 0), (0, SUBTILE), (SUBTILE, 0)]:
        margin, acc = screen_subtile(q, p, SUBTILE, q, r, out)
        if refined:
            margin = refine_subtile(q, p, SUBTILE, q, r, acc, out)
        assert margin == subtile_margin(q, p, SUBTILE, q, r, SUBTILE, refined)
        err = np.abs(out - exact[p : p + SUBTILE, r : r + SUBTILE]).max()
        assert err <= margin, (kind, p, r)
        worst = max(worst, err / margin)
    # a worst case, yet useful for rows spread over many genes (a spike row is not)
    if refined:
        assert margin < (1e-2 if kind == "one spike" else 1e-3)
    else:
        assert margin < (0.2 if kind == "one spike" else 0.05)
    assert worst > 0.01  # and not a guess far below it


def test_quantised_operands_and_residuals_are_as_described():
    z = _rows("ranks with ties", 700, 90, seed=2)
    q = quantise(z, 127)
    assert (q.zero, q.ratio) == (128, 254)
    q1 = q.left.astype(np.int64) - q.zero
    assert np.array_equal(q.left2[:, :90], q.left)
    q2 = q.left2[:, 90:].astype(np.int64) - q.zero
    assert np.abs(q1).max() == 127 and np.abs(q2).max() <= 127
    assert [r.shape for r in q.right2] == [(180, SUBTILE), (180, 700 - SUBTILE)]
    right = np.concatenate([r.T for r in q.right2]).astype(np.int64)
    p2, p1 = right[:, :90], right[:, 90:]
    z64 = z.astype(np.float64)
    sl, sr = q.stat("left_scale")[:, None], q.stat("right_scale")[:, None]
    a1, a2 = q1 * sl, sl * (q1 + q2 / 254)
    b1, b2 = p1 * sr, sr * (p1 + p2 / 254)

    def norm(x):
        return np.linalg.norm(x, axis=1)

    for name, want in [
        ("left_err", norm(z64 - a1)),
        ("right_err", norm(z64 - b1)),
        ("left_norm", norm(a1)),
        ("left_err2", norm(z64 - a2)),
        ("right_err2", norm(z64 - b2)),
        ("left_norm2", norm(a2)),
        ("left_w", sl[:, 0] * norm(q2) / 254),
        ("right_w", sr[:, 0] * norm(p2) / 254),
        ("z_norm", norm(z64)),
    ]:
        np.testing.assert_allclose(q.stat(name), want, rtol=1e-9, err_msg=name)
    # each level takes the nearest step: what is left is at most half a step
    assert np.all(np.abs(z64 - a1) <= sl / 2 + 1e-12)
    assert np.all(np.abs(z64 - a2) <= sl / 508 + 1e-12)


def test_an_all_zero_row_has_no_residual():
    z = _rows("gaussian", 40, 64, seed=3)
    z[5] = 0.0
    q = quantise(z, 127)
    for name in ("left_err", "right_err", "left_err2", "right_err2", "left_w", "left_norm"):
        assert q.stat(name)[5] == 0, name


def _blocks(z, valid, codes, rows):
    return [(z[s : s + rows], valid[s : s + rows], codes[:, s : s + rows]) for s in (0, rows)]


@pytest.mark.parametrize("refine", ["auto", "always"])
@pytest.mark.parametrize("cutoffs", [(0.2,), (0.05, 0.15, 0.3), (1.0,)])
def test_screened_tiles_equal_float32_tiles_bit_for_bit(cutoffs, refine, monkeypatch):
    if refine != "auto":
        monkeypatch.setattr(kernel, "crowded", lambda *args: refine == "always")
    adata = tricky_adata(n_cells=2 * 1024, n_genes=80, seed=5)  # duplicates, ties, constants
    x = np.asarray(adata.X, dtype=np.float64)
    z = _spearman_rows(x)
    valid = np.isfinite(z).all(axis=1) & (x.std(axis=1) > 0)
    z[~valid] = 0
    codes = np.stack([adata.obs["celltype"].cat.codes.to_numpy(np.int32)])
    cut = np.asarray(cutoffs, np.float64)
    n_values = int(codes.max()) + 1
    bi, bj = _blocks(z, valid, codes, 1024)
    tiles = [(0, 0, (bi, bi)), (0, 1, (bi, bj)), (1, 1, (bj, bj))]
    wants = [
        tile_partials(a, b, i, j, 1024 * i, 1024 * j, 9, cut, n_values) for i, j, (a, b) in tiles
    ]
    tile_counts(reset=True)
    for (i, j, (a, b)), want in zip(tiles, wants, strict=True):
        args = (a, b, i, j, 1024 * i, 1024 * j, 9, cut, n_values)
        got = tile_partials(*args, quantised=(quantise(a[0]), quantise(b[0])))
        for w, g in zip(want, got, strict=True):
            if w is None:
                assert g is None
                continue
            assert np.array_equal(w.top_idx, g.top_idx), (i, j)
            assert np.array_equal(w.top_sim.view(np.int32), g.top_sim.view(np.int32)), (i, j)
            assert np.array_equal(w.counts, g.counts), (i, j)
    counts = tile_counts()
    if refine == "always":
        assert counts.refined == counts.subtiles
    else:  # the sub-tiles that primed empty lists, at least
        assert counts.refined > 0
    # and the lists hold the oracle's values
    rho = oracle_spearman(x)
    row = np.flatnonzero(valid)[0]
    top = tile_partials(bi, bi, 0, 0, 0, 0, 9, cut, n_values, quantised=(quantise(bi[0]),) * 2)[0]
    others = np.flatnonzero(valid[:1024])
    want = np.sort(rho[row, others[others != row]])[::-1][:9]
    np.testing.assert_allclose(top.top_sim[row], want, atol=1e-5)


def test_the_screen_rescores_more_pairs_than_float32_but_not_all():
    z = _rows("clustered", 1024, 400, seed=6)
    valid = np.ones(1024, bool)
    codes = np.zeros((1, 1024), np.int32)
    block = (z, valid, codes)
    cut = np.array([0.3], np.float64)
    shares = {}
    for name, quantised in [("float32", None), ("screen", (quantise(z),) * 2)]:
        tile_counts(reset=True)
        tile_partials(block, block, 0, 0, 0, 0, 10, cut, 1, quantised=quantised)
        visited, rescored, _, _ = tile_counts()
        assert visited == 1024 * 1023 // 2
        shares[name] = rescored / visited
    assert 0 < shares["float32"] < shares["screen"] < 0.5


def test_crowded_sub_tiles_are_refined():
    z = _rows("clustered", 1024, 400, seed=6)
    block = (z, np.ones(1024, bool), np.zeros((1, 1024), np.int32))
    tile_counts(reset=True)
    cutoffs = np.linspace(-0.2, 0.8, 41)  # most pairs lie within the level-1 margin of one
    tile_partials(block, block, 0, 0, 0, 0, 10, cutoffs, 1, quantised=(quantise(z),) * 2)
    counts = tile_counts()
    assert counts.refined == counts.subtiles == 3


def test_crowded_counts_the_pairs_near_a_threshold():
    rng = np.random.default_rng(7)
    s = rng.uniform(-0.2, 0.2, (512, 512)).astype(np.float32)
    low = np.full(512, 0.9, np.float32)  # every k-th best far above
    cut = np.array([0.5])
    over, under = int(REFINE_SHARE * 512) + 8, int(REFINE_SHARE * 512) - 8
    assert not screen.crowded(s, 0.01, low, low, cut, False)
    s[::16, :over] = 0.495  # in each looked-at row, just over the share near the cutoff
    assert screen.crowded(s, 0.01, low, low, cut, False)
    assert not screen.crowded(s, 0.001, low, low, cut, False)  # outside a tighter margin
    s[::16, :over] = 0.0
    s[::16, :under] = 0.895  # near the row's k-th best, just under the share
    assert not screen.crowded(s, 0.01, low, low, cut, False)
    s[::16, :over] = 0.895
    assert screen.crowded(s, 0.01, low, low, cut, False)


def test_a_product_that_is_not_exact_is_refused(monkeypatch):
    class Saturating:  # what AVX2's vpmaddubsw does to a pair of byte products past 16 bits
        def run(self, _, feed):
            a = feed["A"].astype(np.int64)
            b = feed["B"].astype(np.int64)
            pairs = a[:, 0::2, None] * b[None, 0::2] + a[:, 1::2, None] * b[None, 1::2]
            acc = np.clip(pairs, -32768, 32767).sum(axis=1)
            return [(acc - int(feed["Z"]) * b.sum(axis=0)).astype(np.int32)]

    monkeypatch.setattr(screen, "_state", {})
    monkeypatch.setattr(screen, "_build", lambda: Saturating())
    assert screen.usable_left_levels() == 63  # full range refused, the safe range kept

    class Wrong:
        def run(self, _, feed):
            return [np.zeros((feed["A"].shape[0], feed["B"].shape[1]), np.int32)]

    monkeypatch.setattr(screen, "_state", {})
    monkeypatch.setattr(screen, "_build", lambda: Wrong())
    with pytest.raises(ScreenUnavailable, match="not exact on this machine.*--kernel float32"):
        screen.usable_left_levels()
    assert "not exact" in screen.unavailable()


def test_without_onnxruntime_the_screen_says_what_to_install(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_onnxruntime(name, *args, **kwds):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'", name="onnxruntime")
        return real(name, *args, **kwds)

    monkeypatch.setattr(screen, "_state", {})
    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    msg = screen.unavailable()
    assert msg == (
        "the screen kernel needs onnxruntime and onnx (onnxruntime is not installed): "
        "pip install 'rankdist[fast]', or use --kernel float32"
    )


def test_forget_quantised_blocks_drops_the_process_cache():
    z = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    first = screen.quantised_block(("forget-test", 0, 64), z)
    assert screen.quantised_block(("forget-test", 0, 64), z) is first  # cached
    screen.forget_quantised_blocks()
    assert screen.quantised_block(("forget-test", 0, 64), z) is not first
