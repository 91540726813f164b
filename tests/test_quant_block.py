"""Block (OCP MX v1.0) and vector (VS-Quant) scaling in quantize/QTensor, against direct
implementations of the published rules written here.

Oracles: the OCP MX v1.0 conversion rule (shared exponent floor(log2 amax) - emax of the
element format, with the element emax figures taken from the spec's tables, not from the
package), ml_dtypes for element rounding (float8/6/4 and e8m0 codes; float64 -> float32 by
round-to-odd first so ml_dtypes' cast rounds once), numpy rint for integer elements, the
two-level calibration of Dai et al. (MLSys 2021) written out per vector, and exact Fraction
products for dequantize."""
from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from accel_sim.quant import QTensor, quantize

from conftest import assert_codes_equal, assert_values_equal, f64_to_f32_round_to_odd, fmt

# OCP MX v1.0 element formats: (ml_dtypes type or None for integers, emax_elem from the spec)
MX_ELEMENTS = {
    "e4m3fn": (ml_dtypes.float8_e4m3fn, 8),    # MXFP8 E4M3
    "e5m2": (ml_dtypes.float8_e5m2, 15),       # MXFP8 E5M2
    "e2m3": (ml_dtypes.float6_e2m3fn, 2),      # MXFP6 E2M3
    "e3m2": (ml_dtypes.float6_e3m2fn, 4),      # MXFP6 E3M2
    "e2m1": (ml_dtypes.float4_e2m1fn, 2),      # MXFP4
    "mxint8": (None, 0),                       # MXINT8: int8 with an implicit 2^-6
}
ML_MAX = {"e4m3fn": 448.0, "e5m2": 57344.0, "e2m3": 7.5, "e3m2": 28.0, "e2m1": 6.0}


def heavy_blocks(rng, rows, cols, block):
    """Student-t data with a different magnitude per block, an all-zero block, a block far below
    e8m0's range, blocks whose amax is an exact power of two (either sign), and float32-exact
    values."""
    x = rng.standard_t(3, (rows, cols)) * np.exp2(rng.integers(-20, 20, (rows, cols // block))).repeat(block, 1)
    x[0, :block] = 0.0
    x[1, block:2 * block] *= 2.0 ** -150
    x[2, :block] = rng.uniform(-1, 1, block)
    x[2, 3] = -4.0
    x[2, :block] = np.clip(x[2, :block], -4.0, 4.0)
    x[3, :block] = np.linspace(-1, 1, block) * 2.0 ** 10
    return x


def mx_oracle(x, name, block):
    """(element codes, scale codes) per OCP MX v1.0 section 6.3 along the last axis."""
    dtype, emax = MX_ELEMENTS[name]
    rows, cols = x.shape
    scodes = np.zeros((rows, cols // block), np.int64)
    ecodes = np.zeros(x.shape, np.int64)
    for i in range(rows):
        for b in range(cols // block):
            v = x[i, b * block:(b + 1) * block]
            amax = max(abs(float(t)) for t in v)
            shared = -127 if amax == 0 else max(math.frexp(amax)[1] - 1 - emax, -127)
            scodes[i, b] = shared + 127
            p = v / 2.0 ** shared  # exact: a power of two
            if dtype is None:      # int8 k/64, rne, saturated to the two's complement range
                k = np.clip(np.rint(p * 64), -128, 127).astype(np.int64)
                ecodes[i, b * block:(b + 1) * block] = k & 0xFF
            else:
                p = np.clip(p, -ML_MAX[name], ML_MAX[name])
                ecodes[i, b * block:(b + 1) * block] = f64_to_f32_round_to_odd(p).astype(dtype).view(np.uint8)
    return ecodes, scodes


def element_values(name, codes):
    dtype, _ = MX_ELEMENTS[name]
    c = np.asarray(codes).astype(np.uint8)
    if dtype is None:
        return c.view(np.int8).astype(np.float64) / 64
    return c.view(dtype).astype(np.float64)


@pytest.mark.parametrize("name", list(MX_ELEMENTS))
def test_mx_scales_and_elements_match_the_ocp_rule(name, rng):
    x = heavy_blocks(rng, 12, 96, 32)
    q = quantize(x, name, scale="block")
    ecodes, scodes = mx_oracle(x, name, 32)
    assert q.block == 32 and q.block_axis == 1 and q.scale_format == "e8m0" and q.axis is None
    assert q.scale == np.float32(1.0) and q.block_scale_codes.dtype == np.uint8
    assert_codes_equal(q.block_scale_codes, scodes, what="e8m0 scale codes")
    assert scodes[0, 0] == 0 and scodes[1, 1] == 0   # amax 0, and a shared exponent below -127: clamped
    assert_codes_equal(q.codes, ecodes, inputs=x, what=f"{name} element codes")
    # e8m0 codes are ml_dtypes' float8_e8m0fnu of the scale, and the package's e8m0 format agrees
    pow2 = np.ldexp(1.0, scodes - 127).astype(np.float32).astype(ml_dtypes.float8_e8m0fnu).view(np.uint8)
    assert_codes_equal(q.block_scale_codes, pow2, what="e8m0 vs ml_dtypes")
    assert_values_equal(q.block_scales(), fmt("e8m0").decode(q.block_scale_codes))


@pytest.mark.parametrize("name", ["e4m3fn", "e2m1", "mxint8"])
def test_mx_along_axis_0_and_3d(name, rng):
    x = heavy_blocks(rng, 8, 64, 16)
    q = quantize(x.T.copy(), name, scale="block", block=16, axis=0)
    ecodes, scodes = mx_oracle(x, name, 16)
    assert q.block_axis == 0 and q.block_scale_codes.shape == (4, 8)
    assert_codes_equal(q.codes, ecodes.T)
    assert_codes_equal(q.block_scale_codes, scodes.T)
    x3 = rng.standard_t(3, (3, 4, 64))
    q = quantize(x3, name, scale="block", axis=-1)
    e, s = mx_oracle(x3.reshape(12, 64), name, 32)
    assert_codes_equal(q.codes, e.reshape(3, 4, 64))
    assert_codes_equal(q.block_scale_codes, s.reshape(3, 4, 2))


@pytest.mark.parametrize("name", list(MX_ELEMENTS))
def test_mx_dequantize_is_exact(name, rng):
    x = heavy_blocks(rng, 6, 64, 32)
    q = quantize(x, name, scale="block")
    got = q.dequantize()
    vals = element_values(name, q.codes)
    assert_values_equal(got, vals * np.repeat(np.ldexp(1.0, q.block_scale_codes.astype(np.int64) - 127), 32, 1))
    for i, j in zip(*np.nonzero(got)):
        want = Fraction(float(vals[i, j])) * Fraction(2) ** (int(q.block_scale_codes[i, j // 32]) - 127)
        assert Fraction(float(got[i, j])) == want


def test_mx_nan_scale_code_makes_the_block_nan():
    codes = np.zeros((2, 4), np.uint8)
    q = QTensor(codes, "e4m3fn", block=2, block_axis=1, block_scale_codes=np.array([[127, 255], [0, 254]]),
                scale_format="e8m0")
    d = q.dequantize()
    assert np.all(np.isnan(d[0, 2:])) and np.all(d[0, :2] == 0) and np.all(d[1] == 0)


def test_mx_float32_input_and_rounding_modes(rng):
    x = heavy_blocks(rng, 4, 64, 32).astype(np.float32)
    a = quantize(x, "e4m3fn", scale="block")
    b = quantize(x.astype(np.float64), "e4m3fn", scale="block")
    assert_codes_equal(a.codes, b.codes)
    q = quantize(x, "e2m1", scale="block", rounding="rtz")
    _, scodes = mx_oracle(x.astype(np.float64), "e2m1", 32)
    f = fmt("e2m1")
    want = f.encode(x.astype(np.float64) / np.repeat(np.ldexp(1.0, scodes - 127), 32, 1), rounding="rtz",
                    saturate=True)
    assert_codes_equal(q.codes, want)


def test_mx_scale_beyond_e8m0_is_an_error():
    x = np.full((1, 32), 1e300)
    with pytest.raises(ValueError, match="e8m0"):
        quantize(x, "e4m3fn", scale="block")


# ---------------------------------------------------------------------------------------
# VS-Quant
# ---------------------------------------------------------------------------------------

def vsq_oracle(x, name, block, scale_bits, coarse):
    """Dai et al. two-level scales along the last axis of 2-D x: per-vector fp scales
    s = amax / qmax, a coarse fp32 scale gamma = max(s) / (2^M - 1) per row (or tensor), integer
    scales round(s / gamma) in [1, 2^M - 1] (0 for an all-zero vector), elements round(x / (sq gamma))
    saturated (rne)."""
    bits = {"int4": 4, "int8": 8}[name]
    qmax, lo, hi = 2 ** (bits - 1) - 1, -2 ** (bits - 1), 2 ** (bits - 1) - 1
    top = 2 ** scale_bits - 1
    rows, cols = x.shape
    nb = cols // block
    s = np.array([[np.abs(x[i, b * block:(b + 1) * block]).max() / qmax for b in range(nb)] for i in range(rows)])
    if coarse == "row":
        gamma = np.array([np.float32(r.max() / top) if r.max() > 0 else np.float32(1) for r in s])
    else:
        gamma = np.full(rows, np.float32(s.max() / top))
    sq = np.zeros((rows, nb), np.int64)
    codes = np.zeros(x.shape, np.int64)
    for i in range(rows):
        g = float(gamma[i])
        for b in range(nb):
            if s[i, b] == 0:
                continue
            sq[i, b] = min(max(int(np.rint(s[i, b] / g)), 1), top)
            v = x[i, b * block:(b + 1) * block] / (sq[i, b] * g)
            codes[i, b * block:(b + 1) * block] = np.clip(np.rint(v), lo, hi).astype(np.int64) & ((1 << bits) - 1)
    return codes, sq, gamma.astype(np.float32)


@pytest.mark.parametrize("scale_format", ["uint4", "uint6", "uint8"])
@pytest.mark.parametrize("name", ["int4", "int8"])
def test_vsq_codes_and_scales_match_the_two_level_rule(name, scale_format, rng):
    x = rng.standard_t(3, (10, 64)) * rng.uniform(0.01, 5, (10, 1))
    x[3, 16:32] = 0.0
    x[4, :16] *= 1e-4  # a vector far below the row's largest: its integer scale is floored at 1
    bits = int(scale_format[4:])
    q = quantize(x, name, scale="vector", scale_format=scale_format)
    codes, sq, gamma = vsq_oracle(x, name, 16, bits, "row")
    assert q.block == 16 and q.scale_format == scale_format and q.axis == 0 and q.block_axis == 1
    assert_codes_equal(q.scale.view(np.uint32), gamma.view(np.uint32), what="coarse fp32 scales")
    assert_codes_equal(q.block_scale_codes, sq, what="integer vector scales")
    assert_codes_equal(q.codes, codes, inputs=x)
    assert sq[3, 1] == 0 and sq[4, 0] >= 1
    # dequantize: code * integer scale * fp32 gamma, exactly
    vals = q.codes.astype(np.int64)
    vals = np.where(vals >= (1 << (q.format.bits - 1)), vals - (1 << q.format.bits), vals)
    want = vals * np.repeat(sq, 16, 1).astype(np.float64) * gamma.astype(np.float64)[:, None]
    assert_values_equal(q.dequantize(), want)


def test_vsq_per_tensor_coarse_scale(rng):
    x = rng.standard_t(3, (6, 48))
    q = quantize(x, "int4", scale="vector", scale_format="uint4", coarse="tensor")
    codes, sq, gamma = vsq_oracle(x, "int4", 16, 4, "tensor")
    assert q.axis is None and q.scale.view(np.uint32) == gamma[0].view(np.uint32)
    assert_codes_equal(q.block_scale_codes, sq)
    assert_codes_equal(q.codes, codes)
    q3 = quantize(rng.standard_t(3, (2, 3, 32)), "int4", scale="vector")   # N-D: per tensor
    assert q3.axis is None and q3.block_scale_codes.shape == (2, 3, 2)


def test_vsq_int4_error_well_below_per_tensor_and_per_channel_int4():
    """Heavy-tailed data (student-t, 3 degrees of freedom): VSQ-INT4 with uint4 scales per 16
    elements against INT4 with one scale, and with one scale per row."""
    x = np.random.default_rng(2021).standard_t(3, (256, 1024))

    def rel(q):
        return float(np.linalg.norm(q.dequantize() - x) / np.linalg.norm(x))

    e_tensor = rel(quantize(x, "int4", scale="tensor"))
    e_channel = rel(quantize(x, "int4", scale="channel", axis=0))
    e_vsq = rel(quantize(x, "int4", scale="vector", block=16, scale_format="uint4"))
    print(f"relative Frobenius error: INT4 per tensor {e_tensor:.4f}, per channel {e_channel:.4f}, "
          f"VSQ-INT4 (uint4 per 16) {e_vsq:.4f}")
    assert e_vsq < 0.5 * e_channel < 0.5 * e_tensor


# ---------------------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------------------

def test_bad_block_arguments(rng):
    x = rng.standard_normal((4, 48))
    with pytest.raises(ValueError, match="block=32 does not divide axis 1 of length 48"):
        quantize(x, "e4m3fn", scale="block")
    with pytest.raises(ValueError, match="does not divide"):
        quantize(x, "int4", scale="vector", block=10)
    with pytest.raises(ValueError, match="scale_format for scale='block' must be one of"):
        quantize(x, "e4m3fn", scale="block", block=16, scale_format="uint4")
    with pytest.raises(ValueError, match="scale_format for scale='vector' must be one of"):
        quantize(x, "int4", scale="vector", scale_format="e8m0")
    with pytest.raises(ValueError, match="scale_format .* got 'fp8'"):
        quantize(x, "int4", scale="vector", scale_format="fp8")
    with pytest.raises(TypeError, match="block must be an integer"):
        quantize(x, "int4", scale="vector", block=16.0)
    with pytest.raises(ValueError, match="block must be positive"):
        quantize(x, "int4", scale="vector", block=0)
    with pytest.raises(ValueError, match="calibrates by absmax"):
        quantize(x, "int4", scale="vector", calibration="mse")
    with pytest.raises(ValueError, match="coarse applies to scale='vector'"):
        quantize(x, "e4m3fn", scale="block", block=16, coarse="row")
    with pytest.raises(ValueError, match="coarse must be 'row' or 'tensor'"):
        quantize(x, "int4", scale="vector", coarse="col")
    with pytest.raises(ValueError, match="needs a 2-D x"):
        quantize(rng.standard_normal((2, 2, 16)), "int4", scale="vector", coarse="row")
    with pytest.raises(ValueError, match="apply to scale='block' or 'vector'"):
        quantize(x, "int8", scale="tensor", block=16)
    with pytest.raises(ValueError, match="at least one axis"):
        quantize(np.float64(1.0), "int8", scale="block")
    with pytest.raises(ValueError, match="out of range"):
        quantize(x, "int8", scale="block", block=16, axis=2)
    with pytest.raises(ValueError, match="NaN or inf"):
        quantize(np.full((1, 32), np.nan), "e4m3fn", scale="block")


def test_bad_qtensor_block_arguments():
    codes = np.zeros((2, 8), np.uint8)
    ok = dict(block=4, block_axis=1, block_scale_codes=np.zeros((2, 2), np.uint8), scale_format="e8m0")
    assert QTensor(codes, "e4m3fn", **ok).is_block_scaled
    with pytest.raises(ValueError, match="together"):
        QTensor(codes, "e4m3fn", block=4)
    with pytest.raises(ValueError, match=r"must have shape \(2, 2\)"):
        QTensor(codes, "e4m3fn", **dict(ok, block_scale_codes=np.zeros((2, 3), np.uint8)))
    with pytest.raises(ValueError, match=r"must lie in \[0, 15\] for uint4"):
        QTensor(codes, "int4", **dict(ok, block_scale_codes=np.full((2, 2), 16), scale_format="uint4"))
    with pytest.raises(TypeError, match="integer array"):
        QTensor(codes, "e4m3fn", **dict(ok, block_scale_codes=np.zeros((2, 2))))
    with pytest.raises(ValueError, match="scale_format must be one of"):
        QTensor(codes, "e4m3fn", **dict(ok, scale_format="e4m3"))
    with pytest.raises(ValueError, match="does not divide"):
        QTensor(codes, "e4m3fn", **dict(ok, block=3))
    with pytest.raises(ValueError, match="must differ from block_axis"):
        QTensor(codes, "e4m3fn", scale=np.ones(8), axis=1, **ok)
    with pytest.raises(ValueError, match="has no block scales"):
        QTensor(codes, "e4m3fn").block_scales()
