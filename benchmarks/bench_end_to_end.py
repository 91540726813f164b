"""End to end, as a user runs it (issue 16): a full replay of traces/minilm_l6.npz on the demo's
32x32 ws array for every configuration the demo sweeps, one at a time in this process (one engine
thread), and `accel-sim demo` itself (its default process pool) in a fresh process.
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 python benchmarks/bench_end_to_end.py"""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))

import accel_sim as acs  # noqa: E402
from _machine import blas_kernel, describe  # noqa: E402
from accel_sim.cli import DEMO_GRIDS  # noqa: E402
from accel_sim.sweep import expand_grid, run_config  # noqa: E402

TRACE = Path(__file__).resolve().parent.parent / "traces" / "minilm_l6.npz"


def replay_table():
    trace = acs.trace.load(TRACE)
    print("| configuration (MiniLM-L6 layer 0, full replay) | seconds |")
    print("|---|---|")
    total = 0.0
    for grid in DEMO_GRIDS:
        configs, _ = expand_grid({**grid, "array": ["32x32"], "dataflow": ["ws"]})
        for cfg in configs:
            t0 = time.perf_counter()
            macs = run_config(trace, cfg, trace_dir=TRACE.parent)["macs"]
            t = time.perf_counter() - t0
            total += t
            print(f"| {cfg['a']} {cfg['scale_a']}/{cfg['scale']} -> {cfg['acc']} | {t:.2f} |", flush=True)
    print(f"| all, one after another ({macs / 1e6:.0f} M MACs each) | {total:.1f} |")


def demo_seconds():
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "accel_sim.cli", "demo", "--out", out], check=True,
                       capture_output=True, text=True)
        return time.perf_counter() - t0


def main():
    print(f"machine: {describe()}")
    print(f"numpy's BLAS: {blas_kernel()}\n")
    replay_table()
    print(f"\naccel-sim demo (process pool, as a user runs it): {demo_seconds():.1f} s wall")


if __name__ == "__main__":
    main()
