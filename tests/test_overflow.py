"""Overflow and saturation reports: the C epilogue's counts against numpy's count of the same
GEMM's returned outputs (non-finite, or exactly at the saturating register's clamp), one
AccumulatorOverflowWarning per call, the report in to_dict, replay, sweep rows and the CLI."""
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import accel_sim as acs
from accel_sim import overflow as _overflow
from accel_sim.mac import FixedAcc, FloatAcc, IntAcc, accumulate
from accel_sim.quant import quantize

TRACES = Path(__file__).resolve().parents[1] / "traces"


def caught(fn, *args, **kw):
    """fn's result and the AccumulatorOverflowWarnings it raised."""
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = fn(*args, **kw)
    return out, [x for x in w if issubclass(x.category, acs.AccumulatorOverflowWarning)]


def numpy_counts(res, clamp=None):
    acc = np.asarray(res.acc)
    nonfinite = int(np.count_nonzero(~np.isfinite(acc))) if acc.dtype.kind == "f" else 0
    sat = 0 if clamp is None else int(np.count_nonzero((acc == clamp[0]) | (acc == clamp[1])))
    return {"acc_nonfinite": nonfinite, "acc_saturated": sat,
            "out_nonfinite": int(np.count_nonzero(~np.isfinite(res.output)))}


def c_counts(res):
    return {k: res.counts[k] for k in ("acc_nonfinite", "acc_saturated", "out_nonfinite")}


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("threads", [1, 3])
def test_fp16_overflow_counts_equal_numpy(dataflow, threads):
    rng = np.random.default_rng(7)
    A, B = rng.standard_normal((37, 64)), rng.standard_normal((64, 29))
    A[:5] *= 1e-3                                      # some rows stay finite
    arr = acs.Array(8, 8, dataflow, acs.MAC("e4m3fn", "e4m3fn", "fp16"), threads=threads)
    res, w = caught(arr.gemm, A, B)
    want = numpy_counts(res)
    assert c_counts(res) == want
    assert 0 < want["acc_nonfinite"] < res.output.size
    assert len(w) == 1
    rep = res.overflow
    assert rep["acc_nonfinite"] == want["acc_nonfinite"] and rep["accumulator"] == "fp16"
    assert rep["acc_max"] == 65504.0 and "headroom" in rep["remedy"] and "fp32" in rep["remedy"]
    assert f"{want['acc_nonfinite']} of {res.output.size} outputs overflowed" in str(w[0].message)
    assert res.to_dict()["overflow"] == rep and res.to_dict()["counts"]["acc_nonfinite"] == want["acc_nonfinite"]


@pytest.mark.parametrize("acc,clamp", [
    (FloatAcc(5, 10, overflow="saturate"), (-65504.0, 65504.0)),
    (FloatAcc(4, 3, overflow="saturate"), (-240.0, 240.0)),
])
@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_saturating_float_counts_equal_numpy(acc, clamp, dataflow):
    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((21, 48)), rng.standard_normal((48, 17))
    res, w = caught(acs.Array(4, 4, dataflow, acs.MAC("e4m3fn", "e4m3fn", acc)).gemm, A, B)
    want = numpy_counts(res, clamp)
    assert c_counts(res) == want and want["acc_saturated"] > 0 and want["acc_nonfinite"] == 0
    assert len(w) == 1 and "saturated" in str(w[0].message)


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_saturating_int_counts_equal_numpy(dataflow):
    rng = np.random.default_rng(5)
    a = rng.integers(-128, 128, (19, 40)).astype(np.uint8)
    b = rng.integers(-128, 128, (40, 23)).astype(np.uint8)
    a[:4] = 0                                           # rows far from the clamp
    acc = IntAcc(16, overflow="saturate")
    arr = acs.Array(4, 4, dataflow, acs.MAC("int8", "int8", acc))
    res, w = caught(arr.gemm, acs.QTensor(a, "int8"), acs.QTensor(b, "int8"))
    want = numpy_counts(res, (-32768, 32767))
    assert c_counts(res) == want and want["acc_saturated"] > 0
    assert len(w) == 1


def test_saturating_fixed_and_block_scaled_counts_equal_numpy():
    rng = np.random.default_rng(9)
    A, B = rng.standard_normal((13, 64)) * 30, rng.standard_normal((64, 11)) * 30
    fixed = FixedAcc(8, 8, overflow="saturate")
    res, w = caught(acs.Array(4, 4, "os", acs.MAC("e4m3fn", "e4m3fn", fixed), quant={"a": "none", "b": "none"}).gemm,
                    np.clip(A, -448, 448), np.clip(B, -448, 448))
    assert c_counts(res) == numpy_counts(res, fixed.clamp) and res.counts["acc_saturated"] > 0 and len(w) == 1
    # block-scaled: the output register is the MAC's scale_acc (here fp16, overflowing)
    mac = acs.MAC("e4m3fn", "e4m3fn", "fp32", scale_acc=FloatAcc(5, 10))
    res, w = caught(acs.Array(4, 4, "ws", mac, quant={"a": "block", "b": "block"}).gemm, A * 100, B * 100)
    want = numpy_counts(res)
    assert c_counts(res) == want and want["acc_nonfinite"] > 0 and len(w) == 1
    assert res.overflow["accumulator"] == "fp16"


def test_no_overflow_no_report():
    rng = np.random.default_rng(1)
    res, w = caught(acs.Array(4, 4, "ws", acs.MAC("e4m3fn", "e4m3fn", "fp32")).gemm,
                    rng.standard_normal((9, 30)), rng.standard_normal((30, 5)))
    assert w == [] and res.overflow is None and res.to_dict()["overflow"] is None
    assert c_counts(res) == {"acc_nonfinite": 0, "acc_saturated": 0, "out_nonfinite": 0}


def test_one_warning_per_call_for_conv_matmul_linear():
    rng = np.random.default_rng(2)
    arr = acs.Array(4, 4, "ws", acs.MAC("e4m3fn", "e4m3fn", "fp16"))
    x, wt = rng.standard_normal((2, 4, 6, 6)), rng.standard_normal((8, 2, 3, 3))
    res, w = caught(arr.conv2d, x, wt, padding=1, groups=2)       # two GEMMs, one warning
    assert len(w) == 1 and c_counts(res) == numpy_counts(res)
    res, w = caught(arr.matmul, rng.standard_normal((3, 5, 40)), rng.standard_normal((3, 40, 6)))
    assert len(w) == 1 and c_counts(res) == numpy_counts(res) and res.counts["acc_nonfinite"] > 0
    res, w = caught(arr.linear, rng.standard_normal((7, 40)), rng.standard_normal((6, 40)))
    assert len(w) == 1 and c_counts(res) == numpy_counts(res)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", acs.AccumulatorOverflowWarning)   # users can filter it
        arr.gemm(rng.standard_normal((7, 40)), rng.standard_normal((40, 6)))


def test_replay_reports_and_warns_once():
    arr = acs.Array(16, 16, "ws", acs.MAC("e4m3fn", "e4m3fn", "fp16"))
    report, w = caught(acs.trace.replay, TRACES / "digits_cnn.npz", arr, task=False)
    assert len(w) == 1
    hit = [l for l in report.layers if l["overflow"]]
    assert hit and report.totals["overflow"]["layers"] == [l["name"] for l in hit]
    assert report.totals["overflow"]["acc_nonfinite"] == sum(l["counts"]["acc_nonfinite"] for l in hit)
    for l in report.layers:
        assert l["counts"]["acc_nonfinite"] >= l["metrics"]["nonfinite"] > 0 or l["overflow"] is None


def test_sweep_rows_have_overflow_columns():
    rng = np.random.default_rng(4)
    target = (rng.standard_normal((16, 64)), rng.standard_normal((64, 8)))
    table, w = caught(acs.sweep, target, {"a": ["e4m3fn"], "acc": ["fp32", "fp16"], "array": ["4x4"]},
                      executor=False, progress=False)
    assert len(w) == 1
    rows = {r["acc"]: r for r in table}
    assert rows["fp32"]["overflowed"] == 0 and rows["fp32"]["overflow"] == ""
    direct, _ = caught(acs.Array(4, 4, "ws", acs.MAC("e4m3fn", "e4m3fn", "fp16")).gemm, *target)
    assert rows["fp16"]["overflowed"] == numpy_counts(direct)["acc_nonfinite"] > 0
    assert "fp16 (max 65504)" in rows["fp16"]["overflow"]


def test_cli_prints_overflow_line():
    args = ["gemm", "--a", "e4m3fn", "--acc", "fp16", "--m", "64", "--n", "32", "--k", "128", "--array", "8x8"]
    proc = subprocess.run([sys.executable, "-m", "accel_sim.cli", *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rng = np.random.default_rng(0)
    res, _ = caught(acs.Array(8, 8, "ws", acs.MAC("e4m3fn", "e4m3fn", "fp16")).gemm,
                    rng.standard_normal((64, 128)), rng.standard_normal((128, 32)))
    n = numpy_counts(res)["acc_nonfinite"]
    lines = [l for l in proc.stdout.splitlines() if l.startswith("overflow:")]
    assert len(lines) == 1 and f"{n} of {64 * 32} outputs overflowed" in lines[0]
    assert "likely cause" in lines[0] and "remedy" in lines[0] and "AccumulatorOverflowWarning" not in proc.stderr
    out = json.loads(subprocess.run([sys.executable, "-m", "accel_sim.cli", *args, "--json"], capture_output=True,
                                    text=True, timeout=600).stdout)
    assert out["overflow"]["acc_nonfinite"] == out["counts"]["acc_nonfinite"] == n


def test_quire_readout_saturation_counts_equal_numpy():
    """A quire sums exactly; its posit8 readout saturates at +-maxpos (64)."""
    rng = np.random.default_rng(11)
    quire = acs.Quire("posit8")
    arr = acs.Array(4, 4, "os", acs.MAC("posit8", "posit8", quire), quant={"a": "none", "b": "none"})
    res, w = caught(arr.gemm, np.clip(rng.standard_normal((10, 32)) * 3, -60, 60),
                    np.clip(rng.standard_normal((32, 9)) * 3, -60, 60))
    want = numpy_counts(res, (-64.0, 64.0))
    assert c_counts(res) == want and 0 < want["acc_saturated"] < res.output.size
    assert len(w) == 1 and "posit8 saturates" in res.overflow["cause"] and res.overflow["acc_max"] == 64.0


def test_out_format_overflow_is_reported():
    """fp32 outputs beyond fp16's max round to inf in the readout to out_format: counted
    against numpy's count of the output's infinities, named with the format and its max."""
    rng = np.random.default_rng(0)
    arr = acs.Array(4, 4, "ws", acs.MAC("e4m3fn", "e4m3fn", "fp32"))
    with pytest.warns(acs.AccumulatorOverflowWarning, match=r"out_format fp16 \(max 65504\)"):
        res = arr.gemm(rng.standard_normal((8, 64)) * 1e3, rng.standard_normal((64, 8)) * 1e3, out_format="fp16")
    n_inf = int(np.count_nonzero(np.isinf(res.output)))
    assert n_inf > 0 and res.counts["format_nonfinite"] == n_inf == res.overflow["format_nonfinite"]
    assert res.overflow["out_format"] == "fp16" and res.overflow["out_format_max"] == 65504


def test_pe_saturation_before_an_unlike_buffer_is_counted():
    """A saturating fp16 PE register under an fp32 buffer: every tile sum of large positive
    products clamps at 65504 in the PEs (MPFR-free: 4 products of 448^2 each exceed it), though
    the buffer never saturates."""
    rng = np.random.default_rng(1)
    mac = acs.MAC("e4m3fn", "e4m3fn", FloatAcc(5, 10, overflow="saturate"))
    A, B = np.abs(rng.standard_normal((8, 64))) * 100, np.abs(rng.standard_normal((64, 8))) * 100
    with pytest.warns(acs.AccumulatorOverflowWarning, match="tile sum saturated in the PE register"):
        res = acs.Array(4, 4, "ws", mac, buffer_acc="fp32").gemm(A, B)
    # the tile sums, from accumulate (one chain per tile, PE register): at the clamp somewhere
    qa, qb = quantize(A, "e4m3fn"), quantize(B, "e4m3fn")
    tiles = accumulate(qa.codes.reshape(8, 1, 16, 4), qb.codes.T.reshape(1, 8, 16, 4), mac)
    want = int(np.count_nonzero((tiles == 65504).any(axis=2)))
    assert want > 0 and res.counts["pe_saturated"] == want and res.counts["acc_saturated"] == 0
    # the same register as buffer: the output register's count, no PE count
    with pytest.warns(acs.AccumulatorOverflowWarning):
        same = acs.Array(4, 4, "ws", mac).gemm(A, B)
    assert same.counts["pe_saturated"] == 0 and same.counts["acc_saturated"] > 0


@pytest.mark.parametrize("rounding,sign", [("rtz", 1), ("rtz", -1), ("rdn", 1), ("rup", -1)])
def test_directed_rounding_overflow_to_max_counts_as_saturated(rounding, sign):
    """IEEE directed rounding turns an overflow into +-max, not inf: 512 ones sum past
    65504 in fp16 and stay at +-max; counted as saturated, worded as the rounding's clamp."""
    arr = acs.Array(4, 4, "os", acs.MAC("e4m3fn", "e4m3fn", FloatAcc(5, 10, rounding=rounding)),
                    quant={"a": "none", "b": "none"})
    with pytest.warns(acs.AccumulatorOverflowWarning, match=f"rounding '{rounding}' turns an overflow into"):
        res = arr.gemm(np.full((1, 512), 16.0 * sign), np.full((512, 1), 16.0))
    assert res.acc[0, 0] == sign * 65504.0 and res.counts["acc_saturated"] == 1


def test_linear_warning_points_at_the_caller():
    arr = acs.Array(4, 4, "os", acs.MAC("e4m3fn", "e4m3fn", "fp16"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arr.linear(np.ones((2, 512)), np.ones((3, 512)))
    hits = [w for w in caught if issubclass(w.category, acs.AccumulatorOverflowWarning)]
    assert len(hits) == 1 and hits[0].filename == __file__


def test_combine_counts_every_layers_outputs():
    rep = {"outputs": 10, "acc_nonfinite": 2, "acc_saturated": 0, "out_nonfinite": 2, "accumulator": "fp16",
           "acc_max": 65504.0, "cause": "c", "remedy": "r"}
    out = _overflow.combine([("l1", rep), ("l2", None)], outputs=30)
    assert "2 of 30 outputs" in out["message"] and "1 of 2 layers" in out["message"]
