"""The BlockFMA (tensor-core) vector kernels: the AVX-512 one (csrc/kernel_block.c, float32 /
int32 lanes, taken where the CPU has AVX-512 and the MAC fits it), its AVX2 twin, the portable
C kernel and the general block step, bit for bit (float64 patterns: signed zeros, NaN), on
random codes of every kind, odd shapes, os/ws/is and 1-3 threads.  On a CPU without AVX-512
the first two are the same kernel and the comparison still holds."""
import numpy as np
import pytest

import accel_sim as acs
from accel_sim._native import fast_paths, lib, vector_isa


def raw(x):
    return np.ascontiguousarray(np.asarray(x, np.float64)).view(np.uint64)


def all_kernels_agree(mac, A, B, dataflow, rows, cols, threads=(1, 2, 3)):
    """The GEMM's accumulators by every kernel and the general step, all the same; returns them."""
    qa, qb = acs.QTensor(A, mac.a), acs.QTensor(B, mac.b)

    def run(t=1):
        return acs.Array(rows, cols, dataflow, mac, threads=t).gemm(qa, qb, metrics=False).acc

    with fast_paths(False):
        want = run()
    got = {f"{t} threads": run(t) for t in threads}
    previous = lib.acs_set_vector_isa(2)   # AVX2 where the CPU also has AVX-512
    try:
        got["avx2"] = run()
    finally:
        lib.acs_set_vector_isa(previous)
    with vector_isa(False):
        got["portable"] = run()
    for name, acc in got.items():
        bad = np.flatnonzero(raw(acc) != raw(want))
        assert not bad.size, (f"{mac.name} {dataflow} {name}: {bad.size} of {want.size} differ; first "
                              f"{[(int(i), acc.flat[i], want.flat[i]) for i in bad[:4]]}")
    return want


def mixed_codes(f, shape, rng, lo=-12, hi=12):
    """Normal values over a wide range, with every code (NaN, inf, zeros, subnormals, max)
    sprinkled in."""
    x = f.encode(rng.standard_normal(shape) * 2.0 ** rng.integers(lo, hi, shape), saturate=True)
    every = f.all_codes().astype(x.dtype)
    spots = rng.random(shape) < 0.02
    x[spots] = rng.choice(every, spots.sum())
    return x


PRESETS = [acs.presets.tensor_core(g, f, out) for g, f in acs.presets.TENSOR_CORES
           if g in ("h100", "ada", "a100", "v100") for out in ("fp32", "fp16")]


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("mac", PRESETS, ids=lambda m: m.name)
def test_tensor_core_presets(mac, dataflow):
    """Odd shapes (M, N, K not multiples of 4, 16 or the block), K over several ws/is tiles,
    whole blocks of zeros, rows and columns that overflow the output, special codes."""
    rng = np.random.default_rng(abs(hash((mac.name, dataflow))) % 2**32)
    f = mac.a
    A, B = mixed_codes(f, (23, 203), rng), mixed_codes(f, (203, 37), rng)
    A[:, 40:80] = f.encode(0.0)
    A[0], B[:, 1] = f.encode(f.max), f.encode(f.max)
    A[1] = f.encode(-f.max)
    A[2:8], B[:, 2:20] = f.encode(rng.standard_normal((6, 203))), f.encode(rng.standard_normal((203, 18)))  # finite
    all_kernels_agree(mac, A, B, dataflow, rows=3, cols=5)


def block(terms, align, e, m, rounding, overflow="inf", fmt="e4m3fn"):
    return acs.MAC(fmt, fmt, acs.BlockFMA(terms, align, acs.FloatAcc(e, m, rounding=rounding, overflow=overflow)))


EDGE_MACS = [
    block(7, 25, 8, 23, "rup"),                 # binary32 grid rounding up; sums just below 2^30
    block(3, 26, 8, 23, "rne"),                 # binary32 grid to nearest: sums past 2^24, in integers
    block(4, 26, 8, 23, "rne"),                 # 26 + 2 + 3 = 31: the AVX2 kernel's bound, past the AVX-512 one
    block(1, 20, 8, 13, "rne"),                 # one term per block
    block(64, 13, 8, 7, "rtz"),                 # the largest block, a bfloat16 register
    block(16, 13, 5, 10, "rup", "saturate"),    # binary16 saturating at its max
    block(16, 13, 5, 10, "rne"),                # binary16 overflowing to inf mid-tile
    block(8, 12, 4, 3, "rtz"),                  # sums in a tiny register's subnormals: -0 from nonzero sums
    block(8, 12, 4, 3, "rup", "saturate"),
    block(5, 20, 5, 10, "rne", fmt="fp16"),     # fp16 products below binary16's subnormals
    block(8, 24, 8, 23, "rtz", "saturate", fmt="fp16"),
]


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("mac", EDGE_MACS, ids=lambda m: f"{m.a.name}-{m.acc.terms}-{m.acc.align_bits}-{m.acc.acc.name}"
                         f"-{m.acc.acc.overflow}")
def test_block_kernel_edges(mac, dataflow):
    """Every rounding mode on binary32, binary16, bfloat16 and tiny grids, inf and saturating
    overflow, sums rounding into subnormals and to zero, block sizes 1 to 64, and the sum-width
    bound between the AVX-512 and AVX2 kernels."""
    rng = np.random.default_rng(abs(hash((mac.acc.terms, mac.acc.align_bits, str(mac.acc.acc), dataflow))) % 2**32)
    f = mac.a
    lo = -30 if f.name == "fp16" else -10
    A, B = mixed_codes(f, (21, 150), rng, lo, 8), mixed_codes(f, (150, 19), rng, lo, 8)
    A[0], A[1], B[:, 0] = f.encode(f.max), f.encode(-f.max), f.encode(f.max)
    A[2, :40], A[2, 40:] = f.encode(0.25), f.encode(f.max)       # overflow after some blocks
    tiny = f.encode(rng.choice([-1, 1], (6, 150)) * f.min_subnormal * rng.integers(1, 4, (6, 150)))
    A[3:9] = tiny                                                # sums at the bottom of the grid
    B[:, 3:6] = f.encode(rng.choice([-1, 1], (150, 3)) * f.min_subnormal)
    all_kernels_agree(mac, A, B, dataflow, rows=4, cols=3)


@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 17, 3), (4, 33, 16), (9, 64, 31)])
@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_block_kernel_small_shapes(shape, dataflow):
    """Shapes at and around the 4 x 16 register block and the 32-term block, on the H100 FP8
    preset, with all of its codes."""
    m, k, n = shape
    mac = acs.presets.tensor_core("h100", "e4m3")
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    codes = mac.a.all_codes().astype(np.uint8)
    A, B = rng.choice(codes, (m, k)), rng.choice(codes, (k, n))
    all_kernels_agree(mac, A, B, dataflow, rows=2, cols=4)


MODES = ["rne", "rna", "rtz", "rup", "rdn", "rto", "sr"]
MODE_MACS = [   # (format, terms, align_bits, exp, man, overflow)
    ("e4m3fn", 32, 13, 8, 13, "inf"),       # int32 block sums (H100 FP8)
    ("e4m3fn", 32, 25, 8, 23, "inf"),       # int64 block sums, binary32's grid (its directed modes in hardware)
    ("e5m2", 16, 13, 5, 10, "saturate"),    # binary16 saturating
    ("e4m3fn", 8, 12, 4, 3, "inf"),         # a tiny register: sums in its subnormals, to zero and past its max
    ("fp16", 16, 25, 8, 23, "saturate"),    # H100 FP16's alignment, int64 sums
    ("fp16", 16, 25, 4, 3, "inf"),          # int64 sums rounded by more than 32 bits (sr's sticky bit)
    ("bf16", 8, 24, 5, 10, "inf"),          # bfloat16 products beyond float32: blocks checked per lane
]


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("rounding", MODES)
@pytest.mark.parametrize("spec", MODE_MACS, ids=lambda s: "-".join(map(str, s)))
def test_block_kernel_modes(spec, rounding, dataflow):
    """Every rounding mode of the block sum and of the tile joins (sr: draws per block and per
    tile), on int32 and int64 block sums: specials, subnormals, overflow, signed zeros (whole
    blocks of +0 and -0 products, with rdn's -0 for exact zero sums), odd shapes."""
    fmt, terms, align, e, m, overflow = spec
    mac = acs.MAC(fmt, fmt, acs.BlockFMA(terms, align, acs.FloatAcc(e, m, rounding=rounding, overflow=overflow)))
    rng = np.random.default_rng(abs(hash((spec, rounding, dataflow))) % 2**32)
    f = mac.a
    lo = -30 if f.bits == 16 else -10
    A, B = mixed_codes(f, (22, 141), rng, lo, 8), mixed_codes(f, (141, 21), rng, lo, 8)
    A[:, 40:72] = f.encode(0.0)                                  # blocks of zero products of both signs
    A[3, :] = f.encode(-0.0)
    A[4, ::2] = f.encode(-0.0)
    B[:, 7] = f.encode(-0.0)
    A[5, :70], A[5, 70:] = f.encode(1.0), f.encode(-1.0)         # exact zero sums
    B[:70, 8], B[70:, 8] = f.encode(1.0), f.encode(1.0)
    A[0], A[1], B[:, 0] = f.encode(f.max), f.encode(-f.max), f.encode(f.max)
    A[2, :40], A[2, 40:] = f.encode(0.25), f.encode(f.max)       # overflow after some blocks
    A[6:9] = f.encode(rng.choice([-1, 1], (3, 141)) * f.min_subnormal * rng.integers(1, 4, (3, 141)))
    B[:, 3:6] = f.encode(rng.choice([-1, 1], (141, 3)) * f.min_subnormal)
    all_kernels_agree(mac, A, B, dataflow, rows=3, cols=5)


@pytest.mark.parametrize("rounding", ["rtz", "rne", "sr"])
@pytest.mark.parametrize("gpu", ["h100", "a100"])
def test_block_kernel_bf16_range(gpu, rounding):
    """bfloat16 over its whole range (products up to 2^256 and below 2^-260): blocks whose
    alignment exponent float32 cannot take go to the binary64 kernel, bit for bit."""
    base = acs.presets.tensor_core(gpu, "bf16")
    mac = acs.MAC("bf16", "bf16", acs.BlockFMA(base.acc.terms, base.acc.align_bits,
                                               acs.FloatAcc(8, 23, rounding=rounding), addend=acs.FloatAcc(8, 23)))
    rng = np.random.default_rng(7)
    f = mac.a
    for lo, hi in [(-133, 127), (100, 127), (-133, -100), (-10, 5)]:
        A = f.encode(rng.standard_normal((13, 90)) * 2.0 ** rng.integers(lo, hi, (13, 90)), saturate=True)
        B = f.encode(rng.standard_normal((90, 35)) * 2.0 ** rng.integers(lo, hi, (90, 35)), saturate=True)
        for dataflow in ("os", "ws"):
            all_kernels_agree(mac, A, B, dataflow, rows=2, cols=3)
