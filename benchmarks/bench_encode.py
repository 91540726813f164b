"""Encode throughput (values/s) against ml_dtypes' astype on the same 10^7 float32 values,
one run each after a warm-up, in one process.  Usage: python benchmarks/bench_encode.py"""
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))

import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402

import accel_sim as acs  # noqa: E402
from _machine import describe  # noqa: E402

N = 10_000_000
ORACLE = {"e4m3fn": ml_dtypes.float8_e4m3fn, "e4m3": ml_dtypes.float8_e4m3, "e5m2": ml_dtypes.float8_e5m2,
          "e4m3fnuz": ml_dtypes.float8_e4m3fnuz, "e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
          "e3m4": ml_dtypes.float8_e3m4, "bf16": ml_dtypes.bfloat16, "fp16": np.float16}


def rate(fn):
    fn()  # warm-up (and, for us, the memo table's one-time build)
    t0 = time.perf_counter()
    fn()
    return N / (time.perf_counter() - t0)


def main():
    x = (np.random.default_rng(0).standard_normal(N) * 8).astype(np.float32)
    print(f"machine: {describe()}\n")
    print("| format | ml_dtypes astype (Mvalues/s) | accel_sim rne | ratio | accel_sim rtz | accel_sim sr |")
    print("|---|---|---|---|---|---|")
    for name, dtype in ORACLE.items():
        f = acs.formats.get(name)
        theirs = rate(lambda: x.astype(dtype))
        ours = rate(lambda: f.encode(x))
        rtz = rate(lambda: f.encode(x, rounding="rtz"))
        sr = rate(lambda: f.encode(x, rounding="sr", seed=1))
        print(f"| {name} | {theirs / 1e6:.0f} | {ours / 1e6:.0f} | {ours / theirs:.2f}x | {rtz / 1e6:.0f} | {sr / 1e6:.0f} |")
    i8 = acs.formats.get("int8")
    xi = np.clip(x, -127, 127)
    ref = rate(lambda: np.clip(np.rint(xi), -128, 127).astype(np.int8))
    ours = rate(lambda: i8.encode(xi))
    print(f"| int8 (vs numpy rint+clip+astype) | {ref / 1e6:.0f} | {ours / 1e6:.0f} | {ours / ref:.2f}x | | |")


if __name__ == "__main__":
    main()
