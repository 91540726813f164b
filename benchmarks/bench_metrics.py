"""Cost of Result.metrics (issue 16): Array.gemm with the default metrics against the same
call with metrics=False, and both against numpy float32 matmul on the same shape, measured in
one process, one BLAS thread, best of several interleaved runs.
Usage: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 \
       python benchmarks/bench_metrics.py [--quick]"""
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's accel_sim

import numpy as np  # noqa: E402

import accel_sim as acs  # noqa: E402
from _machine import blas_kernel, describe  # noqa: E402


def operands(mac, a, b, headroom):
    """Per-tensor quantized operands; with headroom scaled to 1/16 of the format's range, so
    that a narrow accumulator (fp16: max 65504 < 448^2) does not overflow."""
    if not headroom:
        return a, b
    return tuple(acs.quant.quantize(x, f, scale=np.float32(np.abs(x).max() * 16 / f.max)) for x, f in
                 ((a, mac.a), (b, mac.b)))


CASES = [  # label, MAC, operands scaled to 1/16 of the range (QTensors) or floats
    ("e4m3fn -> fp32", acs.MAC("e4m3fn", "e4m3fn", "fp32"), False),
    ("int8 -> int32", acs.MAC("int8", "int8", "int32"), False),
    ("e4m3fn -> FloatAcc(5,10), 1/16 range", acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(5, 10)), True),
]


def best_ratio(fns, reps):
    """Best time of each function over interleaved runs (load on the machine hits them
    alike), as ratios to the first."""
    best = {key: float("inf") for key in fns}
    for fn in fns.values():
        fn()
    for _ in range(reps):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - t0)
    first = next(iter(best.values()))
    return {key: t / first for key, t in best.items()}


def main(sizes, reps):
    print(describe())
    print("BLAS:", blas_kernel())
    rng = np.random.default_rng(0)
    print("| GEMM (32x32 ws, 1 thread) | size | metrics off / numpy fp32 | metrics on / numpy fp32 | on / off "
          "| metrics' cost (on - off) / numpy fp32 |")
    print("|---|---|---|---|---|---|")
    floors = []
    for n in sizes:
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        floors.append((n, best_ratio({"numpy": lambda: a @ b, "dgemm": lambda: a64 @ b64}, reps)["dgemm"]))
        for label, mac, headroom in CASES:
            arr = acs.Array(32, 32, "ws", mac, threads=1)
            qa, qb = operands(mac, a, b, headroom)
            r = best_ratio({"numpy": lambda: a @ b, "off": lambda: arr.gemm(qa, qb, metrics=False),
                            "on": lambda: arr.gemm(qa, qb)}, reps)
            print(f"| {label} | {n}^3 | {r['off']:.2f}x | {r['on']:.2f}x | {r['on'] / r['off']:.2f}x "
                  f"| {r['on'] - r['off']:.2f}x |", flush=True)
    for n, ratio in floors:
        print(f"numpy float64 matmul at {n}^3 (the vs_float64 reference's dgemm): {ratio:.2f}x numpy fp32")


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    main((512,) if quick else (512, 1024), 3 if quick else 11)
