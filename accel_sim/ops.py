"""The layer ops model forwards are written against: float32 reference implementations of
linear, matmul and conv2d, each call passed to the active handlers, so the same forward can be
recorded into a trace (acs.trace.record) or run with every GEMM on a simulated array
(acs.trace.simulate)."""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from accel_sim import layers

__all__ = ["linear", "matmul", "conv2d", "handler"]

_state = threading.local()


def _handlers():
    if not hasattr(_state, "stack"):
        _state.stack = []
    return _state.stack


@contextlib.contextmanager
def handler(h):
    """Route ops through h while the context is open: h(op, name, inputs, attrs, compute)
    returns the op's output; compute() is the float32 reference."""
    stack = _handlers()
    stack.append(h)
    try:
        yield h
    finally:
        stack.pop()


def _dispatch(op, name, inputs, attrs, compute):
    stack = _handlers()
    if not stack:
        return compute()
    return stack[-1](op, name, inputs, attrs, compute)


def _f32(x, argname):
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{argname} must be a float array, got dtype {arr.dtype}")
    return arr.astype(np.float32, copy=False)


def linear(x, w, bias=None, name=None):
    """x (..., in) @ w.T (w: out x in, PyTorch's layout) + bias, in float32."""
    x, w = _f32(x, "x"), _f32(w, "w")
    b = None if bias is None else _f32(bias, "bias")
    if w.ndim != 2 or x.shape[-1:] != w.shape[1:]:
        raise ValueError(f"linear: x {x.shape} and w {w.shape} do not fit (w must be (out, in))")
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"linear: bias must have shape ({w.shape[0]},), got {b.shape}")
    inputs = {"x": x, "w": w} if b is None else {"x": x, "w": w, "bias": b}
    return _dispatch("linear", name, inputs, {}, lambda: (x @ w.T + (0 if b is None else b)).astype(np.float32))


def matmul(a, b, name=None):
    """Batched a (..., M, K) @ b (..., K, N) in float32 (attention's QK^T and PV)."""
    a, b = _f32(a, "a"), _f32(b, "b")
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: a {a.shape} and b {b.shape} do not multiply")
    return _dispatch("matmul", name, {"a": a, "b": b}, {}, lambda: np.matmul(a, b).astype(np.float32))


def conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, name=None):
    """2-D convolution, PyTorch layouts (x NCHW, w OIHW) and output sizes, in float32."""
    x, w = _f32(x, "x"), _f32(w, "w")
    b = None if bias is None else _f32(bias, "bias")
    attrs = {"stride": list(layers.pair(stride, "stride")), "padding": list(layers.pair(padding, "padding")),
             "dilation": list(layers.pair(dilation, "dilation")), "groups": int(groups)}
    if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
        raise ValueError(f"conv2d: x {x.shape}, w {w.shape} and groups={groups} do not fit")

    def compute():
        o, cg, kh, kw = w.shape
        og = o // groups
        parts = []
        for g in range(groups):
            cols, (oh, ow) = layers.im2col(x[:, g * cg:(g + 1) * cg], (kh, kw), attrs["stride"],
                                           attrs["padding"], attrs["dilation"])
            parts.append(cols @ w[g * og:(g + 1) * og].reshape(og, -1).T)
        y = np.concatenate(parts, axis=1).reshape(x.shape[0], oh, ow, o).transpose(0, 3, 1, 2)
        if b is not None:
            y = y + b[None, :, None, None]
        return np.ascontiguousarray(y, dtype=np.float32)

    inputs = {"x": x, "w": w} if b is None else {"x": x, "w": w, "bias": b}
    return _dispatch("conv2d", name, inputs, attrs, compute)
