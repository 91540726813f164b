"""Lowering of layers to GEMMs: conv2d by im2col (PyTorch layouts and output sizes), linear,
and batched matmul.  Pure numpy on codes; the Array runs the GEMMs."""
from __future__ import annotations

import numpy as np

__all__ = ["conv_output_size", "im2col", "pair"]


def pair(value, argname):
    """An (h, w) pair of non-negative ints from an int or a 2-sequence."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        value = (value, value)
    try:
        h, w = value
    except (TypeError, ValueError):
        raise TypeError(f"{argname} must be an int or a pair of ints, got {value!r}") from None
    for v in (h, w):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{argname} must be an int or a pair of ints, got {value!r}")
    return int(h), int(w)


def conv_output_size(size, kernel, stride, padding, dilation):
    """PyTorch's floor((size + 2*padding - dilation*(kernel-1) - 1) / stride) + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def im2col(x, kernel, stride, padding, dilation):
    """Patches of x (N, C, H, W) as rows: (N*OH*OW, C*KH*KW), columns ordered (c, kh, kw) like
    a flattened OIHW weight; padding with code 0 (every format's +0)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    oh = conv_output_size(h, kh, sh, ph, dh)
    ow = conv_output_size(w, kw, sw, pw, dw)
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, c * kh * kw), (oh, ow)
