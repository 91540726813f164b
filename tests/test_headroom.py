"""Headroom: quantize(headroom=h) maps amax to exactly max / 2^h (scales checked against numpy,
codes against ml_dtypes), Array/sweep/CLI take it, and 'auto' is the smallest headroom whose
worst case (K same-sign products of the largest codes, simulated in MPFR) fits every register,
and never overflows on adversarial data."""
import subprocess
from pathlib import Path
import sys
import warnings

import ml_dtypes
import numpy as np
import pytest

import accel_sim as acs
import gmpy2

from accel_sim import operands
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


def test_auto_refuses_when_no_headroom_fits():
    # rounding up, a sum of positive products gains an ulp per step and reaches max at any h
    arr = acs.Array(4, 4, "os", acs.MAC("e4m3fn", "e4m3fn", FloatAcc(5, 10, rounding="rup")),
                    quant={"headroom": "auto"})
    with pytest.raises(ValueError, match="no headroom up to 18 bits"):
        arr.gemm(np.ones((1, 1 << 17)), np.ones((1 << 17, 1)))


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


def mpfr_sum(n, q, acc: FloatAcc):
    """n additions of q to a register starting at 0, in MPFR emulating FloatAcc acc (rne:
    precision m+1, its emin/emax, subnormals, overflow to inf)."""
    bias = 2 ** (acc.exp_bits - 1) - 1
    ctx = gmpy2.context(precision=acc.man_bits + 1, emin=1 - bias - acc.man_bits + 1, emax=bias + 1,
                        subnormalize=True, round=gmpy2.RoundToNearest)
    total, qm = gmpy2.mpfr(0), gmpy2.mpfr(q, 53)
    for _ in range(n):
        total = ctx.add(total, qm)
    return total, ctx


def mpfr_worst(q, k, dataflow, rows, pe, buffer):
    """[(value, register)] of k products of q through the array: the PE chain of one tile (os:
    k), and for ws the buffer summing the tiles' sums in order."""
    if dataflow == "os":
        return [(float(mpfr_sum(k, q, pe)[0]), pe)]
    tile = min(k, rows)
    full = mpfr_sum(tile, q, pe)[0]
    last = mpfr_sum(k % tile, q, pe)[0] if k % tile else full
    _, ctx = mpfr_sum(0, q, buffer)
    total = gmpy2.mpfr(0)
    for t in range(-(-k // tile)):
        total = ctx.add(total, last if t == k // tile else full)
    return [(float(full), pe), (float(total), buffer)]


def fits(worst):
    return all(v < reg.max for v, reg in worst)


def auto_h(arr, A, B):
    """The headroom Array's 'auto' picks for A @ B (per-tensor scales): log2 of the scale ratio."""
    qa, _ = operands.operand_pair(arr, A, B, "tensor", "tensor", ("A", "B"), 2, A.shape[1])
    return int(round(np.log2(float(qa.scale) / float(quantize(A, arr.mac.a, calibration=arr.quant["calibration"]).scale))))


E4M3 = ML["e4m3fn"]
FP16, FP32 = FloatAcc(5, 10), FloatAcc(8, 23)


@pytest.mark.parametrize("dataflow,pe,buffer", [("os", FP16, None), ("ws", FP16, FP32), ("ws", FP16, FP16),
                                                ("os", FloatAcc(5, 2), None), ("is", FloatAcc(5, 3), FloatAcc(5, 6))])
@pytest.mark.parametrize("k", [512, 1500, 8192, 32768])
def test_auto_is_the_smallest_headroom_whose_mpfr_worst_case_fits(dataflow, pe, buffer, k):
    """Constant operands at +amax are the worst case: every product at q(h)^2, one sign.  Auto's
    h is the smallest whose MPFR simulation stays below every register's max; the engine's
    output on that data is the MPFR value, and it is reported as an overflow one bit lower."""
    mac = acs.MAC("e4m3fn", "e4m3fn", pe)
    arr = acs.Array(8, 8, dataflow, mac, buffer_acc=buffer, quant={"headroom": "auto"})
    A, B = np.full((2, k), 3.0), np.full((k, 3), 0.5)
    q = lambda h: float(E4M3(448.0 / 2.0 ** h))   # amax's code: exact for these h
    want = next(h for h in range(19) if fits(mpfr_worst(q(h) ** 2, k, dataflow, 8, pe, buffer or pe)))
    h = auto_h(arr, A, B)
    assert h == want
    with warnings.catch_warnings():
        warnings.simplefilter("error", acs.AccumulatorOverflowWarning)
        res = arr.gemm(A, B)
    assert res.overflow is None
    assert np.all(res.acc == mpfr_worst(q(h) ** 2, k, dataflow, 8, pe, buffer or pe)[-1][0])
    if h:
        below = acs.Array(8, 8, dataflow, mac, buffer_acc=buffer, quant={"headroom": h - 1})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", acs.AccumulatorOverflowWarning)
            low = below.gemm(A, B)
        worst = mpfr_worst(q(h - 1) ** 2, k, dataflow, 8, pe, buffer or pe)
        assert not fits(worst) and np.all(low.acc == worst[-1][0])
        assert low.overflow is not None


@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_auto_covers_percentile_calibration_outliers(dataflow):
    """Values above the percentile clip saturate to 448, not 448 / 2^h: auto's h is the
    smallest whose MPFR worst case, with each operand's largest code from its true absmax,
    fits; the old bound's h=6 overflows on this data."""
    rng = np.random.default_rng(5)
    k = 512
    A, B = rng.standard_normal((64, k)), rng.standard_normal((k, 64))
    A[0, :2] = B[:2, 0] = 1e3
    mac = acs.MAC("e4m3fn", "e4m3fn", "fp16")
    quant = {"headroom": "auto", "calibration": "percentile"}
    arr = acs.Array(8, 8, dataflow, mac, quant=quant)

    def q(x, h):   # the code of the true absmax under the percentile scale at h, saturated
        s = np.float32(np.percentile(np.abs(x), 99.99) * 2.0 ** h / 448.0)
        return float(E4M3(min(np.abs(x).max() / np.float64(s), 448.0)))

    want = next(h for h in range(19) if fits(mpfr_worst(q(A, h) * q(B, h), k, dataflow, 8, FP16, FP16)))
    assert auto_h(arr, A, B) == want > 6
    with warnings.catch_warnings():
        warnings.simplefilter("error", acs.AccumulatorOverflowWarning)
        assert arr.gemm(A, B).overflow is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", acs.AccumulatorOverflowWarning)
        old = acs.Array(8, 8, dataflow, mac, quant=dict(quant, headroom=6)).gemm(A, B)
    assert old.overflow is not None


def test_e4m3fn_fp16_auto_stays_small_at_large_k():
    """Round-to-nearest sums stop growing: about 7 bits at any K (the old bound took 19 at
    K=16384, every code 0), and the error stays that of the format."""
    rng = np.random.default_rng(1)
    k = 16384
    A, B = rng.standard_normal((8, k)), rng.standard_normal((k, 8))
    arr = acs.Array(8, 8, "os", acs.MAC("e4m3fn", "e4m3fn", "fp16"), quant={"headroom": "auto"})
    assert 6 <= auto_h(arr, A, B) <= 8
    assert arr.gemm(A, B).metrics["vs_float64"]["sqnr_db"] > 20


@pytest.mark.parametrize("mac,dataflow", [
    (acs.presets.tensor_core("h100", "e4m3", "fp16"), "os"),
    (acs.presets.tensor_core("h100", "e4m3", "fp16"), "ws"),
    (acs.MAC("e4m3fn", "e4m3fn", FloatAcc(5, 10, rounding="rtz")), "os"),
    (acs.MAC("e4m3fn", "e4m3fn", FloatAcc(5, 10, rounding="rdn")), "ws"),
    (acs.MAC("e5m2", "e5m2", FloatAcc(5, 10, rounding="sr")), "os")])
@pytest.mark.parametrize("k", [512, 8192])
@pytest.mark.parametrize("rounding", ["rne", "sr"])
def test_auto_never_overflows_adversarial_data(mac, dataflow, k, rounding):
    """Every operand at amax with one sign (both signs tried), for block fused adders,
    directed and stochastic registers and stochastic quantization: nothing overflows or
    saturates (directed registers at +-max count as saturated)."""
    arr = acs.Array(4, 4, dataflow, mac, quant={"headroom": "auto", "rounding": rounding})
    with warnings.catch_warnings():
        warnings.simplefilter("error", acs.AccumulatorOverflowWarning)
        for sign in (1.0, -1.0):
            res = arr.gemm(np.full((2, k), 3.0 * sign), np.full((k, 2), 0.5))
            assert res.overflow is None and np.all(np.isfinite(res.acc))


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


def test_auto_reaches_bf16_operands():
    """bf16 products span 2^256: fp32 sums need about 65 bits of headroom (over the old cap 64)."""
    arr = acs.Array(4, 4, "os", acs.MAC("bf16", "bf16", "fp32"), quant={"headroom": "auto"})
    A, B = np.full((2, 512), 3.0), np.full((512, 2), 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", acs.AccumulatorOverflowWarning)
        assert arr.gemm(A, B).overflow is None
    assert auto_h(arr, A, B) > 64


def test_headroom_refusals_name_the_argument():
    """'none' scales would ignore headroom; a headroom that maps amax below half the smallest
    code makes every code 0; the CLI names --headroom."""
    with pytest.raises(ValueError, match=r"quant\['headroom'\] applies to 'tensor' and 'channel'.*quant\['a'\]"):
        acs.Array(4, 4, quant={"a": "none", "b": "none", "headroom": 2})
    with pytest.raises(ValueError, match=r"quant\['headroom'\] must be at most 18 bits for e4m3fn"):
        acs.Array(4, 4, mac=acs.MAC("e4m3fn", "e4m3fn", "fp16"), quant={"headroom": 19})
    with pytest.raises(ValueError, match="at most 7 bits for int8.*every code would be 0"):
        quantize(np.ones((2, 2)), "int8", headroom=8)
    assert np.all(quantize(np.ones((2, 2)), "int8", headroom=7).codes == 1)
    trace = str(Path(acs.__file__).parents[1] / "traces" / "minilm_l6.npz")
    for args in (["sweep", trace, "--a", "e4m3fn", "--acc", "fp16", "--headroom", "1.5"],
                 ["sweep", trace, "--a", "e4m3fn", "--acc", "fp16", "--headroom=-3,99"],
                 ["sweep", trace, "--a", "e4m3fn", "--acc", "fp16", "--headroom", "99"],
                 ["gemm", "--a", "e4m3fn", "--acc", "fp16", "--m", "8", "--n", "8", "--k", "64", "--headroom", "99"]):
        proc = subprocess.run([sys.executable, "-m", "accel_sim.cli", *args, "--out", "/nonexistent/x"]
                              if args[0] == "sweep" else [sys.executable, "-m", "accel_sim.cli", *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr and "--headroom" in proc.stderr, proc.stderr
