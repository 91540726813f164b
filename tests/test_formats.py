"""Formats: decode of every code and round-to-nearest-even encode, bit for bit against
ml_dtypes / numpy (and the exact reference model where those oracles double-round)."""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

import accel_sim as acs
from accel_sim import reference as ref
from accel_sim.formats import FloatFormat

from conftest import (FLOAT8_DTYPES, FLOAT_DTYPES, FLOAT_NAMES, INT_NAMES, INT_RANGES, NAMED,
                      assert_codes_equal, assert_float_codes_match, assert_values_equal,
                      edge_inputs, f64_to_f32_round_to_odd, fmt, mixed_inputs, random_in_range,
                      random_patterns)

N_RANDOM = 10**6


# ---------------------------------------------------------------------------------------
# registry and properties
# ---------------------------------------------------------------------------------------

def test_names_cover_the_documented_formats():
    for name in NAMED + ["fp32"]:
        assert name in acs.formats.names()
        f = fmt(name)
        assert f.name == name
        assert acs.formats.get(f) is f


@pytest.mark.parametrize("name", FLOAT_NAMES)
def test_float_properties_match_finfo(name):
    f, info = fmt(name), ml_dtypes.finfo(FLOAT_DTYPES[name])
    assert f.bits == info.bits
    assert f.max == float(info.max)
    assert f.min_normal == float(info.smallest_normal)
    assert f.min_subnormal == float(info.smallest_subnormal)
    assert f.code_dtype == (np.uint8 if f.bits == 8 else np.uint16)


@pytest.mark.parametrize("name", INT_NAMES)
def test_int_properties(name):
    f = fmt(name)
    lo, hi = INT_RANGES[name]
    assert (f.bits, f.max, f.min) == ({"int8": 8, "uint8": 8, "int4": 4}[name], hi, lo)
    assert f.code_dtype == np.uint8


# ---------------------------------------------------------------------------------------
# 1. decode of every code
# ---------------------------------------------------------------------------------------

def _oracle_values(name, codes):
    if name in FLOAT_DTYPES:
        with np.errstate(invalid="ignore"):
            return codes.astype(fmt(name).code_dtype).view(FLOAT_DTYPES[name]).astype(np.float64)
    if name == "int8":
        return codes.astype(np.uint8).view(np.int8).astype(np.float64)
    if name == "uint8":
        return codes.astype(np.float64)
    if name == "int4":
        nibble = np.arange(16, dtype=np.uint8).view(ml_dtypes.int4).astype(np.int64)
        return nibble[codes.astype(np.int64)].astype(np.float64)
    raise KeyError(name)


def test_int4_oracle_is_twos_complement_nibbles():
    nib = np.arange(16, dtype=np.uint8).view(ml_dtypes.int4).astype(np.int64)
    assert nib.tolist() == list(range(8)) + list(range(-8, 0))


@pytest.mark.parametrize("name", NAMED)
def test_decode_every_code(name):
    f = fmt(name)
    codes = f.all_codes()
    assert codes.size == 1 << f.bits
    got = f.decode(codes)
    assert got.dtype == np.float64 and got.shape == codes.shape
    assert_values_equal(got, _oracle_values(name, codes), codes, nan_sign=True)


@pytest.mark.parametrize("name", NAMED)
def test_decode_large_and_any_integer_dtype(name, rng):
    """Large arrays (the engine's per-format decode table) and other integer dtypes agree."""
    f = fmt(name)
    codes = rng.integers(0, 1 << f.bits, (300, 7))
    want = _oracle_values(name, codes)
    for c in (codes, codes.astype(np.int32), codes.astype(f.code_dtype), codes.astype(np.uint64),
              np.asfortranarray(codes), codes[::-1, ::2]):
        w = want if c.shape == codes.shape else _oracle_values(name, np.asarray(c))
        got = f.decode(c)
        assert got.shape == c.shape
        assert_values_equal(got, w, nan_sign=True)


def test_decode_fp32_random_codes(rng):
    f = fmt("fp32")
    codes = np.concatenate([rng.integers(0, 2**32, N_RANDOM, dtype=np.uint64).astype(np.uint32),
                            np.array([0, 1, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001,
                                      0x7F7FFFFF, 0x80000000, 0x807FFFFF, 0x00800000], np.uint32)])
    got = f.decode(codes)
    with np.errstate(invalid="ignore"):
        want = codes.view(np.float32).astype(np.float64)
    assert_values_equal(got, want, codes, nan_sign=True)


@pytest.mark.slow
def test_decode_fp32_every_code():
    f = fmt("fp32")
    step = 1 << 26
    for start in range(0, 1 << 32, step):
        codes = np.arange(start, start + step, dtype=np.uint64).astype(np.uint32)
        with np.errstate(invalid="ignore"):
            want = codes.view(np.float32).astype(np.float64)
        assert_values_equal(f.decode(codes), want, codes)


@pytest.mark.parametrize("name", [n for n in FLOAT_NAMES if n != "fp16"])
def test_decode_then_encode_round_trips(name):
    f = fmt(name)
    codes = f.all_codes()
    v = f.decode(codes)
    finite = ~np.isnan(v)
    back = f.encode(v[finite])
    assert_codes_equal(back, codes[finite], v[finite])


def test_fp16_round_trips():
    f = fmt("fp16")
    codes = f.all_codes()
    v = f.decode(codes)
    finite = ~np.isnan(v)
    assert_codes_equal(f.encode(v[finite]), codes[finite])
    assert_codes_equal(f.encode(v[finite].astype(np.float32)), codes[finite])


# ---------------------------------------------------------------------------------------
# 2. encode (rne) against ml_dtypes / numpy
# ---------------------------------------------------------------------------------------

def _oracle_encode_f32(name, x, saturate):
    f, dt = fmt(name), FLOAT_DTYPES[name]
    if saturate:
        x = np.clip(x, np.float32(-f.max), np.float32(f.max))  # NaN stays NaN
    with np.errstate(over="ignore", invalid="ignore"):
        return x.astype(dt).view(f.code_dtype)


@pytest.mark.parametrize("saturate", [False, True], ids=["inf_or_nan", "saturate"])
@pytest.mark.parametrize("name", FLOAT_NAMES)
def test_encode_f32_matches_ml_dtypes(name, saturate, rng):
    f = fmt(name)
    x = mixed_inputs(rng, f, np.float32, N_RANDOM)
    assert x.size >= N_RANDOM
    got = f.encode(x, rounding="rne", saturate=saturate)
    assert got.dtype == f.code_dtype and got.shape == x.shape
    assert_float_codes_match(got, _oracle_encode_f32(name, x, saturate), f.code_dtype,
                             FLOAT_DTYPES[name], x)


@pytest.mark.parametrize("saturate", [False, True], ids=["inf_or_nan", "saturate"])
@pytest.mark.parametrize("name", FLOAT_NAMES)
def test_encode_f32_edges_small_arrays(name, saturate):
    """The same edge set through small calls (below the engine's table threshold)."""
    f = fmt(name)
    x = edge_inputs(f, np.float32)
    got = np.concatenate([f.encode(x[i:i + 999], saturate=saturate) for i in range(0, x.size, 999)])
    assert_float_codes_match(got, _oracle_encode_f32(name, x, saturate), f.code_dtype,
                             FLOAT_DTYPES[name], x)


@pytest.mark.parametrize("name", [n for n in FLOAT_NAMES if n != "fp16"])
def test_nan_codes_are_ml_dtypes_codes(name, rng):
    """Any float32 NaN (any payload, either sign) gives exactly ml_dtypes' NaN code."""
    f, dt = fmt(name), FLOAT_DTYPES[name]
    bits = rng.integers(1, 2**23, 50000).astype(np.uint32) | np.uint32(0x7F800000)
    bits |= rng.integers(0, 2, 50000).astype(np.uint32) << np.uint32(31)
    x = bits.view(np.float32)
    assert np.all(np.isnan(x))
    with np.errstate(invalid="ignore"):
        want = x.astype(dt).view(f.code_dtype)
        x64 = x.astype(np.float64)
    for sat in (False, True):
        assert_codes_equal(f.encode(x, saturate=sat), want, x)
        assert_codes_equal(f.encode(x64, saturate=sat), want, x)


def test_fp16_nan_code_is_canonical_quiet_nan():
    f = fmt("fp16")
    assert f.encode(np.array([np.nan, -np.nan])).tolist() == [0x7E00, 0xFE00]


@pytest.mark.parametrize("name", FLOAT_NAMES)
def test_encode_float16_input_equals_float32(name):
    f = fmt(name)
    h = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    for sat in (False, True):
        assert_codes_equal(f.encode(h, saturate=sat), f.encode(h.astype(np.float32), saturate=sat))


@pytest.mark.parametrize("saturate", [False, True], ids=["inf", "saturate"])
def test_encode_fp32_from_float64_matches_numpy(saturate, rng):
    f = fmt("fp32")
    x = np.concatenate([random_patterns(rng, N_RANDOM // 2, np.float64),
                        random_in_range(rng, N_RANDOM // 2, f, np.float64),
                        edge_inputs(fmt("bf16"), np.float64),
                        np.array([3.4028235677973366e38, 3.4028235677973362e38, 3.402823567797337e38,
                                  2.0**-150, -(2.0**-150), 2.0**-150 * 1.0000001, 1.5 * 2.0**-149,
                                  2.5 * 2.0**-149, np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0])])
    xin = np.clip(x, -f.max, f.max) if saturate else x
    with np.errstate(over="ignore", invalid="ignore"):
        want = xin.astype(np.float32).view(np.uint32)
    got = f.encode(x, saturate=saturate)
    assert got.dtype == np.uint32
    assert_float_codes_match(got, want, np.uint32, np.float32, x)


def test_encode_fp32_from_float32_is_identity(rng):
    f = fmt("fp32")
    x = random_patterns(rng, N_RANDOM // 4, np.float32)
    assert_float_codes_match(f.encode(x), x.view(np.uint32), np.uint32, np.float32, x)


def test_round_to_odd_oracle_is_sound(rng):
    """The float64 oracle below: float64 -> float32 round-to-odd, then ml_dtypes' rne.
    Check it against the exact reference on values where plain float32 double-rounds."""
    x = np.array([1.0625 + 2**-40, 1.0625 - 2**-40, -1.0625 - 2**-40, 1.0625, 1.1875 + 2**-60])
    got = f64_to_f32_round_to_odd(x).astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
    want = [ref.encode_value(float(v), "e4m3fn") for v in x]
    assert_values_equal(got, want, x)


@pytest.mark.parametrize("saturate", [False, True], ids=["inf_or_nan", "saturate"])
@pytest.mark.parametrize("name", FLOAT_NAMES)
def test_encode_f64_matches_round_to_odd_oracle(name, saturate, rng):
    """10^6 float64 inputs, rounded once: ml_dtypes applied to float64 -> float32
    round-to-odd (exact for targets of <= 22 significand bits) is a correctly rounded oracle."""
    f, dt = fmt(name), FLOAT_DTYPES[name]
    x = mixed_inputs(rng, f, np.float64, N_RANDOM)
    xin = np.clip(x, -f.max, f.max) if saturate else x
    with np.errstate(over="ignore", invalid="ignore"):
        want = f64_to_f32_round_to_odd(xin).astype(dt).view(f.code_dtype)
    got = f.encode(x, saturate=saturate)
    assert_float_codes_match(got, want, f.code_dtype, dt, x)


@pytest.mark.parametrize("saturate", [False, True])
@pytest.mark.parametrize("name", list(FLOAT8_DTYPES) + ["bf16", "fp16"])
def test_encode_f64_matches_reference(name, saturate, rng):
    f = fmt(name)
    x = np.concatenate([random_in_range(rng, 1200, f), rng.choice(edge_inputs(f, np.float64), 800),
                        np.array([1.0625 + 2**-40, -1.0625 - 2**-40, 1.0625 - 2**-40])])
    got = f.decode(f.encode(x, saturate=saturate))
    want = [ref.encode_value(float(v), name, rounding="rne", saturate=saturate) for v in x]
    assert_values_equal(got, want, x, nan_sign=False)


def test_double_rounding_case_e4m3fn():
    """1.0625 + 2^-40 lies just above the midpoint of 1.0 and 1.125: the answer is 1.125.
    (Going through float32 first, as ml_dtypes does, gives the midpoint and then 1.0.)"""
    f = fmt("e4m3fn")
    x = 1.0625 + 2**-40
    assert ref.encode_value(x, "e4m3fn") == 1.125
    assert f.decode(f.encode(np.float64(x))) == 1.125
    assert f.decode(f.encode(np.array([x, -x]))).tolist() == [1.125, -1.125]
    big = np.full(20000, x)  # the table path
    assert np.all(f.decode(f.encode(big)) == 1.125)


# ---------------------------------------------------------------------------------------
# integers: np.rint (ties to even) and bounds
# ---------------------------------------------------------------------------------------

def _int_codes(name, k):
    bits = fmt(name).bits
    return np.asarray(k, dtype=np.int64) & ((1 << bits) - 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", INT_NAMES)
def test_encode_int_saturate_matches_rint(name, dtype, rng):
    f = fmt(name)
    lo, hi = INT_RANGES[name]
    x = mixed_inputs(rng, f, dtype, N_RANDOM)
    x = np.concatenate([x, (rng.integers(4 * lo - 4, 4 * hi + 5, 20000) / 4).astype(dtype)])
    x = x[~np.isnan(x)]
    got = f.encode(x, saturate=True)
    with np.errstate(invalid="ignore"):
        want = np.clip(np.rint(x.astype(np.float64)), lo, hi)
    assert got.dtype == np.uint8
    assert_codes_equal(got, _int_codes(name, want), x)
    assert_values_equal(f.decode(got), want + 0.0, x)  # + 0.0: integers have one zero


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", INT_NAMES)
def test_encode_int_no_saturate(name, dtype, rng):
    f = fmt(name)
    lo, hi = INT_RANGES[name]
    x = mixed_inputs(rng, f, dtype, 200000)
    x = x[~np.isnan(x)]
    with np.errstate(invalid="ignore"):
        r = np.rint(x.astype(np.float64))
    inside = (r >= lo) & (r <= hi)
    assert_codes_equal(f.encode(x[inside]), _int_codes(name, r[inside]), x[inside])
    # every out-of-range value raises, alone or inside a large (table path) array
    outside = x[~inside]
    for v in np.concatenate([outside[:200], np.array([hi + 0.5, hi + 1, lo - 1, lo - 1.5, np.inf, -np.inf], dtype)]):
        r1 = np.rint(np.float64(v))
        if lo <= r1 <= hi:
            continue
        with pytest.raises(ValueError, match="outside"):
            f.encode(np.array([v], dtype))
        arr = np.zeros(20000, dtype)
        arr[12345] = v
        with pytest.raises(ValueError, match=r"x\[.*12345.*\] = .* is outside"):
            f.encode(arr)


@pytest.mark.parametrize("name", INT_NAMES)
def test_encode_int_boundaries(name):
    f = fmt(name)
    lo, hi = INT_RANGES[name]
    ok = np.array([hi, hi + 0.49999997, lo, lo - 0.49999997, hi - 0.5, lo + 0.5, 0.5, -0.5 if lo else 0.5,
                   1.5, 2.5, -0.0])
    assert_codes_equal(f.encode(ok), _int_codes(name, np.rint(ok)), ok)
    if hi % 2 == 1:  # hi + 0.5 ties to the even hi + 1: out of range
        with pytest.raises(ValueError, match="outside"):
            f.encode(np.array([hi + 0.5]))
    if lo < 0 and lo % 2 == 0:  # lo - 0.5 ties to the even lo: in range
        assert_codes_equal(f.encode(np.array([lo - 0.5])), _int_codes(name, [lo]))
    assert_codes_equal(f.encode(np.array([hi + 0.5, lo - 0.5, np.inf, -np.inf, 1e30]), saturate=True),
                       _int_codes(name, [hi, lo, hi, lo, hi]))


@pytest.mark.parametrize("saturate", [False, True])
@pytest.mark.parametrize("name", INT_NAMES)
def test_encode_nan_into_int_raises(name, saturate):
    f = fmt(name)
    with pytest.raises(ValueError, match="NaN"):
        f.encode(np.array([1.0, np.nan]), saturate=saturate)
    big = np.zeros(30000, np.float32)
    big[-1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        f.encode(big, saturate=saturate)


# ---------------------------------------------------------------------------------------
# API shape of encode
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMED + ["fp32"])
def test_encode_lists_ints_and_shapes(name, rng):
    f = fmt(name)
    x = np.round(rng.normal(0, 3, (4, 5, 6))) + 0.0  # + 0.0: no -0, which int inputs lack
    if name in INT_RANGES:
        x = np.clip(x, *INT_RANGES[name])
    codes = f.encode(x)
    assert codes.shape == x.shape and codes.dtype == f.code_dtype
    assert_codes_equal(f.encode(x.tolist()), codes)
    assert_codes_equal(f.encode(x.astype(np.int64)), codes)
    assert_codes_equal(f.encode(x.astype(np.float32)), codes)
    assert_codes_equal(f.encode(np.asfortranarray(x)), codes)
    assert_codes_equal(f.encode(x[:, ::2, 1:]), codes[:, ::2, 1:])
    assert f.encode(np.zeros((0, 3))).shape == (0, 3)
    assert f.decode(np.zeros((2, 0), np.uint8)).shape == (2, 0)


@pytest.mark.parametrize("name", ["e4m3fn", "int8", "bf16"])
def test_encode_and_decode_keep_scalar_shape(name):
    """A Python scalar or 0-d array in gives a 0-d result out (shape (), not (1,))."""
    f = fmt(name)
    want = int(f.encode(np.array([3.0]))[0])
    for x in (3.0, 3, np.float64(3.0), np.float32(3.0), np.array(3.0)):
        c = f.encode(x)
        assert np.shape(c) == (), (type(x), np.shape(c))
        assert int(c) == want
    v = f.decode(np.array(want, dtype=f.code_dtype))
    assert np.shape(v) == () and float(v) == 3.0


@pytest.mark.parametrize("name", [n for n in FLOAT_NAMES])
def test_signed_zero_and_tiny_negative(name):
    f = fmt(name)
    v = f.decode(f.encode(np.array([0.0, -0.0, -f.min_subnormal / 4, f.min_subnormal / 4])))
    neg = name not in ("e4m3fnuz", "e5m2fnuz")  # fnuz formats have no -0
    assert f64_bits_list(v) == f64_bits_list([0.0, -0.0 if neg else 0.0, -0.0 if neg else 0.0, 0.0])


def f64_bits_list(v):
    return np.asarray(v, np.float64).view(np.uint64).tolist()


@pytest.mark.parametrize("name", FLOAT_NAMES)
def test_max_and_threshold(name):
    """max and the values around the overflow threshold, float64 inputs, all policies."""
    f = fmt(name)
    ulp = math.ldexp(1.0, f.emax - f.man_bits)
    thr = f.max + ulp / 2
    x = np.array([f.max, thr, np.nextafter(thr, 0), np.nextafter(thr, np.inf), f.max + ulp])
    got = f.decode(f.encode(np.concatenate([x, -x])))
    over = np.inf if f.has_inf else np.nan
    # the threshold is a tie: it goes to max where max's significand is even (fn formats)
    at_thr = f.max if f.max_sig % 2 == 0 else over
    want = np.array([f.max, at_thr, f.max, over, over])
    assert_values_equal(got, np.concatenate([want, -want]), nan_sign=f.nan_style == "fn" or f.has_inf)
    got = f.decode(f.encode(np.concatenate([x, -x]), saturate=True))
    assert_values_equal(got, np.concatenate([np.full(5, f.max), np.full(5, -f.max)]))


def test_custom_float_format_matches_ml_dtypes_shapes():
    """FloatFormat with the named formats' parameters behaves as the named ones."""
    for name, args in {"e5m2": (5, 2), "bf16": (8, 7), "fp16": (5, 10), "e3m4": (3, 4)}.items():
        assert FloatFormat(*args) == fmt(name)
    assert FloatFormat(4, 3, inf=False, nan="fn") == fmt("e4m3fn")
    assert FloatFormat(4, 3, inf=False, nan="fnuz") == fmt("e4m3fnuz")
    assert FloatFormat(4, 3, inf=False, nan="fnuz").bias == 8


# ---------------------------------------------------------------------------------------
# slow: every float32 pattern
# ---------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", FLOAT_NAMES)
def test_encode_every_float32_pattern(name):
    f, dt = fmt(name), FLOAT_DTYPES[name]
    step = 1 << 24
    for start in range(0, 1 << 32, step):
        x = np.arange(start, start + step, dtype=np.uint64).astype(np.uint32).view(np.float32)
        for sat in (False, True):
            assert_float_codes_match(f.encode(x, saturate=sat), _oracle_encode_f32(name, x, sat),
                                     f.code_dtype, dt, x)
