"""Lowering of layers to GEMMs: conv2d by im2col (PyTorch layouts and output sizes), linear,
and batched matmul.  im2col and the shape helpers are pure numpy on codes; linear, matmul and
conv2d run the lowered GEMMs on an Array (Array.linear / .matmul / .conv2d call them) and
gather their outputs, costs and error metrics into one Result."""
from __future__ import annotations

import numpy as np

from accel_sim import blockscaled, operands, plan as plan_
from accel_sim._metrics import ErrorSums as _ErrorSums, add_gemm as _add_gemm, error_metrics as _error_metrics, \
    exact_accumulator as _exact_accumulator
from accel_sim.quant import QTensor
from accel_sim.result import Result

__all__ = ["conv_output_size", "im2col", "pair", "linear", "matmul", "conv2d"]


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


# -- layers on an Array ---------------------------------------------------------------------
def linear(array, x, w, bias=None, out_format=None) -> Result:
    """y = x @ w.T + bias with PyTorch's layout: x (..., in), w (out, in), as array.gemm."""
    for argname, v in (("x", x), ("w", w)):
        if isinstance(v, QTensor) and v.is_block_scaled:
            raise ValueError(f"{argname} is block-scaled; block-scaled operands are taken by Array.gemm, with "
                             "both operands block-scaled along K")
    x_arr = x.dequantize() if isinstance(x, QTensor) else np.asarray(x)
    if x_arr.ndim < 1:
        raise ValueError("x must have at least one dimension (its last is in_features)")
    lead = x_arr.shape[:-1]
    if isinstance(x, QTensor):
        if x.axis is not None:
            raise ValueError("a QTensor x for linear must have one scale (axis None)")
        x2 = QTensor(x.codes.reshape(-1, x.shape[-1]), x.format, x.scale)
    else:
        x2 = x_arr.reshape(-1, x_arr.shape[-1])
    if isinstance(w, QTensor):
        w_t = QTensor(w.codes.T, w.format, w.scale, None if w.axis is None else 1 - w.axis)
    else:
        w_arr = np.asarray(w)
        if w_arr.ndim != 2:
            raise ValueError(f"w must be (out_features, in_features), got shape {w_arr.shape}")
        w_t = w_arr.T
    if w_t.shape[0] != x2.shape[-1]:
        raise ValueError(f"x has {x2.shape[-1]} input features but w {tuple(w_t.shape[::-1])} expects {w_t.shape[0]}")
    # warned from here: frames warn, _reported, this, Array.linear, then the caller's
    res = array._reported(array._gemm(x2, w_t, bias, out_format, True, ("x", "w")), out_format, stacklevel=5)
    res.output = res.output.reshape(*lead, -1)
    res.acc = res.acc.reshape(*lead, -1)
    return res


def matmul(array, a, b, out_format=None) -> Result:
    """Batched a (..., M, K) @ b (..., K, N), batch axes broadcast (attention's QK^T and PV).
    Each operand is quantized per tensor; every batch entry is one GEMM on the array."""
    for argname, v in (("a", a), ("b", b)):
        if np.ndim(v.codes if isinstance(v, QTensor) else v) < 2:
            raise ValueError(f"{argname} must have at least 2 dimensions, got shape {np.shape(v)}")
        if isinstance(v, QTensor) and v.axis is not None:
            raise ValueError(f"{argname} must be quantized per tensor for matmul")
    batch_shape(array, *(np.shape(v.codes if isinstance(v, QTensor) else v) for v in (a, b)))  # before quantizing
    if array.quant["a"] in operands.BLOCK_SCALES:
        return _matmul_blocks(array, a, b, out_format)
    per_tensor = {k: "none" if array.quant[k] == "none" else "tensor" for k in ("a", "b")}
    k = np.shape(a.codes if isinstance(a, QTensor) else a)[-1]
    qa, qb = operands.operand_pair(array, a, b, per_tensor["a"], per_tensor["b"], ("a", "b"), None, k)
    batch, ac, bc = batched(array, qa.codes, qb.codes)
    scales = (operands.scales(qa, 0, 0), operands.scales(qb, 1, 0))
    outs, accs, plans = [], [], []
    for i in range(ac.shape[0]):
        acc, output, plan = array._gemm_codes(ac[i], bc[i].T, *scales, None, out_format)
        outs.append(output), accs.append(acc), plans.append(plan)
    m, n = qa.shape[-2], qb.shape[-1]
    output = np.stack(outs).reshape(*batch, m, n) if outs else np.zeros((*batch, m, n))
    acc = np.stack(accs).reshape(*batch, m, n) if accs else np.zeros((*batch, m, n))
    # the metrics per batch entry, on the GEMMs the array ran (as gemm's)
    sums = {key: _ErrorSums() for key in ("vs_float64", "vs_dequantized")}
    out_acc = array.mac.acc if array.dataflow == "os" else array.buffer_acc
    fa, fb = (None if isinstance(v, QTensor) else np.broadcast_to(np.asarray(v), batch + q.shape[-2:])
              for v, q in ((a, qa), (b, qb)))
    for i in range(ac.shape[0]):
        at = np.unravel_index(i, batch) if batch else ()
        qa_i, qb_i = QTensor(ac[i], qa.format, qa.scale), QTensor(bc[i], qb.format, qb.scale)
        exact = _exact_accumulator(array.mac.acc, out_acc, qa_i, qb_i, ac.shape[2])
        _add_gemm(sums, outs[i], [("vs_dequantized", qa_i, qb_i, None),
                                  ("vs_float64", qa_i if fa is None else fa[at], qb_i if fb is None else fb[at], None)],
                  {"vs_dequantized": accs[i]} if exact else None)
    metrics = {key: sums[key].result() for key in ("vs_float64", "vs_dequantized")}
    return plan_.sum_plans(plans, array.rows, array.cols, array.terms, array.clock_ghz, Result,
                      output=output, acc=acc, metrics=metrics)

def batch_shape(array, a_shape, b_shape):
    """The broadcast batch shape of a (..., M, K) @ b (..., K, N), checked to multiply and
    to fit the memory limit."""
    if a_shape[-1] != b_shape[-2]:
        raise ValueError(f"a {a_shape} and b {b_shape} do not multiply: K differs")
    try:
        batch = np.broadcast_shapes(a_shape[:-2], b_shape[:-2])
    except ValueError:
        raise ValueError(f"batch shapes of a {a_shape} and b {b_shape} do not broadcast") from None
    array._check_memory(int(np.prod(batch, dtype=object)) * a_shape[-2], b_shape[-1], a_shape[-1],
                       "the batched matmul")
    return batch

def batched(array, a, b):
    """The batch shape, and a and b broadcast to it and flattened to (entries, M, K) and
    (entries, K, N)."""
    batch = batch_shape(array, a.shape, b.shape)
    return (batch, *(np.broadcast_to(x, batch + x.shape[-2:]).reshape(-1, *x.shape[-2:]) for x in (a, b)))

def _matmul_blocks(array, a, b, out_format) -> Result:
    """Batched matmul with block scaling: every batch entry quantized per block of K."""
    a64, b64 = operands.float_operand(array, a, "a"), operands.float_operand(array, b, "b")
    batch, ab, bb = batched(array, a64, b64)
    m, n = a64.shape[-2], b64.shape[-1]
    results, sums = blockscaled.block_gemms(array, ((x, y, None) for x, y in zip(ab, bb)), out_format)
    output = np.stack([r.output for r in results]).reshape(*batch, m, n) if results else np.zeros((*batch, m, n))
    acc = np.stack([r.acc for r in results]).reshape(*batch, m, n) if results else np.zeros((*batch, m, n))
    metrics = {"vs_float64": _error_metrics(output, a64 @ b64), "vs_dequantized": sums.result()}
    return plan_.sum_plans(results, array.rows, array.cols, array.terms, array.clock_ghz, Result,
                      output=output, acc=acc, metrics=metrics)

def _conv_blocks(array, x, w, kernel, stride, padding, dilation, groups, bias, out_format, out_hw) -> Result:
    """conv2d with block scaling: per group, the im2col patches (A) and flattened filters (B)
    are quantized per block of K = C/groups * KH * KW and multiplied as a block-scaled GEMM."""
    nb, o, cg = x.shape[0], w.shape[0], w.shape[1]
    og = o // groups
    triples = ((im2col(x[:, g * cg:(g + 1) * cg], kernel, stride, padding, dilation)[0],
                w[g * og:(g + 1) * og].reshape(og, -1).T,
                None if bias is None else np.asarray(bias, np.float64)[g * og:(g + 1) * og]) for g in range(groups))
    results, sums = blockscaled.block_gemms(array, triples, out_format)

    output, acc = (_nchw([getattr(r, key) for r in results], nb, out_hw, o) for key in ("output", "acc"))
    ref = _conv_reference(x, w, stride, padding, dilation, groups)
    if bias is not None:
        ref = ref + np.asarray(bias, np.float64)[None, :, None, None]
    metrics = {"vs_float64": _error_metrics(output, ref), "vs_dequantized": sums.result()}
    return plan_.sum_plans(results, array.rows, array.cols, array.terms, array.clock_ghz, Result,
                      output=output, acc=acc, metrics=metrics)


def conv2d(array, x, w, stride=1, padding=0, dilation=1, groups=1, bias=None, out_format=None) -> Result:
    """2-D convolution with PyTorch's layouts (x NCHW, w OIHW) and output sizes, lowered to
    GEMMs by im2col, one per group.  x is quantized per tensor, w per the quant spec's "b"
    ("channel": per output channel)."""
    stride, padding, dilation = (pair(v, name) for v, name in
                                 ((stride, "stride"), (padding, "padding"), (dilation, "dilation")))
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f"stride and dilation must be >= 1 and padding >= 0, got {stride}, {dilation}, {padding}")
    if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    if array.quant["a"] == "channel":
        raise ValueError("conv2d quantizes x per tensor: quant['a'] must be 'tensor' or 'none', not 'channel'")
    blocks = array.quant["a"] in operands.BLOCK_SCALES
    if blocks:   # the im2col patches and flattened filters are quantized per block of K
        qx, qw = operands.float_operand(array, x, "x"), operands.float_operand(array, w, "w")
        for argname, v in (("x", qx), ("w", qw)):
            if v.ndim != 4:
                raise ValueError(f"{argname} must have 4 dimensions, got shape {v.shape}")
    else:
        k = int(np.prod(np.shape(w.codes if isinstance(w, QTensor) else w)[1:]))   # C/groups * KH * KW
        qx, qw = operands.operand_pair(array, x, w, array.quant["a"], array.quant["b"], ("x", "w"), 4, k, axes=(0, 0))
    nb, c, h, wd = qx.shape
    o, cg, kh, kw = qw.shape
    if c % groups or o % groups or cg != c // groups:
        raise ValueError(f"x has {c} channels and w {o}x{cg}: with groups={groups} w must be "
                         f"({o}, {c // groups if c % groups == 0 else '?'}, kh, kw) and both divisible by groups")
    oh = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    ow = conv_output_size(wd, kw, stride[1], padding[1], dilation[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"the kernel ({kh}x{kw}, dilation {dilation}) does not fit the padded input {h}x{wd}")
    array._check_memory(nb * oh * ow, o, cg * kh * kw, "the convolution")
    bias32 = operands.bias32(bias, o)
    og = o // groups
    if blocks:
        return _conv_blocks(array, qx, qw, (kh, kw), stride, padding, dilation, groups, bias, out_format, (oh, ow))
    # per-sample scales: one per patch row of the lowered GEMM (rows are sample-major)
    sa = operands.scales(qx, 0, 0) if qx.axis is None else \
        (np.ascontiguousarray(np.repeat(np.asarray(qx.scale, np.float32).reshape(-1), oh * ow)), 1)
    sw, sw_stride = operands.scales(qw, 0, o)
    outs, accs, plans, lowered = [], [], [], []
    for g in range(groups):
        cols_, _ = im2col(qx.codes[:, g * cg:(g + 1) * cg], (kh, kw), stride, padding, dilation)
        wt = qw.codes[g * og:(g + 1) * og].reshape(og, -1)
        sb = (np.ascontiguousarray(sw[g * og:(g + 1) * og]) if sw_stride else sw, sw_stride)
        bg = None if bias32 is None else np.ascontiguousarray(bias32[g * og:(g + 1) * og])
        acc, output, plan = array._gemm_codes(cols_, wt, sa, sb, bg, out_format)
        outs.append(output), accs.append(acc), plans.append(plan)
        lowered.append((cols_, wt))

    output, acc = _nchw(outs, nb, (oh, ow), o), _nchw(accs, nb, (oh, ow), o)
    # the metrics per group, on the GEMMs the array ran: codes (exact products where
    # provable) for vs_dequantized, the float inputs lowered alike for vs_float64
    sums = {key: _ErrorSums() for key in ("vs_float64", "vs_dequantized")}
    out_acc = array.mac.acc if array.dataflow == "os" else array.buffer_acc
    x64 = None if isinstance(x, QTensor) else np.asarray(x, np.float64)
    w64 = None if isinstance(w, QTensor) else np.asarray(w, np.float64)
    for g, (cols_, wt) in enumerate(lowered):
        qa_g = QTensor(cols_, qx.format, qx.scale, None) if qx.axis is None else \
            QTensor(cols_, qx.format, np.repeat(qx.scale, oh * ow), 0)   # per-sample scales, per patch row
        qb_g = QTensor(wt.T, qw.format, qw.scale if qw.axis is None else qw.scale[g * og:(g + 1) * og],
                       None if qw.axis is None else 1)
        fa = qa_g if x64 is None else im2col(x64[:, g * cg:(g + 1) * cg], (kh, kw), stride, padding,
                                                    dilation)[0]
        fb = qb_g if w64 is None else w64[g * og:(g + 1) * og].reshape(og, -1).T
        gb = slice(g * og, (g + 1) * og)
        exact = _exact_accumulator(array.mac.acc, out_acc, qa_g, qb_g, cols_.shape[1])
        _add_gemm(sums, outs[g], [("vs_dequantized", qa_g, qb_g, None if bias is None else bias32[gb].astype(np.float64)),
                                  ("vs_float64", fa, fb, None if bias is None else np.asarray(bias, np.float64)[gb])],
                  {"vs_dequantized": accs[g]} if exact else None)
    metrics = {key: sums[key].result() for key in ("vs_float64", "vs_dequantized")}
    return plan_.sum_plans(plans, array.rows, array.cols, array.terms, array.clock_ghz, Result,
                      output=output, acc=acc, metrics=metrics)


def _nchw(parts, nb, out_hw, o):
    """Per-group GEMM outputs (N*OH*OW, O/groups) as one NCHW tensor."""
    return np.concatenate(parts, axis=1).reshape(nb, *out_hw, o).transpose(0, 3, 1, 2)


def _conv_reference(x, w, stride, padding, dilation, groups):
    """float64 convolution through the same lowering (for the Result's metrics)."""
    nb = x.shape[0]
    o, cg, kh, kw = w.shape
    og = o // groups
    parts = []
    for g in range(groups):
        cols_, (oh, ow) = im2col(x[:, g * cg:(g + 1) * cg], (kh, kw), stride, padding, dilation)
        parts.append(cols_ @ w[g * og:(g + 1) * og].reshape(og, -1).T)
    return np.concatenate(parts, axis=1).reshape(nb, oh, ow, o).transpose(0, 3, 1, 2)
