"""Scaling and calibration: QTensor (codes + format + float32 scales) and post-training
quantization with per-tensor or per-channel scales."""
from __future__ import annotations

import numpy as np

from accel_sim import formats
from accel_sim._native import check_seed, rounding_code

__all__ = ["QTensor", "quantize", "CALIBRATIONS"]

CALIBRATIONS = ("absmax", "percentile", "mse")


class QTensor:
    """Codes of a format with float32 scales: value = decode(code) * scale.

    axis=None: one scale for the tensor.  axis=k: one scale per index along axis k (scale
    is 1-D with codes.shape[k] entries)."""

    def __init__(self, codes, fmt, scale=1.0, axis=None):
        self.format = formats.get(fmt)
        codes = np.asarray(codes)
        if codes.dtype.kind not in "ui":
            raise TypeError(f"codes must be an integer array of {self.format.name} codes, got dtype {codes.dtype}")
        if codes.size and (codes.min() < 0 or int(codes.max()) >> self.format.bits):
            raise ValueError(f"codes must lie in [0, {(1 << self.format.bits) - 1}] for {self.format.name}")
        self.codes = np.asarray(codes, dtype=self.format.code_dtype)
        self.axis = _check_axis(axis, self.codes.ndim, "axis") if axis is not None else None
        self.scale = _check_scale(scale, self.codes, self.axis)

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
        """float64 values decode(code) * scale (exact: code values have at most 24 significant
        bits in every 8/16-bit format, scales 24)."""
        return self.format.decode(self.codes) * self.scale_array()

    def __repr__(self):
        where = "tensor" if self.axis is None else f"axis {self.axis}"
        return f"QTensor({self.format.name}, shape={self.shape}, scales per {where})"


def quantize(x, fmt, scale="tensor", axis=None, calibration="absmax", rounding="rne",
             saturate=True, percentile=99.99, seed=0) -> QTensor:
    """Post-training quantization of x to fmt with symmetric scales.

    scale: "tensor" (one scale), "channel" (one per index along `axis`, default 0: the
    output channel of PyTorch weights), "none" (scale 1: a plain cast, for wide formats such
    as bf16 and fp16 baselines), or explicit float32 scale(s).
    calibration: how the clipping magnitude amax is chosen per scale group:
      "absmax" max |x|; "percentile" that percentile of |x|; "mse" the clip among 100
      candidates amax*k/100 (k=1..100) with the least squared error after quantization.
    The scale is float32(amax / fmt.max) (1 where amax is 0); codes = encode(x / scale),
    with x / scale formed in float64."""
    fmt = formats.get(fmt)
    rounding_code(rounding)
    check_seed(seed)
    x = np.asarray(x)
    if x.dtype.kind not in "fiu" or (x.dtype.kind == "f" and x.dtype.itemsize > 8):
        raise TypeError(f"x must be a float or integer array, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or inf; quantize needs finite values to calibrate")
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
            raise ValueError(f"scale must be 'tensor', 'channel', 'none' or explicit scale values, got {scale!r}")
        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")
        scales = 1.0 if scale == "none" else _calibrate(x, fmt, group_axis, calibration, percentile, rounding, saturate)
    else:
        group_axis = None if axis is None else _check_axis(axis, x.ndim, "axis")
        scales = scale
    shell = QTensor(np.zeros(x.shape, fmt.code_dtype), fmt, scales, group_axis)
    codes = fmt.encode(x / shell.scale_array(), rounding=rounding, saturate=saturate, seed=seed)
    return QTensor(codes, fmt, shell.scale, group_axis)


def _calibrate(x, fmt, axis, calibration, percentile, rounding, saturate) -> np.ndarray:
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
    return _scale_for(np.asarray(amax, np.float64), fmt)


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
