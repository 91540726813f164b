"""accel_sim: a bit-accurate, cycle-counted simulator of 8-bit multiply-accumulate accelerators."""
from accel_sim import energy, formats, layers, ops, plot, presets, quant, rtl, scalesim, trace
from accel_sim.array import Array, Plan, Result
from accel_sim.mac import MAC, BlockFMA, FixedAcc, FloatAcc, IntAcc, Quire, accumulate
from accel_sim.overflow import AccumulatorOverflowWarning
from accel_sim.quant import QTensor
from accel_sim.sweep import pareto, sweep

from accel_sim._version import __version__
__all__ = ["formats", "quant", "QTensor", "MAC", "FloatAcc", "IntAcc", "FixedAcc", "BlockFMA", "Quire", "accumulate",
           "presets", "Array", "Plan", "Result", "layers", "ops", "energy", "trace", "scalesim", "sweep",
           "pareto", "plot", "AccumulatorOverflowWarning"]
