"""Scaling rules and the weight update of training on the array: delayed amax-history scaling
(against the rule computed directly with numpy), loss-scale backoff/growth with skipped steps,
stochastic rounding's determinism (gradients and bf16 master weights) over training steps."""
from __future__ import annotations

import numpy as np
import pytest

import accel_sim as acs
from accel_sim import qat
from accel_sim.backward import Backward, GemmRole
from accel_sim.scaling import LossScaler, TensorScaler, amax_scale
from accel_sim.train import AdamW, StepCost, all_finite


def f32_bits(v):
    return np.asarray(v, np.float32).view(np.uint32)


@pytest.mark.parametrize("fmt,history,margin", [("e5m2", 3, 0), ("e4m3fn", 1, 0), ("int8", 4, 2), ("posit8", 2, 3)])
def test_delayed_scale_is_max_of_previous_amaxes(fmt, history, margin):
    rng = np.random.default_rng(0)
    amaxes = [0.5, 3.0, 1e-3, 0.25, 7.0, 0.01, 0.02, 0.03]
    sc = TensorScaler(fmt, "delayed", history=history, margin=margin)
    fmax = acs.formats.get(fmt).max
    for t, amax in enumerate(amaxes):
        x = rng.uniform(-1, 1, size=(4, 5))
        x = x / np.max(np.abs(x)) * amax           # this tensor's amax is exactly `amax`
        q = sc(x)
        window = amaxes[max(0, t - history):t] or [amax]     # the previous H amaxes (first: its own)
        want = np.float32(np.max(window) * 2.0 ** margin / fmax)
        assert f32_bits(q.scale) == f32_bits(want), t
        np.testing.assert_array_equal(q.codes, acs.quant.quantize(x, fmt, scale=want, saturate=True).codes)
    assert sc.amax_history == amaxes[-history:]


def test_dynamic_and_none_rules():
    x = np.array([[0.3, -2.5], [1.0, 0.0]])
    q = TensorScaler("e4m3fn", "dynamic")(x)
    assert f32_bits(q.scale) == f32_bits(np.float32(2.5 / 448))
    assert f32_bits(TensorScaler("bf16", "none")(x).scale) == f32_bits(1.0)
    assert f32_bits(TensorScaler("int8")(np.zeros((2, 2))).scale) == f32_bits(1.0)
    assert amax_scale(0.0, "int8") == 1.0


def test_tiny_amax_of_a_wide_format_clamps_the_scale():
    """bf16's max is ~3.4e38, so amax / max underflows float32 below amax ~4.8e-7: the scale is
    clamped to float32's smallest normal, which keeps the tensor representable."""
    tiny = np.finfo(np.float32).tiny
    x = np.array([1e-8, -3e-9, 0.0])
    q = TensorScaler("bf16")(x)
    assert f32_bits(q.scale) == f32_bits(tiny)
    bf16 = acs.formats.get("bf16")
    np.testing.assert_array_equal(q.codes, bf16.encode(x / np.float64(tiny)))
    assert f32_bits(amax_scale(1e-30, "fp32")) == f32_bits(tiny)
    # at the top: a huge amax of a narrow format saturates at float32's max scale
    assert f32_bits(amax_scale(1e300, "int4")) == f32_bits(np.finfo(np.float32).max)
    q = TensorScaler("int4")(np.array([1e300, 1.0]))
    assert q.codes.view(np.int8)[0] == 7


def test_delayed_saturates_when_amax_grows():
    sc = TensorScaler("int8", "delayed", history=2)
    sc(np.array([1.0, -0.5]))
    q = sc(np.array([4.0, 0.5]))                   # scale from amax 1: 4.0 saturates to 127
    assert q.codes.view(np.int8)[0] == 127


def test_loss_scaler_backoff_growth_and_skips():
    ls = LossScaler(8.0, growth_factor=2.0, backoff_factor=0.5, growth_interval=3)
    flags = [True, True, True, False, True, False, False, True, True, True]
    scales = []
    for f in flags:
        assert ls.update(f) is f
        scales.append(ls.scale)
    # by hand: growth after 3 good steps in a row, halving (and the count reset) on each overflow
    assert scales == [8, 8, 16, 8, 8, 4, 2, 2, 2, 4]
    assert ls.skipped == 3 and ls.steps == 10


def test_stochastic_rounding_of_gradients_is_seeded():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 8)) * 1e-3
    a, b, c = (TensorScaler("int8", rounding="sr", seed=s) for s in (5, 5, 6))
    qa, qb, qc = a(x), b(x), c(x)
    np.testing.assert_array_equal(qa.codes, qb.codes)
    assert not np.array_equal(qa.codes, qc.codes)
    assert not np.array_equal(a(x).codes, qa.codes)          # the next call draws a fresh stream
    # every code is one of the two grid neighbours of x / scale
    lv = qa.codes.view(np.int8).astype(float)
    r = x / qa.scale_array()
    assert np.all((lv == np.floor(r)) | (lv == np.ceil(r)))


def _train(seed, steps=6, master="bf16", update="sr", rounding="sr"):
    """A few AdamW steps of a 2-layer linear model with INT8 gradients on the array."""
    rng = np.random.default_rng(123)
    x = rng.normal(size=(16, 12))
    y = rng.normal(size=(16, 3))
    arr = acs.Array(4, 4, "ws", mac=acs.MAC("int8", "int8", "int32"), threads=1)
    bws = [Backward(GemmRole(arr, rounding=rounding), GemmRole(arr, rounding=rounding), seed=seed + i)
           for i in range(2)]
    params = {"l1.w": rng.normal(size=(8, 12)) * 0.3, "l2.w": rng.normal(size=(3, 8)) * 0.3}
    opt = AdamW(1e-2, weight_decay=0.01, master=master, rounding=update, seed=seed)
    params = opt.init(params)
    cost = StepCost()
    for _ in range(steps):
        q = [(qat.Quantizer("int8", dynamic=True), qat.Quantizer("int8", dynamic=True)) for _ in range(2)]
        f1 = qat.linear(arr, x, params["l1.w"], x_quant=q[0][0], w_quant=q[0][1], backward=bws[0])
        h = np.maximum(f1.output, 0)
        f2 = qat.linear(arr, h, params["l2.w"], x_quant=q[1][0], w_quant=q[1][1], backward=bws[1])
        g2 = f2.backward(2 * (f2.output - y) / len(x))
        g1 = f1.backward(g2["x"] * (f1.output > 0), need_x=False)
        for name, f, g in (("l1", f1, g1), ("l2", f2, g2)):
            cost.add(name, "fwd", f.result)
            for role, res in g["results"].items():
                cost.add(name, role, res)
        grads = {"l1.w": g1["w"], "l2.w": g2["w"]}
        assert all_finite(grads)
        params = opt.step(params, grads)
    return params, cost


def test_sr_training_is_deterministic_given_the_seed():
    p1, c1 = _train(3)
    p2, _ = _train(3)
    p3, _ = _train(4)
    for k in p1:
        np.testing.assert_array_equal(p1[k].view(np.uint64), p2[k].view(np.uint64))
    assert any(not np.array_equal(p1[k], p3[k]) for k in p1)
    # bf16 master weights stay on the bf16 grid
    bf16 = acs.formats.get("bf16")
    for v in p1.values():
        np.testing.assert_array_equal(bf16.decode(bf16.encode(v)), v)
    # the step cost counts the three GEMMs of each layer separately (no dgrad for the first layer)
    assert set(c1.cycles_by) == {("l1", "fwd"), ("l1", "wgrad"), ("l2", "fwd"), ("l2", "dgrad"), ("l2", "wgrad")}
    assert c1.cycles == sum(r["cycles"] for r in c1.rows())
    assert c1.energy_pj == pytest.approx(sum(d["energy_pj"] for d in c1.by_role().values()), rel=1e-12)


def test_bf16_update_rounding_nearest_vs_stochastic():
    """A tiny update below half a bf16 ulp: rounding to nearest loses it, sr keeps it on average."""
    w = {"w": np.full(4000, 1.0)}
    g = {"w": np.full(4000, 1.0)}
    for rounding, moved in (("rne", False), ("sr", True)):
        opt = AdamW(1e-3, master="bf16", rounding=rounding, seed=1)
        out = opt.step(opt.init(w), g)                 # Adam's first step: w - lr * sign(g)
        assert bool(np.any(out["w"] != 1.0)) is moved
        if moved:    # E[w'] = 1 - 1e-3 within a few standard errors (values 1 - 2**-8 or 1)
            assert abs(out["w"].mean() - (1 - 1e-3)) < 4 * 2 ** -8 * 0.5 / np.sqrt(4000)


def test_bad_scaling_and_optimizer_arguments():
    with pytest.raises(ValueError, match="rule"):
        TensorScaler("int8", "later")
    with pytest.raises(ValueError, match="rounding"):
        TensorScaler("int8", rounding="rtz")
    with pytest.raises(ValueError, match="history"):
        TensorScaler("int8", "delayed", history=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        TensorScaler("int8")(np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match="init"):
        LossScaler(0)
    with pytest.raises(ValueError, match="growth_interval"):
        LossScaler(growth_interval=0)
    with pytest.raises(ValueError, match="growth_factor"):
        LossScaler(growth_factor=0.5)
    with pytest.raises(ValueError, match="master"):
        AdamW(master="fp8")
    with pytest.raises(ValueError, match="bf16"):
        AdamW(master="fp32", rounding="sr")
    with pytest.raises(ValueError, match="role"):
        StepCost().add("fc", "backward", [])


@pytest.mark.parametrize("kw,match", [({"weight_decay": float("nan")}, "weight_decay"),
                                      ({"weight_decay": -1e-2}, "weight_decay"),
                                      ({"lr": float("inf")}, "lr"), ({"lr": 0}, "lr"), ({"lr": "1e-3"}, "lr"),
                                      ({"lr": True}, "lr"), ({"eps": float("nan")}, "eps"),
                                      ({"betas": 0.9}, "betas"), ({"betas": (0.9,)}, "betas"),
                                      ({"betas": (0.9, 1.0)}, "betas"), ({"betas": (0.9, "x")}, "betas")])
def test_adamw_rejects_bad_hyperparameters(kw, match):
    with pytest.raises(ValueError, match=match):
        AdamW(**kw)


def test_adamw_accepts_numpy_scalars():
    w = {"w": np.linspace(-1, 1, 6).reshape(2, 3)}
    g = {"w": np.full((2, 3), 0.5)}
    a = AdamW(np.float32(1e-3), betas=(np.float64(0.9), np.float32(0.999)), weight_decay=np.float64(0.0))
    b = AdamW(float(np.float32(1e-3)), betas=(0.9, float(np.float32(0.999))))
    assert f32_bits(a.step(a.init(w), g)["w"]).tolist() == f32_bits(b.step(b.init(w), g)["w"]).tolist()


def test_adamw_step_rejects_a_gradient_of_another_shape():
    opt = AdamW()
    params = opt.init({"w": np.ones((4, 3))})
    with pytest.raises(ValueError, match=r"grads\['w'\] has shape \(3,\)"):
        opt.step(params, {"w": np.ones(3)})
    with pytest.raises(ValueError, match="params lacks"):
        opt.step(params, {"v": np.ones(3)})
    with pytest.raises(ValueError, match="lr_scale"):
        opt.step(params, {"w": np.ones((4, 3))}, lr_scale=float("nan"))
    assert opt.t == 0      # nothing was applied
