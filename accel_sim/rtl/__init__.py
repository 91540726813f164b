"""The bridge to hardware: Verilog generated from MAC descriptions (verilog.py, pe_float.py),
co-simulation of that RTL against the C engine (cosim.py), golden vectors and gate counts.
See docs/rtl.md."""
