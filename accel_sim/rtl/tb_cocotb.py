"""cocotb test benches that accel_sim.rtl.cosim runs inside the simulator.

Each reads its job (a JSON file named by $ACS_COSIM_JOB) and writes its result JSON to the
job's "result" path; the caller compares bits.  Not imported outside a simulation.
"""
import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge, with_timeout


def _job():
    with open(os.environ["ACS_COSIM_JOB"]) as f:
        return json.load(f)


def _write(job, result):
    tmp = job["result"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, job["result"])


@cocotb.test()
async def pe_stream(dut):
    """Many PEs in one module, fed from a stimulus file by the Verilog wrapper (one line per
    cycle, read at the falling edge) and writing every lane's accumulator after each rising
    edge: cocotb drives the clock and waits for the end of the file."""
    job = _job()
    Clock(dut.clk, 10, unit="ns").start(start_high=False)
    await with_timeout(RisingEdge(dut.done), 10 * (job["cycles"] + 4), "ns")
    _write(job, {"done": True})


@cocotb.test()
async def array_gemm(dut):
    """The os array: reset, then A's columns and B's rows presented unskewed (one k per
    cycle, inputs changed at falling edges), then zeros until done; counts the rising edges
    from the first operand in to the one after which done is high, and reads every output."""
    job = _job()
    Clock(dut.clk, 10, unit="ns").start(start_high=False)
    dut.rst.value, dut.in_valid.value, dut.in_last.value, dut.a_in.value, dut.b_in.value = 1, 0, 0, 0, 0
    await FallingEdge(dut.clk)
    await FallingEdge(dut.clk)             # one rising edge with rst high
    dut.rst.value = 0
    a_cols, b_rows = job["a_in"], job["b_in"]
    k_len, limit = len(a_cols), job["max_cycles"]
    cycles = 0
    while cycles < limit:
        k = cycles
        dut.in_valid.value = int(k < k_len)
        dut.in_last.value = int(k == k_len - 1)
        dut.a_in.value = a_cols[k] if k < k_len else 0
        dut.b_in.value = b_rows[k] if k < k_len else 0
        await FallingEdge(dut.clk)         # rising edge `cycles` has passed
        cycles += 1
        if int(dut.done.value):
            break
    _write(job, {"done": bool(int(dut.done.value)), "cycles": cycles,
                 "acc_flat": format(dut.acc_flat.value.to_unsigned(), "x")})
