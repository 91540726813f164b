"""accel_sim: a bit-accurate, cycle-counted simulator of 8-bit multiply-accumulate accelerators."""
from accel_sim import formats, quant
from accel_sim.quant import QTensor

__version__ = "0.1.0"
__all__ = ["formats", "quant", "QTensor"]
