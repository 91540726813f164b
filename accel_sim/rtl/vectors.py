"""Golden vectors for RTL test benches: accumulator values <-> register bit patterns.

Accumulator layouts (the bits a generated PE's `acc` port holds):
- IntAcc(W): the W-bit two's complement integer.
- FloatAcc(e, m) (and a BlockFMA's FloatAcc): 1+e+m bits, sign | biased exponent | fraction,
  bias 2^(e-1)-1; exponent 0 holds zeros (both signs) and subnormals, all ones holds inf
  (fraction 0) and NaN.  NaN is written as the one canonical quiet NaN, sign 0, fraction
  100..0 (fp16 0x7E00, bf16 0x7FC0, fp32 0x7FC00000: what numpy/ml_dtypes write for nan); any
  NaN pattern reads back as NaN.  fp32, fp16 and bf16 are binary32, binary16 and bfloat16.
- FixedAcc(i, f): the (i+f)-bit two's complement integer value * 2^f (at most 53 bits: wider
  registers are read out of the engine rounded to float64, so their bits are not known).
The quire has no per-step register the engine reports (it reads out rounded to a posit).
"""
from __future__ import annotations

import numpy as np

from accel_sim.mac import MAC, BlockFMA, FixedAcc, FloatAcc, IntAcc, Quire

__all__ = ["acc_bits", "acc_values", "acc_width"]


def _acc_of(mac):
    """The accumulator description behind `mac` (a MAC or an accumulator)."""
    acc = mac.acc if isinstance(mac, MAC) else mac
    if isinstance(acc, BlockFMA):
        acc = acc.acc
    if isinstance(acc, Quire):
        raise ValueError("the quire's register is not read out by the engine (it rounds to a posit when read); "
                         "accumulator bits exist for IntAcc, FloatAcc, FixedAcc (<= 53 bits) and BlockFMA")
    if not isinstance(acc, (IntAcc, FloatAcc, FixedAcc)):
        raise TypeError(f"mac must be a MAC or an IntAcc/FloatAcc/FixedAcc/BlockFMA, got {type(mac).__name__}")
    if isinstance(acc, FixedAcc) and acc.int_bits + acc.frac_bits > 53:
        raise ValueError(f"{acc.name} is {acc.int_bits + acc.frac_bits} bits wide; the engine reads registers wider "
                         "than 53 bits out rounded to float64, so their bits are not known (at most 53)")
    return acc


def acc_width(mac) -> int:
    """Bits of the accumulator register of `mac` (a MAC or an accumulator description)."""
    acc = _acc_of(mac)
    if isinstance(acc, FloatAcc):
        return 1 + acc.exp_bits + acc.man_bits
    if isinstance(acc, IntAcc):
        return acc.bits
    return acc.int_bits + acc.frac_bits


def acc_bits(mac, values) -> np.ndarray:
    """The register bit patterns (uint64, same shape) of exact accumulator values of `mac`.

    values: what `accumulate` / `Array.gemm` return (int64 for IntAcc, float64 otherwise); each
    must lie on the accumulator's grid and in its range, else ValueError (nothing is rounded)."""
    acc = _acc_of(mac)
    v = np.asarray(values)
    if v.dtype.kind not in "fiu":
        raise TypeError(f"values must be numbers, got dtype {v.dtype}")
    if isinstance(acc, FloatAcc):
        return _float_bits(acc, v.astype(np.float64))
    width = acc_width(acc)
    if isinstance(acc, FixedAcc):
        if v.dtype.kind != "f":
            v = v.astype(np.float64)
        scaled = np.ldexp(v, acc.frac_bits)
        if not np.all(np.isfinite(scaled)) or not np.all(scaled == np.round(scaled)):
            raise ValueError(f"values must be finite multiples of 2^-{acc.frac_bits} for {acc.name}")
        ints = scaled.astype(np.int64)
    elif v.dtype.kind == "f":
        if not np.all(np.isfinite(v)) or not np.all(v == np.round(v)) or np.any(np.abs(v) > 2.0**63):
            raise ValueError(f"values must be integers for {acc.name}")
        ints = v.astype(np.int64)
    else:
        if v.dtype == np.uint64 and v.size and int(v.max()) >= 2**63:
            raise ValueError(f"values lie outside {acc.name}'s range")
        ints = v.astype(np.int64)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    if ints.size and (int(ints.min()) < lo or int(ints.max()) > hi):
        raise ValueError(f"values must lie in [{lo}, {hi}] for {acc.name}, got [{ints.min()}, {ints.max()}]")
    return ints.view(np.uint64) & np.uint64((1 << width) - 1) if width < 64 else ints.view(np.uint64).copy()


def acc_values(mac, bits) -> np.ndarray:
    """Exact values (int64 for IntAcc, float64 otherwise) of accumulator bit patterns."""
    acc = _acc_of(mac)
    width = acc_width(acc)
    b = np.asarray(bits)
    if b.dtype.kind not in "ui":
        raise TypeError(f"bits must be an integer array of {width}-bit patterns, got dtype {b.dtype}")
    if b.size and (int(b.min()) < 0 or (width < 64 and int(b.max()) >= 1 << width)):
        raise ValueError(f"bits must lie in [0, 2^{width} - 1] for {acc.name}")
    u = b.astype(np.uint64)
    if isinstance(acc, FloatAcc):
        return _float_values(acc, u)
    if width < 64:
        sign = np.uint64(1 << (width - 1))
        ints = (u ^ sign).astype(np.int64) - np.int64(1 << (width - 1))   # sign-extend
    else:
        ints = u.view(np.int64)
    if isinstance(acc, IntAcc):
        return ints
    return np.ldexp(ints.astype(np.float64), -acc.frac_bits)   # <= 53 bits: exact


def _float_bits(acc, v):
    e, m, bias = acc.exp_bits, acc.man_bits, acc.bias
    nan = np.isnan(v)
    if nan.any() and m == 0:
        raise ValueError(f"{acc.name} has no fraction bits, so no NaN pattern; values hold NaN")
    finite = np.isfinite(v)
    mag = np.abs(np.where(finite, v, 0.0))
    # binary exponent of each nonzero magnitude (frexp: mag = f * 2^x, f in [0.5, 1))
    _, x = np.frexp(mag)
    exp = np.maximum(x.astype(np.int64) - 1, acc.emin)            # subnormals share emin
    sig = np.ldexp(mag, (m - exp).astype(np.int32))              # significand in units of the last place
    normal = (mag >= np.ldexp(1.0, acc.emin))
    bad = finite & ((sig != np.floor(sig)) | (exp > bias))
    if bad.any():
        i = np.flatnonzero(bad.reshape(-1))[0]
        raise ValueError(f"values[{i}] = {v.reshape(-1)[i]!r} is not a value of {acc.name} "
                         f"(not on its grid, or beyond its max {acc.max})")
    sig_u = sig.astype(np.uint64)
    field = np.where(normal, (exp + bias).astype(np.uint64), np.uint64(0))
    frac = np.where(normal, sig_u - np.uint64(1 << m), sig_u)
    top = np.uint64((1 << e) - 1)
    field = np.where(finite, field, top)
    frac = np.where(finite, frac, np.where(nan, np.uint64(1 << (m - 1)) if m else np.uint64(0), np.uint64(0)))
    sign = np.signbit(v) & ~nan
    return (sign.astype(np.uint64) << np.uint64(e + m)) | (field.astype(np.uint64) << np.uint64(m)) | frac.astype(np.uint64)


def _float_values(acc, u):
    e, m = acc.exp_bits, acc.man_bits
    frac = (u & np.uint64((1 << m) - 1)).astype(np.float64)
    field = ((u >> np.uint64(m)) & np.uint64((1 << e) - 1)).astype(np.int64)
    negative = ((u >> np.uint64(e + m)) & np.uint64(1)).astype(bool)
    normal = field > 0
    mag = np.where(normal, np.ldexp(frac + 2.0**m, (field - acc.bias - m).astype(np.int32)), np.ldexp(frac, acc.emin - m))
    top = field == (1 << e) - 1
    mag = np.where(top, np.where(frac == 0, np.inf, np.nan), mag)
    return np.where(negative, -mag, mag)
