"""Speed and scale (issue 8): bit-accurate GEMMs as ratios to numpy float32 matmul with one
BLAS thread on the same shape, measured in one run, single thread unless stated; and the peak
memory of a 2048^3 GEMM (in a fresh process, so earlier peaks do not hide it).
Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/bench_speed.py [--quick]"""
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))

import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402

import accel_sim as acs  # noqa: E402
from _machine import describe  # noqa: E402
from bench_array import resnet18_gemms  # noqa: E402
from bench_mac import reference_steps_per_second  # noqa: E402


def best_of(fn, reps=3):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def operands(mac, a, b, headroom):
    """Per-tensor quantized operands; with headroom, scaled to 1/16 of the format's range so
    that a narrow accumulator (fp16: max 65504 < 448^2) does not overflow."""
    if not headroom:
        return acs.quant.quantize(a, mac.a), acs.quant.quantize(b, mac.b)
    return tuple(acs.quant.quantize(x, f, scale=np.float32(np.abs(x).max() * 16 / f.max)) for x, f in
                 ((a, mac.a), (b, mac.b)))


CASES = [  # label, MAC, dataflow, target ratio (None: FYI), headroom
    ("e4m3fn -> fp32, os", acs.MAC("e4m3fn", "e4m3fn", "fp32"), "os", 5, False),
    ("e4m3fn -> fp32, ws", acs.MAC("e4m3fn", "e4m3fn", "fp32"), "ws", 5, False),
    ("e4m3fn -> FloatAcc(5,10) rne, ws", acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(5, 10)), "ws", 20, True),
    ("h100 e4m3 tensor core, ws", acs.presets.tensor_core("h100", "e4m3"), "ws", 20, False),
    ("int8 -> int32, ws", acs.MAC("int8", "int8", "int32"), "ws", 2, False),
    ("int8 -> IntAcc(32, saturate), ws", acs.MAC("int8", "int8", acs.IntAcc(32, "saturate")), "ws", None, False),
    ("posit8 -> fp32, ws", acs.MAC("posit8", "posit8", "fp32"), "ws", None, False),
    ("e4m3fn -> bf16 rne (checked sums), ws", acs.MAC("e4m3fn", "e4m3fn", "bf16"), "ws", None, False),
    ("e4m3fn -> fp32 sr (general path), ws", acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(8, 23, "sr")), "ws", None, False),
]


def speed_table(sizes):
    rng = np.random.default_rng(0)
    print("| GEMM (128x128 array, 1 thread) | size | accel_sim | numpy fp32 | ratio | target |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        t_np = best_of(lambda: a @ b)
        for label, mac, df, target, headroom in CASES:
            slow = "general" in label
            if slow and n > 512:
                continue
            qa, qb = operands(mac, a, b, headroom)
            arr = acs.Array(128, 128, df, mac, threads=1)
            t = best_of(lambda: arr.gemm(qa, qb, metrics=False), 1 if slow else 3)
            t_np_now = best_of(lambda: a @ b)   # numpy again, next to it: the machine's state then
            ratio = t / min(t_np, t_np_now)
            goal = f"<= {target}x" if target else "FYI"
            print(f"| {label} | {n}^3 | {t * 1e3:.1f} ms | {min(t_np, t_np_now) * 1e3:.2f} ms | {ratio:.1f}x | {goal} |")
    return rng


def thread_scaling(n=1024):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    print(f"\n| 2 threads vs 1, {n}^3 ws (target >= 1.7x) | 1 thread | 2 threads | speed-up |")
    print("|---|---|---|---|")
    for label, mac, df, _, headroom in CASES[1:5]:
        qa, qb = operands(mac, a, b, headroom)
        t1 = best_of(lambda: acs.Array(128, 128, df, mac, threads=1).gemm(qa, qb, metrics=False))
        t2 = best_of(lambda: acs.Array(128, 128, df, mac, threads=2).gemm(qa, qb, metrics=False))
        print(f"| {label} | {t1 * 1e3:.1f} ms | {t2 * 1e3:.1f} ms | {t1 / t2:.2f}x |")


def memory_child(n, case, metrics):
    """In a fresh process: growth of the peak RSS over the resident set just before the GEMM,
    plus the inputs' bytes, as a ratio to inputs + outputs (codes in, acc and output out)."""
    mac = {"fp32": acs.MAC("e4m3fn", "e4m3fn", "fp32"), "int32": acs.MAC("int8", "int8", "int32"),
           "fp16": acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(5, 10)), "h100": acs.presets.tensor_core("h100", "e4m3")}[case]
    rng = np.random.default_rng(0)
    values = mac.a.decode(np.arange(256))
    good = np.flatnonzero(np.isfinite(values) & (np.abs(values) <= 1)).astype(np.uint8)

    def codes():   # row blocks: no whole-size temporaries before the measurement
        c = np.empty((n, n), np.uint8)
        for i in range(0, n, 64):
            c[i:i + 64] = good[rng.integers(0, len(good), (min(64, n - i), n))]
        return c

    qa, qb = acs.QTensor(codes(), mac.a), acs.QTensor(codes(), mac.b)
    arr = acs.Array(128, 128, "ws", mac)
    arr.gemm(acs.QTensor(qa.codes[:8], mac.a), acs.QTensor(qb.codes[:, :8], mac.b), metrics=metrics)
    page = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/statm") as f:
        before = int(f.read().split()[1]) * page
    res = arr.gemm(qa, qb, metrics=metrics)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    inputs = qa.codes.nbytes + qb.codes.nbytes
    io = inputs + res.acc.nbytes + res.output.nbytes
    print(f"{(peak - before) / 2**20:.0f} {io / 2**20:.0f} {(peak - before + inputs) / io:.2f}")


def memory_table(n=2048):
    print(f"\n| peak memory, {n}^3 GEMM, 128x128 ws | growth | inputs + outputs | (inputs + growth) / (inputs + outputs) |")
    print("|---|---|---|---|")
    for case in ("fp32", "int32", "fp16", "h100"):
        for metrics in (False, True):
            out = subprocess.run([sys.executable, __file__, "--memory-child", str(n), case, str(int(metrics))],
                                 capture_output=True, text=True, check=True).stdout.split()
            print(f"| {case}, metrics={metrics} | {out[0]} MiB | {out[1]} MiB | {out[2]}x (target <= 1.5x) |")


def main():
    quick = "--quick" in sys.argv
    print(f"machine: {describe()}\n")
    speed_table((256,) if quick else (512, 1024))
    thread_scaling(256 if quick else 1024)
    memory_table(512 if quick else 2048)
    rng = np.random.default_rng(2)
    a = rng.standard_normal((1024, 1024)).astype(np.float32)
    f8 = a.astype(ml_dtypes.float8_e4m3fn)
    t_np = best_of(lambda: a @ a)
    t8 = best_of(lambda: f8 @ f8, 1)
    print(f"\nFYI ml_dtypes float8_e4m3fn matmul 1024^3 (casts to float32, then BLAS: not bit-accurate): "
          f"{t8 * 1e3:.0f} ms = {t8 / t_np:.1f}x numpy fp32")
    arr = acs.Array(128, 128, "ws", acs.MAC("int8", "int8", "int32"))
    layers = resnet18_gemms()
    t = best_of(lambda: [arr.plan_gemm(m, n, k) for _, m, n, k in layers])
    print(f"plan_gemm of all {len(layers)} ResNet-18 layers: {t * 1e3:.1f} ms (target <= 50 ms; SCALE-Sim 173 s)")
    print(f"FYI pure-Python reference: {reference_steps_per_second():,.0f} MAC/s")
    rate = 1024 ** 3 / t_np / 1e9
    print(f"FYI one core's fp32 FMA peak is 16 per cycle (two 8-lane FMA pipes); numpy's 1024^3 fp32 matmul reached "
          f"{rate:.0f} G FMA/s, i.e. that peak at {rate / 16:.1f} GHz")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        memory_child(int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1")
    else:
        main()
