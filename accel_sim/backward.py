"""The backward GEMMs of a layer on the array: the input gradient dX = dY W (dgrad) and the
weight gradient dW = dY^T X (wgrad), each with its own hardware and operand scaling.

    role = GemmRole(acs.Array(32, 32, "ws", mac=acs.MAC("e5m2", "e4m3fn", "fp32")), rule="delayed")
    bw = Backward(dgrad=role, wgrad=role, seed=1)     # one per layer: it holds the amax histories
    fwd = qat.linear(arr, x, w, b, x_quant=xq, w_quant=wq, backward=bw)
    grads = fwd.backward(dy)     # grads["results"]["dgrad"] / ["wgrad"]: the array's Results

In both GEMMs operand a is the gradient dY (the MAC's a format, e.g. E5M2) and operand b the
forward tensor (W for dgrad, X for wgrad; the MAC's b format, e.g. E4M3), quantized from the
layer's float inputs with per-tensor scales (scaling.TensorScaler: per-tensor because in both
GEMMs each operand's scale would otherwise run along the reduction axis).  The gradient is the
array's fp32 epilogue output.  `last` keeps each GEMM's operands (QTensors) and Result, so
the gradients can be checked against Array.gemm of exactly what the array was given."""
from __future__ import annotations

import numpy as np

from accel_sim import formats, layers
from accel_sim._native import check_seed
from accel_sim.array import Array
from accel_sim.quant import QTensor
from accel_sim.scaling import ROUNDINGS, RULES, TensorScaler, sub_seed

__all__ = ["GemmRole", "Backward", "default_rule"]

# float32's largest power of two: a format reaching it has float32's exponent range
_F32_RANGE = 2.0 ** 127


def default_rule(fmt) -> str:
    """The scaling rule GemmRole gives an operand of `fmt` when none is named: "none" (a plain
    cast) for formats with float32's exponent range (bf16, fp32), whose range is not the
    bottleneck and whose dynamic scaling to fmt.max would overflow an fp32 accumulator with one
    product; "dynamic" for the narrow formats (FP8, INT8, fp16, posits, ...)."""
    return "none" if formats.get(fmt).max >= _F32_RANGE else "dynamic"


class GemmRole:
    """The hardware of one backward GEMM: `array` (its MAC names the a format (the gradient),
    the b format (W or X) and the accumulator; its size, dataflow and energy table cost it) and
    the per-tensor scaling of its operands: rule ("dynamic", "delayed" or "none"; by default
    default_rule of the a format; b_rule defaults to rule when rule is named, else to
    default_rule of the b format), history (delayed scaling's amax history length), margin, b_margin, and
    rounding of the gradient operand ("rne" or "sr"; the b operand is rounded to nearest)."""

    def __init__(self, array, rule=None, *, b_rule=None, history=16, margin=0, b_margin=None, rounding="rne"):
        if not isinstance(array, Array):
            raise TypeError(f"array must be an acs.Array, got {type(array).__name__}")
        if b_rule is None:
            b_rule = default_rule(array.mac.b) if rule is None else rule
        if rule is None:
            rule = default_rule(array.mac.a)
        for argname, r in (("rule", rule), ("b_rule", b_rule)):
            if r not in RULES:
                raise ValueError(f"{argname} must be one of {RULES}, got {r!r}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
        self.array, self.rule, self.b_rule, self.history, self.rounding = array, rule, b_rule, history, rounding
        self.margin, self.b_margin = margin, margin if b_margin is None else b_margin
        self.scalers(0)   # checks history and margins now

    def scalers(self, seed):
        """A fresh (gradient scaler, forward-tensor scaler) pair for one layer."""
        mac = self.array.mac
        return (TensorScaler(mac.a, self.rule, history=self.history, margin=self.margin, rounding=self.rounding,
                             seed=sub_seed(seed, 0)),
                TensorScaler(mac.b, self.b_rule, history=self.history, margin=self.b_margin, seed=sub_seed(seed, 1)))

    def __repr__(self):
        return f"GemmRole({self.array!r}, {self.rule}/{self.b_rule}, rounding={self.rounding})"


def _rows(q: QTensor, sl) -> QTensor:
    """Columns `sl` of a per-tensor QTensor's 2-D codes, same scale."""
    return QTensor(q.codes[:, sl], q.format, q.scale)


class Backward:
    """One layer's backward GEMMs on the array (module docstring); seed: stochastic rounding's
    (each tensor and call draws its own stream from it)."""

    def __init__(self, dgrad: GemmRole, wgrad: GemmRole, *, seed=0):
        seed = check_seed(seed)
        for argname, r in (("dgrad", dgrad), ("wgrad", wgrad)):
            if not isinstance(r, GemmRole):
                raise TypeError(f"{argname} must be a backward.GemmRole, got {type(r).__name__}")
        self.dgrad_role, self.wgrad_role = dgrad, wgrad
        self._dg = dgrad.scalers(sub_seed(seed, 0))
        self._wg = wgrad.scalers(sub_seed(seed, 1))
        self.last = {}

    def linear_grads(self, g2, w, x2, need_x=True):
        """(dX (M, K) or None, dW (N, K), {"dgrad": [Result], "wgrad": [Result]}) of a linear
        layer: g2 (M, N) the output gradient, w (N, K), x2 (M, K) the layer's float input."""
        return self.conv_like_grads(g2, w, x2, 1, need_x)

    def conv_like_grads(self, g2, w2, cols_of, groups, need_x=True):
        """Grouped GEMM gradients: g2 (M, O); w2 (O, Kg) the flattened weight; cols_of either the
        (M, Kg) float input (groups=1, linear) or a function giving (M, Kg) code columns of group
        k from the quantized forward tensor.  Returns (d cols (M, groups*Kg) or None, dW (O, Kg),
        results by role)."""
        m, o = g2.shape
        og = o // groups
        out = {}
        dcols = None
        if need_x:
            sa, sb = self._dg
            qg, qw = sa(g2), sb(w2)
            parts = [(_rows(qg, slice(k * og, (k + 1) * og)), QTensor(qw.codes[k * og:(k + 1) * og], qw.format, qw.scale))
                     for k in range(groups)]
            res = [self.dgrad_role.array.gemm(a, b, metrics=False) for a, b in parts]
            self.last["dgrad"] = {"operands": parts, "results": res}
            dcols = np.concatenate([r.output for r in res], axis=1)
            out["dgrad"] = res
        sa, sb = self._wg
        qg = sa(g2)
        if callable(cols_of):
            cols = cols_of(sb)
        else:
            qx = sb(cols_of)
            cols = [qx]
        parts = [(QTensor(qg.codes[:, k * og:(k + 1) * og].T, qg.format, qg.scale), cols[k]) for k in range(groups)]
        res = [self.wgrad_role.array.gemm(a, b, metrics=False) for a, b in parts]
        self.last["wgrad"] = {"operands": parts, "results": res}
        out["wgrad"] = res
        dw = np.concatenate([r.output for r in res], axis=0)
        return dcols, dw, out

    @staticmethod
    def conv_cols(x, kernel, stride, padding, dilation, groups):
        """A cols_of for conv2d: the forward input x (N, C, H, W) quantized once by the wgrad
        scaler, then each group's im2col of the codes (zero padding is code 0)."""
        cg = x.shape[1] // groups

        def cols_of(scaler):
            qx = scaler(x)
            return [QTensor(layers.im2col(qx.codes[:, k * cg:(k + 1) * cg], kernel, stride, padding, dilation)[0],
                            qx.format, qx.scale) for k in range(groups)]
        return cols_of

    def __repr__(self):
        return f"Backward(dgrad={self.dgrad_role!r}, wgrad={self.wgrad_role!r})"
