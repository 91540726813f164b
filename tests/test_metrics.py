"""Result.metrics against an independent computation written here.

Oracle: the references by plain numpy -- the exact product of the dequantized operands (code
values as integers in units of the format's finest step, multiplied in int64, times the scales
with one float64 rounding) and float64 matmul of the float inputs (or of the dequantized
operands, for block scales) -- and the metrics by their formulas.  Tolerances are not chosen:
they are bounds, per metric, from (a) the reference's own float64 rounding where both sides
round a matmul (|delta| <= gamma_K * |A| @ |B| each, gamma_K = K u / (1 - K u), u = 2^-53) and
(b) float64 summation in any order (|error| <= N u * sum of |terms|, with slack), carried
through each formula by interval arithmetic."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import accel_sim as acs
from accel_sim import _metrics
from accel_sim.mac import FloatAcc, IntAcc
from accel_sim.quant import QTensor, quantize

U = 2.0 ** -53


def gamma(k):
    return k * U / (1 - k * U)


def units(fmt):
    """Code values of fmt in units of its finest step (the smallest lowest set bit of any
    value's exact binary fraction), and that step."""
    table = fmt.decode(fmt.all_codes())
    fracs = [Fraction(float(v)) for v in table[np.isfinite(table) & (table != 0)]]
    step = min(Fraction(f.numerator & -f.numerator, f.denominator) for f in fracs)
    assert step.numerator == 1 or step.denominator == 1
    return table / float(step), float(step)


def exact_dequantized(qa, qb):
    """fl(exact sum_k a_ik b_kj): int64 product of the code values in units, times the scales."""
    ta, ua = units(qa.format)
    tb, ub = units(qb.format)
    ia, ib = ta[qa.codes].astype(np.int64), tb[qb.codes].astype(np.int64)
    p = ia @ ib
    assert np.all(np.abs(p) < 2 ** 53)
    sa = qa.scale.astype(np.float64).reshape(-1, 1) if qa.axis == 0 else float(qa.scale)
    sb = qb.scale.astype(np.float64).reshape(1, -1) if qb.axis == 1 else float(qb.scale)
    return p.astype(np.float64) * (sa * sb * ua * ub)


def dequant(q):
    return q.dequantize() if isinstance(q, QTensor) else np.asarray(q, np.float64)


def interval_metrics(out, ref, delta):
    """Each metric's interval, given that the implementation's reference lies within delta
    (elementwise) of ref and that its sums are float64 sums in any order."""
    out, ref, delta = (np.asarray(v, np.float64).reshape(-1) for v in np.broadcast_arrays(out, ref, delta))
    n = max(out.size, 1)
    slack = 2 * n * U + 1e-15
    e = out - ref
    d_e = delta + U * np.abs(e)          # the error's own subtraction rounds too
    R, E, O = float(ref @ ref), float(e @ e), float(out @ out)
    D = float(out @ ref)
    dR = float(np.sum(2 * np.abs(ref) * delta + delta ** 2)) + slack * R
    dE = float(np.sum(2 * np.abs(e) * d_e + d_e ** 2)) + slack * E
    dO = slack * O
    dD = float(np.sum(np.abs(out) * delta)) + slack * float(np.sum(np.abs(out * ref)))
    r_lo, r_hi, e_lo, e_hi = max(R - dR, 0.0), R + dR, max(E - dE, 0.0), E + dE
    rel = (math.sqrt(e_lo / r_hi) if r_hi else 0.0, math.sqrt(e_hi / r_lo) if r_lo else math.inf)
    sqnr = (10 * math.log10(r_lo / e_hi) if r_lo and e_hi else -math.inf,
            10 * math.log10(r_hi / e_lo) if e_lo else math.inf)
    norms = (math.sqrt(max(O - dO, 0.0) * r_lo), math.sqrt((O + dO) * r_hi))
    cos_vals = [(D + s1 * dD) / nm for s1 in (-1, 1) for nm in norms if nm]
    cos = (min(cos_vals), max(cos_vals)) if cos_vals else (-math.inf, math.inf)
    m = float(np.max(np.abs(e))) if e.size else 0.0
    dm = float(np.max(d_e)) if e.size else 0.0
    return {"rel_fro": rel, "sqnr_db": sqnr, "cosine": cos, "max_abs": (m - dm, m + dm)}


def check(metrics, out, ref, delta=0.0):
    """metrics (a Result's) lie within the intervals of the oracle's formulas."""
    assert metrics["nonfinite"] == 0
    for key, (lo, hi) in interval_metrics(out, ref, delta).items():
        v = metrics[key]
        tiny = 4 * math.ulp(max(abs(lo), abs(hi), 1e-300)) if math.isfinite(hi) and math.isfinite(lo) else 0.0
        assert lo - tiny <= v <= hi + tiny, (key, v, lo, hi)


def gemm_bound(a, b):
    """Elementwise bound on |fl64(a @ b) - a @ b| for any summation order (gamma_K |a| @ |b|)."""
    return gamma(a.shape[1]) * (np.abs(a) @ np.abs(b))


SHAPES = [(1, 1, 1), (3, 17, 5), (33, 70, 9), (17, 1500, 6), (40, 64, 31)]
MACS = [("int8", "int32", None), ("int4", "int32", None), ("e4m3fn", "fp32", None), ("e5m2", "fp32", None),
        ("e4m3fn", "bf16", None), ("posit8", "fp32", None)]


def operands(m, k, n, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32),
            rng.standard_normal(n))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fmt,acc,_", MACS)
@pytest.mark.parametrize("quant", [{"a": "tensor", "b": "tensor"}, {"a": "channel", "b": "channel"},
                                   {"a": "tensor", "b": "channel"}])
@pytest.mark.parametrize("with_bias", [False, True])
def test_gemm_metrics_match_oracle(shape, fmt, acc, _, quant, with_bias):
    m, k, n = shape
    a, b, bias = operands(m, k, n, hash((shape, fmt, acc)) % 1000)
    arr = acs.Array(8, 4, "ws", acs.MAC(fmt, fmt, acc), quant=quant)
    res = arr.gemm(a, b, bias=bias if with_bias else None)
    qa = quantize(a, arr.mac.a, scale=quant["a"], axis=0 if quant["a"] == "channel" else None)
    qb = quantize(b, arr.mac.b, scale=quant["b"], axis=1 if quant["b"] == "channel" else None)
    bias32 = bias.astype(np.float32).astype(np.float64) if with_bias else 0.0
    # vs_dequantized: where the product is provably exact (the formats' grids, K), the same bits as
    # the oracle's exact product; elsewhere within float64 matmul rounding of it
    plan = _metrics._exact_plan(qa, qb, k)
    if plan is not None:
        check(res.metrics["vs_dequantized"], res.output, exact_dequantized(qa, qb) + bias32)
    else:
        check(res.metrics["vs_dequantized"], res.output, qa.dequantize() @ qb.dequantize() + bias32,
              2 * gemm_bound(qa.dequantize(), qb.dequantize()))
    # vs_float64: the float inputs multiplied in float64 (both sides round a matmul)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    check(res.metrics["vs_float64"], res.output, a64 @ b64 + (bias if with_bias else 0.0), 2 * gemm_bound(a64, b64))


def test_exact_paths_are_taken():
    """The fast exact products are used where the grids allow, and refused where they do not."""
    def plan(fmt, k, axis_a=None):
        q = QTensor(np.zeros((2, k), np.uint8), fmt, np.ones(2) if axis_a == 0 else 1.0, axis_a)
        return _metrics._exact_plan(q, QTensor(np.zeros((k, 3), np.uint8), fmt), k)
    assert plan("int8", 1024)[0] == ("sgemm", 1024)           # 1024 * 128 * 128 = 2^24
    assert plan("int8", 1025)[0] == ("sgemm", 1024)           # split into K chunks
    assert plan("int4", 5000, 0)[0] == ("sgemm", 5000)
    assert plan("e4m3fn", 512)[0] == ("dgemm", 512)           # 448^2 in steps of 2^-18: float64 only
    assert plan("e5m2", 64) is None                           # products span more than 53 bits


def test_vs_dequantized_is_the_exact_product_rounded_once():
    """int8 and e4m3fn: the reference is fl(exact), so an output equal to it scores zero error
    (the old float64 matmul of dequantized values could miss it by its own rounding)."""
    rng = np.random.default_rng(5)
    for fmt in ("int8", "e4m3fn"):
        qa = quantize(rng.standard_normal((9, 300)), fmt, scale="channel", axis=0)
        qb = quantize(rng.standard_normal((300, 7)), fmt, scale="channel", axis=1)
        ref = exact_dequantized(qa, qb)
        m = _metrics.gemm_metrics(ref, [("q", qa, qb, None)])["q"]
        assert m["max_abs"] == 0.0 and m["rel_fro"] == 0.0 and m["sqnr_db"] == math.inf


def test_chunked_and_blocked_references(monkeypatch):
    """Reference blocks (rows and columns) and K chunks give the same metrics as one block."""
    rng = np.random.default_rng(7)
    qa = quantize(rng.standard_normal((70, 2100)), "int8", scale="channel", axis=0)
    qb = quantize(rng.standard_normal((2100, 45)), "int8", scale="channel", axis=1)
    a64, b64 = rng.standard_normal((70, 2100)), rng.standard_normal((2100, 45))
    out = (qa.dequantize() @ qb.dequantize() * (1 + 1e-3 * rng.standard_normal((70, 45))))
    bias = rng.standard_normal(45)
    pairs = [("q", qa, qb, bias), ("f", a64, b64, None), ("q2", qa, qb, bias.copy())]
    whole = _metrics.gemm_metrics(out, pairs)
    monkeypatch.setattr(_metrics, "_PART", 16)
    monkeypatch.setattr(_metrics, "_MIN_BLOCK", 8)
    monkeypatch.setattr(_metrics, "_STAGE", 100)      # several staging rounds per operand part
    blocked = _metrics.gemm_metrics(out, pairs)
    check(blocked["q"], out, exact_dequantized(qa, qb) + bias)
    check(blocked["f"], out, a64 @ b64, 2 * gemm_bound(a64, b64))
    assert blocked["q2"] == blocked["q"]
    for name in ("q", "f"):
        check(whole[name], out, (exact_dequantized(qa, qb) + bias) if name == "q" else a64 @ b64,
              0.0 if name == "q" else 2 * gemm_bound(a64, b64))


def test_qtensor_inputs_share_one_reference():
    rng = np.random.default_rng(3)
    qa = quantize(rng.standard_normal((20, 50)), "e4m3fn")
    qb = quantize(rng.standard_normal((50, 30)), "e4m3fn", scale="channel", axis=1)
    res = acs.Array(8, 8, "os", acs.MAC("e4m3fn", "e4m3fn", "fp32")).gemm(qa, qb)
    assert res.metrics["vs_float64"] == res.metrics["vs_dequantized"]
    check(res.metrics["vs_dequantized"], res.output, exact_dequantized(qa, qb))


def test_block_scaled_gemm_metrics():
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((13, 96)).astype(np.float32), rng.standard_normal((96, 10)).astype(np.float32)
    bias = rng.standard_normal(10)
    arr = acs.Array(8, 8, "ws", acs.MAC("e4m3fn", "e4m3fn", "fp32"), quant={"a": "block", "b": "block"})
    res = arr.gemm(a, b, bias=bias)
    qa, qb = arr._block_operands(a, b, ("A", "B"))
    da, db = qa.dequantize(), qb.dequantize()
    check(res.metrics["vs_dequantized"], res.output, da @ db + bias.astype(np.float32), 2 * gemm_bound(da, db))
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    check(res.metrics["vs_float64"], res.output, a64 @ b64 + bias, 2 * gemm_bound(a64, b64))


def test_nonfinite_outputs_counted():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((20, 40)) * 30, rng.standard_normal((40, 12)) * 30
    res = acs.Array(4, 4, "ws", acs.MAC("e4m3fn", "e4m3fn", FloatAcc(5, 10))).gemm(a, b)
    bad = int(np.count_nonzero(~np.isfinite(res.output)))
    assert bad > 0
    for key in ("vs_float64", "vs_dequantized"):
        assert res.metrics[key]["nonfinite"] == bad and res.metrics[key]["rel_fro"] == math.inf


def conv_oracle(x, w, stride, padding, dilation, groups):
    """Textbook float64 convolution (NCHW, OIHW): a sum over input channels and taps."""
    nb, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    ow = (wd + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    y = np.zeros((nb, o, oh, ow))
    taps = np.zeros((nb, o, oh, ow))
    for oc in range(o):
        g = oc // og
        for ci in range(cg):
            for i in range(kh):
                for j in range(kw):
                    patch = xp[:, g * cg + ci, i * dilation: i * dilation + stride * (oh - 1) + 1: stride,
                               j * dilation: j * dilation + stride * (ow - 1) + 1: stride]
                    y[:, oc] += patch * w[oc, ci, i, j]
                    taps[:, oc] += np.abs(patch * w[oc, ci, i, j])
    return y, taps, cg * kh * kw


@pytest.mark.parametrize("fmt,acc,groups,quant_b,qt", [
    ("int8", "fp32", 1, "channel", False), ("int8", "int32", 1, "channel", False), ("e4m3fn", "fp32", 2, "tensor", False),
    ("int8", "int32", 3, "channel", True), ("e5m2", "fp32", 1, "channel", False)])
def test_conv2d_metrics(fmt, acc, groups, quant_b, qt):
    rng = np.random.default_rng(groups)
    x = rng.standard_normal((2, 6, 7, 9)).astype(np.float32)
    w = rng.standard_normal((6, 6 // groups, 3, 2)).astype(np.float32)
    bias = rng.standard_normal(6)
    arr = acs.Array(8, 4, "ws", acs.MAC(fmt, fmt, acc), quant={"a": "tensor", "b": quant_b})
    qx = quantize(x, fmt)
    qw = quantize(w, fmt, scale=quant_b, axis=0 if quant_b == "channel" else None)
    res = arr.conv2d(qx if qt else x, qw if qt else w, stride=2, padding=1, dilation=1, groups=groups, bias=bias)
    y_q, taps_q, k = conv_oracle(qx.dequantize(), qw.dequantize(), 2, 1, 1, groups)
    b32 = bias.astype(np.float32).astype(np.float64)[None, :, None, None]
    # the exact product where provable (then only the oracle's own float64 sums round), else both round
    check(res.metrics["vs_dequantized"], res.output, y_q + b32, 2 * gamma(k) * taps_q)
    xf, wf = (qx.dequantize(), qw.dequantize()) if qt else (x.astype(np.float64), w.astype(np.float64))
    y, taps, k = conv_oracle(xf, wf, 2, 1, 1, groups)
    check(res.metrics["vs_float64"], res.output, y + bias[None, :, None, None], 2 * gamma(k) * taps)


def test_batched_matmul_metrics():
    rng = np.random.default_rng(9)
    a = rng.standard_normal((3, 1, 5, 24)).astype(np.float32)
    b = rng.standard_normal((2, 24, 7)).astype(np.float32)
    arr = acs.Array(4, 4, "os", acs.MAC("int8", "int8", "int32"))
    res = arr.matmul(a, b)
    qa, qb = quantize(a, "int8"), quantize(b, "int8")
    ref_q = np.stack([exact_dequantized(QTensor(qa.codes[i, 0], "int8", qa.scale), QTensor(qb.codes[j], "int8", qb.scale))
                      for i in range(3) for j in range(2)]).reshape(3, 2, 5, 7)
    check(res.metrics["vs_dequantized"], res.output, ref_q)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    check(res.metrics["vs_float64"], res.output, a64 @ b64, 2 * gamma(24) * (np.abs(a64) @ np.abs(b64)))


def test_block_scaled_batched_matmul_metrics():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((2, 6, 40)).astype(np.float32)
    b = rng.standard_normal((2, 40, 5)).astype(np.float32)
    arr = acs.Array(4, 4, "ws", acs.MAC("e4m3fn", "e4m3fn", "fp32"), quant={"a": "block", "b": "block"})
    res = arr.matmul(a, b)
    refs, bounds = [], []
    for i in range(2):
        qa, qb = arr._block_operands(a[i].astype(np.float64), b[i].astype(np.float64), ("a", "b"))
        da, db = qa.dequantize(), qb.dequantize()
        refs.append(da @ db)
        bounds.append(2 * gemm_bound(da, db))
    check(res.metrics["vs_dequantized"], res.output, np.stack(refs), np.stack(bounds))
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    check(res.metrics["vs_float64"], res.output, a64 @ b64, 2 * gamma(40) * (np.abs(a64) @ np.abs(b64)))


def test_conv2d_metrics_per_sample_scales():
    """A QTensor x with one scale per sample (axis 0): each patch row is dequantized with its
    sample's scale, as x.dequantize() does."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 2, 5, 5))
    w = rng.standard_normal((4, 2, 3, 3))
    qx = quantize(x, "int8", scale="channel", axis=0)
    qw = quantize(w, "int8")
    res = acs.Array(4, 4, "ws", acs.MAC("int8", "int8", "int32")).conv2d(qx, qw, padding=1)
    y, taps, k = conv_oracle(qx.dequantize(), qw.dequantize(), 1, 1, 1, 1)
    for key in ("vs_dequantized", "vs_float64"):
        check(res.metrics[key], res.output, y, 2 * gamma(k) * taps)


@pytest.mark.parametrize("m,k,n", [(0, 4, 3), (3, 0, 2), (2, 5, 0), (0, 0, 0)])
@pytest.mark.parametrize("fmt", ["int8", "e4m3fn", "e5m2"])
def test_empty_gemm_metrics(m, k, n, fmt):
    """No outputs: no error (rel_fro 0, SQNR and cosine of a perfect match); K = 0: every
    output and reference is zero."""
    qa, qb = QTensor(np.zeros((m, k), np.uint8), fmt), QTensor(np.zeros((k, n), np.uint8), fmt)
    res = acs.Array(2, 2, "ws", acs.MAC(fmt, fmt, "fp32")).gemm(qa, qb)
    for key in ("vs_float64", "vs_dequantized"):
        assert res.metrics[key] == {"rel_fro": 0.0, "sqnr_db": math.inf, "max_abs": 0.0, "cosine": 1.0, "nonfinite": 0}


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("acc,k", [("int32", 200), (IntAcc(20, "saturate"), 31), (IntAcc(20, "saturate"), 300),
                                   (IntAcc(16), 64)])
def test_integer_accumulator_metrics(dataflow, acc, k):
    """Where no partial sum can leave the register (K * 128 * 128 < 2^(bits-1)) the accumulator
    holds the exact product of the codes and serves as the reference's; elsewhere (a register
    that may wrap or saturate) the codes are multiplied anew. Either way: the oracle's values."""
    rng = np.random.default_rng(k)
    a, b = rng.standard_normal((11, k)), rng.standard_normal((k, 6))
    arr = acs.Array(4, 3, dataflow, acs.MAC("int8", "int8", acc), quant={"a": "channel", "b": "channel"})
    res = arr.gemm(a, b)
    qa, qb = quantize(a, "int8", scale="channel", axis=0), quantize(b, "int8", scale="channel", axis=1)
    mac_acc = arr.mac.acc
    assert _metrics.exact_accumulator(mac_acc, mac_acc, qa, qb, k) == (k * 2 ** 14 < 2 ** (mac_acc.bits - 1))
    check(res.metrics["vs_dequantized"], res.output, exact_dequantized(qa, qb))
