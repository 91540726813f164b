"""accel_sim.torch.simulate: a PyTorch model's Linear/Conv2d forwards run on the engine (bits
equal Array.linear / Array.conv2d on QTensors built from the layer's steps), the backward is
torch's own autograd of LSQ fake quantization written here from the paper's pseudocode
(Esser et al. 2020, Appendix: round-pass and grad-scale), training lowers the loss, restore()
undoes it.  Skipped without torch."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import accel_sim as acs  # noqa: E402
import accel_sim.torch as acs_torch  # noqa: E402


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)


def step(log_step):
    """The float32 step the array uses: float32(exp(parameter))."""
    return np.exp(log_step.detach().numpy()).astype(np.float32)


def f32(log_step):
    """exp(log_step) rounded to float32 in the forward, exp's gradient in the backward."""
    s = torch.exp(log_step)
    return (s.float().double() - s).detach() + s


def lsq_fake_quant(v, s, qn, qp, per_channel=False):
    """LSQ's reference forward (float64): grad_scale(s, 1/sqrt(N Qp)), clamp, round_pass."""
    n = v[0].numel() if per_channel else v.numel()
    g = 1.0 / math.sqrt(n * qp)
    s = (s - s * g).detach() + s * g
    if per_channel:
        s = s.reshape(-1, *([1] * (v.ndim - 1)))
    u = torch.clamp(v / s, -qn, qp)
    u = (torch.round(u) - u).detach() + u
    return u * s


@pytest.mark.parametrize("fmt,acc", [("int8", "int32"), ("int4", "int32")])
def test_linear_forward_bits_and_lsq_backward(fmt, acc):
    torch.manual_seed(0)
    arr = acs.Array(4, 4, "ws", mac=acs.MAC(fmt, fmt, acc))
    lin = torch.nn.Linear(6, 3).double()
    acs_torch.simulate(lin, arr)
    x = torch.randn(5, 6, dtype=torch.float64)
    lin(x)                                               # calibrates the activation step
    with torch.no_grad():   # shrink the steps so that some values clip
        lin.acs_x_log_step.add_(math.log(0.6))
        lin.acs_w_log_step.add_(math.log(0.7))
    x.requires_grad_(True)
    y = lin(x)
    qx = acs.quant.quantize(x.detach().numpy(), fmt, scale=step(lin.acs_x_log_step))
    qw = acs.quant.quantize(lin.weight.detach().numpy(), fmt, scale=step(lin.acs_w_log_step), axis=0)
    want = arr.linear(qx, qw, bias=lin.bias.detach().numpy())
    assert np.array_equal(bits(y.detach().numpy()), bits(want.output))
    assert lin.acs_result.energy_pj == want.energy_pj

    c = torch.randn(5, 3, dtype=torch.float64)
    (y * c).sum().backward()
    # the oracle: torch autograd through LSQ fake quantization
    fmt_ = acs.formats.get(fmt)
    qn, qp = -fmt_.min, fmt_.max
    x2 = x.detach().clone().requires_grad_(True)
    w2 = lin.weight.detach().clone().requires_grad_(True)
    b2 = lin.bias.detach().clone().requires_grad_(True)
    lx = lin.acs_x_log_step.detach().clone().requires_grad_(True)
    lw = lin.acs_w_log_step.detach().clone().requires_grad_(True)
    xh, wh = lsq_fake_quant(x2, f32(lx), qn, qp), lsq_fake_quant(w2, f32(lw), qn, qp, per_channel=True)
    assert np.array_equal(xh.detach().numpy(), qx.dequantize())
    (torch.nn.functional.linear(xh, wh, b2) * c).sum().backward()
    for got, ref in ((x.grad, x2.grad), (lin.weight.grad, w2.grad), (lin.bias.grad, b2.grad),
                     (lin.acs_x_log_step.grad, lx.grad), (lin.acs_w_log_step.grad, lw.grad)):
        np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-12, atol=1e-14)
    assert (x.grad == 0).any() and (x.grad != 0).any()    # clipped and passed elements both present


def test_conv2d_forward_bits_and_backward():
    torch.manual_seed(1)
    arr = acs.Array(8, 4, "os", mac=acs.MAC("int8", "int8", "int32"))
    conv = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2).double()
    acs_torch.simulate(conv, arr)
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64, requires_grad=True)
    y = conv(x)
    qx = acs.quant.quantize(x.detach().numpy(), "int8", scale=step(conv.acs_x_log_step))
    qw = acs.quant.quantize(conv.weight.detach().numpy(), "int8", scale=step(conv.acs_w_log_step), axis=0)
    want = arr.conv2d(qx, qw, stride=2, padding=1, groups=2, bias=conv.bias.detach().numpy())
    assert np.array_equal(bits(y.detach().numpy()), bits(want.output))
    c = torch.randn(y.shape, dtype=torch.float64)
    (y * c).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    w2 = conv.weight.detach().clone().requires_grad_(True)
    lx = conv.acs_x_log_step.detach().clone().requires_grad_(True)
    lw = conv.acs_w_log_step.detach().clone().requires_grad_(True)
    xh, wh = lsq_fake_quant(x2, f32(lx), 128, 127), lsq_fake_quant(w2, f32(lw), 128, 127, per_channel=True)
    (torch.nn.functional.conv2d(xh, wh, conv.bias.detach(), stride=2, padding=1, groups=2) * c).sum().backward()
    for got, ref in ((x.grad, x2.grad), (conv.weight.grad, w2.grad), (conv.acs_x_log_step.grad, lx.grad),
                     (conv.acs_w_log_step.grad, lw.grad)):
        np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-10, atol=1e-12)


def test_training_lowers_the_loss_and_restore():
    torch.manual_seed(2)
    x = torch.randn(64, 10)
    y = (x @ torch.randn(10, 3)).argmax(dim=1)
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    float_out = model(x).detach().clone()
    arr = acs.Array(4, 4, "ws", mac=acs.MAC("int4", "int4", "int32"))
    acs_torch.simulate(model, arr)
    assert len(acs_torch.simulated_modules(model)) == 2
    model(x)                                              # calibrate before the optimizer sees the steps
    names = {n for n, _ in model.named_parameters()}
    assert {"0.acs_x_log_step", "0.acs_w_log_step", "2.acs_x_log_step", "2.acs_w_log_step"} <= names
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = torch.nn.CrossEntropyLoss()
    first = loss_fn(model(x), y).item()
    s0 = model[0].acs_x_log_step.item()
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    assert loss_fn(model(x), y).item() < 0.8 * first
    assert model[0].acs_x_log_step.item() != s0
    assert model(x).dtype == torch.float32
    acs_torch.restore(model)
    assert not any("acs_" in n for n, _ in model.named_parameters())
    assert "forward" not in vars(model[0]) and not hasattr(model[0], "acs_x_quant")
    assert model(x).shape == float_out.shape


def test_dynamic_quantizers_have_no_steps():
    lin = torch.nn.Linear(8, 2)
    arr = acs.Array(4, 4, "ws", mac=acs.MAC("e4m3fn", "e4m3fn", "fp32"))
    acs_torch.simulate(lin, arr, x_quant={"dynamic": True}, w_quant={"scale": "tensor", "dynamic": True})
    assert not hasattr(lin, "acs_x_log_step") and not hasattr(lin, "acs_w_log_step")
    x = torch.randn(3, 8, requires_grad=True)
    out = lin(x)
    qx = acs.quant.quantize(x.detach().numpy(), "e4m3fn")
    qw = acs.quant.quantize(lin.weight.detach().numpy(), "e4m3fn")
    want = arr.linear(qx, qw, bias=lin.bias.detach().numpy())
    assert np.array_equal(bits(out.detach().numpy()), bits(want.output))
    out.sum().backward()
    assert x.grad.shape == x.shape


def test_importing_accel_sim_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, accel_sim; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bad_input():
    arr = acs.Array(4, 4, "ws")
    with pytest.raises(TypeError, match="array"):
        acs_torch.simulate(torch.nn.Linear(2, 2), "arr")
    with pytest.raises(TypeError, match="module"):
        acs_torch.simulate("model", arr)
    with pytest.raises(TypeError, match="x_quant"):
        acs_torch.simulate(torch.nn.Linear(2, 2), arr, x_quant="int8")
    with pytest.raises(TypeError, match="w_quant"):
        acs_torch.simulate(torch.nn.Linear(2, 2), arr, w_quant=acs.qat.Quantizer("int8"))
    with pytest.raises(ValueError, match="padding"):
        acs_torch.simulate(torch.nn.Conv2d(2, 2, 3, padding="same"), arr)
    with pytest.raises(ValueError, match="padding"):
        acs_torch.simulate(torch.nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), arr)
    lin = acs_torch.simulate(torch.nn.Linear(2, 2), arr)
    with pytest.raises(ValueError, match="already simulated"):
        acs_torch.simulate(lin, arr)
    with pytest.raises(ValueError, match="MAC takes"):
        acs_torch.simulate(torch.nn.Linear(2, 2), arr, x_quant={"fmt": "int4"})
