"""Block-scaled GEMMs (issue 16): OCP MX and VS-Quant against the same GEMM with their unscaled
element format (per-tensor scale) on the same 32x32 ws array, one thread, metrics off; numpy
float32 matmul with one BLAS thread measured next to each for scale.  Target: block-scaled /
unscaled <= 1.5x.
Usage: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 python benchmarks/bench_blockscale.py [--quick]"""
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # this checkout's accel_sim

import numpy as np  # noqa: E402

import accel_sim as acs  # noqa: E402
from _machine import best_of, describe  # noqa: E402
from accel_sim.quant import quantize  # noqa: E402


def best_of_pair(f, g, reps):
    """Best times of f and g run in alternation (a busy machine then slows both alike)."""
    f(), g()
    tf, tg = [], []
    for _ in range(reps):
        for fn, ts in ((f, tf), (g, tg)):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return min(tf), min(tg)


CASES = [  # label, element, MAC accumulator, scaling, scale format, target (None: FYI)
    ("MXFP8 e4m3 (e8m0 / 32) -> fp32", "e4m3fn", "fp32", "block", "e8m0", 1.5),
    ("VSQ int4 (uint4 / 16, fp32 per row) -> int32", "int4", "int32", "vector", "uint4", 1.5),
    ("MXFP4 e2m1 (e8m0 / 32) -> fp32", "e2m1", "fp32", "block", "e8m0", None),
    ("MXFP6 e3m2 (e8m0 / 32) -> fp32", "e3m2", "fp32", "block", "e8m0", None),
    ("MXFP8 e4m3 (e8m0 / 32) -> bf16 PE sums (acs_gemm per block)", "e4m3fn", "bf16", "block", "e8m0", None),
]


def blockscale_table(sizes=(512, 1024), rows=32, cols=32, dataflow="ws"):
    """Block-scaled vs unscaled GEMM of the same element format; prints one row per case and size."""
    rng = np.random.default_rng(0)
    print(f"| GEMM ({rows}x{cols} {dataflow}, 1 thread, metrics off) | size | block-scaled | unscaled | "
          "ratio | vs numpy fp32 | numpy fp32 | target |")
    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        t_np = best_of(lambda: a @ b)
        for label, elem, acc, scaling, scale_format, target in CASES:
            mac = acs.MAC(elem, elem, acc)
            arr = acs.Array(rows, cols, dataflow, mac, threads=1)
            qa = quantize(a, elem, scale=scaling, axis=1, scale_format=scale_format)
            qb = quantize(b, elem, scale=scaling, axis=0, scale_format=scale_format)
            pa, pb = quantize(a, elem), quantize(b, elem)
            t_blk, t_plain = best_of_pair(lambda: arr.gemm(qa, qb, metrics=False),
                                          lambda: arr.gemm(pa, pb, metrics=False), (9 if target else 3) * 512 // n)
            t_np = min(t_np, best_of(lambda: a @ b))   # numpy again, next to it: the machine's state then
            goal = f"<= {target}x" if target else "FYI"
            print(f"| {label} | {n}^3 | {t_blk * 1e3:.1f} ms | {t_plain * 1e3:.1f} ms | {t_blk / t_plain:.2f}x | "
                  f"{t_blk / t_np:.1f}x | {t_np * 1e3:.2f} ms | {goal} |", flush=True)


def main():
    print(f"machine: {describe()}\n")
    blockscale_table((256,) if "--quick" in sys.argv else (512, 1024))


if __name__ == "__main__":
    main()
