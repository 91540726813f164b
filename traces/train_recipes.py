"""The training configurations of traces/train_digits.py and traces/train_transformer.py: for
each, the forward array and quantizers, the backward GEMM roles, the master weights and the
loss scaling.  All arrays are 32x32 weight-stationary, one engine thread.

    cfg = RECIPES["FP8 (E4M3 fwd / E5M2 bwd, fp32 acc)"]
    layer = cfg.layer(seed)        # per layer: (array, x_quant, w_quant, Backward or None)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import accel_sim as acs
from accel_sim import qat
from accel_sim.backward import Backward, GemmRole
from accel_sim.mac import Quire
from accel_sim.quant import quantize
from accel_sim.scaling import amax_scale, sub_seed

ARRAY = (32, 32, "ws")
VSQ = {"scale": "vector", "block": 16, "scale_format": "uint4"}
POSIT_MARGIN = 3      # posit8 gradients: amax -> maxpos / 8 = 8, where posit8 still has 3 fraction bits
Q16 = Quire("posit8", readout="posit16")   # the exact sum rounded to posit16, not posit8, when read out


def array(a, b, acc):
    return acs.Array(ARRAY[0], ARRAY[1], ARRAY[2], mac=acs.MAC(a, b, acc), threads=1)


def _unit(fmt):
    """A plain cast (scale 1): bf16 and posit operands."""
    q = qat.Quantizer(fmt)
    q.step = 1.0
    return q


class _Margin(qat.Quantizer):
    """Dynamic per-tensor forward scaling with amax mapped to fmt.max / 2**margin (headroom
    for a narrow accumulator), the STE of a dynamic quantizer."""

    def __init__(self, fmt, margin):
        super().__init__(fmt, dynamic=True)
        self.margin = margin

    def __call__(self, x):
        x = np.asarray(x, np.float64)
        amax = float(np.max(np.abs(x))) if x.size else 0.0
        return quantize(x, self.format, scale=amax_scale(amax, self.format, self.margin), saturate=True)


@dataclass
class Recipe:
    """fwd: (a, b, acc) of the forward MAC; quant: "dynamic" (per-tensor current amax), "unit"
    (scale 1), "vsq" (VS-Quant 4-bit, per-vector uint4 scales) or an int m (dynamic with amax
    mapped to fmt.max / 2**m); bwd: (a, b, acc) of the dgrad
    and wgrad MAC or None (float64 STE: the FP32 baseline has no array at all); rule, margin,
    rounding: the backward operands' scaling (scaling.TensorScaler; b_margin for the b operand,
    default margin); master / update: AdamW's
    master weights; loss_scale: LossScaler keyword arguments or None; label: its name in the
    README's tables."""

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
    b_margin: int | None = None
    label: str = ""
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
        elif isinstance(self.quant, int):
            xq, wq = _Margin(fmt, self.quant), _Margin(fmt, self.quant)
        else:
            xq, wq = qat.Quantizer(fmt, **VSQ), qat.Quantizer(fmt, **VSQ)
        role = GemmRole(array(*self.bwd), self.rule, b_rule="none" if self.rule == "none" else "dynamic",
                        margin=self.margin, b_margin=self.b_margin, history=self.history, rounding=self.rounding)
        return arr, xq, wq, Backward(role, role, seed=sub_seed(seed, 100 + index))


FP8 = Recipe(("e4m3fn", "e4m3fn", "fp32"), bwd=("e5m2", "e4m3fn", "fp32"), rule="delayed",
             label="FP8: E4M3 fwd, E5M2 x E4M3 bwd (delayed, H=16) -> fp32", notes="TE-style: E4M3 forward (current amax), E5M2 gradients (delayed, amax history 16), fp32 acc")
RECIPES = {
    "FP32": Recipe(None, label="FP32 (float64 GEMMs, not on the array)", notes="float64 GEMMs (numpy), fp32 master weights: the baseline"),
    "BF16": Recipe(("bf16", "bf16", "fp32"), quant="unit", bwd=("bf16", "bf16", "fp32"), rule="none",
                   label="BF16 x BF16 -> fp32", notes="bf16 operands (plain casts), fp32 accumulation, fp32 master weights"),
    "FP8": FP8,
    "FP8, fp16 acc": Recipe(("e4m3fn", "e4m3fn", "fp16"), bwd=("e5m2", "e4m3fn", "fp16"), rule="delayed",
                            loss_scale={"init": 2.0 ** 16, "growth_interval": 200},
                            label="FP8 as above -> **fp16** accumulators", notes="FP8 with an fp16 accumulator in every GEMM; fp16 loss scaling, "
                                  "non-finite steps skipped"),
    "FP8, fp16 acc, margins": Recipe(("e4m3fn", "e4m3fn", "fp16"), quant=4, bwd=("e5m2", "e4m3fn", "fp16"),
                                     rule="delayed", margin=10, b_margin=4,
                                     loss_scale={"init": 2.0 ** 16, "growth_interval": 200},
                                     label="FP8 -> fp16 acc, with headroom (E4M3 amax -> 448/16, E5M2 amax -> "
                                           "57344/1024)",
                                     notes="FP8 with fp16 accumulators and headroom: E4M3 operands scaled to 448/16, "
                                           "E5M2 gradients to 57344/1024 (the product of two maximal codes fits fp16)"),
    "INT8": Recipe(("int8", "int8", "int32"), bwd=("int8", "int8", "int32"),
                   label="INT8 x INT8 -> int32, fwd and bwd", notes="INT8 per-tensor (current amax) forward and backward, int32 acc"),
    "INT8, sr grads": Recipe(("int8", "int8", "int32"), bwd=("int8", "int8", "int32"), rounding="sr",
                             label="INT8, sr on the gradient operand", notes="INT8 with stochastic rounding of the gradient operand"),
    "VSQ4 fwd / INT8 bwd": Recipe(("int4", "int4", "int32"), quant="vsq", bwd=("int8", "int8", "int32"),
                                  label="VS-Quant INT4 fwd (uint4 / 16) / INT8 bwd", notes="VS-Quant 4-bit forward (uint4 scale per 16), INT8 per-tensor gradients"),
    "posit8 + quire": Recipe(("posit8", "posit8", "quire"), quant="unit", bwd=("posit8", "posit8", "quire"),
                             margin=POSIT_MARGIN, label="posit8 x posit8 -> quire (read out as posit8)",
                             notes="posit8 (es 0) everywhere, exact quire accumulation; forward unscaled, "
                                   "backward operands scaled so amax -> 8"),
    "posit8 + quire, scaled fwd": Recipe(("posit8", "posit8", "quire"), quant=POSIT_MARGIN,
                                         bwd=("posit8", "posit8", "quire"), margin=POSIT_MARGIN,
                                         label="posit8 -> quire (posit8 readout), forward also scaled (amax -> 8)",
                                         notes="posit8 + quire with the forward operands scaled like the gradients "
                                               "(amax -> 8)"),
    "posit8 + quire -> posit16": Recipe(("posit8", "posit8", Q16), quant="unit", bwd=("posit8", "posit8", Q16),
                                        margin=POSIT_MARGIN, label="posit8 -> quire read out as **posit16**",
                                        notes="posit8 + quire read out to posit16 instead of posit8"),
    "BF16, bf16 weights": Recipe(("bf16", "bf16", "fp32"), quant="unit", bwd=("bf16", "bf16", "fp32"), rule="none",
                                 master="bf16", label="BF16, bf16 master weights, rne update", notes="BF16 with bf16 master weights, update rounded to nearest"),
    "BF16, bf16 weights + sr": Recipe(("bf16", "bf16", "fp32"), quant="unit", bwd=("bf16", "bf16", "fp32"),
                                      rule="none", master="bf16", update="sr",
                                      label="BF16, bf16 master weights, sr update", notes="BF16 with bf16 master weights, stochastically rounded update"),
}
# follow-ups to the main table, run apart:
#   python traces/train_digits.py --configs "FP8, fp16 acc, margins;posit8 + quire, scaled fwd" \
#       --out traces/train_digits_followup
#   python traces/train_digits.py --configs "posit8 + quire -> posit16" --out traces/train_digits_posit16
EXTRA = ("FP8, fp16 acc, margins", "posit8 + quire, scaled fwd", "posit8 + quire -> posit16")
