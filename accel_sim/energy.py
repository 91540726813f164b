"""Energy tables and the energy model: energy = sum over actions of count x energy per action,
with the data-dependent terms (gated multipliers, multiplier-input and operand-register
toggles) taken from the real operand bits; calibrated presets.  Formulas, sources and the
calibration: docs/energy.md."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

__all__ = ["EnergyTable", "NODE_SCALE", "evaluate", "ENERGY_PARTS", "add_scale_energy"]

# Energy relative to 45 nm (Stillmaker & Baas, "Scaling equations for the accurate prediction
# of CMOS device performance from 180 nm to 7 nm", Integration 58, 2017).
NODE_SCALE = {45: 1.0, 32: 0.66, 16: 0.17, 14: 0.14, 7: 0.094}

ENERGY_PARTS = ("mult", "pe_add", "buffer_add", "reg", "sram", "dram", "leakage")

# The sources of the defaults, written next to each entry by to_toml().
_SOURCES = {
    "int_add_8": "Horowitz, ISSCC 2014, 45 nm 0.9 V: 8b int add",
    "int_add_32": "Horowitz 2014: 32b int add",
    "int_mult_8": "Horowitz 2014: 8b int mult",
    "int_mult_32": "Horowitz 2014: 32b int mult",
    "fp_add_16": "Horowitz 2014: 16b FP add",
    "fp_add_32": "Horowitz 2014: 32b FP add",
    "fp_mult_16": "Horowitz 2014: 16b FP mult",
    "fp_mult_32": "Horowitz 2014: 32b FP mult",
    "sram_8kb_64b": "Horowitz 2014: 64-bit read of an 8 KB SRAM",
    "sram_32kb_64b": "Horowitz 2014: 64-bit read of a 32 KB SRAM",
    "sram_1mb_64b": "Horowitz 2014: 64-bit read of a 1 MB SRAM",
    "dram_64b": "Horowitz 2014: DRAM 1.3-2.6 nJ per 64 bits; the midpoint",
    "reg_bit": "estimate: one flip-flop write at 50% activity ~ one bit of the 8b int add (0.03/8)",
    "leakage_pe_cycle": "estimate: 5% of an int8 MAC's dynamic energy (0.2 + 0.03) per PE-cycle",
    "scale_exp_add": "estimate: e8m0 x e8m0, or a power-of-two scale applied to a partial sum, is an 8-bit "
                     "exponent add or shift ~ Horowitz 2014's 8b int add (docs/scaling.md)",
}


@dataclass(frozen=True)
class EnergyTable:
    """Energies per action in pJ at `node_nm`, and two model settings.

    Every entry can be overridden (dataclasses.replace, or a TOML file)."""

    int_add_8: float = 0.03
    int_add_32: float = 0.1
    int_mult_8: float = 0.2
    int_mult_32: float = 3.1
    fp_add_16: float = 0.4
    fp_add_32: float = 0.9
    fp_mult_16: float = 1.1
    fp_mult_32: float = 3.7
    sram_8kb_64b: float = 10.0
    sram_32kb_64b: float = 20.0
    sram_1mb_64b: float = 100.0
    dram_64b: float = 1950.0
    reg_bit: float = 0.00375
    leakage_pe_cycle: float = 0.0115
    scale_exp_add: float = 0.03
    # model settings (not energies)
    node_nm: int = 45
    mult_idle_fraction: float = 0.0   # a gated multiplier's energy, as a fraction of an active one
    default_sram_kb: float = 32.0     # SRAM size per operand buffer when the array gives none

    ENERGIES = ("int_add_8", "int_add_32", "int_mult_8", "int_mult_32", "fp_add_16", "fp_add_32",
                "fp_mult_16", "fp_mult_32", "sram_8kb_64b", "sram_32kb_64b", "sram_1mb_64b",
                "dram_64b", "reg_bit", "leakage_pe_cycle", "scale_exp_add")
    SETTINGS = ("node_nm", "mult_idle_fraction", "default_sram_kb")

    def __post_init__(self):
        for name in self.ENERGIES + ("mult_idle_fraction", "default_sram_kb"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"energy table entry {name} must be a finite number >= 0, got {v!r}")
        if isinstance(self.node_nm, bool) or not isinstance(self.node_nm, int) or self.node_nm not in NODE_SCALE:
            raise ValueError(f"node_nm must be one of {sorted(NODE_SCALE)} (Stillmaker & Baas factors), "
                             f"got {self.node_nm!r}")
        if self.default_sram_kb <= 0:
            raise ValueError(f"default_sram_kb must be positive, got {self.default_sram_kb}")
        if self.mult_idle_fraction > 1:   # a gated multiply cannot cost more than an active one
            raise ValueError(f"mult_idle_fraction must be in [0, 1] (a gated multiply's energy as a fraction of "
                             f"an active one), got {self.mult_idle_fraction!r}")

    @classmethod
    def default(cls, node_nm: int = 45) -> "EnergyTable":
        """Horowitz's 45 nm figures, scaled to node_nm by Stillmaker & Baas's factor."""
        if isinstance(node_nm, bool) or not isinstance(node_nm, int) or node_nm not in NODE_SCALE:
            raise ValueError(f"node_nm must be one of {sorted(NODE_SCALE)} (Stillmaker & Baas factors), "
                             f"got {node_nm!r}")
        base = cls()
        k = NODE_SCALE[node_nm]
        return replace(base, node_nm=node_nm, **{n: getattr(base, n) * k for n in cls.ENERGIES})

    @classmethod
    def preset(cls, name: str) -> "EnergyTable":
        """The table calibrated to one published source (docs/energy.md "Calibration");
        EnergyTable.presets() lists them."""
        if not isinstance(name, str) or name not in _PRESETS:
            raise ValueError(f"energy table preset must be one of {', '.join(_PRESETS)}, got {name!r}")
        return _PRESETS[name][1]()

    @staticmethod
    def presets() -> dict:
        """{name: what the preset is calibrated to}."""
        return {name: about for name, (about, _) in _PRESETS.items()}

    # -- TOML -----------------------------------------------------------------------------------
    def to_toml(self) -> str:
        lines = ["# accel_sim energy table: pJ per action (docs/energy.md)", "", "[model]",
                 f"node_nm = {self.node_nm}",
                 f"mult_idle_fraction = {self.mult_idle_fraction!r}",
                 f"default_sram_kb = {float(self.default_sram_kb)!r}", "", "[energy]"]
        for name in self.ENERGIES:
            lines.append(f"{name} = {float(getattr(self, name))!r}  # {_SOURCES[name]}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, path) -> "EnergyTable":
        """A table from a TOML file: [model] node_nm picks the scaled defaults, then [energy]
        entries (pJ at that node) and [model] settings override them."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a file path (str or os.PathLike), got {type(path).__name__}")
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise ValueError(f"cannot read energy table {path}: {e} (presets, by name: "
                             f"{', '.join(_PRESETS)})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"energy table {path} is not valid TOML: {e}") from None
        unknown = set(data) - {"model", "energy"}
        if unknown:
            raise ValueError(f"energy table {path}: unknown sections {sorted(unknown)}; expected [model], [energy]")
        model, energy = data.get("model", {}), data.get("energy", {})
        for section, allowed, given in (("model", cls.SETTINGS, model), ("energy", cls.ENERGIES, energy)):
            if not isinstance(given, dict):
                raise ValueError(f"energy table {path}: [{section}] must be a table, got {type(given).__name__}")
            bad = set(given) - set(allowed)
            if bad:
                raise ValueError(f"energy table {path}: unknown [{section}] keys {sorted(bad)}")
        node = model.get("node_nm", 45)
        if isinstance(node, bool) or not isinstance(node, int) or node not in NODE_SCALE:
            raise ValueError(f"energy table {path}: [model] node_nm must be one of {sorted(NODE_SCALE)}, got {node!r}")
        table = cls.default(node)
        try:
            return replace(table, **{k: v for k, v in model.items() if k != "node_nm"}, **energy)
        except ValueError as e:
            raise ValueError(f"energy table {path}: {e}") from None

    # -- derived energies (widths the table lacks) ------------------------------------------------
    def int_add(self, bits: float) -> float:
        """Linear in width through the 8b and 32b anchors."""
        slope = (self.int_add_32 - self.int_add_8) / 24
        return max(0.0, self.int_add_8 + slope * (bits - 8))

    def int_mult(self, bits_a: float, bits_b: float) -> float:
        """~ bits^2: a power law through the 8b and 32b anchors, at sqrt(bits_a * bits_b)."""
        if self.int_mult_8 == 0:
            return 0.0
        p = math.log(self.int_mult_32 / self.int_mult_8) / math.log(4) if self.int_mult_32 > 0 else 2.0
        return self.int_mult_8 * (math.sqrt(bits_a * bits_b) / 8) ** p

    def _fp_mult_coefficients(self):
        # significand multiplier alpha*(ma+1)(mb+1) + exponent adder kappa*e, fitted so that
        # fp16 (e5, m10) and fp32 (e8, m23) reproduce the table exactly
        kappa = (self.fp_mult_32 - self.fp_mult_16 * 576 / 121) / (8 - 5 * 576 / 121)
        alpha = (self.fp_mult_16 - 5 * kappa) / 121
        return alpha, kappa

    def fp_mult(self, ea: int, ma: int, eb: int, mb: int) -> float:
        alpha, kappa = self._fp_mult_coefficients()
        return max(0.0, alpha * (ma + 1) * (mb + 1) + kappa * max(ea, eb))

    def posit_codec(self, n: int) -> float:
        """Decoding or encoding an n-bit posit: a leading-run detector and an n-bit shifter of
        log2(n) stages, each stage taken as one n-bit add (an estimate, docs/energy.md)."""
        return self.int_add(n) * math.log2(n)

    def fp_add(self, e: int, m: int) -> float:
        """The table's fp16/fp32 adds; other widths ~ (e+m+1) scaled from the 32b FP add."""
        if (e, m) == (5, 10):
            return self.fp_add_16
        if (e, m) == (8, 23):
            return self.fp_add_32
        return self.fp_add_32 * (1 + e + m) / 32

    def sram_byte(self, size_kb: float) -> float:
        """Per byte read or written, log-log interpolated in size between the 8 KB, 32 KB and
        1 MB anchors (extrapolated along the end segments)."""
        xs = [math.log(8), math.log(32), math.log(1024)]
        ys = [self.sram_8kb_64b, self.sram_32kb_64b, self.sram_1mb_64b]
        if min(ys) <= 0:
            return max(0.0, ys[0 if size_kb <= 32 else 2]) / 8
        ys = [math.log(y) for y in ys]
        x = math.log(size_kb)
        i = 0 if x <= xs[1] else 1
        y = ys[i] + (ys[i + 1] - ys[i]) * (x - xs[i]) / (xs[i + 1] - xs[i])
        return math.exp(y) / 8

    def dram_byte(self) -> float:
        return self.dram_64b / 8

    @classmethod
    def from_synthesis(cls, report, base=None, reference=None) -> "EnergyTable":
        """`base` (default EnergyTable.default(45)) with its MAC-level entries scaled so that the
        report's MAC costs, per multiply and per accumulator step, the reference MAC's model
        energy times the ratio of synthesized areas:
            mult(report) = mult_energy(base, ref) * area_mult(report) / area_mult(ref)
            add(report)  = add_energy(base, ref.acc) * area_acc(report) / area_acc(ref)
        report: accel_sim.rtl.synth.synthesize(mac); reference: another such report (default the
        one the report carries: int8 x int8 -> int32, Horowitz's 8b multiply and 32b add, by the
        same Yosys).  The anchors of the report's families move together (int_mult_8/32 or
        fp_mult_16/32; int_add_8/32 or fp_add_16/32), so other MACs of the same family move by
        the same factor.  A proxy: area is not energy (no switching activity, no wires, generic
        cells); docs/energy.md, "Gate counts"."""
        from accel_sim.formats import FloatFormat
        from accel_sim.mac import FloatAcc
        mac = mac_of_report(report)
        if base is None:
            base = cls.default(45)
        if not isinstance(base, EnergyTable):
            raise TypeError(f"base must be an EnergyTable, got {type(base).__name__}")
        if reference is None:
            reference = report if report.get("reference") is None else report["reference"]
        ref = mac_of_report(reference)
        for what, r in (("report", report), ("reference", reference)):
            if not (r["multiplier"]["area"] > 0 and r["accumulator"]["area"] > 0):
                raise ValueError(f"{what} has no positive multiplier and accumulator areas")
        want_mult = mult_energy(base, ref) * report["multiplier"]["area"] / reference["multiplier"]["area"]
        want_add = add_energy(base, ref.acc) * report["accumulator"]["area"] / reference["accumulator"]["area"]
        float_ops = isinstance(mac.a, FloatFormat) or isinstance(mac.b, FloatFormat)
        mult_keys = ("fp_mult_16", "fp_mult_32") if float_ops else ("int_mult_8", "int_mult_32")
        add_keys = ("fp_add_16", "fp_add_32") if isinstance(mac.acc, FloatAcc) else ("int_add_8", "int_add_32")
        k_mult = want_mult / mult_energy(base, mac)
        k_add = want_add / add_energy(base, mac.acc)
        return replace(base, **{k: getattr(base, k) * k_mult for k in mult_keys},
                       **{k: getattr(base, k) * k_add for k in add_keys})


def mac_of_report(report):
    """The MAC a synthesize() report (accel_sim.rtl.synth) describes."""
    from accel_sim import formats
    from accel_sim.mac import MAC, FloatAcc, IntAcc
    if not isinstance(report, dict) or not {"a", "b", "acc", "multiplier", "accumulator"} <= set(report):
        raise ValueError("report must be a dict returned by accel_sim.rtl.synth.synthesize "
                         "(keys a, b, acc, multiplier, accumulator)")
    acc = report["acc"]
    if acc.get("kind") == "int":
        desc = IntAcc(acc["bits"], overflow=acc["overflow"])
    elif acc.get("kind") == "float":
        desc = FloatAcc(acc["exp_bits"], acc["man_bits"], rounding=acc["rounding"], subnormals=acc["subnormals"],
                        overflow=acc["overflow"])
    else:
        raise ValueError(f"report['acc'] must describe an int or float accumulator, got {acc!r}")
    return MAC(formats.get(report["a"], "report['a']"), formats.get(report["b"], "report['b']"), desc)

# -- presets ---------------------------------------------------------------------------------------
# van Baalen et al., "FP8 versus INT8 for efficient deep learning inference" (2023), abstract:
# FP formats are "somewhere between 50-180% less efficient in terms of compute in dedicated
# hardware than the INT format", i.e. an FP8 MAC costs 1.5x to 2.8x an INT8 one.
BAALEN2023_FP8_OVER_INT8 = 2.8


def _baalen2023() -> EnergyTable:
    """Horowitz's table with every float entry scaled by one factor, chosen so that an E4M3 MAC
    with an fp32 accumulator costs van Baalen's upper 2.8x an INT8 MAC with an int32 one."""
    t = EnergyTable()
    int8 = t.int_mult(8, 8) + t.int_add(32)
    fp8 = t.fp_mult(4, 3, 4, 3) + t.fp_add(8, 23)
    f = BAALEN2023_FP8_OVER_INT8 * int8 / fp8
    return replace(t, **{n: getattr(t, n) * f for n in ("fp_add_16", "fp_add_32", "fp_mult_16", "fp_mult_32")})


_PRESETS = {
    "horowitz45": ("Horowitz, ISSCC 2014, 45 nm 0.9 V (the default table)", EnergyTable),
    "baalen2023": ("Horowitz 2014's table, float entries scaled so an E4M3/fp32 MAC costs 2.8x an "
                   "INT8/int32 MAC (van Baalen et al. 2023: FP 50-180% less efficient than INT)", _baalen2023),
}


# -- the model -----------------------------------------------------------------------------------
def _format_kind(fmt):
    from accel_sim.formats import FloatFormat, PositFormat
    if isinstance(fmt, FloatFormat):
        return fmt.exp_bits, fmt.man_bits
    if isinstance(fmt, PositFormat):  # the decoded scale (signed) and the widest fraction
        return fmt.max_scale.bit_length() + 1, fmt.grid_man_bits
    return 0, fmt.bits - 1  # an integer: its magnitude bits as a significand, no exponent


def mult_energy(table: EnergyTable, mac) -> float:
    """One multiply.  Posit operands: each decoded, the fp multiplier of the decoded fields
    ((fraction bits + 1)^2 array, scale adder), and one encoder (docs/energy.md)."""
    from accel_sim.formats import FloatFormat, PositFormat
    posits = [f for f in (mac.a, mac.b) if isinstance(f, PositFormat)]
    if not posits and not isinstance(mac.a, FloatFormat) and not isinstance(mac.b, FloatFormat):
        return table.int_mult(mac.a.bits, mac.b.bits)
    (ea, ma), (eb, mb) = _format_kind(mac.a), _format_kind(mac.b)
    codec = sum(table.posit_codec(f.bits) for f in posits)
    if posits:
        codec += table.posit_codec(max(f.bits for f in posits))
    return table.fp_mult(ea, ma, eb, mb) + codec


def add_energy(table: EnergyTable, acc) -> float:
    """One accumulator step; a BlockFMA step: per-term alignment, an adder tree over the
    aligned width (the accumulator included), one normaliser/rounder."""
    from accel_sim.mac import BlockFMA, FixedAcc, FloatAcc, IntAcc, Quire
    if isinstance(acc, FloatAcc):
        return table.fp_add(acc.exp_bits, acc.man_bits)
    if isinstance(acc, Quire):  # an integer add as wide as the register
        return table.int_add(acc.bits)
    if isinstance(acc, IntAcc):
        return table.int_add(acc.bits)
    if isinstance(acc, FixedAcc):
        return table.int_add(acc.int_bits + acc.frac_bits)
    if isinstance(acc, BlockFMA):
        width = acc.align_bits + 3
        tree_width = width + math.ceil(math.log2(acc.terms + 1))
        return (acc.terms * table.int_add(width) + acc.terms * table.int_add(tree_width)
                + table.fp_add(acc.acc.exp_bits, acc.acc.man_bits))
    raise TypeError(f"unknown accumulator {acc!r}")


def buffer_add_energy(table: EnergyTable, acc) -> float:
    """A tile sum joining the accumulator buffer: one two-operand add in the buffer's format
    (a BlockFMA buffer adds with its accumulator format, not a whole block step)."""
    from accel_sim.mac import BlockFMA
    return add_energy(table, acc.acc if isinstance(acc, BlockFMA) else acc)


def evaluate(table: EnergyTable, array, counts: dict, measured: bool):
    """(total pJ, breakdown) of one run's counts on `array`.  measured: the counts include the
    data's zero_macs and register and multiplier-input toggles; otherwise every code reaching a
    register or a multiplier flips half its bits, and nothing is gated."""
    mac = array.mac
    bits_a, bits_b = mac.a.bits, mac.b.bits
    # Every code loaded into an operand register (also what reaches a multiplier's input: a
    # streaming operand each step, a stationary one each fold) flipping half its bits.
    baseline_flips = 0.5 * (bits_a * counts["reg_loads_a"] + bits_b * counts["reg_loads_b"])
    if measured:
        flips = counts["toggles_a"] + counts["toggles_b"]
        zero = counts["zero_macs"]
        mult_flips = counts["mult_toggles_a"] + counts["mult_toggles_b"]
    else:
        # with no multiplies (an empty M, N or K), nothing reaches a multiplier
        flips, zero, mult_flips = baseline_flips, 0, baseline_flips if counts["macs"] else 0.0
    # E_mult is one multiply at 50% activity: 0.5 * (bits_a + bits_b) input flips.  The active
    # multiplies are charged by their inputs' flips (a gated one holds its inputs); the operand
    # registers pass codes on to the next PE, so they are charged every flip (not gated).
    mult_units = mult_flips / (0.5 * (bits_a + bits_b))
    e_mult = mult_energy(table, mac)
    sram = array.sram_kb or (table.default_sram_kb,) * 3
    acc_bits = mac.acc.bits
    buffer_bits = array.buffer_acc.bits
    breakdown = {
        "mult": e_mult * (mult_units + zero * table.mult_idle_fraction),
        "pe_add": counts["pe_adds"] * add_energy(table, mac.acc),
        "buffer_add": counts["buffer_adds"] * buffer_add_energy(table, array.buffer_acc),
        # operand registers by their flips (reg_bit is a bit written at 50% activity);
        # accumulator registers at 50% activity
        "reg": table.reg_bit * (flips / 0.5 + counts["pe_adds"] * acc_bits + counts["buffer_adds"] * buffer_bits),
        "sram": (counts["sram_read_bytes_a"] * table.sram_byte(sram[0])
                 + counts["sram_read_bytes_b"] * table.sram_byte(sram[1])
                 + (counts["sram_write_bytes_out"] + counts["sram_read_bytes_out"]) * table.sram_byte(sram[2])),
        "dram": counts["dram_bytes"] * table.dram_byte(),
        "leakage": counts["pe_cycles"] * table.leakage_pe_cycle,
    }
    return sum(breakdown.values()), breakdown


def _scale_product_energy(table: EnergyTable, fa: str, fb: str):
    """(energy, bits of the product's significand) of multiplying two block scales: e8m0 by
    anything is an exponent add; uintM x uintN an M x N integer multiply."""
    if "e8m0" in (fa, fb):
        other = fb if fa == "e8m0" else fa
        return table.scale_exp_add, (0 if other == "e8m0" else int(other[4:]))
    ba, bb = int(fa[4:]), int(fb[4:])
    return table.int_mult(ba, bb), ba + bb


def add_scale_energy(table: EnergyTable, plan, mac, scale_format_a: str, scale_format_b: str, partial_acc):
    """Charge a block-scaled GEMM's scale steps onto plan (counts scale_mults, scale_joins):
    per output and K-block, the scale product and the partial times it ("mult"), the join add
    in mac.scale_acc ("buffer_add") and its register write ("reg").  Formulas: docs/scaling.md."""
    from accel_sim.mac import FloatAcc
    product, product_bits = _scale_product_energy(table, scale_format_a, scale_format_b)
    if product_bits == 0:        # a power of two: an exponent add (float partial) or a shift
        apply = table.scale_exp_add
    else:
        inner = partial_acc.acc if hasattr(partial_acc, "terms") else partial_acc
        sig = inner.man_bits + 1 if isinstance(inner, FloatAcc) else inner.bits
        apply = table.int_mult(sig, product_bits)
    n = plan.counts["scale_mults"]
    joins = plan.counts["scale_joins"]
    plan.energy_breakdown["mult"] += n * (product + apply)
    plan.energy_breakdown["buffer_add"] += joins * buffer_add_energy(table, mac.scale_acc)
    plan.energy_breakdown["reg"] += joins * table.reg_bit * mac.scale_acc.bits
    plan.energy_pj = sum(plan.energy_breakdown.values())
