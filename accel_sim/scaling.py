"""Scaling rules for training tensors: per-tensor scales from the current amax or from an amax
history (delayed scaling), and fp16 loss scaling with overflow detection.

    sc = TensorScaler("e5m2", rule="delayed", history=16)    # one per tensor of one layer
    q = sc(grad)                # a QTensor: codes of grad / s, s from max(history) (then amax recorded)
    ls = LossScaler(init=2.0**16, growth_interval=100)
    ok = ls.update(all_finite)  # False: skip the step (scale halved); ls.skipped counts them

Delayed scaling follows NVIDIA Transformer Engine's DelayedScaling recipe (docs of
transformer_engine.common.recipe.DelayedScaling: "use scale factor from previous iteration ...
record amax history of amax_history_len steps", amax_compute_algo "max", margin): the scale a
tensor is quantized with at step t comes from the largest amax of steps t-H .. t-1, and the
tensor's own amax then enters the history.  In accel_sim's convention (value = code * scale)
that scale is float32(amax * 2**margin / fmt.max).  TE starts from scale 1 with an empty
history; here the first step uses its own amax (there is nothing earlier to go by).  Loss
scaling follows torch.amp.GradScaler's rule (multiply the loss by S; a step whose gradients
hold inf/NaN is skipped and S is multiplied by backoff_factor; after growth_interval good steps
in a row S is multiplied by growth_factor).  docs/training.md has the decisions."""
from __future__ import annotations

import math

import numpy as np

from accel_sim import formats
from accel_sim._native import check_seed
from accel_sim.quant import QTensor, quantize

__all__ = ["RULES", "TensorScaler", "LossScaler", "amax_scale", "sub_seed"]

RULES = ("dynamic", "delayed", "none")
ROUNDINGS = ("rne", "sr")


def sub_seed(seed: int, *path: int) -> int:
    """A 64-bit seed derived from (seed, *path) by numpy's SeedSequence: distinct streams for
    each tensor and each call, the same bits for the same seed."""
    return int(np.random.SeedSequence([int(seed), *map(int, path)]).generate_state(1, np.uint64)[0])


_F32 = np.finfo(np.float32)


def amax_scale(amax: float, fmt, margin: int = 0) -> np.float32:
    """The float32 scale that maps amax onto fmt.max / 2**margin (1 where amax is 0), clamped
    into float32's normal range: a tiny amax of a wide format (bf16 below ~4.8e-7) would
    otherwise give scale 0; the clamped scale still keeps amax within fmt.max / 2**margin.
    At the top (a huge amax of a narrow format) the tensor saturates."""
    fmt = formats.get(fmt)
    if not amax > 0:
        return np.float32(1.0)
    return np.float32(np.clip(amax * 2.0 ** margin / fmt.max, _F32.tiny, _F32.max))


class TensorScaler:
    """Quantizes one tensor per call to `fmt` with a per-tensor scale.

    rule "dynamic": the scale from this tensor's amax (current scaling).  "delayed": from the
    largest amax of the previous `history` calls (Transformer Engine's DelayedScaling with
    amax_compute_algo "max"); the first call uses its own amax.  "none": scale 1 (a plain
    cast, for bf16 / fp16 operands).  margin: amax maps to fmt.max / 2**margin.  Elements
    beyond the range saturate.  rounding "rne" or "sr" (stochastic rounding: call t draws from
    sub_seed(seed, t), so the same seed gives the same bits and calls differ)."""

    def __init__(self, fmt, rule="dynamic", *, history=16, margin=0, rounding="rne", seed=0):
        self.format = formats.get(fmt, "fmt")
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
        for argname, v, lo, hi in (("history", history, 1, 1 << 20), ("margin", margin, -64, 64)):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ValueError(f"{argname} must be an integer in [{lo}, {hi}], got {v!r}")
        self.rule, self.history_len, self.margin, self.rounding = rule, int(history), int(margin), rounding
        self.seed = check_seed(seed)
        self.amax_history: list[float] = []   # most recent last
        self.calls = 0

    def next_scale(self, amax: float) -> np.float32:
        """The scale the rule gives a tensor of this amax now (without recording it)."""
        if self.rule == "none":
            return np.float32(1.0)
        if self.rule == "delayed" and self.amax_history:
            amax = max(self.amax_history)
        return amax_scale(amax, self.format, self.margin)

    def __call__(self, x) -> QTensor:
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("x contains NaN or inf: a tensor scaler quantizes finite tensors "
                             "(the training step checks gradients for overflow before this)")
        amax = float(np.max(np.abs(x))) if x.size else 0.0
        scale = self.next_scale(amax)
        seed = sub_seed(self.seed, self.calls)
        q = quantize(x, self.format, scale=scale, rounding=self.rounding, saturate=True, seed=seed)
        self.calls += 1
        self.amax_history = (self.amax_history + [amax])[-self.history_len:]
        return q

    def __repr__(self):
        return f"TensorScaler({self.format.name}, {self.rule}, rounding={self.rounding})"


class LossScaler:
    """Dynamic loss scaling for fp16 gradients (torch.amp.GradScaler's rule).

    scale: multiply the loss gradient by it before the backward, divide the weight gradients
    by it before the update.  update(finite) after each step's backward: False (the step must
    be skipped) when the gradients held inf or NaN, and the scale is multiplied by
    backoff_factor; after growth_interval finite steps in a row it is multiplied by
    growth_factor.  skipped counts the skipped steps, steps all steps seen."""

    def __init__(self, init=2.0 ** 16, *, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        for argname, v in (("init", init), ("growth_factor", growth_factor), ("backoff_factor", backoff_factor)):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{argname} must be a positive finite number, got {v!r}")
        if not growth_factor > 1 or not backoff_factor < 1:
            raise ValueError(f"growth_factor must exceed 1 and backoff_factor be below 1, got "
                             f"{growth_factor} and {backoff_factor}")
        if isinstance(growth_interval, (bool, np.bool_)) or not isinstance(growth_interval, (int, np.integer)) \
                or growth_interval < 1:
            raise ValueError(f"growth_interval must be a positive integer, got {growth_interval!r}")
        self.scale = float(init)
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self.good_steps = self.skipped = self.steps = 0

    def update(self, finite: bool) -> bool:
        """Record one step; True when its gradients were finite (apply it), False (skip it)."""
        self.steps += 1
        if not finite:
            self.skipped += 1
            self.good_steps = 0
            self.scale *= self.backoff_factor
            return False
        self.good_steps += 1
        if self.good_steps == self.growth_interval:
            self.scale *= self.growth_factor
            self.good_steps = 0
        return True

    def __repr__(self):
        return f"LossScaler(scale={self.scale:g}, skipped={self.skipped}/{self.steps})"
