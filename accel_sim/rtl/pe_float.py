"""The floating-point PE generator: Verilog-2005 for one FP8 x FP8 -> FloatAcc(e, m) MAC.

`float_pe_verilog(mac)` writes a single-cycle PE whose register follows the C engine's step
(csrc/accumulate.c float_step, csrc/round.c acs_round) bit for bit:

    acc <- round(acc + a*b)      one rounding of the exact sum, rne or rtz

Datapath (every width and constant below is computed here from the format objects):
1. decode a and b (sign, significand with hidden bit, effective exponent field, NaN/inf/zero
   flags as the format's nan style encodes them) and the accumulator register (IEEE-like
   sign|exp|man, all-ones exponent = inf/NaN);
2. multiply the significands exactly;
3. place the product and the accumulator on one fixed-point grid wide enough for the exact
   sum of any two (the lsb is the smaller of the two lowest lsbs, the top above the largest
   magnitude), add them as two's complement numbers;
4. normalise the magnitude with a leading-zero count (clamped at the accumulator's emin when
   it has subnormals) and round once with guard and sticky bits onto the accumulator grid,
   then apply the overflow policy;
5. special values and the sign of zero in the engine's order of precedence.
The grid is wide (about 280 bits for an fp32 accumulator), which keeps the design simple and
exact; it is not an area-optimised FMA window.
"""
from __future__ import annotations

from accel_sim import formats
from accel_sim.mac import MAC, FloatAcc

__all__ = ["float_pe_verilog", "SUPPORTED"]

SUPPORTED = ("a, b: float formats of at most 8 bits (e4m3fn e5m2 e3m4 e4m3 e4m3fnuz e5m2fnuz e2m1 e2m3 e3m2 "
             "e8m0 or any FloatFormat that small); acc: FloatAcc(e, m) with 2 <= e <= 8, 1 <= m <= 52 - "
             "fp32, fp16, bf16 ... - rounding rne or rtz, overflow inf or saturate, subnormals on or off")
_ROUNDINGS = ("rne", "rtz")


def _check(mac) -> None:
    """Raise (TypeError, or ValueError naming SUPPORTED) unless float_pe_verilog covers `mac`;
    accel_sim.rtl.verilog.check_supported defers to it for FloatAcc MACs."""
    if not isinstance(mac, MAC):
        raise TypeError(f"mac must be a MAC, got {type(mac).__name__}")
    acc = mac.acc
    if not isinstance(acc, FloatAcc):
        raise ValueError(f"float_pe_verilog generates FloatAcc PEs, not {acc.name}; supported: {SUPPORTED}")
    for arg, f in (("a", mac.a), ("b", mac.b)):
        if not isinstance(f, formats.FloatFormat) or f.bits > 8:
            raise ValueError(f"operand {arg} is {f.name}; supported: {SUPPORTED}")
    if acc.rounding not in _ROUNDINGS:
        raise ValueError(f"accumulator rounding {acc.rounding!r} is not supported; supported: {SUPPORTED}")
    if not 2 <= acc.exp_bits <= 8 or acc.man_bits < 1:
        raise ValueError(f"accumulator {acc.name} (e{acc.exp_bits}m{acc.man_bits}) is not supported: "
                         f"the exponent must have 2..8 bits (the grid of the exact sum grows as 2^e) and the "
                         f"fraction at least one bit (to hold NaN apart from inf); supported: {SUPPORTED}")


class _Operand:
    """Python-side constants of one operand format, and the Verilog that decodes it."""

    def __init__(self, f: formats.FloatFormat, port: str):
        self.f, self.port = f, port
        self.m, self.e = f.man_bits, f.exp_bits
        self.p = self.m + 1                      # significand bits (hidden bit included)
        self.pow2 = f.nan_style == "pow2"        # unsigned powers of two: every field is normal
        self.fmin = 0 if self.pow2 else 1        # smallest effective exponent field
        self.fmax = (1 << self.e) - 1
        self.lsb_min = self.fmin - f.bias - self.m   # exponent of the lowest significand bit
        self.lsb_max = self.fmax - f.bias - self.m

    def verilog(self) -> list[str]:
        f, x, m, e = self.f, self.port, self.m, self.e
        ones = f"{{{e}{{1'b1}}}}"
        lines = [f"  // operand {x}: {f.name} (bias {f.bias}, nan style {f.nan_style}, "
                 f"{'subnormals' if f.subnormals else 'subnormals read as zero'})"]
        lines.append(f"  wire {x}_neg = " + ("1'b0;  // unsigned format" if not f.signed else f"{x}[{f.bits - 1}];"))
        lines.append(f"  wire [{e - 1}:0] {x}_fld = {x}[{m + e - 1}:{m}];")
        man = f"{x}[{m - 1}:0]" if m else None
        if m:
            lines.append(f"  wire [{m - 1}:0] {x}_man = {man};")
        any_man, all_man = (f"|{x}_man", f"&{x}_man") if m else ("1'b0", "1'b1")
        style = f.nan_style
        if style == "ieee":
            nan = f"({x}_fld == {ones}) & {any_man}" if f.has_inf else f"({x}_fld == {ones})"
        elif style == "fn":
            nan = f"({x}_fld == {ones}) & {all_man}"
        elif style == "fnuz":
            nan = f"({x} == {f.bits}'h{1 << (f.bits - 1):x})"  # the would-be negative zero
        elif style == "pow2":
            nan = f"({x}_fld == {ones})"
        else:
            nan = "1'b0"  # every code is a number
        lines.append(f"  wire {x}_nan = {nan};")
        inf = f"({x}_fld == {ones}) & ~{any_man}" if style == "ieee" and f.has_inf else "1'b0"
        lines.append(f"  wire {x}_inf = {inf};")
        # The significand: hidden bit set for normal fields; subnormal codes keep their
        # fraction (or read as zero without subnormals); powers of two are all 1.
        if self.pow2:
            lines.append(f"  wire {x}_sig = 1'b1;")
        else:
            hid = f"(|{x}_fld)"
            if m and f.subnormals:
                sig = f"{{{hid}, {x}_man}}"
            elif m:
                sig = f"{hid} ? {{1'b1, {x}_man}} : {self.p}'d0"
            else:
                sig = hid
            lines.append(f"  wire [{self.p - 1}:0] {x}_sig = {sig};")
        lines.append(f"  wire {x}_zero = ~|{x}_sig;" if not self.pow2 else f"  wire {x}_zero = 1'b0;  // no zero")
        # Subnormals share the smallest normal's exponent: the effective field is max(field, 1).
        eff = f"{x}_fld" if self.pow2 else f"(|{x}_fld) ? {x}_fld : {e}'d1"
        lines.append(f"  wire [{e - 1}:0] {x}_exp = {eff};")
        return lines


def _const(width: int, value: int) -> str:
    return f"{width}'d{value}"


def float_pe_verilog(mac, name: str = "acs_pe") -> str:
    """Verilog-2005 text of one PE computing acc <- round(acc + a*b) as the C engine does.

    mac: a MAC with float operands of at most 8 bits and a FloatAcc (rne or rtz; overflow inf
    or saturate; with or without subnormals).  name: the module name.
    Ports: clk, rst, en, a, b, acc (1+e+m bits, sign|exp|man); rst sets acc to +0, en steps it.
    Raises ValueError naming the supported configurations for anything else."""
    _check(mac)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a Verilog identifier, got {name!r}")
    A, B, acc = _Operand(mac.a, "a"), _Operand(mac.b, "b"), mac.acc
    ec, mc, bias = acc.exp_bits, acc.man_bits, acc.bias
    emin = acc.emin
    accw = 1 + ec + mc
    pw = A.p + B.p                                    # exact product significand bits
    # The common grid: lsb exponent L, two zero bits below the lowest lsb so that the guard
    # and sticky positions always exist; magnitudes of both terms stay below 2^top.
    lp_min, lc_min = A.lsb_min + B.lsb_min, emin - mc
    L = min(lp_min, lc_min) - 2
    top = max(A.lsb_max + B.lsb_max + pw, (1 << ec) - 1 - bias + 1)
    n = top - L + 2                                   # |sum| < 2^(top+1): one more bit for the sign
    np2 = 1 << (n - 1).bit_length()                   # the leading-zero counter works on 2^k bits
    lzw = max((np2 - 1).bit_length(), 1)
    sh_p = A.lsb_max + B.lsb_max - L                  # largest placement shifts
    sh_c = (1 << ec) - 1 - bias - mc - L
    shw_p, shw_c = sh_p.bit_length(), sh_c.bit_length()
    k0 = n - 1 + L + bias                             # exponent field of a leading one at bit n-1
    fw = max(k0 + 2, np2).bit_length() + 1            # signed field arithmetic
    ovf_inf = acc.overflow == "inf"
    rne = acc.rounding == "rne"
    max_bits = f"{{{{{ec - 1}{{1'b1}}}}, 1'b0, {{{mc}{{1'b1}}}}}}"
    nan_bits = f"{{1'b0, {{{ec}{{1'b1}}}}, 1'b1, {mc - 1}'d0}}" if mc > 1 else f"{{1'b0, {{{ec}{{1'b1}}}}, 1'b1}}"

    v = [f"// {name}: {mac.name} - generated by accel_sim.rtl.pe_float; do not edit.",
         f"// acc <- round_{acc.rounding}(acc + a*b): one rounding of the exact sum onto FloatAcc(e={ec}, m={mc}, "
         f"bias {bias}, {'subnormals' if acc.subnormals else 'no subnormals'}, overflow {acc.overflow}),",
         "// bit for bit as the C engine's step (csrc/accumulate.c float_step, csrc/round.c acs_round).",
         f"// Exact sum on a {n}-bit two's complement grid with lsb 2^{L}.",
         f"module {name} (",
         "  input clk,",
         "  input rst,",
         "  input en,",
         f"  input [{mac.a.bits - 1}:0] a,",
         f"  input [{mac.b.bits - 1}:0] b,",
         f"  output [{accw - 1}:0] acc",
         ");",
         f"  reg [{accw - 1}:0] acc_q;",
         "  assign acc = acc_q;",
         ""]
    v += A.verilog() + [""] + B.verilog() + [""]
    v += ["  // The exact product: NaN for NaN or inf*0, inf for inf*finite (engine: product()).",
          "  wire p_neg = a_neg ^ b_neg;",
          "  wire p_nan = a_nan | b_nan | ((a_inf | b_inf) & (a_zero | b_zero));",
          "  wire p_inf = (a_inf | b_inf) & ~p_nan;",
          "  wire p_zero = (a_zero | b_zero) & ~a_inf & ~b_inf & ~p_nan;",
          f"  wire [{pw - 1}:0] p_sig = a_sig * b_sig;",
          "",
          f"  // The accumulator register: IEEE-like, all-ones exponent for inf/NaN.",
          f"  wire c_neg = acc_q[{accw - 1}];",
          f"  wire [{ec - 1}:0] c_fld = acc_q[{accw - 2}:{mc}];",
          f"  wire [{mc - 1}:0] c_man = acc_q[{mc - 1}:0];",
          "  wire c_top = &c_fld;",
          "  wire c_nan = c_top & |c_man;",
          "  wire c_inf = c_top & ~|c_man;",
          (f"  wire [{mc}:0] c_sig = {{|c_fld, c_man}};" if acc.subnormals else
           f"  wire [{mc}:0] c_sig = (|c_fld) ? {{1'b1, c_man}} : {mc + 1}'d0;  // no subnormals: read as zero"),
          "  wire c_zero = ~|c_sig;",
          f"  wire [{ec - 1}:0] c_exp = (|c_fld) ? c_fld : {ec}'d1;",
          "",
          f"  // Placement on the grid (lsb 2^{L}): shift = exponent of the term's lsb + {-L}.",
          f"  wire [{shw_p - 1}:0] p_sh = {_zext('a_exp', A.e, shw_p)} + {_zext('b_exp', B.e, shw_p)}"
          f" + {_const(shw_p, A.lsb_min + B.lsb_min - L - A.fmin - B.fmin)};",
          f"  wire [{shw_c - 1}:0] c_sh = {_zext('c_exp', ec, shw_c)} + {_const(shw_c, lc_min - L - 1)};",
          f"  wire [{n - 1}:0] p_al = {_zext('p_sig', pw, n)} << p_sh;",
          f"  wire [{n - 1}:0] c_al = {_zext('c_sig', mc + 1, n)} << c_sh;",
          "  // Exact sum of the two signed terms.",
          f"  wire [{n - 1}:0] sum = (p_neg ? -p_al : p_al) + (c_neg ? -c_al : c_al);",
          f"  wire s_neg = sum[{n - 1}];",
          f"  wire [{n - 1}:0] mag = s_neg ? -sum : sum;",
          "  wire s_zero = ~|mag;",
          ""]
    # Normalisation: the leading one to bit n-1.  With subnormals a sentinel one at emin's
    # position stops the count there, so values below 2^emin keep the subnormal unit.
    pad = f"{{x, {np2 - n}'d0}}" if np2 > n else "x"
    v += ["  // Leading-zero count by halving steps (log depth), on the input padded to a power of two.",
          f"  function [{lzw - 1}:0] clz;",
          f"    input [{n - 1}:0] x;",
          f"    reg [{np2 - 1}:0] t;",
          "    integer k;",
          "    begin",
          f"      t = {pad};",
          f"      clz = {lzw}'d0;",
          f"      for (k = {lzw - 1}; k >= 0; k = k - 1)",
          f"        if ((t >> ({np2} - (1 << k))) == {np2}'d0) begin",
          "          t = t << (1 << k);",
          "          clz[k] = 1'b1;",
          "        end",
          "    end",
          "  endfunction",
          ""]
    if acc.subnormals:
        sentinel = emin - L
        v += [f"  // Sentinel at bit {sentinel} (2^emin): the count stops at the subnormal unit.",
              f"  wire [{lzw - 1}:0] lz = clz(mag | {{{{{n - 1 - sentinel}{{1'b0}}}}, 1'b1, {sentinel}'d0}});"]
    else:
        v += [f"  wire [{lzw - 1}:0] lz = clz(mag);"]
    g_pos = n - 2 - mc
    norm = f"  wire [{n - 1}:0] norm = mag << lz;"
    if not rne:  # rtz reads only the kept bits; say so to lint, the other tools ignore the comment
        norm = f"  /* verilator lint_off UNUSEDSIGNAL */\n{norm}\n  /* verilator lint_on UNUSEDSIGNAL */"
    v += [norm, f"  wire [{mc}:0] kept = norm[{n - 1}:{n - 1 - mc}];"]
    if rne:
        v += [f"  wire guard = norm[{g_pos}];",
              f"  wire sticky = |norm[{g_pos - 1}:0];",
              "  // Round to nearest, ties to even.",
              "  wire up = guard & (sticky | kept[0]);"]
    else:
        v += [f"  wire up = 1'b0;  // rtz: the bits below norm[{n - 1 - mc}] are dropped"]
    v += [f"  wire [{mc + 1}:0] r = {{1'b0, kept}} + {{{mc + 1}'d0, up}};",
          f"  wire carry = r[{mc + 1}];  // rounded up into the next binade",
          f"  wire hid = r[{mc}] | carry;  // normal result (else subnormal or zero)",
          f"  // Exponent field, signed: {k0} for a leading one at bit {n - 1}.",
          f"  wire [{fw - 1}:0] fld = {_const(fw, k0)} + {_zext('carry', 1, fw)} - {_zext('lz', lzw, fw)};",
          f"  wire ovf = hid & ~fld[{fw - 1}] & (fld >= {_const(fw, (1 << ec) - 1)});"]
    if acc.subnormals:
        v += [f"  wire [{accw - 1}:0] rounded = {{s_neg, hid ? fld[{ec - 1}:0] : {ec}'d0, r[{mc - 1}:0]}};"]
    else:
        v += ["  // Without subnormals a result below 2^emin (after rounding) is a zero of its sign.",
              f"  wire uf = fld[{fw - 1}] | (fld == {fw}'d0);",
              f"  wire [{accw - 1}:0] rounded = uf ? {{s_neg, {accw - 1}'d0}} : {{s_neg, fld[{ec - 1}:0], r[{mc - 1}:0]}};"]
    over = f"{{s_neg, {{{ec}{{1'b1}}}}, {mc}'d0}}" if ovf_inf and rne else f"{{s_neg, {max_bits}}}"
    over_note = "rne overflows to inf" if ovf_inf and rne else (
        "rtz overflows to max" if ovf_inf else "saturating: clamp to max")
    inf_in = f"{{p_neg, {{{ec}{{1'b1}}}}, {mc}'d0}}" if ovf_inf else f"{{p_neg, {max_bits}}}"
    v += ["",
          "  // Next state, in the engine's order: NaN, inf accumulator, inf product, zeros, finite.",
          f"  wire [{accw - 1}:0] nxt =",
          f"    (c_nan | p_nan | (c_inf & p_inf & (c_neg ^ p_neg))) ? {nan_bits} :  // canonical quiet NaN",
          "    c_inf ? acc_q :",
          f"    p_inf ? {inf_in} :  // {'inf stays inf' if ovf_inf else 'saturating: inf becomes max'}",
          "    // An exact zero sum is +0, unless both terms are -0.",
          f"    (p_zero | s_zero) ? (s_zero ? {{c_zero & p_zero & c_neg & p_neg, {accw - 1}'d0}} : acc_q) :",
          f"    ovf ? {over} :  // {over_note}",
          "    rounded;",
          "",
          "  always @(posedge clk) begin",
          "    if (rst) acc_q <= " + f"{accw}'d0;",
          "    else if (en) acc_q <= nxt;",
          "  end",
          "endmodule",
          ""]
    return "\n".join(v)


def _zext(sig: str, width: int, to: int) -> str:
    """sig (width bits) zero-extended to `to` bits, spelled out so lint sees equal widths."""
    return sig if to == width else f"{{{to - width}'d0, {sig}}}"
