"""The training configurations of traces/train_digits.py and traces/train_transformer.py: for
each, the forward array and quantizers, the backward GEMM roles, the master weights and the
loss scaling.  All arrays are 32x32 weight-stationary, one engine thread.

    cfg = RECIPES["FP8 (E4M3 fwd / E5M2 bwd, fp32 acc)"]
    layer = cfg.layer(seed)        # per layer: (array, x_quant, w_quant, Backward or None)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import accel_sim as acs
from accel_sim import qat
from accel_sim.backward import Backward, GemmRole
from accel_sim.scaling import sub_seed

ARRAY = (32, 32, "ws")
VSQ = {"scale": "vector", "block": 16, "scale_format": "uint4"}
POSIT_MARGIN = 3      # posit8 gradients: amax -> maxpos / 8 = 8, where posit8 still has 3 fraction bits


def array(a, b, acc):
    return acs.Array(ARRAY[0], ARRAY[1], ARRAY[2], mac=acs.MAC(a, b, acc), threads=1)


def _unit(fmt):
    """A plain cast (scale 1): bf16 and posit operands."""
    q = qat.Quantizer(fmt)
    q.step = 1.0
    return q


@dataclass
class Recipe:
    """fwd: (a, b, acc) of the forward MAC; quant: "dynamic" (per-tensor current amax), "unit"
    (scale 1) or "vsq" (VS-Quant 4-bit, per-vector uint4 scales); bwd: (a, b, acc) of the dgrad
    and wgrad MAC or None (float64 STE: the FP32 baseline has no array at all); rule, margin,
    rounding: the backward operands' scaling (scaling.TensorScaler); master / update: AdamW's
    master weights; loss_scale: LossScaler keyword arguments or None."""

    fwd: tuple | None
    quant: str = "dynamic"
    bwd: tuple | None = None
    rule: str = "dynamic"
    margin: int = 0
    rounding: str = "rne"
    master: str = "fp32"
    update: str = "rne"
    loss_scale: dict | None = None
    history: int = 16
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def layer(self, seed, index):
        """(array, x_quant, w_quant, backward) for layer `index` of a run with `seed`."""
        if self.fwd is None:
            return None
        arr = array(*self.fwd)
        fmt = self.fwd[0]
        if self.quant == "dynamic":
            xq, wq = qat.Quantizer(fmt, dynamic=True), qat.Quantizer(fmt, dynamic=True)
        elif self.quant == "unit":
            xq, wq = _unit(fmt), _unit(fmt)
        else:
            xq, wq = qat.Quantizer(fmt, **VSQ), qat.Quantizer(fmt, **VSQ)
        role = GemmRole(array(*self.bwd), self.rule, b_rule="none" if self.rule == "none" else "dynamic",
                        margin=self.margin, history=self.history, rounding=self.rounding)
        return arr, xq, wq, Backward(role, role, seed=sub_seed(seed, 100 + index))


FP8 = Recipe(("e4m3fn", "e4m3fn", "fp32"), bwd=("e5m2", "e4m3fn", "fp32"), rule="delayed",
             notes="TE-style: E4M3 forward (current amax), E5M2 gradients (delayed, amax history 16), fp32 acc")
RECIPES = {
    "FP32": Recipe(None, notes="float64 GEMMs (numpy), fp32 master weights: the baseline"),
    "BF16": Recipe(("bf16", "bf16", "fp32"), quant="unit", bwd=("bf16", "bf16", "fp32"), rule="none",
                   notes="bf16 operands (plain casts), fp32 accumulation, fp32 master weights"),
    "FP8": FP8,
    "FP8, fp16 acc": Recipe(("e4m3fn", "e4m3fn", "fp16"), bwd=("e5m2", "e4m3fn", "fp16"), rule="delayed",
                            loss_scale={"init": 2.0 ** 16, "growth_interval": 200},
                            notes="FP8 with an fp16 accumulator in every GEMM; fp16 loss scaling, "
                                  "non-finite steps skipped"),
    "INT8": Recipe(("int8", "int8", "int32"), bwd=("int8", "int8", "int32"),
                   notes="INT8 per-tensor (current amax) forward and backward, int32 acc"),
    "INT8, sr grads": Recipe(("int8", "int8", "int32"), bwd=("int8", "int8", "int32"), rounding="sr",
                             notes="INT8 with stochastic rounding of the gradient operand"),
    "VSQ4 fwd / INT8 bwd": Recipe(("int4", "int4", "int32"), quant="vsq", bwd=("int8", "int8", "int32"),
                                  notes="VS-Quant 4-bit forward (uint4 scale per 16), INT8 per-tensor gradients"),
    "posit8 + quire": Recipe(("posit8", "posit8", "quire"), quant="unit", bwd=("posit8", "posit8", "quire"),
                             margin=POSIT_MARGIN,
                             notes="posit8 (es 0) everywhere, exact quire accumulation; forward unscaled, "
                                   "backward operands scaled so amax -> 8"),
    "BF16, bf16 weights": Recipe(("bf16", "bf16", "fp32"), quant="unit", bwd=("bf16", "bf16", "fp32"), rule="none",
                                 master="bf16", notes="BF16 with bf16 master weights, update rounded to nearest"),
    "BF16, bf16 weights + sr": Recipe(("bf16", "bf16", "fp32"), quant="unit", bwd=("bf16", "bf16", "fp32"),
                                      rule="none", master="bf16", update="sr",
                                      notes="BF16 with bf16 master weights, stochastically rounded update"),
}
