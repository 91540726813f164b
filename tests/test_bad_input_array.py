"""Bad input to the systolic array (Array, plan_gemm, gemm, conv2d, linear, matmul): every
case raises ValueError or TypeError whose message names the offending argument, before any
work reaches the C engine."""
from __future__ import annotations

import numpy as np
import pytest

import accel_sim as acs
from accel_sim.mac import MAC, FixedAcc, FloatAcc, IntAcc

Array = acs.Array
F8 = MAC("e4m3fn", "e4m3fn", "fp32")


def ones(*shape):
    return np.ones(shape)


def qt(shape, fmt="e4m3fn", scale=1.0, axis=None):
    return acs.QTensor(np.full(shape, 0x38 if fmt != "int8" else 1, np.uint8), fmt, scale=scale, axis=axis)


def arr(df="ws", mac=None):
    return Array(4, 4, df, mac)


CONSTRUCTOR = [
    ("rows zero", lambda: Array(0, 4), ValueError, "rows"),
    ("rows float", lambda: Array(2.5, 4), TypeError, "rows"),
    ("rows bool", lambda: Array(True, 4), TypeError, "rows"),
    ("cols too large", lambda: Array(4, 5000), ValueError, "cols"),
    ("cols string", lambda: Array(4, "8"), TypeError, "cols"),
    ("dataflow unknown", lambda: Array(4, 4, "rs"), ValueError, "dataflow"),
    ("dataflow upper case", lambda: Array(4, 4, "WS"), ValueError, "dataflow"),
    ("mac a name", lambda: Array(4, 4, "ws", "int8"), TypeError, "mac"),
    ("mac 32-bit operands", lambda: Array(4, 4, "ws", MAC("fp32", "fp32", "fp32")), ValueError, "16 bits"),
    ("too many PEs", lambda: Array(4096, 4096), ValueError, "rows \\* cols"),
    ("buffer_acc int for float PEs", lambda: Array(4, 4, "ws", F8, buffer_acc=IntAcc(32)), ValueError, "buffer_acc"),
    ("buffer_acc unknown name", lambda: Array(4, 4, "ws", F8, buffer_acc="fp64"), ValueError, "buffer_acc"),
    ("buffer_acc wrong type", lambda: Array(4, 4, "ws", F8, buffer_acc=3), TypeError, "buffer_acc"),
    ("sram negative", lambda: Array(4, 4, sram_kb=-1), ValueError, "sram_kb"),
    ("sram nan", lambda: Array(4, 4, sram_kb=float("nan")), ValueError, "sram_kb"),
    ("sram two parts", lambda: Array(4, 4, sram_kb=(1, 2)), ValueError, "sram_kb"),
    ("sram string", lambda: Array(4, 4, sram_kb="big"), TypeError, "sram_kb"),
    ("bandwidth zero", lambda: Array(4, 4, sram_kb=8, dram_bytes_per_cycle=0), ValueError, "dram_bytes_per_cycle"),
    ("bandwidth string", lambda: Array(4, 4, sram_kb=8, dram_bytes_per_cycle="fast"), ValueError,
     "dram_bytes_per_cycle"),
    ("bandwidth nan", lambda: Array(4, 4, sram_kb=8, dram_bytes_per_cycle=float("nan")), ValueError,
     "dram_bytes_per_cycle"),
    ("clock zero", lambda: Array(4, 4, clock_ghz=0), ValueError, "clock_ghz"),
    ("quant not a dict", lambda: Array(4, 4, quant="tensor"), TypeError, "quant"),
    ("quant unknown key", lambda: Array(4, 4, quant={"c": "tensor"}), ValueError, "quant"),
    ("quant bad scale kind", lambda: Array(4, 4, quant={"a": "row"}), ValueError, "quant"),
    # the quant spec's calibration and rounding are checked when the array is built, not at
    # its first GEMM (a sweep should fail on the configuration, not half-way through)
    ("quant bad calibration", lambda: Array(4, 4, quant={"calibration": "bogus"}), ValueError, "calibration"),
    ("quant bad rounding", lambda: Array(4, 4, quant={"rounding": "nearest"}), ValueError, "rounding"),
    ("seed negative", lambda: Array(4, 4, seed=-1), ValueError, "seed"),
]

PLAN = [
    ("M negative", lambda: arr().plan_gemm(-1, 4, 4), ValueError, "M"),
    ("K float", lambda: arr().plan_gemm(4, 4, 2.0), TypeError, "K"),
    ("N string", lambda: arr().plan_gemm(4, "4", 4), TypeError, "N"),
]

GEMM = [
    ("K mismatch", lambda: arr().gemm(ones(3, 4), ones(5, 2)), ValueError, "K differs"),
    ("A 1-D", lambda: arr().gemm(ones(4), ones(4, 2)), ValueError, "A must have 2 dimensions"),
    ("B 3-D", lambda: arr().gemm(ones(3, 4), ones(4, 2, 1)), ValueError, "B must have 2 dimensions"),
    ("A complex", lambda: arr().gemm(ones(3, 4).astype(complex), ones(4, 2)), TypeError, "A must be"),
    ("B bool", lambda: arr().gemm(ones(3, 4), ones(4, 2).astype(bool)), TypeError, "B must be"),
    ("A strings", lambda: arr().gemm([["a", "b"]], ones(2, 2)), TypeError, "A must be"),
    ("A QTensor of another format", lambda: arr(mac=F8).gemm(qt((3, 4), "e5m2"), ones(4, 2)), ValueError,
     "A is a QTensor of e5m2"),
    ("B QTensor of another format", lambda: arr().gemm(ones(3, 4), qt((4, 2), "e4m3fn")), ValueError,
     "B is a QTensor of e4m3fn"),
    ("A QTensor 3-D", lambda: arr(mac=F8).gemm(qt((3, 4, 1)), ones(4, 2)), ValueError, "A must have 2"),
    ("A scales along K", lambda: arr(mac=F8).gemm(qt((3, 4), scale=np.ones(4, np.float32), axis=1), ones(4, 2)),
     ValueError, "A's scales"),
    ("B scales along K", lambda: arr(mac=F8).gemm(ones(3, 4), qt((4, 2), scale=np.ones(4, np.float32), axis=0)),
     ValueError, "B's scales"),
    ("bias wrong length", lambda: arr().gemm(ones(3, 4), ones(4, 2), bias=ones(3)), ValueError, "bias"),
    ("bias 2-D", lambda: arr().gemm(ones(3, 4), ones(4, 2), bias=ones(1, 2)), ValueError, "bias"),
    ("bias strings", lambda: arr().gemm(ones(3, 4), ones(4, 2), bias=np.array(["a", "b"])), ValueError, "bias"),
    ("out_format unknown", lambda: arr().gemm(ones(3, 4), ones(4, 2), out_format="e9m9"), ValueError, "e9m9"),
    # a float input that cannot be quantized: the message should name the GEMM's argument
    ("A holds NaN", lambda: arr().gemm(np.full((3, 4), np.nan), ones(4, 2)), ValueError, r"\bA\b"),
    ("NaN codes into a fixed accumulator",
     lambda: Array(4, 4, "os", MAC("e4m3fn", "e4m3fn", FixedAcc(8, 4))).gemm(
         acs.QTensor(np.full((3, 4), 0x7F, np.uint8), "e4m3fn"), ones(4, 2)), ValueError, "NaN"),
    ("infinity into a fixed buffer",
     lambda: Array(4, 4, "ws", MAC("e5m2", "e5m2", "fp32"), buffer_acc=FixedAcc(8, 4)).gemm(
         acs.QTensor(np.full((3, 4), 0x7C, np.uint8), "e5m2"), ones(4, 2)), ValueError, "infinit"),
]

CONV = [
    ("x 3-D", lambda: arr().conv2d(ones(2, 5, 5), ones(2, 2, 3, 3)), ValueError, "x must have 4"),
    ("w 3-D", lambda: arr().conv2d(ones(1, 2, 5, 5), ones(2, 3, 3)), ValueError, "w must have 4"),
    ("channels mismatch", lambda: arr().conv2d(ones(1, 3, 5, 5), ones(2, 2, 3, 3)), ValueError, "channels"),
    ("stride zero", lambda: arr().conv2d(ones(1, 2, 5, 5), ones(2, 2, 3, 3), stride=0), ValueError, "stride"),
    ("stride triple", lambda: arr().conv2d(ones(1, 2, 5, 5), ones(2, 2, 3, 3), stride=(1, 1, 1)), TypeError, "stride"),
    ("stride float", lambda: arr().conv2d(ones(1, 2, 5, 5), ones(2, 2, 3, 3), stride=1.5), TypeError, "stride"),
    ("padding negative", lambda: arr().conv2d(ones(1, 2, 5, 5), ones(2, 2, 3, 3), padding=-1), ValueError,
     "padding"),
    ("padding string", lambda: arr().conv2d(ones(1, 2, 5, 5), ones(2, 2, 3, 3), padding="same"), TypeError,
     "padding"),
    ("dilation zero", lambda: arr().conv2d(ones(1, 2, 5, 5), ones(2, 2, 3, 3), dilation=(1, 0)), ValueError,
     "dilation"),
    ("groups zero", lambda: arr().conv2d(ones(1, 2, 5, 5), ones(2, 2, 3, 3), groups=0), ValueError, "groups"),
    ("groups float", lambda: arr().conv2d(ones(1, 4, 5, 5), ones(2, 2, 3, 3), groups=2.0), ValueError, "groups"),
    ("groups not dividing", lambda: arr().conv2d(ones(1, 4, 5, 5), ones(2, 4, 3, 3), groups=3), ValueError,
     "groups"),
    ("kernel too large", lambda: arr().conv2d(ones(1, 2, 5, 5), ones(2, 2, 7, 7)), ValueError, "kernel"),
    ("conv bias wrong length", lambda: arr().conv2d(ones(1, 2, 5, 5), ones(2, 2, 3, 3), bias=ones(4)), ValueError,
     "bias"),
    ("conv x QTensor of another format", lambda: arr().conv2d(qt((1, 2, 5, 5), "e4m3fn"), ones(2, 2, 3, 3)),
     ValueError, "x is a QTensor"),
]

LINEAR_MATMUL = [
    ("linear w 1-D", lambda: arr().linear(ones(2, 3), ones(3)), ValueError, "w must be"),
    ("linear x 0-D", lambda: arr().linear(np.float64(2.0), ones(3, 3)), ValueError, "x must have"),
    ("linear bias wrong length", lambda: arr().linear(ones(2, 3), ones(4, 3), bias=ones(3)), ValueError, "bias"),
    # in_features that differ: the message should speak of linear's x and w, not of A and B
    ("linear in_features mismatch", lambda: arr().linear(ones(2, 3), ones(4, 5)), ValueError,
     r"\bx\b.*\bw\b|in_features"),
    ("matmul 1-D", lambda: arr().matmul(ones(3), ones(3, 3)), ValueError, "a must have at least 2"),
    ("matmul K mismatch", lambda: arr().matmul(ones(2, 3, 4), ones(5, 2)), ValueError, "K differs"),
    ("matmul batch mismatch", lambda: arr().matmul(ones(2, 3, 4), ones(3, 4, 2)), ValueError, "broadcast"),
    ("matmul per-channel QTensor", lambda: arr(mac=F8).matmul(qt((3, 4), scale=np.ones(3, np.float32), axis=0),
                                                              ones(4, 2)), ValueError, "per tensor"),
    # a QTensor of another format must be refused, as gemm refuses it, not reinterpreted
    ("matmul a QTensor of another format", lambda: arr().matmul(qt((2, 3), "e4m3fn"), ones(3, 3)), ValueError,
     "e4m3fn"),
    ("matmul b QTensor of another format", lambda: arr(mac=F8).matmul(ones(2, 3), qt((3, 3), "e5m2")), ValueError,
     "e5m2"),
]

CASES = CONSTRUCTOR + PLAN + GEMM + CONV + LINEAR_MATMUL


@pytest.mark.parametrize("name,call,exc,match", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused(name, call, exc, match):
    with np.errstate(all="ignore"):
        with pytest.raises(exc, match=match):
            call()


def test_good_input_next_to_the_bad():
    """The neighbours of the refused cases work (so the refusals are about the argument)."""
    a = Array(1, 4096, "os", MAC("int8", "int8", "int32"), buffer_acc="int32", sram_kb=(1, 2, 3),
              dram_bytes_per_cycle=0.5, clock_ghz=0.5, quant={"a": "channel", "calibration": "mse"}, seed=2**64 - 1)
    res = a.gemm(ones(3, 4), ones(4, 2), bias=np.zeros(2, np.float32))
    assert res.output.shape == (3, 2)
    mixed = Array(4, 4, "is", MAC("e4m3fn", "e4m3fn", FloatAcc(5, 10)), buffer_acc="fp32")
    assert mixed.plan_gemm(0, 0, 0).cycles >= 0
    r = arr().conv2d(ones(1, 4, 5, 5), ones(2, 2, 3, 3), stride=(2, 1), padding=(0, 1), dilation=(1, 2), groups=2)
    assert r.output.shape == (1, 2, 2, 3)
