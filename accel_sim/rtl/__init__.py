"""The bridge to hardware: Verilog generated from MAC descriptions (verilog.py, pe_float.py),
co-simulation of that RTL against the C engine (cosim.py), golden vectors and gate counts.
See docs/rtl.md."""
from accel_sim.rtl.golden import acc_bits, acc_values, vectors

__all__ = ["vectors", "acc_bits", "acc_values"]
