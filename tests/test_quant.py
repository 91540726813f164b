"""QTensor and post-training quantization against numpy recomputations (scales bit for bit,
codes exactly, dequantized values exactly)."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import accel_sim as acs
from accel_sim.quant import QTensor, quantize

from conftest import FLOAT_DTYPES, INT_NAMES, INT_RANGES, assert_codes_equal, assert_values_equal, fmt

QUANT_FORMATS = ["int8", "uint8", "int4", "e4m3fn", "e5m2", "e4m3fnuz", "e3m4", "bf16", "fp16"]


def _decode_oracle(name, codes):
    """Code values from ml_dtypes / numpy (not from the package)."""
    codes = np.asarray(codes)
    if name in FLOAT_DTYPES:
        return codes.astype(fmt(name).code_dtype).view(FLOAT_DTYPES[name]).astype(np.float64)
    lo, hi = INT_RANGES[name]
    c = codes.astype(np.int64)
    return np.where(c > hi, c - (1 << fmt(name).bits), c).astype(np.float64)


def _scale_oracle(amax, fmt_max):
    s = np.float32(np.float64(amax) / fmt_max)
    return np.float32(1.0) if not (amax > 0 and s > 0) else s


def _broadcast(scales, ndim, axis):
    if axis is None:
        return np.float64(scales)
    shape = [1] * ndim
    shape[axis] = -1
    return np.asarray(scales, np.float64).reshape(shape)


def _weights(rng, shape):
    w = rng.standard_t(4, shape) * rng.uniform(0.01, 3.0, (shape[0],) + (1,) * (len(shape) - 1))
    return w


# ---------------------------------------------------------------------------------------
# QTensor
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", QUANT_FORMATS)
def test_dequantize_is_decode_times_scale(name, rng):
    f = fmt(name)
    codes = rng.integers(0, 1 << f.bits, (6, 5, 4)).astype(f.code_dtype)
    scale = np.float32(rng.uniform(1e-3, 10))
    q = QTensor(codes, name, scale=scale)
    want = _decode_oracle(name, codes) * np.float64(scale)
    assert q.dequantize().dtype == np.float64
    assert_values_equal(q.dequantize(), want)
    assert q.shape == codes.shape and q.ndim == 3 and q.format is f and q.axis is None
    assert q.scale.dtype == np.float32 and q.scale.shape == ()
    for axis in (0, 1, 2, -1):
        s = rng.uniform(1e-3, 10, codes.shape[axis]).astype(np.float32)
        q = QTensor(codes, name, scale=s, axis=axis)
        ax = axis % 3
        assert q.axis == ax and q.scale.dtype == np.float32
        assert_values_equal(q.dequantize(), _decode_oracle(name, codes) * _broadcast(s, 3, ax))


def test_qtensor_scale_is_float32_and_exact_product():
    """Scales are stored as float32 (rounded from float64 once) and the product is exact."""
    f = fmt("e4m3fn")
    codes = f.all_codes()
    q = QTensor(codes, "e4m3fn", scale=0.1)
    assert q.scale == np.float32(0.1)
    want = _decode_oracle("e4m3fn", codes) * np.float64(np.float32(0.1))
    assert_values_equal(q.dequantize(), want)
    # exactness: every product equals the exact rational product
    for c, v in zip(codes.tolist(), q.dequantize().tolist()):
        d = _decode_oracle("e4m3fn", np.array([c]))[0]
        if math.isfinite(d):
            assert Fraction(v) == Fraction(d) * Fraction(float(np.float32(0.1)))


def test_qtensor_accepts_codes_of_any_integer_dtype():
    codes = np.array([[0, 1, 127], [128, 200, 255]])
    q = QTensor(codes, "int8", scale=2.0)
    assert q.codes.dtype == np.uint8
    assert_values_equal(q.dequantize(), np.array([[0, 1, 127], [-128, -56, -1]]) * 2.0)


# ---------------------------------------------------------------------------------------
# quantize: absmax (tensor / channel)
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", QUANT_FORMATS)
def test_quantize_tensor_absmax(name, rng):
    f = fmt(name)
    x = _weights(rng, (16, 24))
    if name == "uint8":
        x = np.abs(x)
    q = quantize(x, name, scale="tensor")
    s = _scale_oracle(np.abs(x).max(), f.max)
    assert q.scale.dtype == np.float32 and q.scale.shape == ()
    assert q.scale.view(np.uint32) == s.view(np.uint32)
    assert q.axis is None and q.format is f
    assert_codes_equal(q.codes, f.encode(x / np.float64(s), saturate=True))
    assert_values_equal(q.dequantize(), _decode_oracle(name, q.codes) * np.float64(s))
    if name in INT_NAMES:  # independent of the package's encoder
        lo, hi = INT_RANGES[name]
        k = np.clip(np.rint(x / np.float64(s)), lo, hi).astype(np.int64)
        assert_codes_equal(q.codes, k & ((1 << f.bits) - 1))


@pytest.mark.parametrize("axis", [0, 1, -1, 2])
@pytest.mark.parametrize("name", ["int8", "e4m3fn", "e5m2", "int4", "bf16"])
def test_quantize_channel_absmax(name, axis, rng):
    f = fmt(name)
    x = _weights(rng, (8, 6, 10))
    q = quantize(x, name, scale="channel", axis=axis)
    ax = axis % 3
    red = tuple(i for i in range(3) if i != ax)
    amax = np.abs(x).max(axis=red)
    s = np.array([_scale_oracle(a, f.max) for a in amax], np.float32)
    assert q.axis == ax and q.scale.dtype == np.float32 and q.scale.shape == (x.shape[ax],)
    assert_codes_equal(q.scale.view(np.uint32), s.view(np.uint32), what="scales")
    assert_codes_equal(q.codes, f.encode(x / _broadcast(s, 3, ax), saturate=True))
    assert_values_equal(q.dequantize(), _decode_oracle(name, q.codes) * _broadcast(s, 3, ax))


def test_quantize_channel_default_axis_is_zero(rng):
    x = _weights(rng, (5, 7))
    a, b = quantize(x, "int8", scale="channel"), quantize(x, "int8", scale="channel", axis=0)
    assert a.axis == 0
    assert_codes_equal(a.codes, b.codes)
    assert_codes_equal(a.scale.view(np.uint32), b.scale.view(np.uint32))


def test_quantize_zero_channel_gets_scale_one(rng):
    x = _weights(rng, (4, 9))
    x[2] = 0.0
    q = quantize(x, "e4m3fn", scale="channel")
    assert q.scale[2] == np.float32(1.0)
    assert np.all(q.codes[2] == 0)
    q = quantize(np.zeros((3, 3)), "int8")
    assert q.scale == np.float32(1.0) and np.all(q.codes == 0)


def test_quantize_max_maps_to_format_max(rng):
    """With absmax, the largest magnitude lands on (or next to) the format's max."""
    x = _weights(rng, (4, 50))
    for name in ("int8", "e4m3fn", "e5m2"):
        f = fmt(name)
        q = quantize(x, name, scale="channel")
        top = np.abs(f.decode(q.codes)).max(axis=1)
        assert np.all(top >= f.max * 0.99)


@pytest.mark.parametrize("mode", ["rne", "rtz", "sr"])
def test_quantize_passes_rounding_and_seed(mode, rng):
    x = _weights(rng, (6, 40))
    f = fmt("e4m3fn")
    q = quantize(x, "e4m3fn", scale="tensor", rounding=mode, seed=99)
    s = _scale_oracle(np.abs(x).max(), f.max)
    assert_codes_equal(q.codes, f.encode(x / np.float64(s), rounding=mode, saturate=True, seed=99))


def test_quantize_explicit_scales(rng):
    x = _weights(rng, (4, 10))
    f = fmt("int8")
    s = np.array([0.01, 0.02, 0.5, 3.0])
    q = quantize(x, "int8", scale=s, axis=0)
    assert_codes_equal(q.scale.view(np.uint32), s.astype(np.float32).view(np.uint32))
    assert_codes_equal(q.codes, f.encode(x / s.astype(np.float32).astype(np.float64)[:, None], saturate=True))
    q = quantize(x, "int8", scale=0.05)
    assert q.scale == np.float32(0.05)
    assert_codes_equal(q.codes, f.encode(x / np.float64(np.float32(0.05)), saturate=True))
    with pytest.raises(ValueError, match="outside"):
        quantize(x, "int8", scale=1e-4, saturate=False)


# ---------------------------------------------------------------------------------------
# calibration: percentile and mse
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("pct", [99.0, 99.99, 50.0, 100])
@pytest.mark.parametrize("scale", ["tensor", "channel"])
def test_quantize_percentile(scale, pct, rng):
    x = _weights(rng, (6, 200))
    f = fmt("int8")
    q = quantize(x, "int8", scale=scale, calibration="percentile", percentile=pct)
    if scale == "tensor":
        s = _scale_oracle(np.percentile(np.abs(x), pct), f.max)
        assert q.scale.view(np.uint32) == s.view(np.uint32)
        b = np.float64(s)
    else:
        amax = np.percentile(np.abs(x), pct, axis=1)
        s = np.array([_scale_oracle(a, f.max) for a in amax], np.float32)
        assert_codes_equal(q.scale.view(np.uint32), s.view(np.uint32), what="scales")
        b = s.astype(np.float64)[:, None]
    assert_codes_equal(q.codes, f.encode(x / b, saturate=True))


def _mse_amax(xc, f, rounding="rne"):
    """Brute force: the candidate amax*k/100 (k = 1..100) of least squared error; the first
    (smallest k) of equal errors.  Errors summed exactly (math.fsum)."""
    amax = float(np.abs(xc).max())
    best, best_err = amax, math.inf
    for k in range(1, 101):
        clip = amax * k / 100
        s = np.float64(_scale_oracle(clip, f.max))
        qv = f.decode(f.encode(xc / s, rounding=rounding, saturate=True)) * s
        err = math.fsum(((qv - xc) ** 2).tolist())
        if err < best_err:
            best, best_err = clip, err
    return best


@pytest.mark.parametrize("name", ["int8", "int4", "e4m3fn", "e5m2"])
def test_quantize_mse_channel(name, rng):
    f = fmt(name)
    x = _weights(rng, (6, 64))
    x[1, 5] *= 40  # an outlier: the best clip is well below absmax
    q = quantize(x, name, scale="channel", calibration="mse")
    s = np.array([_scale_oracle(_mse_amax(x[c], f), f.max) for c in range(x.shape[0])], np.float32)
    assert_codes_equal(q.scale.view(np.uint32), s.view(np.uint32), what="scales")
    assert_codes_equal(q.codes, f.encode(x / s.astype(np.float64)[:, None], saturate=True))
    if name in ("int8", "int4"):
        assert q.scale[1] < np.float32(np.abs(x[1]).max() / f.max)  # the outlier got clipped


def test_quantize_mse_tensor_and_channel_axis1(rng):
    f = fmt("int4")
    x = _weights(rng, (5, 30)).T.copy()  # channels along axis 1
    q = quantize(x, "int4", scale="channel", axis=1, calibration="mse")
    s = np.array([_scale_oracle(_mse_amax(x[:, c], f), f.max) for c in range(x.shape[1])], np.float32)
    assert_codes_equal(q.scale.view(np.uint32), s.view(np.uint32), what="scales")
    q = quantize(x, "int4", scale="tensor", calibration="mse")
    s = _scale_oracle(_mse_amax(x.reshape(-1), f), f.max)
    assert q.scale.view(np.uint32) == s.view(np.uint32)
    assert_codes_equal(q.codes, f.encode(x / np.float64(s), saturate=True))


def test_quantize_accepts_float32_and_int_inputs(rng):
    x = _weights(rng, (4, 8)).astype(np.float32)
    f = fmt("int8")
    q = quantize(x, "int8")
    s = _scale_oracle(np.abs(x.astype(np.float64)).max(), f.max)
    assert q.scale.view(np.uint32) == s.view(np.uint32)
    assert_codes_equal(q.codes, f.encode(x.astype(np.float64) / np.float64(s), saturate=True))
    xi = np.arange(-20, 20).reshape(4, 10)
    q = quantize(xi, "e4m3fn", scale="channel")
    s = np.array([_scale_oracle(a, 448.0) for a in np.abs(xi).max(axis=1)], np.float32)
    assert_codes_equal(q.scale.view(np.uint32), s.view(np.uint32), what="scales")


def test_quantize_accepts_format_objects(rng):
    x = _weights(rng, (3, 5))
    f = acs.formats.FloatFormat(3, 2)
    q = quantize(x, f)
    assert q.format is f
    s = _scale_oracle(np.abs(x).max(), f.max)
    assert_codes_equal(q.codes, f.encode(x / np.float64(s), saturate=True))
