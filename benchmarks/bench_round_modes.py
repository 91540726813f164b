"""Speed of the vector kernel for FloatAcc's rna, rto and sr roundings (issue 16): bit-accurate
GEMMs on a 32x32 ws array, one thread, metrics off, as ratios to numpy float32 matmul with one
BLAS thread, measured in the same process right next to each case (best of several).
Usage: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 python benchmarks/bench_round_modes.py"""
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402

import accel_sim as acs  # noqa: E402
from _machine import against_numpy, describe  # noqa: E402

CASES = [  # label, MAC; fp16 accumulators get operands scaled so their sums stay finite
    ("e5m2 -> FloatAcc(5,10,'sr')", acs.MAC("e5m2", "e5m2", acs.FloatAcc(5, 10, "sr"))),
    ("e4m3fn -> FloatAcc(8,23,'rna')", acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(8, 23, "rna"))),
    ("e4m3fn -> FloatAcc(8,23,'rto')", acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(8, 23, "rto"))),
    ("e4m3fn -> FloatAcc(8,7,'sr')", acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(8, 7, "sr"))),
    ("e4m3fn -> FloatAcc(5,10) rne", acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(5, 10))),
]


def operands(mac, a, b):
    if mac.acc.exp_bits == 5:
        return tuple(acs.quant.quantize(x, f, scale=np.float32(np.abs(x).max() / 8)) for x, f in ((a, mac.a), (b, mac.b)))
    return acs.quant.quantize(a, mac.a), acs.quant.quantize(b, mac.b)


def main(sizes=(512, 1024), reps=3):
    rng = np.random.default_rng(0)
    print(f"machine: {describe()}; load average {os.getloadavg()[0]:.1f}\n")
    print("| GEMM (32x32 ws array, 1 thread, metrics off) | size | accel_sim | numpy fp32 | ratio |")
    print("|---|---|---|---|---|")
    for n in sizes:
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        for label, mac in CASES:
            qa, qb = operands(mac, a, b)
            arr = acs.Array(32, 32, "ws", mac, threads=1)
            t, t_np = against_numpy(lambda: arr.gemm(qa, qb, metrics=False), a, b, reps, reps)
            print(f"| {label} | {n}^3 | {t * 1e3:.1f} ms | {t_np * 1e3:.2f} ms | {t / t_np:.1f}x |", flush=True)


if __name__ == "__main__":
    main((256,) if "--quick" in sys.argv else (512, 1024))
