"""The epilogue of a GEMM: y = fp32(fp32(acc * fp32(sa * sb)) + bias) in the engine
(csrc/array.c, acs_epilogue_counted), which counts the outputs that overflowed or saturated as
it writes them (accel_sim.overflow), then the rounding to an output format."""
from __future__ import annotations

import numpy as np

from accel_sim import formats
from accel_sim._native import ffi, lib, pointer
from accel_sim.mac import IntAcc
from accel_sim.overflow import counted_clamp

__all__ = ["epilogue"]


def epilogue(array, acc, register, sa, sb, bias, out_format, counts):
    """The outputs of a GEMM's accumulators acc (m x n, int64 for an integer register): sa, sb
    (float32 scales, stride) pairs, bias float32 or None; register: the accumulator that holds
    acc (its clamp is counted); counts: the engine's acs_gemm_counts, whose overflow counts
    are set.  Returns (output, {count: value} of the overflow counts)."""
    m, n = acc.shape
    int_out = acc.dtype == np.int64
    (sa, sa_stride), (sb, sb_stride) = sa, sb
    y = np.empty((m, n), dtype=np.float64)   # fp32 values
    clamp, clamp_int = _clamp_args(register)
    lib.acs_epilogue_counted(ffi.NULL if int_out else pointer(acc, "double *"),
                             pointer(acc, "int64_t *") if int_out else ffi.NULL, m, n,
                             pointer(sa, "float *"), sa_stride, pointer(sb, "float *"), sb_stride,
                             ffi.NULL if bias is None else pointer(bias, "float *"), pointer(y, "double *"),
                             array.threads, clamp, clamp_int, counts)
    output = y if out_format is None else _to_format(y, out_format)
    found = {key: getattr(counts, key) for key in ("acc_nonfinite", "acc_saturated", "out_nonfinite", "pe_saturated")}
    # the rounding to out_format is numpy's, after the engine: its overflows are counted here
    found["format_nonfinite"] = 0 if out_format is None else int(np.count_nonzero(np.isfinite(y) & ~np.isfinite(output)))
    return output, found


def _clamp_args(reg):
    """The epilogue's clamp arguments (float64 pair, int64 pair) for an output register: the
    bounds its outputs are counted as saturated at (overflow.counted_clamp), NULL where none."""
    c = counted_clamp(reg)
    if c is None:
        return ffi.NULL, ffi.NULL
    if isinstance(reg, IntAcc):
        return ffi.NULL, ffi.new("int64_t[2]", c)
    return ffi.new("double[2]", c), ffi.NULL


def _to_format(y, out_format):
    """The epilogue's fp32 values (as float64) rounded to the output format (IEEE overflow)."""
    fmt = formats.get(out_format)
    return fmt.decode(fmt.encode(y, saturate=False))
