"""Quantization-aware training on the simulated hardware.

The forward pass of a layer runs on the bit-accurate engine: its operands are quantized to
QTensors from the current scales (acs.quant.quantize) and multiplied by Array.linear /
Array.conv2d, so the output is the array's output bit for bit (formats, scales, accumulator,
rounding, dataflow order, fp32 epilogue).  The backward pass is the straight-through
estimator (STE): the gradient of the float layer at the dequantized operands, passed to the
float operands where they lie inside the clipping range [fmt.min * s, fmt.max * s] and zeroed
outside it.  Static scales get the LSQ step-size gradient (Esser et al., "Learned Step Size
Quantization", ICLR 2020): d xhat / d s = q - x/s inside the range and q (the clipped level)
outside, summed over the scale's group and multiplied by g = 1 / sqrt(N * Qp) (N elements
share the step, Qp = fmt.max).  docs/qat.md has the decisions.  With backward= (a
backward.Backward) the STE's two GEMMs -- dX = dY W and dW = dY^T X -- run on the array too,
each with its own formats, scaling and accumulator (docs/training.md).

    wq = qat.Quantizer("int4", scale="channel", axis=0, calibration="mse")
    xq = qat.Quantizer("int4")                      # per tensor, calibrated on its first input
    fwd = qat.linear(arr, x, w, bias, x_quant=xq, w_quant=wq)
    fwd.output                                       # == arr.linear(xq(x), wq(w), bias).output
    grads = fwd.backward(grad_output)                # {"x", "w", "bias", "x_step", "w_step"}
"""
from __future__ import annotations

import math

import numpy as np

from accel_sim import formats, layers
from accel_sim._native import check_float_array
from accel_sim.array import Array, Result
from accel_sim.backward import Backward
from accel_sim.quant import QTensor, quantize

__all__ = ["Quantizer", "Forward", "linear", "conv2d", "col2im"]

_STATIC = ("tensor", "channel")
_BLOCKED = ("block", "vector")   # OCP MX and VS-Quant: scales per block of K, both operands


class Quantizer:
    """How one operand is quantized on the hardware, and how its scale is trained.

    fmt, scale, axis, calibration and any further keyword arguments (rounding, percentile,
    block, scale_format, ...) are passed to acs.quant.quantize as they are.

    Static scales (scale "tensor" or "channel"; dynamic=False, the default): the step (the
    float32 scale) is calibrated once, with `calibration`, on the first tensor quantized (or by
    calibrate()), then kept; the backward returns its LSQ gradient, so a trainer can learn it.
    Dynamic (dynamic=True, or any other scale kind such as "vector"): quantize() calibrates
    afresh on every call, as hardware computing scales on the fly does; no step gradient.
    Block kinds ("block": OCP MX, "vector": VS-Quant) scale blocks of the reduction axis K:
    the layer hooks lower the layer to one GEMM, zero-pad K to a multiple of the block and
    quantize both operands along K (so axis stays None here; both operands must be blocked)."""

    def __init__(self, fmt, scale="tensor", axis=None, *, calibration="absmax", dynamic=False, **quant_kwargs):
        self.format = formats.get(fmt, "fmt")
        if not isinstance(scale, str):
            raise TypeError(f"scale must be a scale kind name such as 'tensor' or 'channel', got {type(scale).__name__}")
        if not isinstance(dynamic, (bool, np.bool_)):
            raise TypeError(f"dynamic must be True or False, got {type(dynamic).__name__}")
        if scale == "none":
            raise ValueError("scale='none' has no scale to train or calibrate; use a 'tensor' or 'channel' scale")
        if scale == "channel" and axis is None:
            axis = 0
        if axis is not None and (isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer))):
            raise TypeError(f"axis must be an integer or None, got {type(axis).__name__}")
        if scale in ("tensor",) + _BLOCKED and axis is not None:
            raise ValueError(f"axis applies to per-channel scales; leave it None for scale={scale!r} "
                             "(block scales run along the layer's reduction axis)")
        if "seed" in quant_kwargs or "saturate" in quant_kwargs:
            raise ValueError("saturate and seed are fixed by the quantizer (saturate=True, the array's seed)")
        self.kind, self.axis, self.calibration = scale, axis, calibration
        self.dynamic = bool(dynamic) or scale not in _STATIC
        self.kwargs = dict(quant_kwargs)
        self._step = None

    # -- the step (static scales) ------------------------------------------------------------
    @property
    def step(self):
        """The float32 scale(s): a 0-d array per tensor, 1-D per channel; None until calibrated."""
        return self._step

    @step.setter
    def step(self, value):
        if self.dynamic:
            raise ValueError(f"a dynamic quantizer ({self.kind!r} scales) has no step to set")
        s = np.asarray(value)
        if s.dtype.kind not in "fiu":
            raise TypeError(f"step must be a float array, got dtype {s.dtype}")
        with np.errstate(over="ignore"):
            s = s.astype(np.float32)
        if self._step is not None and s.shape != self._step.shape:
            raise ValueError(f"step must keep its shape {self._step.shape}, got {s.shape}")
        if self.kind == "tensor" and s.size != 1:
            raise ValueError(f"a per-tensor step is one value, got shape {s.shape}")
        if self.kind == "channel" and s.ndim != 1:
            raise ValueError(f"a per-channel step is 1-D, got shape {s.shape}")
        if not np.all(np.isfinite(s)) or not np.all(s > 0):
            raise ValueError("step must be finite and positive (as float32)")
        self._step = s.reshape(()) if self.kind == "tensor" else s

    def calibrate(self, x) -> "Quantizer":
        """Set the step from x with the quantizer's calibration (PTQ's scale)."""
        if self.dynamic:
            raise ValueError("a dynamic quantizer calibrates on every call; calibrate() applies to static scales")
        self.step = self._ptq(x).scale
        return self

    @property
    def blocked(self) -> bool:
        return self.kind in _BLOCKED

    @property
    def block(self):
        """Elements per block of K (block kinds), else None."""
        return self.kwargs.get("block", 32 if self.kind == "block" else 16) if self.blocked else None

    def _ptq(self, x):
        return quantize(x, self.format, scale=self.kind, axis=-1 if self.blocked else self.axis,
                        calibration=self.calibration, saturate=True, **self.kwargs)

    def __call__(self, x) -> QTensor:
        """x quantized with the current step (calibrated first if there is none yet)."""
        if self.dynamic:
            return self._ptq(x)
        if self._step is None:
            self.calibrate(x)
        kwargs = {k: v for k, v in self.kwargs.items() if k in ("rounding",)}
        return quantize(x, self.format, scale=self._step, axis=self.axis if self.kind == "channel" else None,
                        saturate=True, **kwargs)

    # -- backward ------------------------------------------------------------------------------
    def ste(self, x, q: QTensor, grad):
        """(grad_x, grad_step) from grad (the loss's gradient at q's dequantized values): the
        straight-through estimator, zero where x was clipped, and the LSQ step gradient
        (None for a dynamic quantizer)."""
        x = np.asarray(x, dtype=np.float64)
        dq = q.dequantize()
        level = self.format.decode(q.codes)
        lo = getattr(self.format, "min", -self.format.max)
        # clipped: saturated to the extreme level with x beyond it (== x/s outside [min, max])
        clipped = ((level == self.format.max) & (x > dq)) | ((level == lo) & (x < dq))
        grad_x = np.where(clipped, 0.0, grad)
        if self.dynamic:
            return grad_x, None
        s = q.scale_array()
        dxhat_ds = np.where(clipped, level, level - x / s)   # LSQ: q - x/s inside, q outside
        prod = grad * dxhat_ds
        if self.kind == "tensor":
            n, gsum = x.size, prod.sum()
        else:
            reduce = tuple(i for i in range(x.ndim) if i != q.axis)
            n, gsum = x.size // max(x.shape[q.axis], 1), prod.sum(axis=reduce)
        g = 1.0 / math.sqrt(max(n, 1) * self.format.max)
        return grad_x, np.asarray(gsum * g, dtype=np.float64)

    def __repr__(self):
        state = "dynamic" if self.dynamic else ("uncalibrated" if self._step is None else "static")
        return f"Quantizer({self.format.name}, {self.kind}, axis={self.axis}, {state})"


class Forward:
    """One layer's simulated forward: .output (float64 holding the array's fp32 outputs),
    .result (the engine's Result: cycles, energy, metrics) and .backward(grad_output)."""

    def __init__(self, output, result: Result, backward):
        self.output, self.result, self._backward = output, result, backward

    def backward(self, grad_output, *, need_x=True) -> dict:
        """Gradients {"x", "w", "bias" (None without bias), "x_step", "w_step" (None when dynamic),
        "results"}.  results: the backward GEMMs' Results by role ("dgrad", "wgrad": lists, one
        per group) when the layer's backward runs on the array, else {}.  need_x=False skips the
        input gradient (a first layer's): "x" and "x_step" are None.  On the array, a
        non-finite grad_output (an overflow upstream) gives NaN gradients without running the
        GEMMs: the training step sees the overflow and skips the step."""
        g = np.asarray(grad_output)
        if g.dtype.kind not in "fiu":
            raise TypeError(f"grad_output must be a float array, got dtype {g.dtype}")
        if g.shape != self.output.shape:
            raise ValueError(f"grad_output must have the output's shape {self.output.shape}, got {g.shape}")
        if not isinstance(need_x, (bool, np.bool_)):
            raise TypeError(f"need_x must be True or False, got {type(need_x).__name__}")
        return self._backward(g.astype(np.float64), bool(need_x))


def _check(arr, x_quant, w_quant, backward=None):
    if backward is not None and not isinstance(backward, Backward):
        raise TypeError(f"backward must be None (float64 STE) or a backward.Backward, got {type(backward).__name__}")
    if not isinstance(arr, Array):
        raise TypeError(f"arr must be an acs.Array, got {type(arr).__name__}")
    for argname, qz in (("x_quant", x_quant), ("w_quant", w_quant)):
        if not isinstance(qz, Quantizer):
            raise TypeError(f"{argname} must be a qat.Quantizer, got {type(qz).__name__}")
    if x_quant.format != arr.mac.a:
        raise ValueError(f"x_quant quantizes to {x_quant.format.name} but the array's MAC takes {arr.mac.a.name}")
    if w_quant.format != arr.mac.b:
        raise ValueError(f"w_quant quantizes to {w_quant.format.name} but the array's MAC takes {arr.mac.b.name}")
    if x_quant.blocked != w_quant.blocked:
        raise ValueError("x_quant and w_quant must both use block scales ('block'/'vector') or neither: "
                         "the array joins block-scaled partial sums with both operands' block scales")
    if x_quant.blocked and x_quant.block != w_quant.block:
        raise ValueError(f"x_quant and w_quant must share the block size, got {x_quant.block} and {w_quant.block}")
    if x_quant.kind == "channel":
        raise ValueError("x_quant must scale per tensor (or dynamically): the array applies activation scales "
                         "per row after the sum, so a per-channel scale along K cannot be applied")
    if w_quant.kind == "channel" and w_quant.axis not in (0, None):
        raise ValueError(f"w_quant's channel axis must be 0 (output channels), got {w_quant.axis}")


def _float(v, argname, ndim=None):
    return check_float_array(v, argname, ndim).astype(np.float64)


def _overflowed(shapes, bias):
    """The gradients of a step whose incoming gradient is already non-finite: all NaN."""
    nan = {k: np.full(v, np.nan) for k, v in shapes.items()}
    return {**nan, "bias": None if bias is None else np.full(bias.shape, np.nan), "x_step": None, "w_step": None,
            "results": {}}


def _finish(grads, x_quant, w_quant, x, qx, w, qw, gxh, gwh, results):
    """The STE (and LSQ step gradients) from the gradients at the dequantized operands."""
    gx, gsx = (None, None) if gxh is None else x_quant.ste(x, qx, gxh)
    gw, gsw = w_quant.ste(w, qw, gwh)
    grads.update({"x": gx, "w": gw, "x_step": gsx, "w_step": gsw, "results": results})
    return grads


def linear(arr, x, w, bias=None, *, x_quant, w_quant, backward=None) -> Forward:
    """y = x @ w.T + bias (PyTorch layouts: x (..., in), w (out, in)) on the array, with
    x and w quantized by x_quant and w_quant.  backward: None, the STE in float64 (module
    docstring); or a backward.Backward, the layer's dgrad and wgrad GEMMs on the array, then
    the STE."""
    _check(arr, x_quant, w_quant, backward)
    x, w = _float(x, "x"), _float(w, "w", 2)
    if x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"x {x.shape} and w {w.shape} do not fit: x's last axis must be w's in_features")
    b = None if bias is None else _float(bias, "bias", 1)
    if x_quant.blocked:
        fwd = _blocked_gemm(arr, x.reshape(-1, w.shape[1]), w, b, x_quant, w_quant, backward)
        out = fwd.output.reshape(*x.shape[:-1], -1)
        return Forward(out, fwd.result,
                       lambda g, need_x: _reshaped(fwd.backward(g.reshape(fwd.output.shape), need_x=need_x), x.shape))
    qx, qw = x_quant(x), w_quant(w)
    res = arr.linear(qx, qw, bias=b)

    def grads_of(g, need_x):
        g2 = g.reshape(-1, w.shape[0])
        if backward is None:
            xh, wh = qx.dequantize(), qw.dequantize()
            gxh = (g2 @ wh).reshape(x.shape) if need_x else None
            gwh = g2.T @ xh.reshape(-1, w.shape[1])
            results = {}
        elif not np.all(np.isfinite(g2)):
            return _overflowed({"x": x.shape, "w": w.shape}, b)
        else:
            gxh, gwh, results = backward.linear_grads(g2, w, x.reshape(-1, w.shape[1]), need_x)
            gxh = None if gxh is None else gxh.reshape(x.shape)
        return _finish({"bias": None if b is None else g2.sum(axis=0)}, x_quant, w_quant, x, qx, w, qw, gxh, gwh,
                       results)

    return Forward(res.output, res, grads_of)


def col2im(cols, xshape, kernel, stride, padding, dilation):
    """The adjoint of layers.im2col: rows (N*OH*OW, C*KH*KW) scatter-added onto (N, C, H, W)."""
    n, c, h, w = xshape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    oh = layers.conv_output_size(h, kh, sh, ph, dh)
    ow = layers.conv_output_size(w, kw, sw, pw, dw)
    d = cols.reshape(n, oh, ow, c, kh, kw).transpose(0, 3, 4, 5, 1, 2)
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw] += d[:, :, i, j]
    return xp[:, :, ph:ph + h, pw:pw + w]


def conv2d(arr, x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *, x_quant, w_quant,
           backward=None) -> Forward:
    """2-D convolution (x NCHW, w OIHW, PyTorch's output sizes) on the array (Array.conv2d),
    with x and w quantized by x_quant and w_quant; the backward is the STE, with its GEMMs in
    float64 (backward=None) or on the array (a backward.Backward: dgrad = dY W over the
    im2col layout, then col2im; wgrad = dY^T im2col(X), per group)."""
    _check(arr, x_quant, w_quant, backward)
    x, w = _float(x, "x", 4), _float(w, "w", 4)
    b = None if bias is None else _float(bias, "bias", 1)
    stride, padding, dilation = (layers.pair(v, name) for v, name in
                                 ((stride, "stride"), (padding, "padding"), (dilation, "dilation")))
    if x_quant.blocked:
        return _blocked_conv2d(arr, x, w, b, stride, padding, dilation, groups, x_quant, w_quant, backward)
    qx, qw = x_quant(x), w_quant(w)
    res = arr.conv2d(qx, qw, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=b)

    def grads_of(g, need_x):
        o, cg, kh, kw = w.shape
        og = o // groups
        gy = g.transpose(0, 2, 3, 1).reshape(-1, o)
        grads = {"bias": None if b is None else gy.sum(axis=0)}
        gxh = np.zeros_like(x) if need_x else None
        if backward is None:
            xh, wh = qx.dequantize(), qw.dequantize()
            gwh = np.zeros_like(w)
            results = {}
            for k in range(groups):
                cols, _ = layers.im2col(xh[:, k * cg:(k + 1) * cg], (kh, kw), stride, padding, dilation)
                gk = gy[:, k * og:(k + 1) * og]
                gwh[k * og:(k + 1) * og] = (gk.T @ cols).reshape(og, cg, kh, kw)
                if need_x:
                    gcols = gk @ wh[k * og:(k + 1) * og].reshape(og, -1)
                    gxh[:, k * cg:(k + 1) * cg] = col2im(gcols, (x.shape[0], cg) + x.shape[2:], (kh, kw),
                                                         stride, padding, dilation)
        elif not np.all(np.isfinite(gy)):
            return _overflowed({"x": x.shape, "w": w.shape}, b)
        else:
            cols_of = backward.conv_cols(x, (kh, kw), stride, padding, dilation, groups)
            dcols, dw, results = backward.conv_like_grads(gy, w.reshape(o, -1), cols_of, groups, need_x)
            gwh = dw.reshape(w.shape)
            if need_x:
                kg = cg * kh * kw
                for k in range(groups):
                    gxh[:, k * cg:(k + 1) * cg] = col2im(dcols[:, k * kg:(k + 1) * kg], (x.shape[0], cg) + x.shape[2:],
                                                         (kh, kw), stride, padding, dilation)
        return _finish(grads, x_quant, w_quant, x, qx, w, qw, gxh, gwh, results)

    return Forward(res.output, res, grads_of)


# -- block-scaled layers (OCP MX, VS-Quant): one GEMM, K zero-padded to whole blocks ---------

def _reshaped(grads, xshape):
    if grads["x"] is not None:
        grads["x"] = grads["x"].reshape(xshape)
    return grads


def _blocked_gemm(arr, a, wt, bias, x_quant, w_quant, backward) -> Forward:
    """a (M, K) @ wt (N, K).T on the array with both operands block-scaled along K; K is
    zero-padded to a multiple of the block (zeros add nothing; the padded MACs are counted).
    The backward GEMMs (on the array when `backward` is given) run on the unpadded operands."""
    k = a.shape[1]
    pad = -k % x_quant.block
    ap, wp = np.pad(a, ((0, 0), (0, pad))), np.pad(wt, ((0, 0), (0, pad)))
    qa, qw = x_quant(ap), w_quant(wp)
    qb = QTensor(qw.codes.T, qw.format, qw.scale, None if qw.axis is None else 1 - qw.axis, block=qw.block,
                 block_axis=1 - qw.block_axis, block_scale_codes=qw.block_scale_codes.T, scale_format=qw.scale_format)
    res = arr.gemm(qa, qb, bias=bias, _names=("x", "w"))

    def grads_of(g, need_x):
        if backward is None:
            ah, wh = qa.dequantize(), qw.dequantize()
            gah = g @ wh if need_x else None
            gwh = g.T @ ah
            results = {}
        elif not np.all(np.isfinite(g)):
            return _overflowed({"x": a.shape, "w": wt.shape}, bias)
        else:
            gah, gwh, results = backward.linear_grads(g, wt, a, need_x)
            gah = None if gah is None else np.pad(gah, ((0, 0), (0, pad)))
            gwh = np.pad(gwh, ((0, 0), (0, pad)))
        ga = None if gah is None else x_quant.ste(ap, qa, gah)[0][:, :k]
        gw, _ = w_quant.ste(wp, qw, gwh)
        return {"x": ga, "w": gw[:, :k], "bias": None if bias is None else g.sum(axis=0),
                "x_step": None, "w_step": None, "results": results}

    return Forward(res.output, res, grads_of)


def _blocked_conv2d(arr, x, w, bias, stride, padding, dilation, groups, x_quant, w_quant, backward) -> Forward:
    """conv2d lowered by im2col of the float input, then _blocked_gemm (groups=1)."""
    if groups != 1:
        raise ValueError(f"block-scaled conv2d runs groups=1 only, got groups={groups}")
    o, c, kh, kw = w.shape
    if x.shape[1] != c:
        raise ValueError(f"x has {x.shape[1]} channels but w {w.shape} expects {c}")
    cols, (oh, ow) = layers.im2col(x, (kh, kw), stride, padding, dilation)
    fwd = _blocked_gemm(arr, cols, w.reshape(o, -1), bias, x_quant, w_quant, backward)
    n = x.shape[0]

    def nchw(y):
        return y.reshape(n, oh, ow, o).transpose(0, 3, 1, 2)

    def backward_nchw(g, need_x):
        grads = fwd.backward(g.transpose(0, 2, 3, 1).reshape(-1, o), need_x=need_x)
        if grads["x"] is not None:
            grads["x"] = col2im(grads["x"], x.shape, (kh, kw), stride, padding, dilation)
        grads["w"] = grads["w"].reshape(w.shape)
        return grads

    return Forward(nchw(fwd.output), fwd.result, backward_nchw)
