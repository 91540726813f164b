"""Register accumulators (issue 16): FixedAcc / Kulisch, saturating and narrow IntAcc, the posit
quire, through csrc/kernel_fixed.c.  Bit-accurate GEMMs on a 32x32 ws array, one thread,
metrics off, as ratios to numpy float32 matmul with one BLAS thread on the same shape, measured
next to each other in one run (best of several).
Usage: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 python benchmarks/bench_fixed.py"""
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402

import accel_sim as acs  # noqa: E402
from _machine import against_numpy, describe  # noqa: E402

CASES = [  # label, MAC, target ratio
    ("int8 -> FixedAcc(40,40) (Kulisch)", acs.MAC("int8", "int8", acs.FixedAcc(40, 40)), 5),
    ("int8 -> IntAcc(24, saturate)", acs.MAC("int8", "int8", acs.IntAcc(24, "saturate")), 5),
    ("int8 -> IntAcc(16)", acs.MAC("int8", "int8", acs.IntAcc(16)), 5),
    ("posit8 -> Quire(posit8, readout=posit16)", acs.MAC("posit8", "posit8", acs.Quire("posit8", readout="posit16")), 5),
]


def case_row(label, mac, target, a, b, rows, cols, dataflow, reps=3):
    """One case quantized per tensor and timed against numpy on a and b; prints its markdown
    row and returns the ratio."""
    n = a.shape[0]
    qa, qb = acs.quant.quantize(a, mac.a), acs.quant.quantize(b, mac.b)
    arr = acs.Array(rows, cols, dataflow, mac, threads=1)
    t, t_np = against_numpy(lambda: arr.gemm(qa, qb, metrics=False), a, b, reps)
    print(f"| {label} | {n}^3 | {t * 1e3:.1f} ms | {t_np * 1e3:.2f} ms | {t / t_np:.1f}x | <= {target}x |")
    return t / t_np


def fixed_table(sizes=(512, 1024), rows=32, cols=32, dataflow="ws"):
    """Prints one markdown row per case and size; returns {(label, n): ratio}."""
    rng = np.random.default_rng(0)
    ratios = {}
    print(f"| GEMM ({rows}x{cols} {dataflow} array, 1 thread) | size | accel_sim | numpy fp32 | ratio | target |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        for label, mac, target in CASES:
            ratios[(label, n)] = case_row(label, mac, target, a, b, rows, cols, dataflow, 3 if n > 512 else 5)
    return ratios


if __name__ == "__main__":
    print(describe())
    fixed_table()
