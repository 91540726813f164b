"""Headroom: quantize(headroom=h) maps amax to exactly max / 2^h (scales checked against numpy,
codes against ml_dtypes), Array/sweep/CLI take it, and 'auto' is the smallest headroom whose
partial-sum bound fits the accumulator and never overflows on its calibration data."""
import subprocess
import sys
import warnings

import ml_dtypes
import numpy as np
import pytest

import accel_sim as acs
from accel_sim.headroom import auto_headroom, partial_sum_bound
from accel_sim.mac import FloatAcc
from accel_sim.quant import quantize

ML = {"e4m3fn": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2, "e3m4": ml_dtypes.float8_e3m4}


@pytest.mark.parametrize("fmt", ["e4m3fn", "e5m2", "e3m4", "int8"])
@pytest.mark.parametrize("h", [0, 1, 3, 4, 7])
@pytest.mark.parametrize("scale", ["tensor", "channel"])
def test_amax_maps_to_max_over_2_to_the_h(fmt, h, scale):
    rng = np.random.default_rng(h)
    x = rng.standard_normal((6, 50)) * rng.uniform(0.1, 10, (6, 1))
    q = quantize(x, fmt, scale=scale, axis=0 if scale == "channel" else None, headroom=h)
    f = acs.formats.get(fmt)
    amax = np.abs(x).max(axis=1) if scale == "channel" else np.abs(x).max()
    want = (amax * 2.0 ** h / f.max).astype(np.float32)        # float32(amax * 2^h / max), numpy's rounding
    assert np.array_equal(np.asarray(q.scale, np.float32), want)
    base = quantize(x, fmt, scale=scale, axis=0 if scale == "channel" else None)
    assert np.array_equal(np.asarray(q.scale, np.float32), np.asarray(base.scale, np.float32) * np.float32(2.0 ** h))
    vals = f.decode(q.codes)
    rows = np.arange(6)
    top = np.abs(vals[rows, np.abs(x).argmax(axis=1)]) if scale == "channel" else np.abs(vals.reshape(-1)[np.abs(x).argmax()])
    target = f.max / 2.0 ** h
    exact = float(ML[fmt](target)) == target if fmt in ML else target == int(target)
    if exact:   # the amax element lands exactly on max / 2^h
        assert np.all(top == target)
    assert np.abs(vals).max() <= (target if exact else f.max)


def test_auto_refuses_when_no_headroom_bounds_the_sums():
    # bf16's 8-bit significand over 2^20 roundings: the growth factor alone passes any max
    with pytest.raises(ValueError, match="no headroom up to 64 bits"):
        auto_headroom("e4m3fn", "e4m3fn", [FloatAcc(8, 7)], 1 << 20)


def test_headroom_checks():
    x = np.ones((3, 4))
    for bad in (-1, 65, 1.5, True, "2"):
        with pytest.raises(ValueError, match="headroom"):
            quantize(x, "e4m3fn", headroom=bad)
    with pytest.raises(ValueError, match="headroom applies"):
        quantize(x, "e4m3fn", scale="block", axis=1, block=4, headroom=2)
    with pytest.raises(ValueError, match=r"quant\['headroom'\]"):
        acs.Array(4, 4, quant={"headroom": -2})
    with pytest.raises(ValueError, match="float accumulators"):
        acs.Array(4, 4, mac=acs.MAC("int8", "int8", "int32"), quant={"headroom": "auto"})
    with pytest.raises(ValueError, match="block scaling"):
        acs.Array(4, 4, mac=acs.MAC("e4m3fn", "e4m3fn", "fp32"), quant={"a": "block", "b": "block", "headroom": 3})


@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_array_headroom_equals_explicit_quantize(dataflow):
    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((20, 64)), rng.standard_normal((64, 12))
    mac = acs.MAC("e4m3fn", "e4m3fn", "fp16")
    res = acs.Array(4, 4, dataflow, mac, quant={"b": "channel", "headroom": 4}).gemm(A, B)
    want = acs.Array(4, 4, dataflow, mac).gemm(quantize(A, "e4m3fn", headroom=4),
                                                quantize(B, "e4m3fn", scale="channel", axis=1, headroom=4))
    assert np.array_equal(res.acc.view(np.uint64), want.acc.view(np.uint64))
    assert np.array_equal(res.output.view(np.uint64), want.output.view(np.uint64))


def bound(fa, fb, acc, k, h):
    """The documented bound, from an independent computation: the amax element's code by
    ml_dtypes' nearest-even cast of max / 2^h * (1 + 2^-23)."""
    qa = float(ML[fa](acs.formats.get(fa).max / 2.0 ** h * (1 + 2.0 ** -23)))
    qb = float(ML[fb](acs.formats.get(fb).max / 2.0 ** h * (1 + 2.0 ** -23)))
    return (k * qa * qb + k * 2.0 ** (acc.emin - acc.man_bits)) * (1 + 2.0 ** -acc.man_bits) ** k


@pytest.mark.parametrize("fa,fb,acc,k", [("e4m3fn", "e4m3fn", FloatAcc(5, 10), 512),
                                         ("e5m2", "e5m2", FloatAcc(5, 10), 100),
                                         ("e4m3fn", "e5m2", FloatAcc(5, 10), 3000),
                                         ("e3m4", "e3m4", FloatAcc(5, 10), 64),
                                         ("e4m3fn", "e4m3fn", FloatAcc(8, 7), 4096)])
def test_auto_is_the_smallest_headroom_within_the_bound(fa, fb, acc, k):
    h = auto_headroom(fa, fb, [acc], k)
    assert bound(fa, fb, acc, k, h) <= acc.max
    assert h == 0 or bound(fa, fb, acc, k, h - 1) > acc.max
    assert partial_sum_bound(fa, fb, acc, k, h) == pytest.approx(bound(fa, fb, acc, k, h), rel=1e-12)


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("k", [512, 1500])
def test_auto_never_overflows_its_calibration_data(dataflow, k):
    """Constant operands at +amax make every partial sum as large as it can be."""
    rng = np.random.default_rng(k)
    mac = acs.MAC("e4m3fn", "e4m3fn", "fp16")
    arr = acs.Array(8, 8, dataflow, mac, quant={"headroom": "auto"})
    h = auto_headroom("e4m3fn", "e4m3fn", [mac.acc], k)
    with warnings.catch_warnings():
        warnings.simplefilter("error", acs.AccumulatorOverflowWarning)
        for A, B in ((np.full((9, k), 3.0), np.full((k, 7), 0.5)),
                     (rng.standard_normal((9, k)), rng.standard_normal((k, 7)))):
            res = arr.gemm(A, B)
            assert res.overflow is None and np.all(np.isfinite(res.acc))
    # one bit less overflows the constant worst case, where K * q^2 alone exceeds fp16's max
    q = acs.formats.get("e4m3fn").max / 2.0 ** (h - 1)
    if k * q * q > 65504:
        worst = acs.Array(8, 8, dataflow, mac, quant={"headroom": h - 1})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", acs.AccumulatorOverflowWarning)
            assert worst.gemm(np.full((9, k), 3.0), np.full((k, 7), 0.5)).counts["acc_nonfinite"] > 0


def test_sweep_headroom_column_and_cli():
    rng = np.random.default_rng(0)
    target = (rng.standard_normal((32, 256)), rng.standard_normal((256, 16)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", acs.AccumulatorOverflowWarning)
        table = acs.sweep(target, {"a": ["e4m3fn"], "acc": ["fp16"], "headroom": [0, 4, "auto"], "array": ["4x4"]},
                          executor=False, progress=False)
    rows = {r["headroom"]: r for r in table}
    assert rows[0]["overflowed"] > 0 and rows[4]["overflowed"] == 0 and rows["auto"]["overflowed"] == 0
    assert np.isfinite(rows[4]["sqnr_db"]) and np.isfinite(rows["auto"]["sqnr_db"])
    proc = subprocess.run([sys.executable, "-m", "accel_sim.cli", "gemm", "--a", "e4m3fn", "--acc", "fp16", "--m", "64",
                           "--n", "32", "--k", "512", "--array", "8x8", "--headroom", "4"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "overflow:" not in proc.stdout and "SQNR 28." in proc.stdout
