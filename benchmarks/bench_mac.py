"""MAC steps per second, single thread, of acs.accumulate for several accumulators, and of the
pure-Python reference model.  Usage: python benchmarks/bench_mac.py"""
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402

import accel_sim as acs  # noqa: E402
from accel_sim import reference  # noqa: E402
from accel_sim._native import fast_paths  # noqa: E402
from _machine import describe  # noqa: E402

ROWS, K = 4096, 1024


def steps_per_second(mac, fmt, rows=ROWS, k=K):
    rng = np.random.default_rng(0)
    a = fmt.encode((rng.standard_normal((rows, k)) * 2).astype(np.float32), saturate=True)
    b = fmt.encode((rng.standard_normal((rows, k)) * 2).astype(np.float32), saturate=True)
    acs.accumulate(a[:8], b[:8], mac)
    t0 = time.perf_counter()
    acs.accumulate(a, b, mac)
    return rows * k / (time.perf_counter() - t0)


def reference_steps_per_second(k=256, rows=20):
    f = acs.formats.get("e4m3fn")
    rng = np.random.default_rng(0)
    vals = f.decode(f.encode(rng.standard_normal((rows, k)), saturate=True))
    t0 = time.perf_counter()
    for r in range(rows):
        reference.float_acc(vals[r].tolist(), vals[r].tolist(), exp_bits=8, man_bits=23)
    return rows * k / (time.perf_counter() - t0)


def main():
    e4m3 = acs.formats.get("e4m3fn")
    cases = [
        ("e4m3fn x e4m3fn -> FloatAcc fp32 (8,23) rne", acs.MAC("e4m3fn", "e4m3fn", "fp32"), e4m3),
        ("e4m3fn x e4m3fn -> FloatAcc (5,10) rne", acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(5, 10)), e4m3),
        ("int8 x int8 -> IntAcc(32) wrap", acs.MAC("int8", "int8", "int32"), acs.formats.get("int8")),
        ("h100 e4m3 tensor core (BlockFMA 32 terms)", acs.presets.tensor_core("h100", "e4m3"), e4m3),
    ]
    print(f"machine: {describe()}\n")
    print(f"{ROWS} chains of {K} steps each (reference: 20 chains of 256)\n")
    print("| MAC | steps/s (millions) |")
    print("|---|---|")
    for label, mac, fmt in cases:
        print(f"| {label} | {steps_per_second(mac, fmt) / 1e6:.1f} |")
    with fast_paths(False):
        for label, mac, fmt in cases[:3:2]:
            print(f"| {label}, general path (fast paths off) | {steps_per_second(mac, fmt) / 1e6:.1f} |")
    ref = reference_steps_per_second()
    print(f"| reference.py float_acc fp32 (pure Python, Fraction) | {ref / 1e6:.4f} |")


if __name__ == "__main__":
    main()
