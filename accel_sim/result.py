"""Result: a simulated GEMM or layer -- the outputs the hardware produces, their error, and
what they cost (a Plan)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from accel_sim.plan import Plan

__all__ = ["Result"]


@dataclass
class Result(Plan):
    """A simulated layer: the outputs the hardware produces, and what it cost."""

    output: np.ndarray = None   # after the fp32 epilogue (and out_format), float64
    acc: np.ndarray = None      # raw accumulator values (int64 for integer accumulators)
    metrics: dict = field(default_factory=dict)
    overflow: dict = None       # accel_sim.overflow's report when outputs overflowed or saturated

    def to_dict(self, arrays: bool = False) -> dict:
        d = super().to_dict()
        d["metrics"] = dict(self.metrics)
        d["overflow"] = None if self.overflow is None else dict(self.overflow)
        d["output_shape"] = list(self.output.shape)
        if arrays:
            d["output"] = self.output.tolist()
            d["acc"] = self.acc.tolist()
        return d
