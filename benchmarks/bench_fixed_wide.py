"""FP8 operands into register accumulators (issue 16): values that are integers of up to 31
bits in units of their smallest step, through csrc/kernel_fixed.c's int32 kernels.
Bit-accurate GEMMs on a 32x32 ws array, one thread, metrics off, as ratios to numpy float32
matmul with one BLAS thread on the same shape, measured next to each other (best of 3).
Cases the fast kernels do not take (products off the register grid, operands wider than 31
bits) run the general per-step path and are reported as such, not timed at 1024^3.
Usage: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 python benchmarks/bench_fixed_wide.py"""
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # this checkout's accel_sim

import numpy as np  # noqa: E402

import accel_sim as acs  # noqa: E402
from _machine import best_of, describe  # noqa: E402
from bench_fixed import case_row  # noqa: E402

CASES = [  # label, MAC, target ratio
    ("e4m3fn -> FixedAcc(40,40)", acs.MAC("e4m3fn", "e4m3fn", acs.FixedAcc(40, 40)), 5),
    ("e4m3fn -> FixedAcc(20,18,wrap)", acs.MAC("e4m3fn", "e4m3fn", acs.FixedAcc(20, 18, overflow="wrap")), 5),
    ("e5m2 x e4m3fn -> FixedAcc(40,40)", acs.MAC("e5m2", "e4m3fn", acs.FixedAcc(40, 40)), 5),
    ("e5m2 -> FixedAcc(60,60)", acs.MAC("e5m2", "e5m2", acs.FixedAcc(60, 60)), 5),
    ("e4m3fn -> FixedAcc(24,9,saturate)", acs.MAC("e4m3fn", "e4m3fn", acs.FixedAcc(24, 9, overflow="saturate")), 5),
    ("e4m3fn -> FixedAcc(24,18,saturate)", acs.MAC("e4m3fn", "e4m3fn", acs.FixedAcc(24, 18, overflow="saturate")), 5),
]


def is_fast(mac, rows, cols, dataflow, rng):
    """Whether a small GEMM runs far faster than with the fast paths off (the general path)."""
    from accel_sim._native import fast_paths
    a = acs.quant.quantize(rng.standard_normal((96, 96)).astype(np.float32), mac.a)
    b = acs.quant.quantize(rng.standard_normal((96, 96)).astype(np.float32), mac.b)
    arr = acs.Array(rows, cols, dataflow, mac, threads=1)
    t = best_of(lambda: arr.gemm(a, b, metrics=False), 2)
    with fast_paths(False):
        t_general = best_of(lambda: arr.gemm(a, b, metrics=False), 1)
    return t * 20 < t_general


def wide_table(sizes=(512, 1024), rows=32, cols=32, dataflow="ws"):
    """Prints one markdown row per case and size; returns {(label, n): ratio or None}."""
    rng = np.random.default_rng(0)
    fast = {label: is_fast(mac, rows, cols, dataflow, rng) for label, mac, _ in CASES}
    ratios = {}
    print(f"| GEMM ({rows}x{cols} {dataflow} array, 1 thread) | size | accel_sim | numpy fp32 | ratio | target |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        for label, mac, target in CASES:
            if not fast[label]:
                ratios[(label, n)] = None
                print(f"| {label} | {n}^3 | general path (not a fast kernel) | | | |")
                continue
            ratios[(label, n)] = case_row(label, mac, target, a, b, rows, cols, dataflow)
    return ratios


if __name__ == "__main__":
    print(describe())
    wide_table()
