"""accel_sim: a bit-accurate, cycle-counted simulator of 8-bit multiply-accumulate accelerators."""
from accel_sim import energy, formats, layers, ops, presets, quant, scalesim, trace
from accel_sim.sweep import pareto, sweep
from accel_sim.array import Array, Plan, Result
from accel_sim.mac import MAC, BlockFMA, FixedAcc, FloatAcc, IntAcc, accumulate
from accel_sim.quant import QTensor

__version__ = "0.1.0"
__all__ = ["sweep", "pareto", "energy", "formats", "ops", "scalesim", "trace", "quant", "presets", "layers", "Array", "Plan", "Result", "QTensor", "MAC", "FloatAcc", "IntAcc", "FixedAcc",
           "BlockFMA", "accumulate"]
