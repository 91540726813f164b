"""Headroom: how far below a format's max the quantizer puts amax, so that sums of products
fit a narrow float accumulator.

quantize(..., headroom=h) maps each scale group's amax to fmt.max / 2^h.  Array(quant=
{'headroom': 'auto'}) picks, per GEMM, the smallest h in [0, 64] for which no partial sum of
any operands so quantized can overflow the accumulator:

    bound(h) = (K * q_a(h) * q_b(h) + K * 2^(emin - m)) * (1 + 2^-m)^K  <=  acc.max

q(h) is the largest code value an operand can hold when its amax maps to max / 2^h: that value
times 1 + 2^-23 (the float32 scale's rounding), encoded with the quantizer's rounding mode
(stochastic: up); rounding is monotone, so every element's code is at most q(h).  K * q_a * q_b bounds every exact partial sum; each
of at most K accumulator roundings (any mode, m fraction bits) grows a magnitude by at most a
factor 1 + 2^-m, plus 2^(emin - m) where the result is subnormal (2^emin where subnormals
flush).  The bound holds in every dataflow (a ws/is tile's sum and its buffer adds are at most
K roundings on any output's path) and for block fused adders (which truncate terms toward zero
and round once per block).  For ws/is both the PEs' register and the buffer must pass."""
from __future__ import annotations

import math

import numpy as np

from accel_sim import formats

__all__ = ["largest_code", "partial_sum_bound", "auto_headroom", "MAX_HEADROOM"]

MAX_HEADROOM = 64


def largest_code(fmt, headroom: int, rounding: str = "rne") -> float:
    """The largest magnitude an operand's codes can take when its amax maps to max / 2^headroom
    and values are encoded with `rounding` (stochastic rounding counts as rounding up)."""
    fmt = formats.get(fmt)
    v = np.float64(math.ldexp(fmt.max, -headroom) * (1 + 2.0 ** -23))
    mode = "rup" if rounding == "sr" else rounding
    return float(fmt.decode(fmt.encode(np.array([v]), rounding=mode, saturate=True))[0])


def _float_register(acc):
    from accel_sim.mac import BlockFMA, FloatAcc
    inner = acc.acc if isinstance(acc, BlockFMA) else acc
    if not isinstance(inner, FloatAcc):
        raise ValueError(f"headroom='auto' applies to float accumulators (FloatAcc, BlockFMA), not {acc.name}; "
                         "give an integer number of bits")
    return inner


def partial_sum_bound(fmt_a, fmt_b, acc, k: int, headroom: int, rounding: str = "rne") -> float:
    """The module's bound on |any partial sum| of K products in the float register acc, the
    operands quantized with `rounding`."""
    reg = _float_register(acc)
    log_growth = k * math.log1p(2.0 ** -reg.man_bits)
    if log_growth > 700:   # beyond float64: no finite bound
        return math.inf
    growth = math.exp(log_growth)
    floor = math.ldexp(1.0, reg.emin - (reg.man_bits if reg.subnormals else 0))
    q = largest_code(fmt_a, headroom, rounding) * largest_code(fmt_b, headroom, rounding)
    return (k * q + k * floor) * growth


def auto_headroom(fmt_a, fmt_b, accs, k: int, rounding: str = "rne") -> int:
    """The smallest headroom h whose bound(h) fits every register in accs (the PEs' and the
    buffer's); a ValueError when none up to MAX_HEADROOM bits does."""
    accs = list(accs)
    for h in range(MAX_HEADROOM + 1):
        if all(partial_sum_bound(fmt_a, fmt_b, acc, k, h, rounding) <= _float_register(acc).max for acc in accs):
            return h
    raise ValueError(f"no headroom up to {MAX_HEADROOM} bits keeps K={k} products of {formats.get(fmt_a).name} x "
                     f"{formats.get(fmt_b).name} within {', '.join(a.name for a in accs)}; use a wider accumulator")
