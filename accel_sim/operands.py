"""Operand quantization for the array: the quant spec (which scales, calibration, rounding,
headroom), float inputs quantized to the MAC's formats, and the scales and bias the epilogue
takes."""
from __future__ import annotations

import math

import numpy as np

from accel_sim import headroom as _headroom
from accel_sim._native import check_float_array, rounding_code
from accel_sim.quant import CALIBRATIONS, QTensor, _calibrate, check_headroom, max_headroom, quantize

__all__ = ["SCALES", "BLOCK_SCALES", "check_quant", "check_headroom_for", "operand_pair", "operand", "scales",
           "bias32", "float_operand"]

SCALES = ("tensor", "channel", "none", "block", "vector")
BLOCK_SCALES = ("block", "vector")   # OCP MX and VS-Quant: both operands scaled per block of K


def check_quant(quant):
    """Array's quant spec, defaults filled in and every key checked."""
    spec = {"a": "tensor", "b": "tensor", "calibration": "absmax", "rounding": "rne", "block": None,
            "scale_format": None, "headroom": 0}
    if quant is None:
        return spec
    if not isinstance(quant, dict):
        raise TypeError(f"quant must be a dict with keys {', '.join(spec)}; got {type(quant).__name__}")
    unknown = set(quant) - set(spec)
    if unknown:
        raise ValueError(f"quant has unknown keys {sorted(unknown)}; expected {', '.join(spec)}")
    spec.update(quant)
    for key in ("a", "b"):
        if spec[key] not in SCALES:
            raise ValueError(f"quant[{key!r}] must be one of {SCALES}, got {spec[key]!r}")
    if (spec["a"] in BLOCK_SCALES) != (spec["b"] in BLOCK_SCALES) or \
            (spec["a"] in BLOCK_SCALES and spec["a"] != spec["b"]):
        raise ValueError(f"block scaling applies to both operands along K: quant['a'] and quant['b'] must both be "
                         f"'block' or both 'vector', got {spec['a']!r} and {spec['b']!r}")
    if spec["a"] not in BLOCK_SCALES and (spec["block"] is not None or spec["scale_format"] is not None):
        raise ValueError("quant['block'] and quant['scale_format'] apply to 'block' and 'vector' scaling only")
    if spec["calibration"] not in CALIBRATIONS:
        raise ValueError(f"quant['calibration'] must be one of {CALIBRATIONS}, got {spec['calibration']!r}")
    if spec["a"] in BLOCK_SCALES:   # quantize checks block, scale_format and calibration now, not later
        try:
            block = spec["block"] if isinstance(spec["block"], (int, np.integer)) and 0 < spec["block"] < 1 << 16 \
                else 32 if spec["a"] == "block" else 16
            quantize(np.zeros((1, block)), "e4m3fn" if spec["a"] == "block" else "int4", scale=spec["a"],
                     block=spec["block"], scale_format=spec["scale_format"], axis=1,
                     calibration=spec["calibration"])
        except (ValueError, TypeError) as e:
            raise type(e)(f"quant: {e}") from None
    rounding_code(spec["rounding"], "quant['rounding']")
    if spec["headroom"] != "auto":
        try:
            spec["headroom"] = check_headroom(spec["headroom"])
        except ValueError as e:
            raise ValueError(f"quant['headroom'] must be 'auto' or {str(e)[len('headroom must be '):]}") from None
    if spec["headroom"] and spec["a"] in BLOCK_SCALES:
        raise ValueError("quant['headroom'] applies to 'tensor' and 'channel' scales, not block scaling")
    return spec


def check_headroom_for(array):
    """The quant spec's headroom against the array's MAC: refused with 'none' scales (it would be
    ignored), beyond the formats' max_headroom (every code 0), and 'auto' with an accumulator
    that is not a float register."""
    h = array.quant["headroom"]
    if not h:
        return
    for key in ("a", "b"):
        if array.quant[key] == "none":
            raise ValueError(f"quant['headroom'] applies to 'tensor' and 'channel' scales; quant[{key!r}] is 'none' "
                             "(a plain cast, no scale to move amax with)")
    if h == "auto":
        _headroom._float_register(array.mac.acc, "the MAC's accumulator")
        if array.dataflow != "os":
            _headroom._float_register(array.buffer_acc, "buffer_acc")
        return
    for fmt in (array.mac.a, array.mac.b):
        try:
            check_headroom(h, fmt)
        except ValueError as e:
            raise ValueError(f"quant['headroom'] {str(e)[len('headroom '):]}") from None


def operand_pair(array, a, b, scale_a, scale_b, names, ndim, k, axes=(0, 1)):
    """The QTensors of a GEMM's two operands (reduction length k), float inputs quantized with
    the quant spec's headroom; 'auto' picks it from both operands (accel_sim.headroom)."""
    specs = [(a, array.mac.a, scale_a, axes[0], names[0]), (b, array.mac.b, scale_b, axes[1], names[1])]
    xs = [_checked(array, x, fmt, scale, axis, name, ndim) for x, fmt, scale, axis, name in specs]
    h = array.quant["headroom"]
    if h == "auto":
        largest = [_largest(array, x, fmt, scale, axis, name) for x, (_, fmt, scale, axis, name) in zip(xs, specs)]
        h_max = min([max_headroom(spec[1]) for x, spec in zip(xs, specs) if not isinstance(x, QTensor)], default=0)
        h = _headroom.auto_headroom(array.mac.a, array.mac.b, largest[0], largest[1], h_max, array.mac.acc,
                                    array.buffer_acc, array.dataflow, array.rows, k)
    return tuple(operand(array, x, fmt, scale, axis, name, ndim, h) for x, (_, fmt, scale, axis, name) in zip(xs, specs))


def _largest(array, x, fmt, scale, axis, argname):
    """h -> (magnitude, sign) of the largest code operand x takes at headroom h: a QTensor's
    largest code; a float operand's data absmax under its calibrated scale at h (amax maps to
    max / 2^h), encoded and saturated (accel_sim.headroom)."""
    rounding = array.quant["rounding"]
    if isinstance(x, QTensor):
        vals = np.abs(x.format.decode(x.codes))
        top = float(np.max(vals[np.isfinite(vals)], initial=0.0))
        q = _headroom.largest_code(fmt, top, rounding)
        return lambda h: q
    group = axis if scale == "channel" else None
    try:
        s0 = np.asarray(_calibrate(np.asarray(x, np.float64), fmt, group, array.quant["calibration"], 99.99, rounding, True), np.float64)
    except ValueError as e:
        raise ValueError(f"{argname}: {e}") from None
    mags = np.abs(np.asarray(x, np.float64))
    if group is None:
        top = float(mags.max(initial=0.0)) / float(s0)
    else:
        reduce = tuple(i for i in range(x.ndim) if i != group)
        top = float(np.max(mags.max(axis=reduce, initial=0.0) / s0, initial=0.0)) if mags.size else 0.0
    return lambda h: _headroom.largest_code(fmt, math.ldexp(top, -h), rounding)


def _checked(array, x, fmt, scale, axis, argname, ndim):
    """A QTensor operand checked against the MAC, or a float operand as a float64 array."""
    if isinstance(x, QTensor):
        if x.is_block_scaled:
            raise ValueError(f"{argname} is block-scaled ({x.scale_format} per {x.block}); block-scaled operands "
                             "are taken by Array.gemm, with both operands block-scaled along K")
        if x.format != fmt:
            raise ValueError(f"{argname} is a QTensor of {x.format.name}, but the MAC takes {fmt.name}")
        if ndim is not None and x.ndim != ndim:
            raise ValueError(f"{argname} must have {ndim} dimensions, got shape {x.shape}")
        if x.axis not in (None, axis):
            raise ValueError(f"{argname}'s scales must be per tensor or along axis {axis}, got axis {x.axis}")
        return x
    try:
        return check_float_array(x, argname, ndim, what="a float array or a QTensor")
    except ValueError as e:
        raise ValueError(f"{e}; float inputs must be finite to be quantized (pass a QTensor to feed special "
                         "codes)" if "NaN" in str(e) else str(e)) from None


def operand(array, x, fmt, scale, axis, argname, ndim, headroom=0):
    """The QTensor of an operand: a QTensor checked, a float input quantized (with `headroom`
    bits for 'tensor' and 'channel' scales)."""
    x = _checked(array, x, fmt, scale, axis, argname, ndim)
    if isinstance(x, QTensor):
        return x
    try:
        return quantize(x, fmt, scale=scale, axis=axis if scale == "channel" else None,
                        calibration=array.quant["calibration"], rounding=array.quant["rounding"],
                        headroom=headroom if scale in ("tensor", "channel") else 0)
    except ValueError as e:  # name the caller's argument, not quantize's own x
        raise ValueError(f"{argname}: {e}") from None


def scales(q, axis, length):
    """(float32 scales, stride) of a QTensor for the epilogue: one per index along axis, or one."""
    s = np.ascontiguousarray(q.scale, dtype=np.float32).reshape(-1)
    return s, (1 if q.axis == axis and length else 0)


def bias32(bias, n):
    """bias as n float32 values (the epilogue's), or None."""
    if bias is None:
        return None
    b = np.asarray(bias)
    if b.dtype.kind not in "fiu" or b.shape != (n,):
        raise ValueError(f"bias must be a float array of shape ({n},), got {b.dtype} {b.shape}")
    return np.ascontiguousarray(b, dtype=np.float32)


def float_operand(array, v, argname):
    """A float operand of a block-scaled layer (quantized per GEMM), as float64."""
    if isinstance(v, QTensor):
        raise ValueError(f"{argname}: with quant {array.quant['a']!r} the array quantizes each GEMM's operands "
                         "per block of K itself; pass floats")
    return check_float_array(v, argname, finite=False).astype(np.float64)
