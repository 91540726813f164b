"""QAT hook (accel_sim/qat.py): the forward is the engine's output bit for bit (against
Array.gemm on independently built QTensors); the STE gradient is the float layer's gradient
inside the clipping range and zero outside (central finite differences of a float64 numpy
layer written here); the LSQ step gradient is Esser et al.'s formula (written here, with
numpy's round-half-even and ml_dtypes' float8 cast as the rounding oracles); a short QAT run
lowers the loss; bad input raises."""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

import accel_sim as acs
from accel_sim import layers, qat

ACC = {"int8": "int32", "int4": "int32", "e4m3fn": "fp32", "e5m2": "fp32", "e2m1": "fp32"}


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)


def array_for(fmt, dataflow="ws", rows=4, cols=4):
    return acs.Array(rows, cols, dataflow, mac=acs.MAC(fmt, fmt, ACC[fmt]))


# ------------------------------------------------------------------------------------------
# forward == Array.gemm, bit for bit
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", sorted(ACC))
@pytest.mark.parametrize("wscale", ["tensor", "channel"])
@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_linear_forward_is_array_gemm(fmt, wscale, dataflow):
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((9, 13)), rng.standard_normal((6, 13)) * 0.3, rng.standard_normal(6)
    arr = array_for(fmt, dataflow)
    xq, wq = qat.Quantizer(fmt), qat.Quantizer(fmt, wscale, calibration="mse")
    wq.calibrate(w)
    xq.step = np.float32(np.abs(x).max() / arr.mac.a.max * 0.7)   # some inputs clip
    fwd = qat.linear(arr, x, w, b, x_quant=xq, w_quant=wq)
    qx = acs.quant.quantize(x, fmt, scale=xq.step)
    if wscale == "channel":
        qw = acs.quant.quantize(w, fmt, scale=wq.step, axis=0)
        b_op = acs.QTensor(qw.codes.T, fmt, qw.scale, axis=1)
    else:
        qw = acs.quant.quantize(w, fmt, scale=wq.step)
        b_op = acs.QTensor(qw.codes.T, fmt, qw.scale)
    want = arr.gemm(qx, b_op, bias=b)
    assert np.array_equal(bits(fwd.output), bits(want.output))
    assert np.array_equal(fwd.result.acc, want.acc)
    assert fwd.result.cycles == want.cycles and fwd.result.energy_pj == want.energy_pj


def test_linear_forward_with_batch_axes():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 3, 8)), rng.standard_normal((5, 8))
    arr = array_for("int8")
    fwd = qat.linear(arr, x, w, x_quant=qat.Quantizer("int8"), w_quant=qat.Quantizer("int8", "channel"))
    flat = qat.linear(arr, x.reshape(6, 8), w, x_quant=qat.Quantizer("int8"), w_quant=qat.Quantizer("int8", "channel"))
    assert fwd.output.shape == (2, 3, 5)
    assert np.array_equal(bits(fwd.output.reshape(6, 5)), bits(flat.output))


@pytest.mark.parametrize("fmt,groups,stride,padding,dilation", [
    ("int8", 1, 1, 1, 1), ("e4m3fn", 1, 2, 1, 1), ("int4", 2, 1, 0, 2), ("e5m2", 2, 2, 2, 1)])
def test_conv2d_forward_is_array_gemm(fmt, groups, stride, padding, dilation):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 7, 7))
    w = rng.standard_normal((6, 4 // groups, 3, 3)) * 0.4
    b = rng.standard_normal(6)
    arr = array_for(fmt, "ws", 8, 4)
    xq, wq = qat.Quantizer(fmt), qat.Quantizer(fmt, "channel", calibration="mse")
    fwd = qat.conv2d(arr, x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     x_quant=xq, w_quant=wq)
    qx = acs.quant.quantize(x, fmt, scale=xq.step)
    qw = acs.quant.quantize(w, fmt, scale=wq.step, axis=0)
    og, cg = 6 // groups, 4 // groups
    parts = []
    for g in range(groups):
        cols, (oh, ow) = layers.im2col(qx.codes[:, g * cg:(g + 1) * cg], (3, 3), (stride,) * 2, (padding,) * 2,
                                       (dilation,) * 2)
        wg = qw.codes[g * og:(g + 1) * og].reshape(og, -1).T
        res = arr.gemm(acs.QTensor(cols, fmt, qx.scale), acs.QTensor(wg, fmt, qw.scale[g * og:(g + 1) * og], axis=1),
                       bias=b[g * og:(g + 1) * og])
        parts.append(res.output)
    want = np.concatenate(parts, axis=1).reshape(2, oh, ow, 6).transpose(0, 3, 1, 2)
    assert np.array_equal(bits(fwd.output), bits(want))


def test_dynamic_quantizer_is_ptq_every_call():
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((5, 16)), rng.standard_normal((3, 16))
    arr = array_for("int8")
    xq = qat.Quantizer("int8", dynamic=True, calibration="percentile", percentile=90)
    wq = qat.Quantizer("int8", "channel", dynamic=True)
    for scale_x in (1.0, 3.0):   # a new scale for each call
        fwd = qat.linear(arr, x * scale_x, w, x_quant=xq, w_quant=wq)
        qx = acs.quant.quantize(x * scale_x, "int8", calibration="percentile", percentile=90)
        qw = acs.quant.quantize(w, "int8", scale="channel", axis=0)
        want = arr.gemm(qx, acs.QTensor(qw.codes.T, "int8", qw.scale, axis=1))
        assert np.array_equal(bits(fwd.output), bits(want.output))
        g = fwd.backward(np.ones((5, 3)))
        assert g["x_step"] is None and g["w_step"] is None
    assert xq.step is None


# ------------------------------------------------------------------------------------------
# block-scaled (VS-Quant, OCP MX) layers: one GEMM with K zero-padded to whole blocks
# ------------------------------------------------------------------------------------------

def vsq(x2):
    return acs.quant.quantize(x2, "int4", scale="vector", axis=-1, block=16, scale_format="uint4")


def test_vsq_linear_forward_and_backward():
    rng = np.random.default_rng(11)
    x, w, b = rng.standard_normal((5, 40)), rng.standard_normal((3, 40)), rng.standard_normal(3)
    x[:, 3] *= 20                                            # an outlier column: its vectors get big scales
    arr = array_for("int4", "ws", 8, 4)
    qz = {"scale": "vector", "block": 16, "scale_format": "uint4"}
    fwd = qat.linear(arr, x, w, b, x_quant=qat.Quantizer("int4", **qz), w_quant=qat.Quantizer("int4", **qz))
    xp, wp = np.pad(x, ((0, 0), (0, 8))), np.pad(w, ((0, 0), (0, 8)))   # K 40 -> 48
    qx, qw = vsq(xp), vsq(wp)
    qb = acs.QTensor(qw.codes.T, "int4", qw.scale, axis=1, block=16, block_axis=0,
                     block_scale_codes=qw.block_scale_codes.T, scale_format="uint4")
    want = arr.gemm(qx, qb, bias=b)
    assert np.array_equal(bits(fwd.output), bits(want.output))
    assert fwd.result.energy_pj == want.energy_pj
    c = rng.standard_normal((5, 3))
    g = fwd.backward(c)
    # STE: the float gradient at the dequantized operands, zero where x / (its vector's scale) is
    # outside int4's [-8, 7]
    vec_scale = np.repeat(qx.block_scales(), 16, axis=1) * qx.scale_array()
    inside = (xp >= -8 * vec_scale) & (xp <= 7 * vec_scale)
    assert not inside.all() and inside.any()
    np.testing.assert_array_equal(g["x"], np.where(inside, c @ qw.dequantize(), 0.0)[:, :40])
    wscale = np.repeat(qw.block_scales(), 16, axis=1) * qw.scale_array()
    np.testing.assert_array_equal(g["w"], np.where((wp >= -8 * wscale) & (wp <= 7 * wscale), c.T @ qx.dequantize(), 0.0)[:, :40])
    assert g["x_step"] is None and g["w_step"] is None


def test_vsq_conv2d_forward_is_array_gemm():
    rng = np.random.default_rng(12)
    x, w = rng.standard_normal((2, 6, 5, 5)), rng.standard_normal((4, 6, 3, 3))
    arr = array_for("int4", "os", 4, 4)
    qz = {"scale": "vector", "block": 16, "scale_format": "uint4"}
    fwd = qat.conv2d(arr, x, w, stride=2, padding=1, x_quant=qat.Quantizer("int4", **qz),
                     w_quant=qat.Quantizer("int4", **qz))
    cols, (oh, ow) = layers.im2col(x, (3, 3), (2, 2), (1, 1), (1, 1))   # K = 54 -> 64
    qx, qw = vsq(np.pad(cols, ((0, 0), (0, 10)))), vsq(np.pad(w.reshape(4, -1), ((0, 0), (0, 10))))
    qb = acs.QTensor(qw.codes.T, "int4", qw.scale, axis=1, block=16, block_axis=0,
                     block_scale_codes=qw.block_scale_codes.T, scale_format="uint4")
    want = arr.gemm(qx, qb).output.reshape(2, oh, ow, 4).transpose(0, 3, 1, 2)
    assert np.array_equal(bits(fwd.output), bits(want))
    g = fwd.backward(np.ones(fwd.output.shape))
    assert g["x"].shape == x.shape and g["w"].shape == w.shape


def test_blocked_needs_both_operands():
    arr = array_for("int4")
    with pytest.raises(ValueError, match="both"):
        qat.linear(arr, np.ones((2, 16)), np.ones((3, 16)), x_quant=qat.Quantizer("int4", "vector"),
                   w_quant=qat.Quantizer("int4", "channel"))
    with pytest.raises(ValueError, match="block size"):
        qat.linear(arr, np.ones((2, 16)), np.ones((3, 16)), x_quant=qat.Quantizer("int4", "vector", block=8),
                   w_quant=qat.Quantizer("int4", "vector"))
    with pytest.raises(ValueError, match="axis"):
        qat.Quantizer("int4", "vector", axis=0)
    with pytest.raises(ValueError, match="groups"):
        qat.conv2d(arr, np.ones((1, 2, 4, 4)), np.ones((2, 1, 3, 3)), groups=2,
                   x_quant=qat.Quantizer("int4", "vector"), w_quant=qat.Quantizer("int4", "vector"))


# ------------------------------------------------------------------------------------------
# STE: the float layer's gradient inside the range, zero outside (finite differences)
# ------------------------------------------------------------------------------------------

def naive_conv(x, w, stride, pad):
    """Direct float64 convolution (loops over output positions), groups=1, PyTorch semantics."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    y = np.zeros((n, o, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            y[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w)
    return y


def fd_check(f, x0, analytic, lo, hi, h=1e-6):
    """Central differences of f at x0, element by element, against analytic; elements whose
    value lies within 2h of a clip bound are skipped (the surrogate has a kink there)."""
    inside = outside = 0
    for i in np.ndindex(x0.shape):
        if min(abs(x0[i] - lo[i]), abs(x0[i] - hi[i])) < 2 * h:
            continue
        xp, xm = x0.copy(), x0.copy()
        xp[i] += h
        xm[i] -= h
        fd = (f(xp) - f(xm)) / (2 * h)
        if lo[i] <= x0[i] <= hi[i]:
            inside += 1
            assert analytic[i] == pytest.approx(fd, rel=1e-6, abs=1e-8), i
        else:
            outside += 1
            assert analytic[i] == 0.0 and fd == 0.0, i
    return inside, outside


def clip_bounds(q: qat.Quantizer, shape, axis=None):
    s = np.asarray(q.step, np.float64)
    if s.ndim:
        s = s.reshape([-1 if a == axis else 1 for a in range(len(shape))])
    f = q.format
    return np.broadcast_to(f.min * s, shape), np.broadcast_to(f.max * s, shape)


@pytest.mark.parametrize("fmt", ["int4", "e4m3fn"])
def test_ste_linear_matches_finite_differences(fmt):
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((3, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4)
    c = rng.standard_normal((3, 4))                    # upstream gradient: loss = sum(c * y)
    arr = array_for(fmt)
    xq, wq = qat.Quantizer(fmt), qat.Quantizer(fmt, "channel")
    xq.step = np.float32(np.abs(x).max() / xq.format.max * 0.6)
    wq.step = (np.abs(w).max(axis=1) / wq.format.max * 0.7).astype(np.float32)
    fwd = qat.linear(arr, x, w, b, x_quant=xq, w_quant=wq)
    g = fwd.backward(c)
    xlo, xhi = clip_bounds(xq, x.shape)
    wlo, whi = clip_bounds(wq, w.shape, axis=0)
    xh = acs.quant.quantize(x, fmt, scale=xq.step).dequantize()
    wh = acs.quant.quantize(w, fmt, scale=wq.step, axis=0).dequantize()

    # the STE surrogate: quantized values plus the clipped change of the float input
    def loss_x(xv):
        return float(np.sum(c * ((xh + np.clip(xv, xlo, xhi) - np.clip(x, xlo, xhi)) @ wh.T + b)))

    def loss_w(wv):
        return float(np.sum(c * (xh @ (wh + np.clip(wv, wlo, whi) - np.clip(w, wlo, whi)).T + b)))

    def loss_b(bv):
        return float(np.sum(c * (xh @ wh.T + bv)))

    ins, outs = fd_check(loss_x, x, g["x"], xlo, xhi)
    assert ins > 0 and outs > 0
    ins, outs = fd_check(loss_w, w, g["w"], wlo, whi)
    assert ins > 0 and outs > 0
    fd_check(loss_b, b, g["bias"], np.full(4, -np.inf), np.full(4, np.inf))


def test_ste_conv2d_matches_finite_differences():
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    arr = array_for("int8")
    xq, wq = qat.Quantizer("int8"), qat.Quantizer("int8", "channel")
    xq.step = np.float32(np.abs(x).max() / 127 * 0.5)
    wq.step = (np.abs(w).reshape(3, -1).max(axis=1) / 127 * 0.6).astype(np.float32)
    fwd = qat.conv2d(arr, x, w, b, stride=2, padding=1, x_quant=xq, w_quant=wq)
    c = rng.standard_normal(fwd.output.shape)
    g = fwd.backward(c)
    xlo, xhi = clip_bounds(xq, x.shape)
    wlo, whi = clip_bounds(wq, w.shape, axis=0)
    xh = acs.quant.quantize(x, "int8", scale=xq.step).dequantize()
    wh = acs.quant.quantize(w, "int8", scale=wq.step, axis=0).dequantize()
    # the engine's output is the float layer's output up to the fp32 epilogue
    np.testing.assert_allclose(fwd.output, naive_conv(xh, wh, 2, 1) + b[None, :, None, None], rtol=1e-6, atol=1e-6)

    def loss_x(xv):
        return float(np.sum(c * naive_conv(xh + np.clip(xv, xlo, xhi) - np.clip(x, xlo, xhi), wh, 2, 1)))

    def loss_w(wv):
        return float(np.sum(c * naive_conv(xh, wh + np.clip(wv, wlo, whi) - np.clip(w, wlo, whi), 2, 1)))

    ins, outs = fd_check(loss_x, x, g["x"], xlo, xhi)
    assert ins > 0 and outs > 0
    ins, outs = fd_check(loss_w, w, g["w"], wlo, whi)
    assert ins > 0 and outs > 0
    np.testing.assert_allclose(g["bias"], c.sum(axis=(0, 2, 3)), rtol=1e-12)


def test_col2im_is_the_adjoint_of_im2col():
    """<im2col(x), c> == <x, col2im(c)> for random x and c (dilation, stride, padding)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 9, 8))
    args = ((3, 2), (2, 1), (1, 2), (2, 1))
    cols, _ = layers.im2col(x, *args)
    c = rng.standard_normal(cols.shape)
    lhs = float(np.sum(cols * c))
    rhs = float(np.sum(x * qat.col2im(c, x.shape, *args)))
    assert lhs == pytest.approx(rhs, rel=1e-12)


# ------------------------------------------------------------------------------------------
# LSQ step gradient (Esser et al. 2020, eq. 3 and the gradient scale g = 1/sqrt(N Qp))
# ------------------------------------------------------------------------------------------

def lsq_reference(x, s, grad, round_fn, qn, qp, axis=None):
    """dL/ds = g * sum(grad * dxhat/ds), dxhat/ds = -v + round(v) inside [-Qn, Qp], -Qn or Qp
    outside; written from the paper with the given rounding."""
    s_b = s if axis is None else s.reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    v = x / s_b
    d = np.where(v <= -qn, -qn, np.where(v >= qp, qp, round_fn(np.clip(v, -qn, qp)) - v))
    if axis is None:
        return d.__mul__(grad).sum() / math.sqrt(x.size * qp)
    reduce = tuple(a for a in range(x.ndim) if a != axis)
    return (d * grad).sum(axis=reduce) / math.sqrt(x.size // x.shape[axis] * qp)


@pytest.mark.parametrize("kind", ["tensor", "channel"])
def test_lsq_step_gradient_int(kind):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 40))
    grad = rng.standard_normal(x.shape)
    q = qat.Quantizer("int4", kind, axis=0 if kind == "channel" else None)
    step = np.float32(0.3) if kind == "tensor" else rng.uniform(0.2, 0.4, 6).astype(np.float32)
    q.step = step
    qt = q(x)
    gx, gs = q.ste(x, qt, grad)
    want = lsq_reference(x, step.astype(np.float64), grad, np.round, 8, 7, None if kind == "tensor" else 0)
    np.testing.assert_allclose(gs, want, rtol=1e-12, atol=1e-15)
    v = x / (step if kind == "tensor" else step[:, None].astype(np.float64))
    assert np.array_equal(gx, np.where((v >= -8) & (v <= 7), grad, 0.0))
    assert np.any(v > 7) and np.any(v < -8) and np.any(np.abs(v) < 7)


def test_lsq_step_gradient_fp8():
    rng = np.random.default_rng(9)
    x = rng.standard_normal(300) * 100
    grad = rng.standard_normal(x.shape)
    q = qat.Quantizer("e4m3fn")
    q.step = np.float32(0.5)
    gx, gs = q.ste(x, q(x), grad)

    def fp8_round(v):   # ml_dtypes' float8_e4m3fn cast (round to nearest even), inside the range
        return v.astype(ml_dtypes.float8_e4m3fn).astype(np.float64)

    want = lsq_reference(x, 0.5, grad, fp8_round, 448.0, 448.0)
    assert gs == pytest.approx(want, rel=1e-12)
    assert np.array_equal(gx, np.where(np.abs(x / 0.5) <= 448, grad, 0.0))
    assert np.any(np.abs(x / 0.5) > 448)


# ------------------------------------------------------------------------------------------
# a short QAT run lowers the loss
# ------------------------------------------------------------------------------------------

def test_short_qat_run_lowers_the_loss():
    """Two-layer INT4 MLP on a teacher's labels, every forward on a 4x4 ws array: 30 Adam
    steps on weights and log-steps lower the cross-entropy measured through the hook."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((64, 12))
    teacher = rng.standard_normal((12, 4))
    y = np.argmax(x @ teacher, axis=1)
    params = {"w1": rng.standard_normal((16, 12)) * 0.3, "b1": np.zeros(16),
              "w2": rng.standard_normal((4, 16)) * 0.3, "b2": np.zeros(4)}
    arr = array_for("int4")
    qz = {"x1": qat.Quantizer("int4"), "w1": qat.Quantizer("int4", "channel"),
          "x2": qat.Quantizer("int4"), "w2": qat.Quantizer("int4", "channel")}

    def step(train):
        f1 = qat.linear(arr, x, params["w1"], params["b1"], x_quant=qz["x1"], w_quant=qz["w1"])
        h = np.maximum(f1.output, 0)
        f2 = qat.linear(arr, h, params["w2"], params["b2"], x_quant=qz["x2"], w_quant=qz["w2"])
        z = f2.output - f2.output.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        loss = -np.mean(np.log(p[np.arange(len(y)), y]))
        if not train:
            return loss
        d = p.copy()
        d[np.arange(len(y)), y] -= 1
        d /= len(y)
        g2 = f2.backward(d)
        g1 = f1.backward(g2["x"] * (f1.output > 0))
        return loss, {"w1": g1["w"], "b1": g1["bias"], "w2": g2["w"], "b2": g2["bias"],
                      "s.x1": g1["x_step"], "s.w1": g1["w_step"], "s.x2": g2["x_step"], "s.w2": g2["w_step"]}

    before = step(False)
    steps0 = {k: q.step.copy() for k, q in qz.items()}
    m, v = {}, {}
    for t in range(1, 31):
        _, grads = step(True)
        for k, gk in grads.items():
            if k.startswith("s."):   # Adam on log(step): d/dlog s = s * d/ds
                gk = gk * qz[k[2:]].step
            m[k] = 0.9 * m.get(k, 0) + 0.1 * gk
            v[k] = 0.999 * v.get(k, 0) + 0.001 * gk * gk
            upd = 0.02 * (m[k] / (1 - 0.9 ** t)) / (np.sqrt(v[k] / (1 - 0.999 ** t)) + 1e-8)
            if k.startswith("s."):
                qz[k[2:]].step = qz[k[2:]].step * np.exp(-upd)
            else:
                params[k] = params[k] - upd
    after = step(False)
    assert after < 0.8 * before
    assert any(not np.array_equal(qz[k].step, steps0[k]) for k in qz)


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------

def test_bad_quantizer_arguments():
    with pytest.raises(ValueError, match="unknown format"):
        qat.Quantizer("int7")
    with pytest.raises(TypeError, match="fmt"):
        qat.Quantizer(8)
    with pytest.raises(TypeError, match="scale"):
        qat.Quantizer("int8", scale=0.5)
    with pytest.raises(ValueError, match="none"):
        qat.Quantizer("int8", scale="none")
    with pytest.raises(ValueError, match="axis"):
        qat.Quantizer("int8", axis=1)
    with pytest.raises(TypeError, match="axis"):
        qat.Quantizer("int8", "channel", axis=1.0)
    with pytest.raises(TypeError, match="dynamic"):
        qat.Quantizer("int8", dynamic="yes")
    with pytest.raises(ValueError, match="saturate"):
        qat.Quantizer("int8", saturate=False)
    with pytest.raises(ValueError, match="calibration"):
        qat.Quantizer("int8", calibration="best")(np.ones(3))
    q = qat.Quantizer("int8")
    for bad in (0.0, -1.0, np.inf, np.nan, [0.1, 0.2]):
        with pytest.raises(ValueError, match="step"):
            q.step = bad
    with pytest.raises(TypeError, match="step"):
        q.step = "x"
    with pytest.raises(ValueError, match="dynamic"):
        qat.Quantizer("int8", dynamic=True).step = 1.0
    with pytest.raises(ValueError, match="dynamic"):
        qat.Quantizer("int8", dynamic=True).calibrate(np.ones(3))
    qc = qat.Quantizer("int8", "channel").calibrate(np.ones((3, 2)))
    with pytest.raises(ValueError, match="shape"):
        qc.step = np.ones(4)


def test_bad_layer_arguments():
    x, w = np.ones((2, 3)), np.ones((4, 3))
    arr = array_for("int8")
    q8 = qat.Quantizer("int8")
    with pytest.raises(TypeError, match="arr"):
        qat.linear("array", x, w, x_quant=q8, w_quant=q8)
    with pytest.raises(TypeError, match="w_quant"):
        qat.linear(arr, x, w, x_quant=q8, w_quant="int8")
    with pytest.raises(ValueError, match="x_quant.*int4"):
        qat.linear(arr, x, w, x_quant=qat.Quantizer("int4"), w_quant=q8)
    with pytest.raises(ValueError, match="x_quant must scale per tensor"):
        qat.linear(arr, x, w, x_quant=qat.Quantizer("int8", "channel"), w_quant=q8)
    with pytest.raises(ValueError, match="channel axis"):
        qat.linear(arr, x, w, x_quant=q8, w_quant=qat.Quantizer("int8", "channel", axis=1))
    with pytest.raises(ValueError, match="do not fit"):
        qat.linear(arr, np.ones((2, 5)), w, x_quant=q8, w_quant=q8)
    with pytest.raises(ValueError, match="NaN"):
        qat.linear(arr, np.array([[1.0, np.nan, 0.0]]), w, x_quant=qat.Quantizer("int8"), w_quant=q8)
    with pytest.raises(TypeError, match="x"):
        qat.linear(arr, np.array([["a", "b", "c"]]), w, x_quant=q8, w_quant=q8)
    with pytest.raises(ValueError, match="4 dimensions"):
        qat.conv2d(arr, x, w, x_quant=q8, w_quant=q8)
    fwd = qat.linear(arr, x, w, x_quant=qat.Quantizer("int8"), w_quant=qat.Quantizer("int8"))
    with pytest.raises(ValueError, match="grad_output"):
        fwd.backward(np.ones((2, 3)))
    with pytest.raises(TypeError, match="grad_output"):
        fwd.backward(np.array([["a"] * 4] * 2))


# ------------------------------------------------------------------------------------------
# the digits experiment's forward (traces/qat_digits.py)
# ------------------------------------------------------------------------------------------

def test_digits_experiment_forward_is_the_simulated_model():
    """With per-call absmax quantizers, the experiment's forward gives the same logits, bit for
    bit, as the digits CNN's own forward under acs.trace.simulate (Array.conv2d / linear with
    float inputs quantized per tensor); one QAT epoch on 64 images runs and keeps the shapes."""
    import importlib.util
    from pathlib import Path
    traces = Path(__file__).resolve().parents[1] / "traces"
    spec = importlib.util.spec_from_file_location("_test_qat_digits", traces / "qat_digits.py")
    qd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(qd)
    trace = acs.trace.load(traces / "digits_cnn.npz")
    params = qd.dc.params_from_trace(trace)
    x = trace.arrays[trace.task["images"]][:64]
    y = trace.arrays[trace.task["labels"]][:64]
    arr = acs.Array(32, 32, "ws", mac=acs.MAC("int8", "int8", "int32"), threads=1)
    dyn = {"dynamic": True}
    qz = qd.quantizers("int8", dyn, dict(dyn, scale="tensor"), calibration="absmax")
    logits, _ = qd.forward(params, qz, arr, x)
    with acs.trace.simulate(arr):
        want = qd.dc.forward(params, x)
    assert np.array_equal(bits(logits), bits(want.astype(np.float64)))
    qs = qd.quantizers("int4", {}, {"scale": "channel"})
    arr4 = acs.Array(32, 32, "ws", mac=acs.MAC("int4", "int4", "int32"), threads=1)
    qd.forward(params, qs, arr4, x)   # calibrates
    tuned = qd.qat_finetune(params, qs, arr4, x, y, seed=1, epochs=1)
    assert {k: v.shape for k, v in tuned.items()} == {k: v.shape for k, v in params.items()}
    assert all(np.all(np.isfinite(v)) for v in tuned.values())
