"""Speed of the vector kernels for FloatAcc's nearest-even and directed roundings and the
tensor-core presets (issue 16): bit-accurate GEMMs on a 32x32 ws array, one engine thread,
metrics off, as ratios to numpy float32 matmul with one BLAS thread, measured in the same
process right next to each case (best of 3).
Usage: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 python benchmarks/bench_rne_kernels.py"""
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # this checkout's accel_sim

import numpy as np  # noqa: E402

import accel_sim as acs  # noqa: E402
from _machine import best_of, describe  # noqa: E402


def scaled(f):
    """Codes of x with its largest magnitude mapped to 8 (narrow accumulators' sums stay finite)."""
    return lambda x: acs.quant.quantize(x, f, scale=np.float32(np.abs(x).max() / 8))


CASES = [  # label, MAC, how the operands are quantized
    ("e4m3fn -> FloatAcc(5,10) rne", acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(5, 10)), scaled("e4m3fn")),
    ("e4m3fn -> FloatAcc(8,7) rne", acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(8, 7)), scaled("e4m3fn")),
    ("e4m3fn -> FloatAcc(8,23,'rtz')", acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(8, 23, "rtz")), scaled("e4m3fn")),
    ("h100 e4m3 tensor core", acs.presets.tensor_core("h100", "e4m3"), scaled("e4m3fn")),
    ("a100 fp16 tensor core", acs.presets.tensor_core("a100", "fp16"), scaled("fp16")),
]


def main(sizes=(512, 1024), reps=3):
    rng = np.random.default_rng(0)
    print(f"machine: {describe()}; load average {os.getloadavg()[0]:.1f}\n")
    print("| GEMM (32x32 ws array, 1 thread, metrics off) | size | accel_sim | numpy fp32 | ratio |")
    print("|---|---|---|---|---|")
    for n in sizes:
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        for label, mac, quant in CASES:
            qa, qb = quant(a), quant(b)
            arr = acs.Array(32, 32, "ws", mac, threads=1)
            t_np = best_of(lambda: a @ b, reps)
            t = best_of(lambda: arr.gemm(qa, qb, metrics=False), reps)
            t_np = min(t_np, best_of(lambda: a @ b, reps))   # numpy again, right after it
            print(f"| {label} | {n}^3 | {t * 1e3:.1f} ms | {t_np * 1e3:.2f} ms | {t / t_np:.1f}x |", flush=True)


if __name__ == "__main__":
    main((256,) if "--quick" in sys.argv else (512, 1024))
