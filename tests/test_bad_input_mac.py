"""Bad input to the MAC layer: every parameter of FloatAcc, IntAcc, FixedAcc, BlockFMA, MAC and
accumulate, given a wrong type or value, raises TypeError (wrong type) or ValueError (wrong
value) with a message that names the argument (or the offending value)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import accel_sim as acs
from accel_sim.formats import FixedFormat, FloatFormat
from accel_sim.mac import MAC, BlockFMA, FixedAcc, FloatAcc, IntAcc, accumulate

U8 = np.uint8


def e4():
    return MAC("e4m3fn", "e4m3fn", FloatAcc(8, 23))


def i8():
    return MAC("int8", "int8", IntAcc(32))


def fx(fmt="e5m2"):
    return MAC(fmt, fmt, FixedAcc(16, 16))


def codes(*shape, value=1, dtype=U8):
    return np.full(shape, value, dtype=dtype)


CONSTRUCTOR_CASES = [
    # FloatAcc
    ("FloatAcc exp_bits str", lambda: FloatAcc("8", 23), TypeError, "exp_bits"),
    ("FloatAcc exp_bits float", lambda: FloatAcc(8.0, 23), TypeError, "exp_bits"),
    ("FloatAcc exp_bits bool", lambda: FloatAcc(True, 23), TypeError, "exp_bits"),
    ("FloatAcc exp_bits 1", lambda: FloatAcc(1, 3), ValueError, "exp_bits"),
    ("FloatAcc exp_bits 12", lambda: FloatAcc(12, 3), ValueError, "exp_bits"),
    ("FloatAcc man_bits -1", lambda: FloatAcc(5, -1), ValueError, "man_bits"),
    ("FloatAcc man_bits 53", lambda: FloatAcc(11, 53), ValueError, "man_bits"),
    ("FloatAcc man_bits None", lambda: FloatAcc(5, None), TypeError, "man_bits"),
    ("FloatAcc rounding unknown", lambda: FloatAcc(5, 10, rounding="nearest"), ValueError, "rounding"),
    ("FloatAcc rounding upper", lambda: FloatAcc(5, 10, rounding="RNE"), ValueError, "rounding"),
    ("FloatAcc overflow wrap", lambda: FloatAcc(5, 10, overflow="wrap"), ValueError, "overflow"),
    ("FloatAcc overflow nan", lambda: FloatAcc(5, 10, overflow="nan"), ValueError, "overflow"),
    ("FloatAcc subnormals int", lambda: FloatAcc(5, 10, subnormals=1), TypeError, "subnormals"),
    ("FloatAcc subnormals str", lambda: FloatAcc(5, 10, subnormals="no"), TypeError, "subnormals"),
    # IntAcc
    ("IntAcc bits 1", lambda: IntAcc(1), ValueError, "bits"),
    ("IntAcc bits 65", lambda: IntAcc(65), ValueError, "bits"),
    ("IntAcc bits str", lambda: IntAcc("32"), TypeError, "bits"),
    ("IntAcc bits float", lambda: IntAcc(32.0), TypeError, "bits"),
    ("IntAcc overflow inf", lambda: IntAcc(32, "inf"), ValueError, "overflow"),
    ("IntAcc overflow None", lambda: IntAcc(32, None), ValueError, "overflow"),
    # FixedAcc
    ("FixedAcc int_bits 0", lambda: FixedAcc(0, 8), ValueError, "int_bits"),
    ("FixedAcc int_bits 120", lambda: FixedAcc(120, 0), ValueError, "int_bits"),
    ("FixedAcc int_bits float", lambda: FixedAcc(8.5, 8), TypeError, "int_bits"),
    ("FixedAcc frac_bits -65", lambda: FixedAcc(100, -65), ValueError, "frac_bits"),
    ("FixedAcc frac_bits 120", lambda: FixedAcc(1, 120), ValueError, "frac_bits"),
    ("FixedAcc frac_bits str", lambda: FixedAcc(8, "8"), TypeError, "frac_bits"),
    ("FixedAcc too wide", lambda: FixedAcc(60, 61), ValueError, r"int_bits \+ frac_bits"),
    ("FixedAcc too narrow", lambda: FixedAcc(1, 0), ValueError, r"int_bits \+ frac_bits"),
    ("FixedAcc rounding", lambda: FixedAcc(8, 8, rounding="floor"), ValueError, "rounding"),
    ("FixedAcc overflow inf", lambda: FixedAcc(8, 8, overflow="inf"), ValueError, "overflow"),
    ("FixedAcc overflow error", lambda: FixedAcc(8, 8, overflow="error"), ValueError, "overflow"),
    # BlockFMA
    ("BlockFMA terms 0", lambda: BlockFMA(0, 13), ValueError, "terms"),
    ("BlockFMA terms 65", lambda: BlockFMA(65, 13), ValueError, "terms"),
    ("BlockFMA terms str", lambda: BlockFMA("4", 13), TypeError, "terms"),
    ("BlockFMA terms bool", lambda: BlockFMA(True, 13), TypeError, "terms"),
    ("BlockFMA align_bits -1", lambda: BlockFMA(4, -1), ValueError, "align_bits"),
    ("BlockFMA align_bits 101", lambda: BlockFMA(4, 101), ValueError, "align_bits"),
    ("BlockFMA align_bits float", lambda: BlockFMA(4, 13.0), TypeError, "align_bits"),
    ("BlockFMA acc name", lambda: BlockFMA(4, 13, "fp32"), TypeError, "acc"),
    ("BlockFMA acc IntAcc", lambda: BlockFMA(4, 13, IntAcc(32)), TypeError, "acc"),
    ("BlockFMA acc None", lambda: BlockFMA(4, 13, None), TypeError, "acc"),
    ("BlockFMA addend FixedAcc", lambda: BlockFMA(4, 13, FloatAcc(8, 13), FixedAcc(8, 8)), TypeError, "addend"),
    ("BlockFMA addend name", lambda: BlockFMA(4, 13, FloatAcc(8, 13), "fp32"), TypeError, "addend"),
    # MAC
    ("MAC a unknown", lambda: MAC("int9", "int8", "int32"), ValueError, "int9"),
    ("MAC b unknown", lambda: MAC("int8", "fp8", "int32"), ValueError, "fp8"),
    ("MAC a wrong type", lambda: MAC(8, "int8", "int32"), TypeError, "format"),
    ("MAC b wrong type", lambda: MAC("int8", np.int8, "int32"), TypeError, "format"),
    ("MAC acc unknown", lambda: MAC("int8", "int8", "int128"), ValueError, "int128"),
    ("MAC acc wrong type", lambda: MAC("int8", "int8", 32), TypeError, "acc"),
    ("MAC acc format", lambda: MAC("int8", "int8", acs.formats.get("fp16")), TypeError, "acc"),
    ("MAC IntAcc float a", lambda: MAC("e4m3fn", "int8", IntAcc(32)), ValueError, "a is e4m3fn"),
    ("MAC IntAcc float b", lambda: MAC("int8", "fp16", IntAcc(32)), ValueError, "b is fp16"),
    ("MAC IntAcc default b", lambda: MAC("bf16", acc=IntAcc(32)), ValueError, "IntAcc needs integer operands"),
    ("MAC IntAcc fixed operand", lambda: MAC(FixedFormat(4, 4), "int8", "int32"), ValueError, "IntAcc needs integer"),
    ("MAC IntAcc custom float", lambda: MAC("int8", FloatFormat(3, 2), "int16"), ValueError, "b is"),
]


@pytest.mark.parametrize("make,exc,match", [c[1:] for c in CONSTRUCTOR_CASES], ids=[c[0] for c in CONSTRUCTOR_CASES])
def test_constructors_reject(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


ACCUMULATE_CASES = [
    # mac
    ("mac is a name", lambda: accumulate(codes(4), codes(4), "int8"), TypeError, "mac"),
    ("mac is an accumulator", lambda: accumulate(codes(4), codes(4), IntAcc(32)), TypeError, "mac"),
    # seed
    ("seed negative", lambda: accumulate(codes(4), codes(4), e4(), seed=-1), ValueError, "seed"),
    ("seed too large", lambda: accumulate(codes(4), codes(4), e4(), seed=2**64), ValueError, "seed"),
    ("seed float", lambda: accumulate(codes(4), codes(4), e4(), seed=1.0), TypeError, "seed"),
    ("seed bool", lambda: accumulate(codes(4), codes(4), e4(), seed=True), TypeError, "seed"),
    ("seed None", lambda: accumulate(codes(4), codes(4), e4(), seed=None), TypeError, "seed"),
    # codes: dtype
    ("a float values", lambda: accumulate(np.ones(4), codes(4), e4()), TypeError, "a_codes"),
    ("b float values", lambda: accumulate(codes(4), np.ones(4, np.float32), e4()), TypeError, "b_codes"),
    ("a float16", lambda: accumulate(np.ones(4, np.float16), codes(4), e4()), TypeError, "a_codes"),
    ("a bool", lambda: accumulate(np.ones(4, bool), codes(4), e4()), TypeError, "a_codes"),
    ("a strings", lambda: accumulate(np.array(["1", "2"]), codes(2), e4()), TypeError, "a_codes"),
    ("a object", lambda: accumulate(np.array([1, None], dtype=object), codes(2), e4()), TypeError, "a_codes"),
    ("b list of floats", lambda: accumulate(codes(2), [1.0, 2.0], e4()), TypeError, "b_codes"),
    # codes: range
    ("a code 256", lambda: accumulate(np.array([1, 256], np.uint16), codes(2), e4()), ValueError, "a_codes"),
    ("b code -1", lambda: accumulate(codes(2), np.array([1, -1], np.int8), e4()), ValueError, "b_codes"),
    ("int4 code 16", lambda: accumulate(np.array([16]), np.array([1]), MAC("int4", "int4", "int32")),
     ValueError, "a_codes"),
    ("fp16 code 2^16", lambda: accumulate(codes(1), np.array([2**16], np.uint32), MAC("e4m3fn", "fp16", "fp32")),
     ValueError, "b_codes"),
    ("uint64 huge code", lambda: accumulate(np.array([2**64 - 1], np.uint64), codes(1), e4()), ValueError, "a_codes"),
    # shapes
    ("shapes do not broadcast", lambda: accumulate(codes(3, 4), codes(3, 5), e4()), ValueError, "broadcast"),
    ("leading shapes differ", lambda: accumulate(codes(2, 4), codes(3, 4), e4()), ValueError, "broadcast"),
    ("a 0-d", lambda: accumulate(np.uint8(1), codes(4), e4()), ValueError, "axis"),
    ("b 0-d", lambda: accumulate(codes(4), 1, e4()), ValueError, "axis"),
    ("both 0-d", lambda: accumulate(np.array(1, U8), np.array(2, U8), i8()), ValueError, "axis"),
    # init
    ("init wrong shape", lambda: accumulate(codes(3, 4), codes(3, 4), e4(), init=np.zeros(2)), ValueError, "init"),
    ("init too many dims", lambda: accumulate(codes(3, 4), codes(3, 4), e4(), init=np.zeros((3, 1))),
     ValueError, "init"),
    ("init for 1-D chain", lambda: accumulate(codes(4), codes(4), e4(), init=np.zeros(2)), ValueError, "init"),
    ("init string", lambda: accumulate(codes(4), codes(4), e4(), init="0"), TypeError, "init"),
    ("init None", lambda: accumulate(codes(4), codes(4), e4(), init=None), TypeError, "init"),
    ("init complex", lambda: accumulate(codes(4), codes(4), e4(), init=1j), TypeError, "init"),
    ("IntAcc NaN init", lambda: accumulate(codes(2, 4), codes(2, 4), i8(), init=[0.0, math.nan]), ValueError, "init"),
    ("IntAcc inf init", lambda: accumulate(codes(4), codes(4), i8(), init=math.inf), ValueError, "init"),
    ("IntAcc fractional init", lambda: accumulate(codes(4), codes(4), i8(), init=0.5), ValueError, "init"),
    ("FixedAcc NaN init", lambda: accumulate(codes(4), codes(4), fx(), init=math.nan), ValueError, "init"),
    ("FixedAcc -inf init", lambda: accumulate(codes(4), codes(4), fx(), init=-math.inf), ValueError, "init"),
    # non-finite operands into register accumulators
    ("FixedAcc NaN operand (e4m3fn)", lambda: accumulate(np.array([1, 0x7F], U8), codes(2), fx("e4m3fn")),
     ValueError, "NaN"),
    ("FixedAcc NaN operand (fp16)", lambda: accumulate(np.array([0x7E00], np.uint16), np.array([0x3C00], np.uint16),
                                                       fx("fp16")), ValueError, "NaN"),
    ("FixedAcc inf operand", lambda: accumulate(np.array([0x7C]), np.array([0x3C]), fx("e5m2")), ValueError, "infinit"),
    ("FixedAcc -inf operand in a later row", lambda: accumulate(np.array([[0x3C, 0x3C], [0x3C, 0xFC]]), codes(2, 2),
                                                                fx("e5m2")), ValueError, "infinit"),
    ("FixedAcc inf * 0", lambda: accumulate(np.array([0x7C]), np.array([0]), fx("e5m2")), ValueError, "NaN|infinit"),
]


@pytest.mark.parametrize("call,exc,match", [c[1:] for c in ACCUMULATE_CASES], ids=[c[0] for c in ACCUMULATE_CASES])
def test_accumulate_rejects(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_nan_operand_error_names_the_accumulator():
    with pytest.raises(ValueError, match=r"fix\(16\.16"):
        accumulate(np.array([0x7F], U8), np.array([0x38], U8), fx("e4m3fn"))


def test_fine_inputs_next_to_the_bad_ones_are_accepted():
    """The boundary values just inside every range are accepted (so the checks above reject
    the bad value, not the neighbourhood)."""
    FloatAcc(2, 0), FloatAcc(11, 52), FloatAcc(5, 10, subnormals=np.bool_(False))
    IntAcc(2), IntAcc(64, "saturate"), IntAcc(np.int64(16))
    FixedAcc(1, 119), FixedAcc(119, 1), FixedAcc(56, -54), FixedAcc(1, 1)
    BlockFMA(1, 0), BlockFMA(64, 100), BlockFMA(np.int32(4), 13, FloatAcc(8, 13), FloatAcc(8, 23))
    mac = e4()
    out = accumulate(np.array([0x7E, 0xFE]), np.array([0x7E, 0x7E], np.int64), mac, seed=2**64 - 1)  # +-448
    assert out[()] == 0.0
    assert math.isnan(accumulate(np.array([0x7F], U8), np.array([0x38], U8), mac)[()])  # FloatAcc takes NaN
    assert accumulate(codes(2, 4), codes(2, 4), mac, init=[math.inf, math.nan])[0] == math.inf
    assert accumulate(codes(4), codes(4), i8(), init=np.float32(3.0))[()] == 7
    assert accumulate(codes(4), codes(4), i8(), init=np.int64(-3))[()] == 1
    assert accumulate(codes(4), codes(4), i8(), init=True)[()] == 5
    # e5m2 code 1 is 2^-16: products 2^-32 round to 0 on the 2^-16 grid
    assert accumulate(codes(4), codes(4), fx(), init=0.25)[()] == 0.25
