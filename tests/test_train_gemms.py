"""The backward GEMMs of a training step on the array (accel_sim.backward through acs.qat):
bit for bit equal to Array.gemm of the quantized operands they were given (operands rebuilt
independently with acs.quant.quantize and layers.im2col); in an exact float configuration
equal to the float64 gradients; cycles of each role = Array.plan_gemm of its shape."""
from __future__ import annotations

import numpy as np
import pytest

import accel_sim as acs
from accel_sim import layers, qat
from accel_sim.backward import Backward, GemmRole
from accel_sim.quant import QTensor, quantize

# (forward MAC, backward MAC): the recipes
RECIPES = {
    "fp8": (("e4m3fn", "e4m3fn", "fp32"), ("e5m2", "e4m3fn", "fp32")),
    "fp8_fp16acc": (("e4m3fn", "e4m3fn", "fp16"), ("e5m2", "e4m3fn", "fp16")),
    "int8": (("int8", "int8", "int32"), ("int8", "int8", "int32")),
    "posit8_quire": (("posit8", "posit8", "quire"), ("posit8", "posit8", "quire")),
    "bf16_acc": (("bf16", "bf16", "bf16"), ("bf16", "bf16", "bf16")),
}


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)


def arr_of(mac, dataflow="ws"):
    return acs.Array(4, 4, dataflow, mac=acs.MAC(*mac), threads=1)


def per_tensor(x, fmt, margin=0):
    """GemmRole's default rule written out: formats with float32's exponent range (bf16) are
    cast (scale 1); the others scaled dynamically, scale float32(amax * 2**margin / fmt.max)."""
    f = acs.formats.get(fmt)
    if f.max >= 2.0 ** 127:
        return quantize(x, f, scale=np.float32(1), saturate=True)
    amax = float(np.max(np.abs(x)))
    return quantize(x, f, scale=np.float32(amax * 2.0 ** margin / f.max), saturate=True)


def same_q(q1, q2):
    assert q1.format == q2.format
    np.testing.assert_array_equal(q1.codes, q2.codes)
    assert bits(q1.scale).tolist() == bits(q2.scale).tolist()


def dyn(fmt):
    return qat.Quantizer(fmt, dynamic=True)


@pytest.mark.parametrize("name", sorted(RECIPES))
@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_linear_grads_are_array_gemm_of_their_operands(name, dataflow):
    fwd_mac, bwd_mac = RECIPES[name]
    rng = np.random.default_rng(1)
    x, w, g = rng.normal(size=(6, 2, 9)), rng.normal(size=(5, 9)) * 0.3, rng.normal(size=(6, 2, 5)) * 1e-3
    barr = arr_of(bwd_mac, dataflow)
    bw = Backward(GemmRole(barr), GemmRole(barr), seed=4)
    xq, wq = dyn(fwd_mac[0]), dyn(fwd_mac[1])
    fwd = qat.linear(arr_of(fwd_mac, dataflow), x, w, x_quant=xq, w_quant=wq, backward=bw)
    grads = fwd.backward(g)
    g2, x2 = g.reshape(-1, 5), x.reshape(-1, 9)
    # the operands the array was given are the per-tensor quantizations of dY, W, dY and X
    (qa, qb), = bw.last["dgrad"]["operands"]
    same_q(qa, per_tensor(g2, bwd_mac[0]))
    same_q(qb, per_tensor(w, bwd_mac[1]))
    dgrad = barr.gemm(qa, qb).output
    (qa2, qb2), = bw.last["wgrad"]["operands"]
    same_q(QTensor(qa2.codes.T, qa2.format, qa2.scale), per_tensor(g2, bwd_mac[0]))
    same_q(qb2, per_tensor(x2, bwd_mac[1]))
    wgrad = barr.gemm(qa2, qb2).output
    # ... and the gradients are the array's outputs (then the STE of the forward quantizers)
    assert bits(grads["results"]["dgrad"][0].output).tolist() == bits(dgrad).tolist()
    assert bits(grads["results"]["wgrad"][0].output).tolist() == bits(wgrad).tolist()
    exp_x = xq.ste(x, xq(x), dgrad.reshape(x.shape))[0]
    exp_w = wq.ste(w, wq(w), wgrad)[0]
    assert bits(grads["x"]).tolist() == bits(exp_x).tolist()
    assert bits(grads["w"]).tolist() == bits(exp_w).tolist()
    assert grads["bias"] is None


@pytest.mark.parametrize("name", ["fp8", "int8", "posit8_quire"])
def test_conv_grads_over_im2col_are_array_gemms(name):
    fwd_mac, bwd_mac = RECIPES[name]
    rng = np.random.default_rng(2)
    x, w = rng.normal(size=(2, 4, 7, 6)), rng.normal(size=(6, 2, 3, 3)) * 0.3
    kw = dict(stride=2, padding=1, dilation=1, groups=2)
    barr = arr_of(bwd_mac)
    bw = Backward(GemmRole(barr), GemmRole(barr), seed=9)
    xq, wq = dyn(fwd_mac[0]), dyn(fwd_mac[1])
    fwd = qat.conv2d(arr_of(fwd_mac), x, w, np.zeros(6), x_quant=xq, w_quant=wq, backward=bw, **kw)
    g = rng.normal(size=fwd.output.shape) * 1e-2
    grads = fwd.backward(g)
    gy = g.transpose(0, 2, 3, 1).reshape(-1, 6)
    qg, qw = per_tensor(gy, bwd_mac[0]), per_tensor(w.reshape(6, -1), bwd_mac[1])
    qx = per_tensor(x, bwd_mac[1])
    gxh = np.zeros_like(x)
    gwh = np.zeros_like(w)
    for k in range(2):
        a = QTensor(qg.codes[:, 3 * k:3 * k + 3], qg.format, qg.scale)
        b = QTensor(qw.codes[3 * k:3 * k + 3], qw.format, qw.scale)
        gcols = barr.gemm(a, b).output
        gxh[:, 2 * k:2 * k + 2] = qat.col2im(gcols, (2, 2, 7, 6), (3, 3), (2, 2), (1, 1), (1, 1))
        cols, _ = layers.im2col(qx.codes[:, 2 * k:2 * k + 2], (3, 3), (2, 2), (1, 1), (1, 1))
        at = QTensor(qg.codes[:, 3 * k:3 * k + 3].T, qg.format, qg.scale)
        gwh[3 * k:3 * k + 3] = barr.gemm(at, QTensor(cols, qx.format, qx.scale)).output.reshape(3, 2, 3, 3)
    assert bits(grads["x"]).tolist() == bits(xq.ste(x, xq(x), gxh)[0]).tolist()
    assert bits(grads["w"]).tolist() == bits(wq.ste(w, wq(w), gwh)[0]).tolist()
    assert bits(grads["bias"]).tolist() == bits(gy.sum(axis=0)).tolist()
    assert len(grads["results"]["dgrad"]) == len(grads["results"]["wgrad"]) == 2


def test_vsq_forward_with_int8_backward():
    """VS-Quant 4-bit forward (block-scaled, K padded) with INT8 per-tensor gradients."""
    rng = np.random.default_rng(3)
    x, w, g = rng.normal(size=(5, 20)), rng.normal(size=(3, 20)), rng.normal(size=(5, 3))
    vsq = {"scale": "vector", "block": 16, "scale_format": "uint4"}
    barr = arr_of(("int8", "int8", "int32"))
    bw = Backward(GemmRole(barr), GemmRole(barr))
    xq, wq = qat.Quantizer("int4", **vsq), qat.Quantizer("int4", **vsq)
    fwd = qat.linear(arr_of(("int4", "int4", "int32")), x, w, x_quant=xq, w_quant=wq, backward=bw)
    grads = fwd.backward(g)
    dgrad = barr.gemm(per_tensor(g, "int8"), per_tensor(w, "int8")).output
    wgrad = barr.gemm(per_tensor(g.T, "int8"), per_tensor(x, "int8")).output
    qa = xq(np.pad(x, ((0, 0), (0, 12))))
    qw = wq(np.pad(w, ((0, 0), (0, 12))))
    exp_x = xq.ste(np.pad(x, ((0, 0), (0, 12))), qa, np.pad(dgrad, ((0, 0), (0, 12))))[0][:, :20]
    exp_w = wq.ste(np.pad(w, ((0, 0), (0, 12))), qw, np.pad(wgrad, ((0, 0), (0, 12))))[0][:, :20]
    assert bits(grads["x"]).tolist() == bits(exp_x).tolist()
    assert bits(grads["w"]).tolist() == bits(exp_w).tolist()


def _unit(fmt):
    q = qat.Quantizer(fmt)
    q.step = 1.0
    return q


def test_exact_float_configuration_equals_float64():
    """bf16 operands holding small integers, fp32 accumulation, scale 1: every product and sum
    is exact, so the array's three GEMMs equal float64 matmuls exactly."""
    rng = np.random.default_rng(4)
    x = rng.integers(-8, 9, size=(7, 10)).astype(float)
    w = rng.integers(-8, 9, size=(4, 10)).astype(float)
    g = rng.integers(-8, 9, size=(7, 4)).astype(float)
    arr = arr_of(("bf16", "bf16", "fp32"))
    bw = Backward(GemmRole(arr, "none"), GemmRole(arr, "none"))
    fwd = qat.linear(arr, x, w, x_quant=_unit("bf16"), w_quant=_unit("bf16"), backward=bw)
    assert bits(fwd.output).tolist() == bits(x @ w.T).tolist()
    grads = fwd.backward(g)
    assert bits(grads["x"]).tolist() == bits(g @ w).tolist()
    assert bits(grads["w"]).tolist() == bits(g.T @ x).tolist()


def test_need_x_false_skips_dgrad():
    rng = np.random.default_rng(5)
    x, w, g = rng.normal(size=(3, 4)), rng.normal(size=(2, 4)), rng.normal(size=(3, 2))
    arr = arr_of(("int8", "int8", "int32"))
    fwd = qat.linear(arr, x, w, x_quant=dyn("int8"), w_quant=dyn("int8"),
                     backward=Backward(GemmRole(arr), GemmRole(arr)))
    grads = fwd.backward(g, need_x=False)
    assert grads["x"] is None and set(grads["results"]) == {"wgrad"}


def test_nonfinite_incoming_gradient_gives_nan_gradients():
    rng = np.random.default_rng(6)
    x, w = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
    arr = arr_of(("int8", "int8", "int32"))
    fwd = qat.linear(arr, x, w, np.zeros(2), x_quant=dyn("int8"), w_quant=dyn("int8"),
                     backward=Backward(GemmRole(arr), GemmRole(arr)))
    g = np.ones((3, 2))
    g[1, 1] = np.inf
    grads = fwd.backward(g)
    assert np.all(np.isnan(grads["x"])) and np.all(np.isnan(grads["w"])) and np.all(np.isnan(grads["bias"]))
    assert grads["results"] == {}


def test_role_cycles_are_plan_gemm_of_their_shapes():
    rng = np.random.default_rng(7)
    m, n, k = 9, 5, 11
    x, w, g = rng.normal(size=(m, k)), rng.normal(size=(n, k)), rng.normal(size=(m, n))
    arr = acs.Array(4, 3, "ws", mac=acs.MAC("e5m2", "e4m3fn", "fp32"), threads=1)
    farr = acs.Array(4, 3, "ws", mac=acs.MAC("e4m3fn", "e4m3fn", "fp32"), threads=1)
    fwd = qat.linear(farr, x, w, x_quant=dyn("e4m3fn"), w_quant=dyn("e4m3fn"),
                     backward=Backward(GemmRole(arr), GemmRole(arr)))
    res = fwd.backward(g)["results"]
    assert fwd.result.cycles == farr.plan_gemm(m, n, k).cycles
    assert res["dgrad"][0].cycles == arr.plan_gemm(m, k, n).cycles   # (M, N) @ (N, K)
    assert res["wgrad"][0].cycles == arr.plan_gemm(n, k, m).cycles   # (N, M) @ (M, K)
    assert res["dgrad"][0].macs == res["wgrad"][0].macs == m * n * k


def test_bad_backward_arguments():
    arr = arr_of(("int8", "int8", "int32"))
    with pytest.raises(TypeError, match="backward"):
        qat.linear(arr, np.ones((2, 3)), np.ones((2, 3)), x_quant=dyn("int8"), w_quant=dyn("int8"), backward="fp8")
    with pytest.raises(TypeError, match="array"):
        GemmRole("fp8")
    with pytest.raises(ValueError, match="rule"):
        GemmRole(arr, "sometimes")
    with pytest.raises(ValueError, match="rounding"):
        GemmRole(arr, rounding="up")
    with pytest.raises(TypeError, match="dgrad"):
        Backward(None, GemmRole(arr))
    for seed in ("7", 1.5, True):
        with pytest.raises(TypeError, match="seed"):
            Backward(GemmRole(arr), GemmRole(arr), seed=seed)
    for seed in (-1, 2 ** 70):
        with pytest.raises(ValueError, match="seed"):
            Backward(GemmRole(arr), GemmRole(arr), seed=seed)
    fwd = qat.linear(arr, np.ones((2, 3)), np.ones((2, 3)), x_quant=dyn("int8"), w_quant=dyn("int8"))
    with pytest.raises(TypeError, match="need_x"):
        fwd.backward(np.ones((2, 2)), need_x="no")


def test_default_rule_casts_bf16_and_scales_narrow_formats():
    """bf16 operands are cast unscaled by default: scaled to bf16's max, one product of two
    codes (~1e77) would overflow the fp32 accumulator and the gradients would be NaN."""
    rng = np.random.default_rng(8)
    x, w, g = rng.normal(size=(6, 9)), rng.normal(size=(5, 9)), rng.normal(size=(6, 5)) * 1e-3
    arr = arr_of(("bf16", "bf16", "fp32"))
    role = GemmRole(arr)
    assert (role.rule, role.b_rule) == ("none", "none")
    grads = qat.linear(arr, x, w, x_quant=_unit("bf16"), w_quant=_unit("bf16"),
                       backward=Backward(role, role)).backward(g)
    cast = [quantize(v, "bf16", scale=np.float32(1)) for v in (g, w, g.T, x)]
    assert bits(grads["x"]).tolist() == bits(arr.gemm(cast[0], cast[1]).output).tolist()
    assert bits(grads["w"]).tolist() == bits(arr.gemm(cast[2], cast[3]).output).tolist()
    dyn_role = GemmRole(arr, "dynamic")
    bad = qat.linear(arr, x, w, x_quant=_unit("bf16"), w_quant=_unit("bf16"),
                     backward=Backward(dyn_role, dyn_role)).backward(g)
    assert not np.all(np.isfinite(bad["w"]))
    # mixed: an FP8 gradient operand with a bf16 forward operand, each by its own format
    mixed = GemmRole(arr_of(("e5m2", "bf16", "fp32")))
    assert (mixed.rule, mixed.b_rule) == ("dynamic", "none")
    assert GemmRole(arr, "delayed").b_rule == "delayed"       # a named rule still applies to both
    for mac in (("e5m2", "e4m3fn", "fp32"), ("int8", "int8", "int32"), ("fp16", "fp16", "fp32")):
        r = GemmRole(arr_of(mac))
        assert (r.rule, r.b_rule) == ("dynamic", "dynamic"), mac
