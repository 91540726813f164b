"""Training on the simulated hardware: the weight update (master weights in fp32, or in bf16
rounded to nearest or stochastically), the overflow check of a step, and the cost of a step
(cycles and energy of each layer's forward, dgrad and wgrad GEMMs, counted separately).

    opt = AdamW(lr=1e-2, weight_decay=1e-2, master="bf16", rounding="sr", seed=7)
    params = opt.init(params)                # weights on the master grid
    ...                                      # grads from qat layers with backward=Backward(...)
    if all_finite(grads): params = opt.step(params, grads, lr_scale=cosine)
    cost = StepCost(); cost.add("fc", "fwd", fwd.result); cost.add("fc", "dgrad", grads["results"]["dgrad"])
    cost.cycles, cost.energy_pj, cost.by_role()

The layers themselves are acs.qat.linear / acs.qat.conv2d; their backward GEMMs run on the
array when given a backward.Backward (dgrad and wgrad GemmRoles), with the operand scaling
rules of acs.scaling.  docs/training.md has the decisions."""
from __future__ import annotations

import math

import numpy as np

from accel_sim import formats
from accel_sim._native import check_seed
from accel_sim.scaling import sub_seed

__all__ = ["AdamW", "StepCost", "all_finite", "MASTERS", "ROLES"]

MASTERS = ("fp32", "bf16")
ROLES = ("fwd", "dgrad", "wgrad")


def _is_real(v) -> bool:
    """A Python or numpy real number, not a bool."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def all_finite(grads) -> bool:
    """True when every array in the dict `grads` (None values skipped) is finite."""
    return all(np.all(np.isfinite(g)) for g in grads.values() if g is not None)


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter, ICLR 2019) on master weights.

    master "fp32": weights kept in float32, the update computed in float32 and rounded to
    nearest.  master "bf16": weights kept in bfloat16; the float32 update is rounded onto the
    bf16 grid with `rounding` ("rne", or "sr": stochastic rounding, step t of parameter i
    drawing from sub_seed(seed, t, i), so the same seed gives the same weights).  The moment
    estimates are float32.  decay applies to the names for which decay(name) is true (default:
    names ending in ".w")."""

    def __init__(self, lr=1e-3, *, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, master="fp32", rounding="rne",
                 seed=0, decay=None):
        for argname, v in (("lr", lr), ("eps", eps)):
            if not _is_real(v) or not math.isfinite(v) or not v > 0:
                raise ValueError(f"{argname} must be a positive finite number, got {v!r}")
        if not _is_real(weight_decay) or not math.isfinite(weight_decay) or weight_decay < 0:
            raise ValueError(f"weight_decay must be a non-negative finite number, got {weight_decay!r}")
        if not isinstance(betas, (tuple, list)) or len(betas) != 2 \
                or not all(_is_real(b) and 0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")
        if master not in MASTERS:
            raise ValueError(f"master must be one of {MASTERS}, got {master!r}")
        if rounding not in ("rne", "sr"):
            raise ValueError(f"rounding must be 'rne' or 'sr', got {rounding!r}")
        if master == "fp32" and rounding != "rne":
            raise ValueError("stochastic rounding of the update applies to bf16 master weights (master='bf16')")
        self.lr, self.betas, self.eps, self.weight_decay = float(lr), tuple(map(float, betas)), float(eps), float(weight_decay)
        self.master, self.rounding, self.seed = master, rounding, check_seed(seed)
        self.decay = (lambda name: name.endswith(".w")) if decay is None else decay
        self.t = 0
        self.m, self.v = {}, {}

    def _store(self, x, name_index):
        """x (float32 values) onto the master grid, as float64 holding the stored values."""
        x = np.asarray(x, np.float32)
        if self.master == "fp32":
            return x.astype(np.float64)
        bf16 = formats.get("bf16")
        seed = sub_seed(self.seed, self.t, name_index)
        with np.errstate(over="ignore"):
            return bf16.decode(bf16.encode(x.astype(np.float64), rounding=self.rounding, seed=seed))

    def init(self, params) -> dict:
        """params (dict of arrays) rounded to nearest onto the master grid."""
        bf16 = formats.get("bf16")
        return {k: (np.asarray(v, np.float32).astype(np.float64) if self.master == "fp32" else
                    bf16.decode(bf16.encode(np.asarray(v, np.float64))))
                for k, v in params.items()}

    def step(self, params, grads, lr_scale=1.0) -> dict:
        """New params: one AdamW step with learning rate lr * lr_scale (float32 arithmetic).
        Each gradient must have its parameter's shape (a broadcast would update wrongly)."""
        if not _is_real(lr_scale) or not math.isfinite(lr_scale) or lr_scale < 0:
            raise ValueError(f"lr_scale must be a non-negative finite number, got {lr_scale!r}")
        for name, g in grads.items():
            if name not in params:
                raise ValueError(f"grads has {name!r}, which params lacks")
            if g is not None and np.shape(g) != np.shape(params[name]):
                raise ValueError(f"grads[{name!r}] has shape {np.shape(g)}, its parameter {np.shape(params[name])}")
        self.t += 1
        b1, b2 = np.float32(self.betas[0]), np.float32(self.betas[1])
        lr = np.float32(self.lr * lr_scale)
        one = np.float32(1)
        out = dict(params)
        for i, name in enumerate(sorted(grads)):
            g = grads[name]
            if g is None:
                continue
            g = np.asarray(g, np.float32)
            w = np.asarray(params[name], np.float32)
            m = self.m.get(name, np.zeros_like(g)) * b1 + (one - b1) * g
            v = self.v.get(name, np.zeros_like(g)) * b2 + (one - b2) * g * g
            self.m[name], self.v[name] = m, v
            mhat = m / (one - b1 ** self.t)
            vhat = v / (one - b2 ** self.t)
            upd = lr * mhat / (np.sqrt(vhat) + np.float32(self.eps))
            if self.decay(name):
                upd = upd + lr * np.float32(self.weight_decay) * w
            out[name] = self._store(w - upd, i)
        return out


class StepCost:
    """Cycles and energy of training steps, per (layer, role) with role "fwd", "dgrad" or
    "wgrad"; add() takes a Result or a list of them (a grouped layer's GEMMs)."""

    def __init__(self):
        self.cycles_by, self.energy_by, self.macs_by = {}, {}, {}

    def add(self, layer, role, results):
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        for r in results if isinstance(results, (list, tuple)) else [results]:
            key = (layer, role)
            self.cycles_by[key] = self.cycles_by.get(key, 0) + int(r.cycles)
            self.energy_by[key] = self.energy_by.get(key, 0.0) + float(r.energy_pj)
            self.macs_by[key] = self.macs_by.get(key, 0) + int(r.macs)

    @property
    def cycles(self) -> int:
        return sum(self.cycles_by.values())

    @property
    def energy_pj(self) -> float:
        return sum(self.energy_by.values())

    def by_role(self) -> dict:
        """{role: {"cycles", "energy_pj", "macs"}} summed over layers."""
        out = {}
        for (layer, role), c in self.cycles_by.items():
            d = out.setdefault(role, {"cycles": 0, "energy_pj": 0.0, "macs": 0})
            d["cycles"] += c
            d["energy_pj"] += self.energy_by[(layer, role)]
            d["macs"] += self.macs_by[(layer, role)]
        return out

    def rows(self) -> list:
        """One dict per (layer, role): layer, role, cycles, energy_pj, macs."""
        return [{"layer": layer, "role": role, "cycles": c, "energy_pj": self.energy_by[(layer, role)],
                 "macs": self.macs_by[(layer, role)]} for (layer, role), c in self.cycles_by.items()]
