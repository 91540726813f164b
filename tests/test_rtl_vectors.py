"""Golden vectors for RTL (accel_sim/rtl/vectors.py).

Oracles: numpy's float16/float32 and ml_dtypes' bfloat16 bit patterns (the IEEE layouts the
accumulator registers use), numpy's int8/int16 two's complement views, the C engine's own
decode of the same layouts (FloatFormat), and `accumulate` / `Array.gemm` for the values the
vectors must carry."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import accel_sim as acs
from accel_sim.formats import FloatFormat
from accel_sim.mac import FixedAcc, FloatAcc, IntAcc
from accel_sim.rtl.vectors import acc_bits, acc_values, acc_width

IEEE = {"fp16": (np.float16, np.uint16), "bf16": (ml_dtypes.bfloat16, np.uint16), "fp32": (np.float32, np.uint32)}


def f64_bits(x):
    return np.asarray(x, dtype=np.float64).view(np.uint64)


def same_values(x, y):
    """Bit-equal float64 arrays, NaN by class."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    nan = np.isnan(x)
    return np.array_equal(nan, np.isnan(y)) and np.array_equal(f64_bits(x[~nan]), f64_bits(y[~nan]))


# -- accumulator bits <-> values -----------------------------------------------------------------

@pytest.mark.parametrize("name", ["fp16", "bf16"])
def test_float_bits_match_numpy_and_ml_dtypes_on_every_pattern(name):
    dtype, utype = IEEE[name]
    mac = acs.MAC("e4m3fn", "e4m3fn", name)
    patterns = np.arange(1 << 16, dtype=np.uint64)
    with np.errstate(invalid="ignore"):       # signalling NaNs quieted on the way to float64
        values = patterns.astype(utype).view(dtype).astype(np.float64)
    assert same_values(acc_values(mac, patterns), values)
    nan = np.isnan(values)
    bits = acc_bits(mac, values)
    assert bits.dtype == np.uint64
    assert np.array_equal(bits[~nan], patterns[~nan])
    canonical = np.array(np.nan, dtype=dtype).view(utype)           # numpy/ml_dtypes' NaN pattern
    assert np.all(bits[nan] == canonical)


def test_fp32_bits_match_numpy():
    rng = np.random.default_rng(1)
    patterns = np.concatenate([rng.integers(0, 1 << 32, 200_000, dtype=np.uint64),
                               np.array([0, 1 << 31, 1, 0x007FFFFF, 0x00800000, 0x7F7FFFFF, 0x7F800000, 0xFF800000,
                                         0x80000001], dtype=np.uint64)])
    with np.errstate(invalid="ignore"):
        values = patterns.astype(np.uint32).view(np.float32).astype(np.float64)
    nan = np.isnan(values)
    assert same_values(acc_values(acs.mac.ACCUMULATORS["fp32"], patterns), values)
    bits = acc_bits(acs.mac.ACCUMULATORS["fp32"], values)
    assert np.array_equal(bits[~nan], patterns[~nan])
    assert np.all(bits[nan] == np.array(np.nan, np.float32).view(np.uint32))


@pytest.mark.parametrize("e", [2, 3, 4, 5])
@pytest.mark.parametrize("m", [0, 1, 2, 4])
def test_small_float_accumulators_round_trip_every_pattern(e, m):
    acc = FloatAcc(e, m)
    width = acc_width(acc)
    assert width == 1 + e + m
    patterns = np.arange(1 << width, dtype=np.uint64)
    values = acc_values(acc, patterns)
    if m:   # the engine decodes the same IEEE layout (an ieee FloatFormat of e, m)
        assert same_values(values, FloatFormat(e, m).decode(patterns))
    nan = np.isnan(values)
    assert np.array_equal(acc_bits(acc, values)[~nan], patterns[~nan])
    if m:   # every NaN pattern writes back as the canonical quiet NaN
        assert nan.sum() == 2 * ((1 << m) - 1)
        assert np.all(acc_bits(acc, values[nan]) == (((1 << e) - 1) << m | (1 << (m - 1))))
    else:
        assert not nan.any()
    assert values[0] == 0 and not np.signbit(values[0])                       # +0
    assert values[1 << (e + m)] == 0 and np.signbit(values[1 << (e + m)])     # -0
    assert values[1 << m] == 2.0 ** acc.emin                                  # the smallest normal
    assert values[(1 << (e + m)) - (1 << m)] == np.inf                        # the all-ones exponent
    assert values[(1 << (e + m)) - (1 << m) - 1] == acc.max


@pytest.mark.parametrize("bits", [2, 3, 5, 8, 10])
def test_int_accumulators_round_trip_every_pattern(bits):
    acc = IntAcc(bits)
    patterns = np.arange(1 << bits, dtype=np.uint64)
    values = acc_values(acc, patterns)
    assert values.dtype == np.int64
    assert np.array_equal(values, np.where(patterns >= 1 << (bits - 1), patterns.astype(np.int64) - (1 << bits),
                                           patterns.astype(np.int64)))
    assert np.array_equal(acc_bits(acc, values), patterns)


@pytest.mark.parametrize("bits,dtype,utype", [(8, np.int8, np.uint8), (16, np.int16, np.uint16),
                                              (32, np.int32, np.uint32), (64, np.int64, np.uint64)])
def test_int_bits_are_numpys_twos_complement(bits, dtype, utype):
    info = np.iinfo(dtype)
    v = np.array([0, -1, 1, info.min, info.max, -12345 % info.max, -(12345 % info.max)], dtype=np.int64)
    assert np.array_equal(acc_bits(IntAcc(bits), v), v.astype(dtype).view(utype).astype(np.uint64))
    assert np.array_equal(acc_values(IntAcc(bits), v.astype(dtype).view(utype)), v)


def test_fixed_accumulator_bits():
    acc = FixedAcc(4, 4)
    patterns = np.arange(256, dtype=np.uint64)
    values = acc_values(acc, patterns)
    assert np.array_equal(values, patterns.astype(np.uint8).view(np.int8).astype(np.float64) / 16)
    assert np.array_equal(acc_bits(acc, values), patterns)


def test_acc_bits_bad_input():
    with pytest.raises(ValueError, match="not a value of fp16"):
        acc_bits(acs.mac.ACCUMULATORS["fp16"], [1 + 2.0**-11])
    with pytest.raises(ValueError, match="beyond its max"):
        acc_bits(acs.mac.ACCUMULATORS["fp16"], [65536.0])
    with pytest.raises(ValueError, match=r"\[-128, 127\]"):
        acc_bits(IntAcc(8), [128])
    with pytest.raises(ValueError, match="integers"):
        acc_bits(IntAcc(8), [np.nan])
    with pytest.raises(ValueError, match="no NaN pattern"):
        acc_bits(FloatAcc(3, 0), [np.nan])
    with pytest.raises(ValueError, match="multiples of 2"):
        acc_bits(FixedAcc(4, 4), [1 / 32])
    with pytest.raises(ValueError, match="quire"):
        acc_bits(acs.MAC("posit8", "posit8", "quire"), [0.0])
    with pytest.raises(ValueError, match="at most 53"):
        acc_width(FixedAcc(40, 20))
    with pytest.raises(ValueError, match=r"\[0, 2\^16 - 1\]"):
        acc_values(acs.mac.ACCUMULATORS["fp16"], [1 << 16])
    with pytest.raises(TypeError, match="integer array"):
        acc_values(IntAcc(8), [1.0])
    with pytest.raises(TypeError, match="mac must be"):
        acc_bits("fp16", [0.0])
