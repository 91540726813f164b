"""Speed of every configuration (issues 8 and 16): bit-accurate GEMMs as ratios to numpy float32
matmul with one BLAS thread on the same shape, measured in one run on a 32x32 weight-stationary
array, one engine thread, metrics off unless a row says otherwise; the default gemm() (metrics on)
against its metrics-off call; block-scaled GEMMs against their unscaled element format; two
threads against one; and the peak memory of a 2048^3 GEMM (in a fresh process each).

The baseline must be numpy with the machine's best BLAS kernel: run with OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE unset (they pin an older, slower kernel in this environment), in the command
only; the kernel numpy ran is printed (threadpoolctl):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 python benchmarks/bench_speed.py [--quick]"""
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # this checkout's accel_sim

import numpy as np  # noqa: E402

import accel_sim as acs  # noqa: E402
from _machine import best_of, blas_kernel, describe  # noqa: E402
from bench_array import resnet18_gemms  # noqa: E402

ARRAY = (32, 32, "ws")
SLOW_SECONDS = 2.0     # a case slower than this at 512^3 is not run at 1024^3


def timed_once(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def amax_scaled(x, f, amax):
    """Per-tensor codes of x with its largest magnitude mapped to amax (headroom for narrow
    accumulators: full-range E4M3 products, 448^2, already overflow fp16)."""
    return acs.quant.quantize(x, f, scale=np.float32(np.abs(x).max() / amax))


# label, MAC, how the operands are quantized, target ratio (None: FYI)
def cases():
    fp16, bf16 = acs.FloatAcc(5, 10), acs.FloatAcc(8, 7)
    tensor = lambda f: (lambda x, ax: acs.quant.quantize(x, f))            # noqa: E731
    narrow = lambda f, amax: (lambda x, ax: amax_scaled(x, f, amax))       # noqa: E731
    unscaled = lambda f: (lambda x, ax: acs.quant.quantize(x, f, scale="none"))   # noqa: E731
    block = lambda n, f, mode, man=23: acs.MAC("e4m3fn", "e4m3fn", acs.BlockFMA(n, f, acs.FloatAcc(8, man, mode)))  # noqa: E731
    return [
        ("e4m3fn -> fp32", acs.MAC("e4m3fn", "e4m3fn", "fp32"), tensor("e4m3fn"), 2),
        ("int8 -> int32", acs.MAC("int8", "int8", "int32"), tensor("int8"), 2),
        ("e4m3fn -> FloatAcc(5,10) rne", acs.MAC("e4m3fn", "e4m3fn", fp16), narrow("e4m3fn", 8), 8),
        ("e4m3fn -> FloatAcc(8,7) rne", acs.MAC("e4m3fn", "e4m3fn", bf16), tensor("e4m3fn"), 8),
        ("h100 e4m3 tensor core", acs.presets.tensor_core("h100", "e4m3"), tensor("e4m3fn"), 8),
        ("ada e4m3 tensor core", acs.presets.tensor_core("ada", "e4m3"), tensor("e4m3fn"), 8),
        ("a100 fp16 tensor core", acs.presets.tensor_core("a100", "fp16"), narrow("fp16", 8), 8),
        ("e4m3fn -> FloatAcc(8,23) rtz", acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(8, 23, "rtz")), tensor("e4m3fn"), 8),
        ("e5m2 -> FloatAcc(8,7) rne", acs.MAC("e5m2", "e5m2", bf16), tensor("e5m2"), 8),
        ("a100 bf16 tensor core", acs.presets.tensor_core("a100", "bf16"), unscaled("bf16"), 8),
        ("h100 fp16 tensor core", acs.presets.tensor_core("h100", "fp16"), narrow("fp16", 8), 8),
        ("h100 bf16 tensor core", acs.presets.tensor_core("h100", "bf16"), unscaled("bf16"), 8),
        ("h100 e5m2 tensor core", acs.presets.tensor_core("h100", "e5m2"), tensor("e5m2"), 8),
        ("ada e5m2 tensor core", acs.presets.tensor_core("ada", "e5m2"), tensor("e5m2"), 8),
        ("h100 e4m3 tensor core, fp16 out", acs.presets.tensor_core("h100", "e4m3", "fp16"), narrow("e4m3fn", 8), 8),
        ("e4m3fn -> BlockFMA(32, 25, fp32 rdn)", block(32, 25, "rdn"), tensor("e4m3fn"), 8),
        ("e4m3fn -> BlockFMA(32, 25, fp32 rna)", block(32, 25, "rna"), tensor("e4m3fn"), 10),
        ("e4m3fn -> BlockFMA(32, 25, fp32 rto)", block(32, 25, "rto"), tensor("e4m3fn"), 10),
        ("e4m3fn -> BlockFMA(32, 25, fp32 sr)", block(32, 25, "sr"), tensor("e4m3fn"), 10),
        ("e4m3fn -> BlockFMA(16, 13, FloatAcc(8,13) sr)", block(16, 13, "sr", 13), tensor("e4m3fn"), 10),
        ("e5m2 -> FloatAcc(5,10) sr", acs.MAC("e5m2", "e5m2", acs.FloatAcc(5, 10, "sr")), narrow("e5m2", 8), 10),
        ("e4m3fn -> FloatAcc(8,7) sr", acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(8, 7, "sr")), tensor("e4m3fn"), 10),
        ("e4m3fn -> fp32 rna", acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(8, 23, "rna")), tensor("e4m3fn"), 10),
        ("e4m3fn -> fp32 rto", acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(8, 23, "rto")), tensor("e4m3fn"), 10),
        ("int8 -> IntAcc(24, saturate)", acs.MAC("int8", "int8", acs.IntAcc(24, "saturate")), tensor("int8"), 5),
        ("int8 -> IntAcc(16) wrap", acs.MAC("int8", "int8", acs.IntAcc(16)), tensor("int8"), 5),
        ("int8 -> FixedAcc(24, 8)", acs.MAC("int8", "int8", acs.FixedAcc(24, 8)), tensor("int8"), 5),
        ("e4m3fn -> FixedAcc(40, 40) (Kulisch)", acs.MAC("e4m3fn", "e4m3fn", acs.FixedAcc(40, 40)), tensor("e4m3fn"), 5),
        ("e4m3fn -> FixedAcc(24, 4) rne (products rounded onto 2^-4)", acs.MAC("e4m3fn", "e4m3fn", acs.FixedAcc(24, 4)),
         tensor("e4m3fn"), 5),
        ("int8 -> FixedAcc(30, -3) wrap (products rounded to multiples of 8)",
         acs.MAC("int8", "int8", acs.FixedAcc(30, -3, overflow="wrap")), tensor("int8"), 5),
        ("e4m3fn x int8 -> FixedAcc(9, 2) rtz wrap", acs.MAC("e4m3fn", "int8", acs.FixedAcc(9, 2, "rtz", "wrap")),
         lambda x, ax: acs.quant.quantize(x, "e4m3fn" if ax else "int8"), 5),
        ("e4m3fn -> FixedAcc(24, 4) rna", acs.MAC("e4m3fn", "e4m3fn", acs.FixedAcc(24, 4, "rna")), tensor("e4m3fn"), 5),
        ("e4m3fn -> FixedAcc(24, 4) rto", acs.MAC("e4m3fn", "e4m3fn", acs.FixedAcc(24, 4, "rto")), tensor("e4m3fn"), 5),
        ("e4m3fn -> FixedAcc(24, 4) sr", acs.MAC("e4m3fn", "e4m3fn", acs.FixedAcc(24, 4, "sr")), tensor("e4m3fn"), None),
        ("e5m2 -> FixedAcc(40, 40) (Kulisch)", acs.MAC("e5m2", "e5m2", acs.FixedAcc(40, 40)), tensor("e5m2"), 5),
        ("e5m2 x e4m3fn -> FixedAcc(60, 60)", acs.MAC("e5m2", "e4m3fn", acs.FixedAcc(60, 60)),
         lambda x, ax: acs.quant.quantize(x, "e5m2" if ax == 1 else "e4m3fn"), 5),
        ("posit8es2 -> quire (128 bits)", acs.MAC("posit8es2", "posit8es2", acs.Quire("posit8es2")),
         lambda x, ax: acs.quant.quantize(x, "posit8es2", scale="none"), 5),
        ("posit8 -> quire (posit16 readout)", acs.MAC("posit8", "posit8", acs.Quire("posit8", readout="posit16")),
         lambda x, ax: acs.quant.quantize(x, "posit8", scale="none"), 5),
        ("bf16 -> fp32", acs.MAC("bf16", "bf16", "fp32"), lambda x, ax: acs.quant.quantize(x, "bf16", scale="none"), None),
    ]


def block_cases():
    """Block-scaled GEMMs and the unscaled element format they are compared with."""
    return [
        ("MXFP8 e4m3 (E8M0 per 32) -> fp32", acs.MAC("e4m3fn", "e4m3fn", "fp32"),
         lambda x, ax: acs.quant.quantize(x, "e4m3fn", scale="block", axis=ax)),
        ("MXFP4 e2m1 (E8M0 per 32) -> fp32", acs.MAC("e2m1", "e2m1", "fp32"),
         lambda x, ax: acs.quant.quantize(x, "e2m1", scale="block", axis=ax)),
        ("VSQ int4 (uint4 per 16) -> int32", acs.MAC("int4", "int4", "int32"),
         lambda x, ax: acs.quant.quantize(x, "int4", scale="vector", scale_format="uint4", axis=ax)),
    ]


def gemm_time(mac, qa, qb, metrics=False, threads=1, slow_ok=True):
    arr = acs.Array(*ARRAY, mac, threads=threads)
    first = timed_once(lambda: arr.gemm(qa, qb, metrics=metrics))
    if first > SLOW_SECONDS:
        return first
    return best_of(lambda: arr.gemm(qa, qb, metrics=metrics))


def speed_table(sizes):
    rng = np.random.default_rng(0)
    print(f"| GEMM ({ARRAY[0]}x{ARRAY[1]} {ARRAY[2]}, 1 thread, metrics off) | size | accel_sim | numpy fp32 | ratio | target |")
    print("|---|---|---|---|---|---|")
    slow = set()
    for n in sizes:
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        for label, mac, quant, target in cases():
            if label in slow:
                print(f"| {label} | {n}^3 | not run (over {SLOW_SECONDS:.0f} s at 512^3) | | | |")
                continue
            qa, qb = quant(a, 1), quant(b, 0)
            t = gemm_time(mac, qa, qb)
            t_np = best_of(lambda: a @ b)   # next to it: the machine's state then
            if t > SLOW_SECONDS:
                slow.add(label)
            goal = f"<= {target}x" if target else "FYI"
            print(f"| {label} | {n}^3 | {t * 1e3:.1f} ms | {t_np * 1e3:.2f} ms | {t / t_np:.1f}x | {goal} |")


def metrics_table(sizes):
    rng = np.random.default_rng(1)
    print("\n| default gemm() (metrics on) vs metrics=False | size | metrics off | metrics on | ratio | target |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        for label, mac, quant, _ in cases()[:3]:
            qa, qb = quant(a, 1), quant(b, 0)
            off, on = gemm_time(mac, qa, qb), gemm_time(mac, qa, qb, metrics=True)
            print(f"| {label} | {n}^3 | {off * 1e3:.1f} ms | {on * 1e3:.1f} ms | {on / off:.2f}x | <= 1.3x |")


def block_table(sizes):
    rng = np.random.default_rng(2)
    print("\n| block-scaled GEMM vs its element format per tensor | size | block-scaled | per tensor | ratio | numpy fp32 | "
          "ratio to numpy | target |")
    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        for label, mac, quant in block_cases():
            tb = gemm_time(mac, quant(a, 1), quant(b, 0))
            tt = gemm_time(mac, acs.quant.quantize(a, mac.a), acs.quant.quantize(b, mac.b))
            t_np = best_of(lambda: a @ b)
            print(f"| {label} | {n}^3 | {tb * 1e3:.1f} ms | {tt * 1e3:.1f} ms | {tb / tt:.2f}x | {t_np * 1e3:.2f} ms | "
                  f"{tb / t_np:.1f}x | <= 1.5x |")


def thread_scaling(n):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    print(f"\n| 2 threads vs 1, {n}^3 | 1 thread | 2 threads | speed-up | target |")
    print("|---|---|---|---|---|")
    for label, mac, quant, _ in cases():
        qa, qb = quant(a, 1), quant(b, 0)
        t1 = gemm_time(mac, qa, qb, threads=1)
        if t1 > 4 * SLOW_SECONDS:
            print(f"| {label} | {t1 * 1e3:.0f} ms | not run | | >= 1.8x |")
            continue
        t2 = gemm_time(mac, qa, qb, threads=2)
        print(f"| {label} | {t1 * 1e3:.1f} ms | {t2 * 1e3:.1f} ms | {t1 / t2:.2f}x | >= 1.8x |")


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


def memory_table(n):
    print(f"\n| peak memory, {n}^3 GEMM, 128x128 ws | growth | inputs + outputs | (inputs + growth) / (inputs + outputs) |")
    print("|---|---|---|---|")
    for case in ("fp32", "int32", "fp16", "h100"):
        for metrics in (False, True):
            out = subprocess.run([sys.executable, __file__, "--memory-child", str(n), case, str(int(metrics))],
                                 capture_output=True, text=True, check=True).stdout.split()
            print(f"| {case}, metrics={metrics} | {out[0]} MiB | {out[1]} MiB | {out[2]}x (target <= 1.5x) |")


def main():
    quick = "--quick" in sys.argv
    sizes = (256,) if quick else (512, 1024)
    print(f"machine: {describe()}")
    print(f"numpy's BLAS: {blas_kernel()}\n")
    speed_table(sizes)
    metrics_table(sizes)
    block_table(sizes)
    thread_scaling(256 if quick else 1024)
    memory_table(512 if quick else 2048)
    arr = acs.Array(128, 128, "ws", acs.MAC("int8", "int8", "int32"))
    layers = resnet18_gemms()
    t = best_of(lambda: [arr.plan_gemm(m, n, k) for _, m, n, k in layers])
    print(f"\nplan_gemm of all {len(layers)} ResNet-18 layers: {t * 1e3:.1f} ms (SCALE-Sim 173 s)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        memory_child(int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1")
    else:
        main()
