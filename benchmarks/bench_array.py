"""The array: plan_gemm over every ResNet-18 layer (224x224, batch 1, 128x128 ws), against
SCALE-Sim's 173 s for that network measured on this kind of machine (issue 4), and a
bit-accurate 512^3 e4m3fn -> fp32 gemm against numpy float32 matmul with one BLAS thread in
the same process.  Usage: python benchmarks/bench_array.py"""
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402

import accel_sim as acs  # noqa: E402
from _machine import describe  # noqa: E402

SCALESIM_RESNET18_S = 173.0


def resnet18_gemms():
    """(name, M, N, K) of ResNet-18's convolutions and classifier at 224x224, batch 1."""
    layers = [("conv1", 112 * 112, 64, 3 * 7 * 7)]
    size, cin = 56, 64
    for stage, cout in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            out = size // stride
            layers.append((f"layer{stage}.{block}.conv1", out * out, cout, cin * 9))
            layers.append((f"layer{stage}.{block}.conv2", out * out, cout, cout * 9))
            if stride == 2:
                layers.append((f"layer{stage}.{block}.downsample", out * out, cout, cin))
            size, cin = out, cout
    layers.append(("fc", 1, 1000, 512))
    return layers


def main():
    print(f"machine: {describe()}\n")
    arr = acs.Array(128, 128, "ws", acs.MAC("int8", "int8", "int32"))
    layers = resnet18_gemms()
    arr.plan_gemm(64, 64, 64)
    t0 = time.perf_counter()
    plans = [arr.plan_gemm(m, n, k) for _, m, n, k in layers]
    elapsed = time.perf_counter() - t0
    total = sum(p.cycles for p in plans)
    print(f"plan_gemm, ResNet-18 ({len(layers)} layers, 128x128 ws): {elapsed * 1e3:.1f} ms, "
          f"{total} cycles in all; SCALE-Sim: {SCALESIM_RESNET18_S:.0f} s "
          f"-> {SCALESIM_RESNET18_S / elapsed:,.0f}x faster")

    rng = np.random.default_rng(0)
    a = rng.standard_normal((512, 512)).astype(np.float32)
    b = rng.standard_normal((512, 512)).astype(np.float32)
    a @ b
    t0 = time.perf_counter()
    a @ b
    t_np = time.perf_counter() - t0
    mac = acs.MAC("e4m3fn", "e4m3fn", "fp32")
    qa, qb = acs.quant.quantize(a, "e4m3fn"), acs.quant.quantize(b, "e4m3fn")
    for df in ("os", "ws"):
        t0 = time.perf_counter()
        acs.Array(128, 128, df, mac).gemm(qa, qb)
        t_acs = time.perf_counter() - t0
        print(f"bit-accurate gemm 512^3 e4m3fn->fp32, 128x128 {df}: {t_acs:.2f} s; numpy float32 matmul "
              f"{t_np * 1e3:.1f} ms -> {t_acs / t_np:.0f}x numpy")


if __name__ == "__main__":
    main()
