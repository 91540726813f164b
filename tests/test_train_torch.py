"""Training on the array through PyTorch (accel_sim.torch.simulate(..., backward=...)): the same
bits as the numpy path (acs.qat with backward.Backward), gradients equal to torch autograd in
an exact configuration, and the loss scaler equal to torch's own GradScaler update
(torch._amp_update_scale_).  Skipped without torch."""
from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import accel_sim as acs  # noqa: E402
import accel_sim.torch as acs_torch  # noqa: E402
from accel_sim import qat  # noqa: E402
from accel_sim.backward import Backward, GemmRole  # noqa: E402
from accel_sim.scaling import LossScaler, sub_seed  # noqa: E402

DYN = {"dynamic": True}
W_DYN = {"scale": "tensor", "dynamic": True}


def bits(a):
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else a
    return np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 3 * 3, 5)).double()


def test_torch_path_gives_the_numpy_path_bits():
    """FP8 (E4M3 fwd, E5M2 grads, delayed scaling, sr) over two steps: every gradient bit equal."""
    fwd_arr = acs.Array(4, 4, "ws", mac=acs.MAC("e4m3fn", "e4m3fn", "fp32"), threads=1)
    bwd_arr = acs.Array(4, 4, "ws", mac=acs.MAC("e5m2", "e4m3fn", "fp32"), threads=1)
    role = GemmRole(bwd_arr, "delayed", b_rule="dynamic", history=4, rounding="sr")
    net = model()
    conv, lin = net[0], net[3]
    params = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    acs_torch.simulate(net, fwd_arr, x_quant=DYN, w_quant=W_DYN, backward={"dgrad": role, "wgrad": role, "seed": 11})
    bws = [Backward(role, role, seed=sub_seed(11, i)) for i in range(2)]
    rng = np.random.default_rng(0)
    for _ in range(2):
        x = rng.normal(size=(3, 2, 6, 6))
        c = rng.normal(size=(3, 5)) * 1e-3
        xt = torch.tensor(x, requires_grad=True)
        (net(xt) * torch.tensor(c)).sum().backward()
        f1 = qat.conv2d(fwd_arr, x, params["0.weight"], params["0.bias"], stride=2, padding=1,
                        x_quant=qat.Quantizer("e4m3fn", **DYN), w_quant=qat.Quantizer("e4m3fn", **W_DYN),
                        backward=bws[0])
        h = np.maximum(f1.output, 0)
        f2 = qat.linear(fwd_arr, h.reshape(3, -1), params["3.weight"], params["3.bias"],
                        x_quant=qat.Quantizer("e4m3fn", **DYN), w_quant=qat.Quantizer("e4m3fn", **W_DYN),
                        backward=bws[1])
        g2 = f2.backward(c)
        g1 = f1.backward(np.where(f1.output > 0, g2["x"].reshape(f1.output.shape), 0.0))
        assert bits(lin.weight.grad).tolist() == bits(g2["w"]).tolist()
        assert bits(lin.bias.grad).tolist() == bits(g2["bias"]).tolist()
        assert bits(conv.weight.grad).tolist() == bits(g1["w"]).tolist()
        assert bits(conv.bias.grad).tolist() == bits(g1["bias"]).tolist()
        assert bits(xt.grad).tolist() == bits(g1["x"]).tolist()
        assert conv.acs_backward_results["wgrad"][0].energy_pj == g1["results"]["wgrad"][0].energy_pj
        net.zero_grad()
    assert conv.acs_backward.last["dgrad"]["operands"][0][0].scale == bws[0].last["dgrad"]["operands"][0][0].scale
    acs_torch.restore(net)
    assert not hasattr(conv, "acs_backward")


def _ints(rng, shape, top=127):
    """Integers in [-top, top] with |max| = top: a per-tensor INT8 scale of exactly 1."""
    v = rng.integers(-top, top + 1, size=shape).astype(np.float64)
    v.flat[0] = top
    return v


# (MAC, forward quantizers, backward scaling rule) whose three GEMMs are exact on small integers:
# INT8 -> int32 (per-tensor scales of exactly 1: amax 127), and the float configuration
# bf16 x bf16 -> fp32, unscaled (integers up to 127 are bf16 values; the sums stay below 2^24)
# (a plain cast: static per-tensor steps, set to exactly 1 below, as the BF16 training recipe does)
EXACT = {"int8": (acs.MAC("int8", "int8", "int32"), DYN, W_DYN, "dynamic"),
         "bf16": (acs.MAC("bf16", "bf16", "fp32"), {"scale": "tensor"}, {"scale": "tensor"}, "none")}


@pytest.mark.parametrize("config", sorted(EXACT))
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_exact_configuration_equals_autograd(kind, config):
    """Integer data on an exact configuration (EXACT): the array's three GEMMs are exact, so the
    gradients equal torch autograd's float64 ones bit for bit."""
    rng = np.random.default_rng(1)
    mac, x_quant, w_quant, rule = EXACT[config]
    arr = acs.Array(4, 4, "ws", mac=mac, threads=1)
    role = GemmRole(arr, rule)
    if kind == "conv":
        layer, xshape = torch.nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2).double(), (3, 2, 7, 6)
    else:
        layer, xshape = torch.nn.Linear(9, 5).double(), (3, 4, 9)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(_ints(rng, tuple(layer.weight.shape))))
        layer.bias.copy_(torch.tensor(_ints(rng, tuple(layer.bias.shape))))   # fp32 epilogue exact too
    ref = copy.deepcopy(layer)
    acs_torch.simulate(layer, arr, x_quant=x_quant, w_quant=w_quant, backward={"dgrad": role, "wgrad": role})
    if config == "bf16":
        with torch.no_grad():   # steps exp(0) = 1: the operands are cast, not scaled
            layer.acs_x_log_step.zero_()
            layer.acs_w_log_step.zero_()
        layer.acs_x_quant.step = 1.0
        layer._acs_x_ready = True
    x = _ints(rng, xshape)
    grads = []
    for m in (layer, ref):
        xt = torch.tensor(x, requires_grad=True)
        y = m(xt)
        y.backward(torch.tensor(_ints(np.random.default_rng(5), tuple(y.shape))))
        grads.append((y, xt.grad, m.weight.grad, m.bias.grad))
    assert layer.acs_backward_results["dgrad"] and layer.acs_backward_results["wgrad"]
    for a, b in zip(*grads):
        assert bits(a).tolist() == bits(b).tolist()


def test_loss_scaler_equals_torch_grad_scaler_update():
    rng = np.random.default_rng(2)
    flags = rng.random(200) < 0.1
    ours = LossScaler(2.0 ** 10, growth_interval=7)
    scale, tracker = torch.tensor([2.0 ** 10]), torch.tensor([0], dtype=torch.int32)
    for f in flags:
        ours.update(not f)
        torch._amp_update_scale_(scale, tracker, torch.tensor([float(f)]), 2.0, 0.5, 7)
        assert ours.scale == scale.item()
        assert ours.good_steps == tracker.item()
    assert ours.skipped == int(flags.sum())


def test_simulate_rejects_a_bad_backward():
    arr = acs.Array(4, 4, "ws", mac=acs.MAC("int8", "int8", "int32"))
    with pytest.raises(TypeError, match="backward"):
        acs_torch.simulate(model(), arr, backward="fp8")
    with pytest.raises(TypeError, match="dgrad"):
        acs_torch.simulate(model(), arr, backward={"dgrad": None, "wgrad": GemmRole(arr)})
