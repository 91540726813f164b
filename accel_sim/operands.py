"""Operand quantization for the array: the quant spec (which scales, calibration, rounding,
headroom), float inputs quantized to the MAC's formats, and the scales and bias the epilogue
takes."""
from __future__ import annotations

import numpy as np

from accel_sim._native import check_float_array, rounding_code
from accel_sim.headroom import auto_headroom
from accel_sim.quant import CALIBRATIONS, QTensor, check_headroom, quantize

__all__ = ["SCALES", "BLOCK_SCALES", "check_quant", "headroom_bits", "operand", "scales", "bias32", "float_operand"]

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


def headroom_bits(array, k):
    """The quant spec's headroom in bits for a GEMM of reduction length k (accel_sim.headroom)."""
    if array.quant["headroom"] != "auto":
        return array.quant["headroom"]
    regs = [array.mac.acc] if array.dataflow == "os" else [array.mac.acc, array.buffer_acc]
    return auto_headroom(array.mac.a, array.mac.b, regs, max(int(k), 1), array.quant["rounding"])


def operand(array, x, fmt, scale, axis, argname, ndim, k=1):
    """codes and float32 scales (per axis, or one) of an operand; float inputs quantized
    (with the quant spec's headroom for a GEMM of reduction length k)."""
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
        arr = check_float_array(x, argname, ndim, what="a float array or a QTensor")
    except ValueError as e:
        raise ValueError(f"{e}; float inputs must be finite to be quantized (pass a QTensor to feed special "
                         "codes)" if "NaN" in str(e) else str(e)) from None
    try:
        return quantize(arr, fmt, scale=scale, axis=axis if scale == "channel" else None,
                        calibration=array.quant["calibration"], rounding=array.quant["rounding"],
                        headroom=headroom_bits(array, k) if scale in ("tensor", "channel") else 0)
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
