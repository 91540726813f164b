"""The one-pass error sums behind Result.metrics (csrc/metrics.c, _metrics.ErrorSums.add):
bit for bit the same in the portable, AVX2 and AVX-512 builds, and against a straightforward
numpy computation: the reference r = (R * (sa_i * sb_j)) + bias_j and max |out - r| exactly,
each sum within float64 summation's bound of its correctly rounded value (math.fsum of the
same terms): |s - fsum| <= (N - 1) 2^-53 sum |terms|, N terms added one by one in any order."""
import math

import numpy as np
import pytest

import accel_sim as acs
from accel_sim import _metrics
from accel_sim._native import vector_isa
from accel_sim.quant import quantize

U = 2.0 ** -53
SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan, np.finfo(np.float32).max, -np.finfo(np.float32).max,
            np.finfo(np.float32).tiny, 1.0, -1.0]
SHAPES = [(1, 1), (1, 16), (3, 17), (5, 33), (2, 15), (7, 100), (4, 64)]
OUT_TYPES = [np.float32, np.float64]
REF_TYPES = [np.float64, np.float32, np.int32, np.int64]


def block(shape, out_type, ref_type, rng, specials=False, strided=False):
    """out and R blocks (views with a row stride when strided), row scales, column scales, bias."""
    m, n = shape
    wide = (m, n + 5) if strided else (m, n)
    out = rng.standard_normal(wide).astype(out_type)
    if np.dtype(ref_type).kind == "i":
        big = 2 ** 52 if ref_type == np.int64 else 2 ** 31 - 1
        ref = rng.integers(-big, big, wide, dtype=ref_type)
    else:
        ref = (out + 1e-3 * rng.standard_normal(wide)).astype(ref_type)
    if specials:
        for x in (out, ref) if ref.dtype.kind == "f" else (out,):
            picks = rng.integers(0, x.size, max(1, x.size // 8))
            x.flat[picks] = np.array(SPECIALS, x.dtype)[rng.integers(0, len(SPECIALS), picks.size)]
    sa = rng.standard_normal(m).astype(np.float32).astype(np.float64)
    sb = rng.standard_normal(n).astype(np.float32).astype(np.float64)
    bias = rng.standard_normal(n)
    if strided:
        out, ref = out[:, 2:n + 2], ref[:, 1:n + 1]
    return out, ref, sa, sb, bias


def sums(out, ref, sa=None, sb=None, bias=None):
    s = _metrics.ErrorSums()
    s.add(out, ref, sa, sb, bias)
    return s


def bits(s):
    return [np.float64(v).view(np.uint64) for v in (s.out_sq, s.ref_sq, s.dot, s.err_sq, s.max_abs)] + [s.nonfinite]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("out_type", OUT_TYPES)
@pytest.mark.parametrize("ref_type", REF_TYPES)
@pytest.mark.parametrize("specials", [False, True])
def test_builds_agree_bit_for_bit(shape, out_type, ref_type, specials):
    rng = np.random.default_rng(hash((shape, out_type, ref_type, specials)) % 2 ** 32)
    for strided in (False, True):
        out, ref, sa, sb, bias = block(shape, out_type, ref_type, rng, specials, strided)
        for args in ((), (sa, sb, bias), (sa[:1], sb, None), (None, None, bias)):
            results = []
            for level in (0, 2, 1):
                with vector_isa(level):
                    results.append(bits(sums(out, ref, *args)))
            assert results[0] == results[1] == results[2], (strided, len(args))


def fsum_bound(terms, value):
    """value is a float64 sum of terms (added one at a time, any order)."""
    terms = np.asarray(terms, np.float64).reshape(-1)
    exact = math.fsum(terms)
    slack = max(terms.size - 1, 0) * U * math.fsum(np.abs(terms))
    assert abs(value - exact) <= slack + 2 * U * abs(exact), (value, exact, slack)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("out_type", OUT_TYPES)
@pytest.mark.parametrize("ref_type", REF_TYPES)
def test_sums_against_numpy(shape, out_type, ref_type):
    rng = np.random.default_rng(hash((shape, out_type, ref_type)) % 2 ** 32)
    out, ref, sa, sb, bias = block(shape, out_type, ref_type, rng, strided=True)
    for args in ((), (sa, sb, bias), (sa[:1], sb, None)):
        s = sums(out, ref, *args)
        x = out.astype(np.float64)
        r = ref.astype(np.float64)                  # exact: int64 values below 2^53
        if args:
            r = r * (args[0][:, None] * args[1][None, :])
            if args[2] is not None:
                r = r + args[2]
        e = x - r
        assert s.max_abs == np.max(np.abs(e)) and s.nonfinite == 0 and s.size == out.size
        for value, terms in ((s.out_sq, x * x), (s.ref_sq, r * r), (s.dot, x * r), (s.err_sq, e * e)):
            fsum_bound(terms, value)


@pytest.mark.parametrize("out_type", OUT_TYPES)
@pytest.mark.parametrize("ref_type", REF_TYPES)
def test_integer_sums_exact(out_type, ref_type):
    """Integer values whose every partial sum stays below 2^53: each sum exact, in any order."""
    rng = np.random.default_rng(12)
    out = rng.integers(-2 ** 11, 2 ** 11, (9, 37)).astype(out_type)
    ref = rng.integers(-2 ** 11, 2 ** 11, (9, 37)).astype(ref_type)
    s = sums(out, ref)
    x, r = out.astype(np.int64), ref.astype(np.int64)
    assert (s.out_sq, s.ref_sq, s.dot, s.err_sq, s.max_abs) == tuple(
        float(v) for v in (np.sum(x * x), np.sum(r * r), np.sum(x * r), np.sum((x - r) ** 2), np.max(np.abs(x - r))))


def test_nonfinite_and_nan():
    out = np.array([[1.0, np.inf, 2.0], [np.nan, 0.0, -np.inf]])
    s = sums(out, np.zeros((2, 3)))
    assert s.nonfinite == 3 and s.result()["rel_fro"] == math.inf
    # a NaN reference (a float64 input holding NaN): the error and its maximum are NaN
    s = sums(np.ones((2, 20)), np.where(np.arange(40).reshape(2, 20) == 27, np.nan, 1.0))
    assert s.nonfinite == 0 and math.isnan(s.err_sq) and math.isnan(s.max_abs)
    m = _metrics.ErrorSums()
    m.merge(s)
    m.merge(sums(np.full((1, 3), 5.0), np.zeros((1, 3))))
    assert math.isnan(m.max_abs)
    # signed zeros: -0 against +0 is no error
    s = sums(np.full((1, 17), -0.0), np.zeros((1, 17)))
    assert (s.err_sq, s.max_abs, s.out_sq) == (0.0, 0.0, 0.0)


def test_any_shape_and_layout():
    """error_metrics takes any shapes numpy broadcasts, any dtype, any strides."""
    rng = np.random.default_rng(3)
    out = rng.standard_normal((3, 4, 5)).astype(np.float32)
    for ref in (rng.standard_normal((3, 4, 5)), rng.standard_normal(5), rng.standard_normal((4, 1)),
                rng.integers(-5, 5, (3, 4, 5)).astype(np.int16), rng.standard_normal((5, 4, 3)).T):
        m = _metrics.error_metrics(out, ref)
        x, r = np.broadcast_arrays(out.astype(np.float64), np.asarray(ref, np.float64))
        e = (x - r).reshape(-1)
        assert m["max_abs"] == np.max(np.abs(e))
        assert math.isclose(m["rel_fro"], math.sqrt(math.fsum(e * e) / math.fsum((r * r).reshape(-1))), rel_tol=1e-13)
    x2, r2 = rng.standard_normal((6, 9)), rng.standard_normal((6, 9))
    for o, r in ((x2[::-1], r2), (x2, r2[::-2].repeat(2, 0)[::-1]), (x2[:, ::-1], r2.T.copy().T)):
        m = _metrics.error_metrics(o, r)    # negative and odd row strides, reversed columns
        assert m["max_abs"] == np.max(np.abs(o - r))
    for shape in ((), (0,), (3, 0), (0, 4)):
        assert _metrics.error_metrics(np.ones(shape), np.ones(shape))["max_abs"] == 0.0


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("fmt,acc", [("int8", "int32"), ("e4m3fn", "fp32"), ("int8", "fp32"), ("e5m2", "fp32")])
def test_gemm_metrics_same_in_every_build(dataflow, threads, fmt, acc):
    """A GEMM's metrics (every reference path: an accumulator's exact sums, sgemm and dgemm of
    codes, dgemm of floats) are the same bits in the portable and vector builds."""
    rng = np.random.default_rng(threads)
    a, b = rng.standard_normal((37, 45)).astype(np.float32), rng.standard_normal((45, 19)).astype(np.float32)
    bias = rng.standard_normal(19)
    arr = acs.Array(4, 8, dataflow, acs.MAC(fmt, fmt, acc), threads=threads, quant={"a": "channel", "b": "channel"})
    results = []
    for level in (0, 2, 1):
        with vector_isa(level):
            results.append(arr.gemm(a, b, bias=bias).metrics)
    assert results[0] == results[1] == results[2]
    qa = quantize(a, fmt, scale="channel", axis=0)
    qb = quantize(b, fmt, scale="channel", axis=1)
    assert _metrics.exact_accumulator(arr.mac.acc, arr.buffer_acc if dataflow != "os" else arr.mac.acc,
                                      qa, qb, 45) == (fmt == "int8" and acc == "int32")
