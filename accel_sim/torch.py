"""PyTorch (optional, CPU): train and evaluate a model with its Linear and Conv2d layers on the
simulated array.

    import accel_sim.torch as acs_torch
    acs_torch.simulate(model, arr, w_quant={"scale": "channel"})
    loss = criterion(model(x), y); loss.backward(); opt.step()   # QAT on the hardware
    model.fc.acs_result                                        # the layer's last Result (energy, cycles)
    acs_torch.restore(model)

simulate() swaps the forward of every nn.Linear and nn.Conv2d in the module (the module itself
included) for an autograd Function whose forward is acs.qat.linear / acs.qat.conv2d (the
engine, bit for bit) and whose backward is their straight-through estimator; the rest of the
model runs in PyTorch as before.  Each swapped layer gets its quantizers (acs_x_quant,
acs_w_quant) and, for static scales, the natural logarithms of the steps as parameters
acs_x_log_step and acs_w_log_step, so an optimizer created afterwards learns them (the LSQ
gradient, chained through exp: any optimizer keeps the steps positive).  The weight step is
calibrated at simulate() time, the activation step on the layer's first input; the steps the
array uses are float32(exp(parameter)).  backward= runs each layer's backward GEMMs (dgrad,
wgrad) on the array too (acs.backward.Backward, one per layer; docs/training.md); the layer's
last backward Results are in acs_backward_results.  Importing accel_sim does not import
this module, nor torch."""
from __future__ import annotations

import types

import numpy as np
import torch

from accel_sim import qat
from accel_sim.array import Array
from accel_sim.backward import Backward
from accel_sim.scaling import sub_seed

__all__ = ["simulate", "restore", "simulated_modules"]

_ATTRS = ("acs_x_quant", "acs_w_quant", "acs_result", "acs_backward", "acs_backward_results")
_PARAMS = ("acs_x_log_step", "acs_w_log_step")


def _numpy(t):
    return t.detach().to("cpu", torch.float64).numpy()


class _Simulated(torch.autograd.Function):
    """Forward on the engine, backward the STE (gradients for x, w, bias and the two steps)."""

    @staticmethod
    def forward(ctx, x, w, b, sx, sw, mod):
        xq, wq = mod.acs_x_quant, mod.acs_w_quant
        if sx is not None:
            xq.step = _numpy(sx).reshape(xq.step.shape)
        if sw is not None:
            wq.step = _numpy(sw).reshape(wq.step.shape)
        bias = None if b is None else _numpy(b)
        if isinstance(mod, torch.nn.Conv2d):
            fwd = qat.conv2d(mod._acs_array, _numpy(x), _numpy(w), bias, stride=mod.stride, padding=mod.padding,
                             dilation=mod.dilation, groups=mod.groups, x_quant=xq, w_quant=wq,
                             backward=mod.acs_backward)
        else:
            fwd = qat.linear(mod._acs_array, _numpy(x), _numpy(w), bias, x_quant=xq, w_quant=wq,
                             backward=mod.acs_backward)
        mod.acs_result = fwd.result
        ctx.fwd, ctx.mod = fwd, mod
        ctx.like = (x, w, b, sx, sw)
        return torch.from_numpy(np.ascontiguousarray(fwd.output)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        need = ctx.needs_input_grad
        g = ctx.fwd.backward(_numpy(grad_output), need_x=bool(need[0] or need[3]))
        ctx.mod.acs_backward_results = g["results"]
        out = []
        for key, like, need in zip(("x", "w", "bias", "x_step", "w_step"), ctx.like, ctx.needs_input_grad):
            v = g[key]
            out.append(torch.from_numpy(np.asarray(v)).to(like.dtype).reshape(like.shape)
                       if need and v is not None else None)
        return (*out, None)


def _log(step, like):
    return torch.from_numpy(np.log(np.array(step, np.float64, ndmin=1))).to(like.dtype).reshape(np.shape(step))


def _forward(self, x):
    sx, sw = getattr(self, "acs_x_log_step", None), getattr(self, "acs_w_log_step", None)
    if sx is not None and not self._acs_x_ready:
        with torch.no_grad():   # the first input calibrates the activation step, then it is kept (and learnt)
            sx.copy_(_log(self.acs_x_quant.calibrate(_numpy(x)).step, sx))
        self._acs_x_ready = True
    return _Simulated.apply(x, self.weight, self.bias, None if sx is None else torch.exp(sx),
                            None if sw is None else torch.exp(sw), self)


def _quantizer(spec, fmt, default_scale, argname):
    if spec is None:
        spec = {}
    if isinstance(spec, qat.Quantizer):
        raise TypeError(f"{argname} must be a dict of qat.Quantizer keyword arguments (each layer gets its own "
                        "quantizer), not a Quantizer")
    if not isinstance(spec, dict):
        raise TypeError(f"{argname} must be a dict of qat.Quantizer keyword arguments, got {type(spec).__name__}")
    kwargs = {"fmt": fmt, "scale": default_scale, **spec}
    return qat.Quantizer(kwargs.pop("fmt"), kwargs.pop("scale"), **kwargs)


def simulated_modules(module):
    """The Linear and Conv2d submodules (module included) that simulate() swaps."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    return [m for m in module.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]


def _check_backward(spec):
    if spec is None:
        return None
    if not isinstance(spec, dict) or set(spec) - {"dgrad", "wgrad", "seed"} or not {"dgrad", "wgrad"} <= set(spec):
        raise TypeError("backward must be None (float64 STE) or a dict with keys 'dgrad' and 'wgrad' "
                        f"(backward.GemmRole) and optionally 'seed' (int), got {spec!r}")
    Backward(spec["dgrad"], spec["wgrad"], seed=spec.get("seed", 0))   # checks the roles and the seed
    return spec


def simulate(module, array, *, x_quant=None, w_quant=None, backward=None):
    """Run every nn.Linear / nn.Conv2d forward of `module` on `array` (an acs.Array), in place;
    returns the module.  x_quant / w_quant: qat.Quantizer keyword arguments for activations and
    weights (format default: the array's MAC operand formats; scale default: per tensor for
    activations, per output channel for weights).  backward: None (the STE's GEMMs in float64)
    or {"dgrad": GemmRole, "wgrad": GemmRole, "seed": int}: the i-th simulated module (in
    simulated_modules order) gets backward.Backward(dgrad, wgrad, seed=sub_seed(seed, i)), so a
    numpy run built the same way gives the same bits."""
    if not isinstance(array, Array):
        raise TypeError(f"array must be an acs.Array, got {type(array).__name__}")
    spec = _check_backward(backward)
    mods = simulated_modules(module)
    for m in mods:
        if isinstance(m, torch.nn.Conv2d) and (m.padding_mode != "zeros" or isinstance(m.padding, str)):
            raise ValueError(f"{m}: only zero padding given as numbers is simulated, got padding={m.padding!r}, "
                             f"padding_mode={m.padding_mode!r}")
        if "forward" in vars(m):
            raise ValueError(f"{m} is already simulated (or has its own forward); restore() it first")
    for i, m in enumerate(mods):
        xq = _quantizer(x_quant, array.mac.a, "tensor", "x_quant")
        wq = _quantizer(w_quant, array.mac.b, "channel", "w_quant")
        qat._check(array, xq, wq)
        if not wq.dynamic:
            wq.calibrate(_numpy(m.weight))
            m.acs_w_log_step = torch.nn.Parameter(_log(wq.step, m.weight))
        if not xq.dynamic:
            m.acs_x_log_step = torch.nn.Parameter(torch.zeros((), dtype=m.weight.dtype))
        m.acs_x_quant, m.acs_w_quant, m.acs_result, m.acs_backward_results = xq, wq, None, None
        m.acs_backward = None if spec is None else Backward(spec["dgrad"], spec["wgrad"],
                                                            seed=sub_seed(spec.get("seed", 0), i))
        m._acs_array, m._acs_x_ready = array, False
        m.forward = types.MethodType(_forward, m)
    return module


def restore(module):
    """Undo simulate(): the layers' own forwards back, the quantizers and steps removed."""
    for m in simulated_modules(module):
        if "_acs_array" not in vars(m):
            continue
        del m.forward
        for name in _PARAMS:
            if name in m._parameters:
                del m._parameters[name]
        for name in _ATTRS + ("_acs_array", "_acs_x_ready"):
            vars(m).pop(name, None)
    return module
