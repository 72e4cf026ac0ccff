"""The low-precision screen: an 8-bit product of quantised Z with a certified error bound.

The float32 tile (:mod:`rankdist.tiles.kernel`) already uses its GEMM only to screen:
every similarity that enters a top-k list or lies near a cutoff is recomputed exactly by
:func:`~rankdist.tiles.fused.pair_value`. The screen replaces that GEMM by an integer one
on rows quantised to 8 bits, and the float32 GEMM's error bound by a certificate on the
quantisation error, so the same pairs decide by the same exact values and the results are
bit for bit those of the float32 path. docs/performance.md states and proves the bound.

Each block is quantised once per worker (:func:`quantised_block`, cached beside the
blocks themselves), twice: as the left operand with 63 levels each side of zero, stored
as unsigned bytes ``q + 64`` in [1, 127], and as the right operand with 127 levels. With
those ranges no pair of byte products can overflow 16 bits, so the integer product is
exact on every x86 kernel onnxruntime picks (AVX2's ``vpmaddubsw`` saturates above that),
and a self-check at start-up refuses a library whose product is not exact.

The integer GEMM is onnxruntime's ``MatMulInteger`` (the optional extra
``rankdist[fast]``); nothing here multiplies matrices by hand.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numba
import numpy as np

from rankdist.layout import SUBTILE
from rankdist.tiles.grid import CACHED_BLOCKS

#: Levels each side of zero of the right operand (int8), and the left operand's choices
#: (unsigned bytes ``q + levels + 1``): 127 where the product is exact at full range
#: (AVX-512 VNNI), else 63, where no pair of byte products can overflow 16 bits.
RIGHT_LEVELS = 127
LEFT_CHOICES = (127, 63)
#: float32 unit roundoff: one rounding of the screened value, one of pair_value.
_U32 = 2.0**-24
#: Genes beyond which the refined product (2G terms of at most 127 * 127) could overflow
#: its int32 accumulator.
MAX_GENES = (2**31 - 1) // (2 * RIGHT_LEVELS * RIGHT_LEVELS)
#: Refine a sub-tile when more than this share of its pairs would otherwise be recomputed
#: one by one: the refinement costs two more 8-bit products (about 10 ns a pair here), a
#: recomputed pair about 0.4 us (docs/performance.md).
REFINE_SHARE = 0.1


class ScreenUnavailable(ValueError):
    """The screen cannot run here (no onnxruntime, or its integer product is not exact)."""


@dataclass(frozen=True)
class Quantised:
    """A block of Z quantised for the screen, in two levels, with what the bounds need.

    Per row, ``z ~ scale * (q1 + q2 / R)``: ``q1`` the nearest of ``levels`` steps each side
    of zero, ``q2`` the nearest of ``R = 2 * levels`` sub-steps of what is left (so it too
    lies within ``levels``). The left operand has ``levels`` = :func:`usable_left_levels`,
    the right 127 for q1 and the left's for q2.

    ``left`` is uint8 ``(rows, G)`` (q1 + zero), ``left2`` uint8 ``(rows, 2G)``
    ([q1 | q2] + zero); ``right2`` holds one int8 ``(2G, <= SUBTILE)`` array per sub-tile of
    rows, the right operand transposed: ``[q2; q1]``, so that its second half is q1 alone
    and ``left2 @ right2`` is the cross term ``q1a.q2b + q2a.q1b``. ``stats`` is float64
    ``(11, rows)``, its rows named by :data:`STATS`.
    """

    left: np.ndarray
    left2: np.ndarray
    right2: list[np.ndarray]
    stats: np.ndarray
    levels: int

    @property
    def zero(self) -> int:
        return self.levels + 1

    @property
    def ratio(self) -> int:
        return 2 * self.levels

    def stat(self, name: str) -> np.ndarray:
        return self.stats[STATS.index(name)]


#: Per-row statistics of a :class:`Quantised` block: the two scales; for level 1 the
#: residual norms of each operand and the norm of the quantised left row; for level 2 the
#: same, and ``scale * |q2| / R`` of each operand; the norm of the row itself.
STATS = (
    "left_scale",
    "right_scale",
    "left_err",
    "right_err",
    "left_norm",
    "left_err2",
    "right_err2",
    "left_norm2",
    "left_w",
    "right_w",
    "z_norm",
)


def quantise(z: np.ndarray, left_levels: int | None = None) -> Quantised:
    """Quantise float32 rows ``z`` ``(rows, G)`` per row, both levels (see :class:`Quantised`).

    ``left_levels`` defaults to what this process's integer product handles exactly
    (:func:`usable_left_levels`).
    """
    rows, genes = z.shape
    if genes > MAX_GENES:
        msg = f"the screen supports at most {MAX_GENES} genes, not {genes}: use --kernel float32"
        raise ValueError(msg)
    levels = left_levels or usable_left_levels()
    left2 = np.empty((rows, 2 * genes), np.uint8)
    right_rows = np.empty((rows, 2 * genes), np.int8)
    stats = np.empty((len(STATS), rows), np.float64)
    _quantise_rows(z, levels, RIGHT_LEVELS, left2, right_rows, stats)
    right2 = [np.ascontiguousarray(right_rows[p : p + SUBTILE].T) for p in range(0, rows, SUBTILE)]
    left = np.ascontiguousarray(left2[:, :genes])
    return Quantised(left, left2, right2, stats, levels)


@numba.njit(nogil=True, cache=True)
def _quantise_rows(z, levels, right_levels, left2, right, stats):
    """Per row: both operands' two levels, their scales and norms (in float64; see STATS)."""
    rows, genes = z.shape
    ratio = 2.0 * levels
    zero = levels + 1
    acc = np.zeros(8)
    for r in range(rows):
        peak = 0.0
        norm = 0.0
        for g in range(genes):
            x = np.float64(z[r, g])
            peak = max(peak, abs(x))
            norm += x * x
        if peak == 0.0:
            peak = 1.0  # an all-zero row: any scale, every residual 0
        sl = peak / levels
        sr = peak / right_levels
        acc[:] = 0.0
        for g in range(genes):
            x = np.float64(z[r, g])
            q1 = min(max(np.rint(x / sl), -levels), levels)
            q2 = min(max(np.rint((x - q1 * sl) * ratio / sl), -levels), levels)
            p1 = min(max(np.rint(x / sr), -right_levels), right_levels)
            p2 = min(max(np.rint((x - p1 * sr) * ratio / sr), -levels), levels)
            left2[r, g] = np.uint8(q1 + zero)
            left2[r, genes + g] = np.uint8(q2 + zero)
            right[r, g] = np.int8(p2)  # transposed later: [q2; q1]
            right[r, genes + g] = np.int8(p1)
            a1 = q1 * sl
            a2 = sl * (q1 + q2 / ratio)
            b1 = p1 * sr
            b2 = sr * (p1 + p2 / ratio)
            acc[0] += (x - a1) ** 2
            acc[1] += (x - b1) ** 2
            acc[2] += a1 * a1
            acc[3] += (x - a2) ** 2
            acc[4] += (x - b2) ** 2
            acc[5] += a2 * a2
            acc[6] += q2 * q2
            acc[7] += p2 * p2
        stats[0, r] = sl
        stats[1, r] = sr
        for i in range(6):
            stats[2 + i, r] = np.sqrt(acc[i])
        stats[8, r] = sl * np.sqrt(acc[6]) / ratio
        stats[9, r] = sr * np.sqrt(acc[7]) / ratio
        stats[10, r] = np.sqrt(norm)


def subtile_margin(
    qa: Quantised, p: int, na: int, qb: Quantised, q: int, nb: int, refined: bool = False
) -> float:
    """How far a screened similarity of the sub-tile may lie from the value that decides.

    Rows a of ``qa`` (left) and b of ``qb`` (right), residuals e (level 1) or e2 (level 2):

    * level 1, ``s1 = scale_a scale_b q1a.q1b`` is the product of the quantised rows, and
      ``z_a.z_b - za1.zb1 = e_a.z_b + za1.e_b``, so by Cauchy-Schwarz
      ``|z_a.z_b - s1| <= |e_a| |z_b| + |za1| |e_b|``;
    * level 2, ``s2 = scale_a scale_b (q1a.q1b + (q1a.q2b + q2a.q1b) / R)`` leaves out
      ``scale_a scale_b q2a.q2b / R^2`` of the product of the quantised rows, so
      ``|z_a.z_b - s2| <= |e2_a| |z_b| + |za2| |e2_b| + w_a w_b`` with
      ``w = scale |q2| / R``.

    The maxima over the sub-tile's rows bound every pair. Two float32 roundings (of the
    screened value and of :func:`~rankdist.tiles.fused.pair_value`) add at most ``2u``
    each for values of size about 1; the float64 arithmetic of the bound, the norms and
    the scaling adds far less than the relative slack.
    """
    a, b = slice(p, p + na), slice(q, q + nb)
    z_b = qb.stat("z_norm")[b].max()
    if refined:
        bound = (
            qa.stat("left_err2")[a].max() * z_b
            + qa.stat("left_norm2")[a].max() * qb.stat("right_err2")[b].max()
            + qa.stat("left_w")[a].max() * qb.stat("right_w")[b].max()
        )
    else:
        bound = (
            qa.stat("left_err")[a].max() * z_b
            + qa.stat("left_norm")[a].max() * qb.stat("right_err")[b].max()
        )
    return float((bound + 4 * _U32) * (1 + 1e-6))


def screen_subtile(
    qa: Quantised, p: int, na: int, qb: Quantised, q: int, out: np.ndarray
) -> tuple[float, np.ndarray]:
    """Write the level-1 screened similarities of rows ``p:p+na`` of qa and sub-tile ``q`` of qb.

    Returns the margin (:func:`subtile_margin`) and the integer product, which
    :func:`refine_subtile` reuses.
    """
    genes = qa.left.shape[1]
    right = qb.right2[q // SUBTILE][genes:]
    acc = _session().run(None, {"A": qa.left[p : p + na], "B": right, "Z": _zero(qa.zero)})[0]
    nb = out.shape[1]
    _dequantise(acc, qa.stat("left_scale")[p : p + na], qb.stat("right_scale")[q : q + nb], out)
    return subtile_margin(qa, p, na, qb, q, nb), acc


def refine_subtile(
    qa: Quantised, p: int, na: int, qb: Quantised, q: int, acc: np.ndarray, out: np.ndarray
) -> float:
    """Overwrite ``out`` with the level-2 similarities; return their (smaller) margin."""
    feed = {"A": qa.left2[p : p + na], "B": qb.right2[q // SUBTILE], "Z": _zero(qa.zero)}
    cross = _session().run(None, feed)[0]
    nb = out.shape[1]
    sa, sb = qa.stat("left_scale")[p : p + na], qb.stat("right_scale")[q : q + nb]
    _dequantise2(acc, cross, float(qa.ratio), sa, sb, out)
    return subtile_margin(qa, p, na, qb, q, nb, refined=True)


@numba.njit(nogil=True, cache=True)
def _dequantise(acc, left_scale, right_scale, out):
    """``out[a, b] = float32(acc[a, b] * left_scale[a] * right_scale[b])``, in float64."""
    for a in range(acc.shape[0]):
        sa = left_scale[a]
        for b in range(acc.shape[1]):
            out[a, b] = np.float32(np.float64(acc[a, b]) * sa * right_scale[b])


@numba.njit(nogil=True, cache=True)
def _dequantise2(acc1, acc2, ratio, left_scale, right_scale, out):
    """``out[a, b] = float32((acc1 + acc2 / ratio) * left_scale[a] * right_scale[b])``."""
    for a in range(acc1.shape[0]):
        sa = left_scale[a]
        for b in range(acc1.shape[1]):
            v = np.float64(acc1[a, b]) + np.float64(acc2[a, b]) / ratio
            out[a, b] = np.float32(v * sa * right_scale[b])


@numba.njit(nogil=True, cache=True)
def crowded(s, margin, row_thr, col_thr, cutoffs, upper_only):
    """Would more than :data:`REFINE_SHARE` of the sub-tile's pairs be recomputed?

    A pair is recomputed when its screened value ``s`` lies within ``margin`` of, or
    above, its row's or column's current k-th best (``row_thr``, ``col_thr``), or within
    ``margin`` of a cutoff. Every 16th row is looked at: the answer decides only speed,
    never a result.
    """
    nr, nc = s.shape
    hits = 0
    seen = 0
    for a in range(0, nr, 16):
        rt = row_thr[a] - margin
        for b in range(a + 1 if upper_only else 0, nc):
            v = s[a, b]
            near = v >= rt or v >= col_thr[b] - margin
            for c in range(cutoffs.shape[0]):
                near = near or abs(v - cutoffs[c]) <= margin
            hits += 1 if near else 0
            seen += 1
    return hits > REFINE_SHARE * max(seen, 1)


# ---------------------------------------------------------------- per-process state

_lock = threading.Lock()
_state: dict = {}
_cache: OrderedDict = OrderedDict()


def quantised_block(key, z: np.ndarray) -> Quantised:
    """The quantised form of block ``z``, computed once per process and key."""
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    value = quantise(z)
    with _lock:
        _cache[key] = value
        while len(_cache) > CACHED_BLOCKS:
            _cache.popitem(last=False)
    return value


def forget_quantised_blocks() -> None:
    """Drop the quantised blocks this process holds, as if it had run no tile yet.

    Results never depend on them; a timing that must not profit from an earlier run on the
    same encoding (``benchmarks/bench_neighbors.py``) starts from none.
    """
    with _lock:
        _cache.clear()


def unavailable() -> str | None:
    """Why the screen cannot run in this process, or None when it can."""
    try:
        usable_left_levels()
    except ScreenUnavailable as err:
        return str(err)
    return None


def usable_left_levels() -> int:
    """The left operand's levels whose product this process computes exactly (checked once)."""
    with _lock:
        if "levels" not in _state:
            _state["levels"] = _checked_levels()
    levels = _state["levels"]
    if isinstance(levels, str):
        raise ScreenUnavailable(levels)
    return levels


def _checked_levels() -> int | str:
    try:
        session = _build()
    except ScreenUnavailable as err:
        return str(err)
    _state["session"] = session
    for levels in LEFT_CHOICES:
        if _exact(session, levels):
            return levels
    return (
        "onnxruntime's 8-bit product is not exact on this machine, so the screen's bound "
        "would not hold: use --kernel float32"
    )


def _session():
    usable_left_levels()
    return _state["session"]


def _zero(value: int) -> np.ndarray:
    return np.array(value, dtype=np.uint8)


def _build():
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError as err:
        msg = (
            f"the screen kernel needs onnxruntime and onnx ({err.name} is not installed): "
            "pip install 'rankdist[fast]', or use --kernel float32"
        )
        raise ScreenUnavailable(msg) from None
    a = helper.make_tensor_value_info("A", TensorProto.UINT8, ["m", "g"])
    b = helper.make_tensor_value_info("B", TensorProto.INT8, ["g", "n"])
    zero = helper.make_tensor_value_info("Z", TensorProto.UINT8, [])
    y = helper.make_tensor_value_info("Y", TensorProto.INT32, ["m", "n"])
    node = helper.make_node("MatMulInteger", ["A", "B", "Z"], ["Y"])
    graph = helper.make_graph([node], "screen", [a, b, zero], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 9)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one tile per task thread, as BLAS
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _exact(session, levels: int) -> bool:
    """Is the integer product exact with left values at +-``levels``, the extremes?"""
    rng = np.random.default_rng(0)
    genes = 256
    q_left = rng.choice([-levels, levels], size=(64, genes))
    q_left[:8] = levels  # every byte pair at its largest, each sign
    q_left[8:16] = -levels
    q_right = rng.choice([-RIGHT_LEVELS, RIGHT_LEVELS], size=(genes, 48))
    q_right[:, :8] = RIGHT_LEVELS
    q_right[:, 8:16] = -RIGHT_LEVELS
    feed = {
        "A": (q_left + levels + 1).astype(np.uint8),
        "B": q_right.astype(np.int8),
        "Z": _zero(levels + 1),
    }
    got = session.run(None, feed)[0]
    return bool(np.array_equal(got.astype(np.int64), q_left @ q_right))
