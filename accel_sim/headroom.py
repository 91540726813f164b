"""Headroom: how far below a format's max the quantizer puts amax, so that sums of products
fit a narrow float accumulator.

quantize(..., headroom=h) maps each scale group's amax to fmt.max / 2^h.  Array(quant=
{'headroom': 'auto'}) picks, per GEMM and from its operands, the smallest h for which no
register on any output's path (the PEs' accumulator, and for ws/is the buffer) can overflow or
reach +-max, whatever the data:

  1. q(h), the largest code magnitude an operand takes: min(fmt.max, the code of its data's
     true absmax under the scale it gets at h).  Every calibration is covered: with
     "percentile" or "mse" values above the clip saturate to fmt.max, not max / 2^h.  A QTensor
     operand's q is its largest code.  Stochastic quantization counts as rounding up.
  2. The worst case of any GEMM whose products are at most q_a * q_b in magnitude is K
     products of exactly q_a * q_b with one sign: every rounding mode is monotone (so is a
     clamp, an overflow to inf, a flush to zero), so every register value is a monotone
     function of the products.  Directed and stochastic registers are run rounding away from
     zero (sr rounds one way or the other; the way up bounds it).
  3. That worst case runs through the array's own engine: the PE chain of one tile (os: all
     of K) and the whole ws/is GEMM (tiles joining the buffer), a 1 x K by K x 1 GEMM of the
     two codes with no scaling.  h fits when each register stays strictly below its max.
     Worst cases shrink as h grows, so a binary search over h finds the smallest.

Block fused adders (BlockFMA, the tensor-core presets) align their terms and truncate them
toward zero, which is not monotone in the terms; but each truncated term is at most the term,
so one block step is at most the register's exact sum plus the block's products, rounded: a
FloatAcc on the block's grid rounding up after every product bounds it.  That bound is what
runs for them (safe, pessimistic at large K with a narrow register).

h ranges over [0, the largest h at which max / 2^h still rounds to a nonzero code]
(quant.max_headroom: 18 for E4M3, 261 for bf16); a ValueError when even that
does not fit."""
from __future__ import annotations

import numpy as np

from accel_sim import formats
from accel_sim._native import DATAFLOWS, ffi, lib, pointer, raise_for_status

__all__ = ["largest_code", "worst_case", "auto_headroom"]

_AWAY = {1: "rup", -1: "rdn"}
_DIRECTED = ("rup", "rdn", "sr")


def largest_code(fmt, value, rounding: str = "rne"):
    """(magnitude, sign) of the largest code an operand of fmt takes when its largest value
    (in magnitude, after scaling) is `value`: encoded with `rounding` and saturated; sr counts
    as rounding up (its codes are at most that).  sign: one with which the magnitude is a code."""
    fmt = formats.get(fmt)
    modes = ("rup", "rdn") if rounding == "sr" else (rounding,)
    best = (0.0, 1)
    for mode in modes:
        for sign in (1, -1):
            mag = abs(float(fmt.decode(fmt.encode(np.array([sign * value]), rounding=mode, saturate=True))[0]))
            if mag > best[0]:
                best = (mag, sign)
    return best


def _away(acc, sign):
    """acc with directed and stochastic rounding replaced by rounding away from zero for sums of
    `sign`; a BlockFMA by its safe bound, a FloatAcc on its grid that rounds away after every product."""
    from accel_sim.mac import BlockFMA, FloatAcc
    if isinstance(acc, BlockFMA):
        r = acc.acc
        return FloatAcc(r.exp_bits, r.man_bits, _AWAY[sign], r.subnormals, r.overflow)
    if acc.rounding in _DIRECTED:
        return FloatAcc(acc.exp_bits, acc.man_bits, _AWAY[sign], acc.subnormals, acc.overflow)
    return acc


def _float_register(acc, argname="acc"):
    from accel_sim.mac import BlockFMA, FloatAcc
    inner = acc.acc if isinstance(acc, BlockFMA) else acc
    if not isinstance(inner, FloatAcc):
        raise ValueError(f"headroom='auto' applies to float accumulators (FloatAcc, BlockFMA), not {argname} "
                         f"{acc.name}; give an integer number of bits")
    return inner


def _run(fmt_a, fmt_b, pe, buffer, dataflow, rows, code_a, code_b, k):
    """The output of a 1 x k by k x 1 GEMM of constant codes in the engine (float64)."""
    from accel_sim.mac import MAC
    mac = MAC(fmt_a, fmt_b, pe)
    buf = ffi.new("acs_acc *")
    buffer._fill(buf)
    a = np.full((1, k), code_a, dtype=mac.a.code_dtype)
    bt = np.full((1, k), code_b, dtype=mac.b.code_dtype)
    out = np.empty((1, 1), np.float64)
    counts = ffi.new("acs_gemm_counts *")
    status = lib.acs_gemm(mac._c, buf, DATAFLOWS[dataflow], rows, 1, pointer(a, "void *"), pointer(bt, "void *"),
                          1, 1, k, pointer(out, "double *"), ffi.NULL, 0, 1, counts)
    raise_for_status(status, pe.name, mac)
    return float(abs(out[0, 0]))


def worst_case(fmt_a, fmt_b, q_a, q_b, pe, buffer=None, dataflow="os", rows=1, k=1):
    """The largest magnitude each register reaches over any GEMM of reduction length k whose
    operand codes are at most q_a and q_b in magnitude ((value, sign) pairs from largest_code):
    [(register, value)], the PE's (its chain over one tile, os: over k) and for ws/is the
    buffer's (the output).  BlockFMA registers get the module's safe bound."""
    from accel_sim.mac import BlockFMA
    fa, fb = formats.get(fmt_a), formats.get(fmt_b)
    (va, sa), (vb, sb) = q_a, q_b
    ca = int(fa.encode(np.array([sa * va]), saturate=True)[0])
    cb = int(fb.encode(np.array([sb * vb]), saturate=True)[0])
    sign = sa * sb
    terms = pe.terms if isinstance(pe, BlockFMA) else 1
    pe_sim = _away(pe, sign)
    tile = k if dataflow == "os" else min(k, rows * terms)
    out = [(pe, _run(fa, fb, pe_sim, pe_sim, "os", 1, ca, cb, max(tile, 1)))]
    if dataflow != "os" and buffer is not None:
        out.append((buffer, _run(fa, fb, pe_sim, _away(buffer, sign), dataflow, rows * terms, ca, cb, max(k, 1))))
    return out


def fits(worst) -> bool:
    """Whether every register of worst_case's answer stays strictly below its max."""
    return all(v < _float_register(reg).max for reg, v in worst)


def auto_headroom(fmt_a, fmt_b, largest_a, largest_b, h_max, pe, buffer=None, dataflow="os", rows=1, k=1) -> int:
    """The smallest h in [0, h_max] whose worst case fits every register.  largest_a(h),
    largest_b(h): each operand's (largest code magnitude, sign) at headroom h (largest_code)."""
    _float_register(pe, "the MAC's accumulator")
    if dataflow != "os" and buffer is not None:
        _float_register(buffer, "buffer_acc")
    k = max(int(k), 1)

    def ok(h):
        return fits(worst_case(fmt_a, fmt_b, largest_a(h), largest_b(h), pe, buffer, dataflow, rows, k))

    if not ok(h_max):
        regs = [pe] if dataflow == "os" or buffer is None else [pe, buffer]
        raise ValueError(f"no headroom up to {h_max} bits keeps K={k} products of {formats.get(fmt_a).name} x "
                         f"{formats.get(fmt_b).name} below the max of {', '.join(r.name for r in regs)}; "
                         "use a wider accumulator")
    lo, hi = 0, h_max   # ok(hi); the answer is in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo
