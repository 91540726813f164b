"""Bad arguments to formats, encode/decode, QTensor and quantize: each raises ValueError or
TypeError with a message that names the offending argument."""
from __future__ import annotations

import numpy as np
import pytest

import accel_sim as acs
from accel_sim.formats import FixedFormat, FloatFormat, IntFormat
from accel_sim.quant import QTensor, quantize

from conftest import fmt


# ---------------------------------------------------------------------------------------
# format and rounding names
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["e4m3x", "E4M3FN", "fp8", "", "int 8", "float8_e4m3fn"])
def test_unknown_format_name(name):
    with pytest.raises(ValueError, match=r"unknown format " + repr(name)):
        acs.formats.get(name)
    with pytest.raises(ValueError, match="unknown format"):
        QTensor(np.zeros(3, np.uint8), name)
    with pytest.raises(ValueError, match="unknown format"):
        quantize(np.ones(3), name)


@pytest.mark.parametrize("bad", [8, None, 4.0, b"e4m3fn", ["e4m3fn"]])
def test_format_of_wrong_type(bad):
    with pytest.raises(TypeError, match="format"):
        acs.formats.get(bad)


@pytest.mark.parametrize("bad", ["nearest", "RNE", "", "stochastic", None, 0, "rn"])
def test_unknown_rounding(bad):
    f = fmt("e4m3fn")
    with pytest.raises(ValueError, match="rounding"):
        f.encode(np.ones(3), rounding=bad)
    with pytest.raises(ValueError, match="rounding"):
        f.encode(np.ones(20000), rounding=bad)
    with pytest.raises(ValueError, match="rounding"):
        quantize(np.ones(3), "int8", rounding=bad)


def test_register_rejects_conflicts():
    with pytest.raises(TypeError, match="fmt"):
        acs.formats.register("e4m3fn")
    with pytest.raises(ValueError, match="'e4m3fn'"):
        acs.formats.register(FloatFormat(4, 3, name="e4m3fn"))  # e4m3fn is the fn flavour


# ---------------------------------------------------------------------------------------
# encode: x dtypes, saturate, seed
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("x", [np.array([1 + 2j, 3j]), np.array(["1.0", "2"]), np.array([1.0, None], dtype=object),
                               np.array([b"ab"]), "1.5", [1.0, "a"], np.array([1, 2], dtype="datetime64[D]"),
                               np.array([1.0], dtype=np.longdouble) if np.dtype(np.longdouble).itemsize > 8
                               else np.array([1j])],
                         ids=["complex", "str", "object", "bytes", "pystr", "mixed-list", "datetime", "longdouble"])
@pytest.mark.parametrize("name", ["e4m3fn", "int8", "bf16"])
def test_encode_wrong_dtype(name, x):
    with pytest.raises(TypeError, match=r"^x must be"):
        fmt(name).encode(x)


def test_encode_huge_integers():
    with pytest.raises(ValueError, match=r"^x holds integers beyond 2\*\*53"):
        fmt("e5m2").encode(np.array([2**60], dtype=np.int64))
    assert fmt("e5m2").encode(np.array([2**53], dtype=np.int64)).shape == (1,)


@pytest.mark.parametrize("seed,exc", [(-1, ValueError), (2**64, ValueError), (1.0, TypeError), (1.5, TypeError),
                                      (True, TypeError), ("3", TypeError), (None, TypeError),
                                      (np.float64(2.0), TypeError), (-(2**70), ValueError)])
def test_bad_seed(seed, exc):
    f = fmt("e4m3fn")
    with pytest.raises(exc, match="seed"):
        f.encode(np.ones(3), rounding="sr", seed=seed)
    with pytest.raises(exc, match="seed"):
        f.encode(np.ones(3), seed=seed)  # checked whatever the rounding
    with pytest.raises(exc, match="seed"):
        quantize(np.ones(3), "int8", rounding="sr", seed=seed)


def test_good_seeds():
    f = fmt("e4m3fn")
    for s in (0, 2**64 - 1, np.uint64(2**64 - 1), np.int32(5)):
        f.encode(np.ones(3), rounding="sr", seed=s)


@pytest.mark.parametrize("bad", [1, 0, None, "yes", np.array([True]), 1.0])
def test_bad_saturate(bad):
    with pytest.raises(TypeError, match="saturate"):
        fmt("e4m3fn").encode(np.ones(3), saturate=bad)


# ---------------------------------------------------------------------------------------
# NaN and out-of-range values into integer formats
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["int8", "uint8", "int4"])
def test_nan_into_int_names_x_and_index(name):
    f = fmt(name)
    x = np.zeros((3, 4))
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match=rf"^x\[.*2.*1.*\] is NaN, which {name} cannot represent"):
        f.encode(x, saturate=True)
    with pytest.raises(ValueError, match=r"^x\[.*\] is NaN"):
        f.encode(np.nan)
    with pytest.raises(ValueError, match=rf"which {name} cannot represent"):
        f.encode([1.0, np.nan])


@pytest.mark.parametrize("name,value", [("int8", 128.0), ("int8", -129.0), ("int8", 127.5), ("uint8", -1.0),
                                        ("uint8", 255.5), ("int4", 8.0), ("int4", -9.0), ("int8", np.inf),
                                        ("uint8", -np.inf)])
def test_out_of_range_int_without_saturate(name, value):
    f = fmt(name)
    with pytest.raises(ValueError, match=rf"^x\[.*\] = .* is outside {name}'s range .*saturate=True"):
        f.encode(np.array([0.0, value]))
    f.encode(np.array([0.0, value]), saturate=True)  # fine when clamping


def test_fixed_out_of_range_message():
    f = FixedFormat(4, 4)
    with pytest.raises(ValueError, match=r"outside sfix4\.4's range \[-8\.0, 7\.9375\]"):
        f.encode(np.array([8.0]))


def test_error_messages_show_plain_indices():
    """The offending element is named as x[i, j] = value (plain ints, not numpy reprs)."""
    f = fmt("int8")
    x = np.zeros((100, 200))
    x[5, 7] = 300.0
    with pytest.raises(ValueError, match=r"^x\[5, 7\] = 300\.0 is outside int8's range"):
        f.encode(x)
    x[5, 7] = np.nan
    with pytest.raises(ValueError, match=r"^x\[5, 7\] is NaN"):
        f.encode(x)


# ---------------------------------------------------------------------------------------
# decode: code dtypes and ranges
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("codes", [np.array([1.0, 2.0]), np.array([1 + 0j]), np.array(["1"]),
                                   np.array([1, None], dtype=object), np.array([True, False]), [0.5], 1.0],
                         ids=["float", "complex", "str", "object", "bool", "float-list", "float-scalar"])
def test_decode_wrong_dtype(codes):
    with pytest.raises(TypeError, match=r"^codes must be an integer array of e4m3fn codes"):
        fmt("e4m3fn").decode(codes)


@pytest.mark.parametrize("name,codes", [("e4m3fn", [256]), ("e4m3fn", [-1]), ("int4", [16]), ("int4", [0, 15, 16]),
                                        ("int8", np.array([-128], np.int8)), ("bf16", [65536]),
                                        ("uint8", np.array([2**40])), ("fp32", [2**32])])
def test_decode_codes_out_of_range(name, codes):
    f = fmt(name)
    with pytest.raises(ValueError, match=rf"^codes must lie in \[0, {(1 << f.bits) - 1}\] for {name}"):
        f.decode(codes)


# ---------------------------------------------------------------------------------------
# FloatFormat / FixedFormat / IntFormat parameters
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,exc,arg", [
    (dict(exp_bits=1, man_bits=3), ValueError, "exp_bits"),
    (dict(exp_bits=12, man_bits=3), ValueError, "exp_bits"),
    (dict(exp_bits=4.0, man_bits=3), TypeError, "exp_bits"),
    (dict(exp_bits=True, man_bits=3), TypeError, "exp_bits"),
    (dict(exp_bits="4", man_bits=3), TypeError, "exp_bits"),
    (dict(exp_bits=4, man_bits=-1), ValueError, "man_bits"),
    (dict(exp_bits=4, man_bits=53), ValueError, "man_bits"),
    (dict(exp_bits=4, man_bits=3.0), TypeError, "man_bits"),
    (dict(exp_bits=4, man_bits=3, nan="ocp"), ValueError, "nan"),
    (dict(exp_bits=4, man_bits=3, nan=None), ValueError, "nan"),
    (dict(exp_bits=4, man_bits=3, nan="fn"), ValueError, "inf"),  # inf=True needs ieee
    (dict(exp_bits=4, man_bits=0, nan="ieee"), ValueError, "nan"),
    (dict(exp_bits=4, man_bits=0, inf=False, nan="fn"), ValueError, "nan"),
    (dict(exp_bits=4, man_bits=3, bias=1.5), TypeError, "bias"),
    (dict(exp_bits=4, man_bits=3, bias=2**21), ValueError, "bias"),
    (dict(exp_bits=8, man_bits=3, bias=-1000), ValueError, "bias"),  # beyond float64
    (dict(exp_bits=11, man_bits=52, bias=1000), ValueError, "bias"),
])
def test_bad_float_format(kwargs, exc, arg):
    with pytest.raises(exc, match=rf"\b{arg}\b"):
        FloatFormat(**kwargs)


@pytest.mark.parametrize("args,exc,arg", [
    ((-1, 8), ValueError, "int_bits"),
    ((54, 0), ValueError, "int_bits"),
    ((4.0, 4), TypeError, "int_bits"),
    ((4, 65), ValueError, "frac_bits"),
    ((4, -65), ValueError, "frac_bits"),
    ((4, "4"), TypeError, "frac_bits"),
    ((40, 20), ValueError, r"int_bits \+ frac_bits"),
    ((1, 0), ValueError, r"int_bits \+ frac_bits"),  # a signed format needs a sign and a bit
    ((4, -4), ValueError, r"int_bits \+ frac_bits"),
])
def test_bad_fixed_format(args, exc, arg):
    with pytest.raises(exc, match=arg):
        FixedFormat(*args)


def test_bad_int_format():
    with pytest.raises(ValueError, match="int_bits"):
        IntFormat(0)
    with pytest.raises(TypeError, match="int_bits"):
        IntFormat(8.0)


def test_all_codes_needs_small_format():
    with pytest.raises(ValueError, match="all_codes"):
        fmt("fp32").all_codes()


# ---------------------------------------------------------------------------------------
# QTensor
# ---------------------------------------------------------------------------------------

def test_qtensor_bad_codes():
    with pytest.raises(TypeError, match="codes"):
        QTensor(np.array([1.0, 2.0]), "int8")
    with pytest.raises(TypeError, match="codes"):
        QTensor(np.array(["a"]), "int8")
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 15\] for int4"):
        QTensor(np.array([3, 16]), "int4")
    with pytest.raises(ValueError, match="codes"):
        QTensor(np.array([-1, 3]), "int8")


@pytest.mark.parametrize("scale,axis,exc", [
    (np.ones(3, np.float32), None, ValueError),          # several scales, no axis
    (np.ones(5, np.float32), 0, ValueError),             # wrong length
    (np.ones((4, 1), np.float32), 0, ValueError),        # not 1-D
    (np.ones(6, np.float32), 0, ValueError),
    (-1.0, None, ValueError),
    (0.0, None, ValueError),
    (np.nan, None, ValueError),
    (np.inf, None, ValueError),
    (1e-50, None, ValueError),                           # 0 as float32
    (1e40, None, ValueError),                            # inf as float32
    (np.array([1.0, -2.0, 1.0, 1.0]), 0, ValueError),
    ("1.0", None, TypeError),
    (1 + 1j, None, TypeError),
    (None, None, TypeError),
])
def test_qtensor_bad_scale(scale, axis, exc):
    with pytest.raises(exc, match="scale"):
        QTensor(np.zeros((4, 6), np.uint8), "int8", scale=scale, axis=axis)


@pytest.mark.parametrize("axis,exc", [(2, ValueError), (-3, ValueError), (1.0, TypeError), ("0", TypeError),
                                      (True, TypeError)])
def test_qtensor_bad_axis(axis, exc):
    with pytest.raises(exc, match="axis"):
        QTensor(np.zeros((4, 6), np.uint8), "int8", scale=np.ones(4), axis=axis)


# ---------------------------------------------------------------------------------------
# quantize
# ---------------------------------------------------------------------------------------

def test_quantize_bad_arguments():
    x = np.ones((4, 6))
    with pytest.raises(ValueError, match="scale"):
        quantize(x, "int8", scale="row")
    with pytest.raises(ValueError, match="calibration"):
        quantize(x, "int8", calibration="minmax")
    for pct in (0, -5, 100.5, "99"):
        with pytest.raises(ValueError, match="percentile"):
            quantize(x, "int8", calibration="percentile", percentile=pct)
    with pytest.raises(ValueError, match="axis"):
        quantize(x, "int8", scale="tensor", axis=0)
    with pytest.raises(ValueError, match="axis"):
        quantize(x, "int8", scale="channel", axis=2)
    with pytest.raises(TypeError, match="axis"):
        quantize(x, "int8", scale="channel", axis=0.0)
    with pytest.raises(ValueError, match="axis"):
        quantize(np.float64(3.0), "int8", scale="channel")
    with pytest.raises(ValueError, match="scale"):
        quantize(x, "int8", scale=np.ones(5), axis=0)
    with pytest.raises(ValueError, match="scale"):
        quantize(x, "int8", scale=-1.0)
    with pytest.raises(TypeError, match=r"^x must be"):
        quantize(np.ones(3, complex), "int8")
    with pytest.raises(TypeError, match=r"^x must be"):
        quantize(np.array(["a"]), "int8")
    with pytest.raises(ValueError, match=r"^x contains NaN or inf"):
        quantize(np.array([1.0, np.nan]), "int8")
    with pytest.raises(ValueError, match=r"^x contains NaN or inf"):
        quantize(np.array([1.0, -np.inf]), "e4m3fn")
    with pytest.raises(TypeError, match="saturate"):
        quantize(x, "int8", saturate=1)
