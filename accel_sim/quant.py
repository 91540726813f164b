"""Scaling and calibration: QTensor (codes + format + float32 scales) and post-training
quantization with per-tensor, per-channel, per-block (OCP MX) or per-vector (VS-Quant)
scales.  Block and vector scaling: docs/scaling.md."""
from __future__ import annotations

import math

import numpy as np

from accel_sim import formats
from accel_sim._native import check_memory, check_seed, rounding_code

__all__ = ["QTensor", "quantize", "CALIBRATIONS", "SCALE_FORMATS", "MXINT8", "scale_values"]

CALIBRATIONS = ("absmax", "percentile", "mse")

# Block/vector scale formats: code width.  e8m0 (OCP MX): code c stands for 2^(c - 127), 0xFF is
# NaN; uintM (VS-Quant): code c stands for the integer c.
SCALE_FORMATS = {"e8m0": 8, "uint4": 4, "uint6": 6, "uint8": 8}
E8M0_BIAS, E8M0_NAN = 127, 0xFF

# OCP MX's MXINT8 element: 8-bit two's complement with an implicit 2^-6 (values k/64, emax 0).
MXINT8 = formats.register(formats.FixedFormat(2, 6, name="mxint8"))


def scale_values(codes, scale_format) -> np.ndarray:
    """Exact float64 values of block/vector scale codes of `scale_format`."""
    if scale_format not in SCALE_FORMATS:
        raise ValueError(f"scale_format must be one of {sorted(SCALE_FORMATS)}, got {scale_format!r}")
    c = np.asarray(codes).astype(np.int64)
    if scale_format == "e8m0":
        return np.where(c == E8M0_NAN, np.nan, np.ldexp(1.0, c - E8M0_BIAS))
    return c.astype(np.float64)


class QTensor:
    """Codes of a format with float32 scales: value = decode(code) * scale.

    axis=None: one scale for the tensor.  axis=k: one scale per index along axis k (scale
    is 1-D with codes.shape[k] entries).

    Block-scaled (block=n): every n consecutive elements along block_axis also share a scale
    code of scale_format ("e8m0" for OCP MX, "uint4"/"uint6"/"uint8" for VS-Quant);
    block_scale_codes has codes' shape with block_axis cut to codes.shape[block_axis] // n, and
    value = decode(code) * block scale * scale (scale: VS-Quant's coarse fp32 level, 1 for MX)."""

    def __init__(self, codes, fmt, scale=1.0, axis=None, *, block=None, block_axis=-1, block_scale_codes=None,
                 scale_format=None):
        self.format = formats.get(fmt)
        codes = np.asarray(codes)
        if codes.dtype.kind not in "ui":
            raise TypeError(f"codes must be an integer array of {self.format.name} codes, got dtype {codes.dtype}")
        check_memory(codes.size, self.format.code_dtype.itemsize, "codes")
        if codes.size and (codes.min() < 0 or int(codes.max()) >> self.format.bits):
            raise ValueError(f"codes must lie in [0, {(1 << self.format.bits) - 1}] for {self.format.name}")
        self.codes = np.asarray(codes, dtype=self.format.code_dtype)
        self.axis = _check_axis(axis, self.codes.ndim, "axis") if axis is not None else None
        self.scale = _check_scale(scale, self.codes, self.axis)
        self.block = self.block_axis = self.block_scale_codes = self.scale_format = None
        if block is not None or block_scale_codes is not None or scale_format is not None:
            self._set_blocks(block, block_axis, block_scale_codes, scale_format)

    def _set_blocks(self, block, block_axis, scale_codes, scale_format):
        if block is None or scale_codes is None or scale_format is None:
            raise ValueError("a block-scaled QTensor needs block, block_scale_codes and scale_format together")
        if scale_format not in SCALE_FORMATS:
            raise ValueError(f"scale_format must be one of {sorted(SCALE_FORMATS)}, got {scale_format!r}")
        if self.codes.ndim == 0:
            raise ValueError("a block-scaled QTensor needs codes with at least one axis")
        ax = _check_axis(block_axis, self.codes.ndim, "block_axis")
        length = self.codes.shape[ax]
        _check_block(block, length, ax)
        if self.axis is not None and self.axis == ax:
            raise ValueError(f"axis (the coarse scales' axis) must differ from block_axis, both are {ax}")
        c = np.asarray(scale_codes)
        if c.dtype.kind not in "ui":
            raise TypeError(f"block_scale_codes must be an integer array of {scale_format} codes, got dtype {c.dtype}")
        want = self.codes.shape[:ax] + (length // block,) + self.codes.shape[ax + 1:]
        if c.shape != want:
            raise ValueError(f"block_scale_codes must have shape {want} (codes {self.codes.shape}, block {block} "
                             f"along axis {ax}), got {c.shape}")
        if c.size and (c.min() < 0 or int(c.max()) >> SCALE_FORMATS[scale_format]):
            raise ValueError(f"block_scale_codes must lie in [0, {(1 << SCALE_FORMATS[scale_format]) - 1}] "
                             f"for {scale_format}")
        self.block, self.block_axis, self.scale_format = int(block), ax, scale_format
        self.block_scale_codes = c.astype(np.uint8)

    @property
    def is_block_scaled(self) -> bool:
        return self.block is not None

    def block_scales(self) -> np.ndarray:
        """float64 values of the block scale codes (shape of block_scale_codes)."""
        if not self.is_block_scaled:
            raise ValueError("this QTensor has no block scales")
        return scale_values(self.block_scale_codes, self.scale_format)

    @property
    def shape(self):
        return self.codes.shape

    @property
    def ndim(self):
        return self.codes.ndim

    def scale_array(self) -> np.ndarray:
        """Scales broadcastable against codes, as float64."""
        s = self.scale.astype(np.float64)
        if self.axis is None:
            return s.reshape(())
        shape = [1] * self.codes.ndim
        shape[self.axis] = -1
        return s.reshape(shape)

    def dequantize(self) -> np.ndarray:
        """float64 values decode(code) * [block scale *] scale (exact: code values have at most
        24 significant bits in every 8/16-bit format, scales 24, block scales 8 or a power of 2)."""
        values = self.format.decode(self.codes)
        if self.is_block_scaled:
            values = values * np.repeat(self.block_scales(), self.block, axis=self.block_axis)
        return values * self.scale_array()

    def __repr__(self):
        where = "tensor" if self.axis is None else f"axis {self.axis}"
        blocks = "" if not self.is_block_scaled else \
            f", {self.scale_format} scales per {self.block} along axis {self.block_axis}"
        return f"QTensor({self.format.name}, shape={self.shape}, scales per {where}{blocks})"


def quantize(x, fmt, scale="tensor", axis=None, calibration="absmax", rounding="rne",
             saturate=True, percentile=99.99, seed=0, *, block=None, scale_format=None,
             coarse=None, headroom=0) -> QTensor:
    """Post-training quantization of x to fmt with symmetric scales.

    scale: "tensor" (one scale), "channel" (one per index along `axis`, default 0: the
    output channel of PyTorch weights), "none" (scale 1: a plain cast, for wide formats such
    as bf16 and fp16 baselines), or explicit float32 scale(s).
    "block": OCP MX v1.0 -- every `block` (default 32) consecutive elements along `axis`
    (default -1, the reduction axis) share an e8m0 scale 2^(floor(log2 amax) - emax of fmt);
    elements are x / scale rounded with `rounding` and saturated.  scale_format: "e8m0".
    "vector": VS-Quant two-level scales -- every `block` (default 16) elements along `axis`
    share an unsigned integer scale (scale_format "uint4", "uint6" or "uint8", default
    "uint8") times a coarse float32 scale per row (coarse="row", the default for 2-D x: one per
    index of the other axis) or per tensor (coarse="tensor", the default otherwise).
    The block must divide the axis' length.  Rules and sources: docs/scaling.md.
    calibration: how the clipping magnitude amax is chosen per scale group:
      "absmax" max |x|; "percentile" that percentile of |x|; "mse" the clip among 100
      candidates amax*k/100 (k=1..100) with the least squared error after quantization.
    The scale is float32(amax / fmt.max) (1 where amax is 0); codes = encode(x / scale),
    with x / scale formed in float64.
    headroom: BITS (a non-negative integer) maps amax to fmt.max / 2^BITS instead of fmt.max:
    the scale is float32(amax * 2^BITS / fmt.max), so products of two such operands stay 4^BITS
    below the formats' full range and a narrow accumulator (fp16) has room for their sums
    (Array's quant={'headroom': 'auto'} picks BITS from the accumulator; accel_sim.headroom).
    For scale "tensor" and "channel"."""
    fmt = formats.get(fmt)
    rounding_code(rounding)
    check_seed(seed)
    x = np.asarray(x)
    if x.dtype.kind not in "fiu" or (x.dtype.kind == "f" and x.dtype.itemsize > 8):
        raise TypeError(f"x must be a float or integer array, got dtype {x.dtype}")
    check_memory(x.size, 3 * 8 + fmt.code_dtype.itemsize, "x")   # float64 copies, scaled values, codes
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or inf; quantize needs finite values to calibrate")
    headroom = check_headroom(headroom, fmt)
    if headroom and not (isinstance(scale, str) and scale in ("tensor", "channel")):
        raise ValueError(f"headroom applies to scale='tensor' or 'channel' (it moves amax below the format's max), "
                         f"not scale={scale!r}")
    if isinstance(scale, str) and scale in ("block", "vector"):
        if calibration != "absmax":
            raise ValueError(f"scale={scale!r} calibrates by absmax (the OCP MX / VS-Quant rule), got "
                             f"calibration={calibration!r}")
        if not isinstance(saturate, (bool, np.bool_)):
            raise TypeError(f"saturate must be a bool, got {type(saturate).__name__}")
        return _quantize_blocks(x, fmt, scale, -1 if axis is None else axis, block, scale_format, coarse,
                                rounding, bool(saturate), seed)
    if block is not None or scale_format is not None or coarse is not None:
        raise ValueError(f"block, scale_format and coarse apply to scale='block' or 'vector', not scale={scale!r}")
    if isinstance(scale, str):
        if scale in ("tensor", "none"):
            if axis is not None:
                raise ValueError(f"axis applies to scale='channel'; leave it None for scale={scale!r}")
            group_axis = None
        elif scale == "channel":
            if x.ndim == 0:
                raise ValueError("scale='channel' needs an array with at least one axis")
            group_axis = _check_axis(0 if axis is None else axis, x.ndim, "axis")
        else:
            raise ValueError(f"scale must be 'tensor', 'channel', 'none', 'block', 'vector' or explicit scale "
                             f"values, got {scale!r}")
        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")
        scales = 1.0 if scale == "none" else _calibrate(x, fmt, group_axis, calibration, percentile, rounding, saturate,
                                                         headroom)
    else:
        group_axis = None if axis is None else _check_axis(axis, x.ndim, "axis")
        scales = scale
    shell = QTensor(np.zeros(x.shape, fmt.code_dtype), fmt, scales, group_axis)
    codes = fmt.encode(x / shell.scale_array(), rounding=rounding, saturate=saturate, seed=seed)
    return QTensor(codes, fmt, shell.scale, group_axis)


def _quantize_blocks(x, fmt, kind, axis, block, scale_format, coarse, rounding, saturate, seed) -> QTensor:
    """OCP MX ("block") or VS-Quant ("vector") codes and scales of x (float64, finite)."""
    if x.ndim == 0:
        raise ValueError(f"scale={kind!r} needs an array with at least one axis")
    ax = _check_axis(axis, x.ndim, "axis")
    block = (32 if kind == "block" else 16) if block is None else block
    _check_block(block, x.shape[ax], ax)
    allowed = ("e8m0",) if kind == "block" else ("uint4", "uint6", "uint8")
    scale_format = allowed[-1] if scale_format is None else scale_format
    if scale_format not in allowed:
        raise ValueError(f"scale_format for scale={kind!r} must be one of {allowed}, got {scale_format!r}")
    if kind == "block" and coarse is not None:
        raise ValueError("coarse applies to scale='vector' (MX has no second scale level)")
    # blocks along the last axis: xb[..., i, :] is block i
    xm = np.moveaxis(x, ax, -1)
    xb = xm.reshape(*xm.shape[:-1], xm.shape[-1] // block, block)
    amax = np.abs(xb).max(axis=-1) if xb.size else np.zeros(xb.shape[:-1])
    coarse_axis = None
    if kind == "block":
        emax_elem = math.frexp(fmt.max)[1] - 1          # floor(log2(largest element))
        exp = np.frexp(amax)[1].astype(np.int64) - 1 - emax_elem
        if np.any((amax > 0) & (exp > E8M0_BIAS)):
            raise ValueError(f"x's magnitude (absmax up to {float(amax.max()):.3g}) needs an e8m0 scale above "
                             f"2^{E8M0_BIAS} for {fmt.name}; rescale x first")
        exp = np.where(amax > 0, np.maximum(exp, -E8M0_BIAS), -E8M0_BIAS)  # underflow clamps to 2^-127
        scale_codes = (exp + E8M0_BIAS).astype(np.uint8)
        block_values = np.ldexp(1.0, exp)
        coarse_scale = np.float32(1.0)
    else:
        coarse = ("row" if x.ndim == 2 else "tensor") if coarse is None else coarse
        if coarse not in ("row", "tensor"):
            raise ValueError(f"coarse must be 'row' or 'tensor', got {coarse!r}")
        if coarse == "row" and x.ndim != 2:
            raise ValueError(f"coarse='row' needs a 2-D x (one scale per index of the other axis), got {x.ndim}-D")
        top = (1 << SCALE_FORMATS[scale_format]) - 1
        s = amax / fmt.max                                  # the ideal per-vector scales
        if coarse == "row":
            coarse_axis = 1 - ax
            per_row = s.max(axis=-1) if s.size else np.zeros(s.shape[:-1])
            coarse_scale = _scale_for(per_row, _Top(top))
            gamma = coarse_scale.astype(np.float64)[:, None]
        else:
            coarse_scale = _scale_for(np.asarray(s.max() if s.size else 0.0), _Top(top))
            gamma = np.float64(coarse_scale)
        q = np.clip(np.rint(s / gamma), 1, top)             # a nonzero vector keeps a nonzero scale
        q = np.where(amax > 0, q, 0)
        scale_codes = q.astype(np.uint8)
        block_values = np.where(q > 0, q * gamma, 1.0)      # all-zero vectors: any divisor gives 0
    codes = fmt.encode(xb / block_values[..., None], rounding=rounding, saturate=saturate, seed=seed)
    codes = np.moveaxis(codes.reshape(xm.shape), -1, ax)
    scale_codes = np.moveaxis(scale_codes, -1, ax)
    return QTensor(codes, fmt, coarse_scale, coarse_axis, block=block, block_axis=ax,
                   block_scale_codes=scale_codes, scale_format=scale_format)


class _Top:
    """The largest integer scale as a stand-in format for _scale_for (gamma = s / top)."""

    def __init__(self, top):
        self.max, self.name = float(top), f"a uint scale of max {top}"


def _check_block(block, length, axis):
    if isinstance(block, (bool, np.bool_)) or not isinstance(block, (int, np.integer)):
        raise TypeError(f"block must be an integer, got {type(block).__name__}")
    if block < 1:
        raise ValueError(f"block must be positive, got {block}")
    if length % block:
        raise ValueError(f"block={block} does not divide axis {axis} of length {length}; "
                         "pad the axis to a multiple of the block (docs/scaling.md)")


def check_headroom(headroom, fmt=None) -> int:
    """headroom as an int, checked: a non-negative integer of bits, and with fmt at most
    max_headroom(fmt) (beyond it amax maps below the smallest code: every code would be 0)."""
    if isinstance(headroom, (bool, np.bool_)) or not isinstance(headroom, (int, np.integer)) \
            or not 0 <= headroom <= 1100:
        raise ValueError(f"headroom must be a non-negative integer number of bits, got {headroom!r}")
    if fmt is not None and headroom > max_headroom(fmt):
        raise ValueError(f"headroom must be at most {max_headroom(fmt)} bits for {fmt.name}, got {headroom}: "
                         f"amax would map to {fmt.max:g} / 2^{headroom}, below half its smallest nonzero value "
                         f"{fmt.min_subnormal:g}, and every code would be 0")
    return int(headroom)


def max_headroom(fmt) -> int:
    """The largest headroom at which amax (fmt.max / 2^h) still rounds to a nonzero code:
    above half fmt's smallest nonzero value."""
    fmt = formats.get(fmt)
    h = math.floor(math.log2(2 * fmt.max / fmt.min_subnormal))
    return h - 1 if math.ldexp(fmt.max, -h) <= fmt.min_subnormal / 2 else h


def _calibrate(x, fmt, axis, calibration, percentile, rounding, saturate, headroom=0) -> np.ndarray:
    reduce = None if axis is None else tuple(i for i in range(x.ndim) if i != axis)
    mags = np.abs(x)
    if mags.size == 0:  # nothing to calibrate on: scale 1 per group
        return _scale_for(np.zeros(() if axis is None else (x.shape[axis],)), fmt)
    if calibration == "percentile":
        if not isinstance(percentile, (int, float)) or not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
        amax = np.percentile(mags, percentile, axis=reduce) if mags.size else np.zeros(())
    else:
        amax = mags.max(axis=reduce) if mags.size else np.zeros(())
    if calibration == "mse":
        amax = _mse_clip(x, fmt, axis, reduce, np.asarray(amax, np.float64), rounding, saturate)
    return _scale_for(np.ldexp(np.asarray(amax, np.float64), headroom), fmt)   # exact: a power of two


_F32 = np.finfo(np.float32)


def _scale_for(amax: np.ndarray, fmt) -> np.ndarray:
    """float32(amax / max); 1 where amax is 0; an error where float32 cannot hold it."""
    s64 = np.where(amax > 0, amax / fmt.max, 1.0)
    if np.any((s64 > _F32.max) | (s64 < _F32.smallest_subnormal)):
        raise ValueError(f"x's magnitude (absmax up to {float(np.max(amax)):.3g}) needs a scale for {fmt.name} "
                         "outside float32's range; rescale x first")
    return s64.astype(np.float32)


def _mse_clip(x, fmt, axis, reduce, amax, rounding, saturate) -> np.ndarray:
    best_err = np.full(amax.shape, np.inf)
    best = amax.copy()
    shape = [1] * x.ndim
    if axis is not None:
        shape[axis] = -1
    for k in range(1, 101):
        clip = amax * (k / 100.0)
        s = _scale_for(clip, fmt).astype(np.float64).reshape(shape if axis is not None else ())
        q = fmt.decode(fmt.encode(x / s, rounding=rounding, saturate=True)) * s
        err = np.square(q - x).sum(axis=reduce)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best = np.where(better, clip, best)
    return best


def _check_axis(axis, ndim, argname):
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{argname} must be an integer, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{argname}={axis} is out of range for an array with {ndim} dimensions")
    return int(axis) % ndim


def _check_scale(scale, codes, axis) -> np.ndarray:
    s = np.asarray(scale)
    if s.dtype.kind not in "fiu":
        raise TypeError(f"scale must be a number or a float array, got dtype {s.dtype}")
    with np.errstate(over="ignore"):
        s = s.astype(np.float32)
    if axis is None:
        if s.size != 1:
            raise ValueError(f"scale must be a single value when axis is None, got shape {s.shape}")
        s = s.reshape(())
    else:
        n = codes.shape[axis]
        if s.ndim != 1 or s.shape[0] != n:
            raise ValueError(f"scale must have shape ({n},) for axis {axis} of codes with shape {codes.shape}, "
                             f"got shape {s.shape}")
    if not np.all(np.isfinite(s)) or not np.all(s > 0):
        raise ValueError("scale must be finite and positive (as float32)")
    return s
