"""The vector kernel for narrow float accumulators (exact64) in rne and the directed modes
(exact64_add_cheap: exactness and range from the largest sum's binade; its F16C twin for IEEE
halves): the array's GEMM, bit for bit (float64 patterns: signed zeros, NaN), against the
general step, the portable C twin, the AVX2 twin where AVX-512 is taken, and 1 to 3 threads."""
import zlib

import numpy as np
import pytest

import accel_sim as acs
from accel_sim._native import fast_paths, lib, vector_isa

MODES = ["rne", "rtz", "rup", "rdn"]
ACCS = {  # name: FloatAcc factory by rounding
    "fp16": lambda r: acs.FloatAcc(5, 10, r),
    "bf16": lambda r: acs.FloatAcc(8, 7, r),
    "fp32": lambda r: acs.FloatAcc(8, 23, r),
    "e4m3acc": lambda r: acs.FloatAcc(4, 3, r),                       # overflows to inf
    "e4m3acc-sat": lambda r: acs.FloatAcc(4, 3, r, overflow="saturate"),
    "fp16-sat": lambda r: acs.FloatAcc(5, 10, r, overflow="saturate"),
    "wide": lambda r: acs.FloatAcc(8, 50, r),                         # sums binary64 cannot hold
}
FORMATS = ["e4m3fn", "e5m2", "int8", "e2m1"]


class avx512:
    """AVX-512 kernels on or off (off: their AVX2 twins)."""

    def __init__(self, enabled):
        self.enabled = bool(enabled)

    def __enter__(self):
        self.previous = lib.acs_set_vector_isa(1 if self.enabled else 2)   # 2: AVX2 where AVX-512 exists

    def __exit__(self, *exc):
        lib.acs_set_vector_isa(self.previous)


def raw(x):
    return np.ascontiguousarray(np.asarray(x, np.float64)).view(np.uint64)


def assert_same(got, want, what):
    g, w = raw(got), raw(want)
    bad = np.flatnonzero(g.reshape(-1) != w.reshape(-1))
    if bad.size:
        i = bad[:5]
        raise AssertionError(f"{what}: {bad.size} of {g.size} differ; first: "
                             f"{list(zip(i.tolist(), np.asarray(got).reshape(-1)[i].tolist(), np.asarray(want).reshape(-1)[i].tolist()))}")


def gemm_all_ways(mac, A, B, dataflow, rows=5, cols=3, threads=(1,)):
    """The GEMM's accumulators through every kernel and the general path, all equal; returns them."""
    qa, qb = acs.QTensor(A, mac.a), acs.QTensor(B, mac.b)

    def run(t=1):
        return acs.Array(rows, cols, dataflow, mac, threads=t).gemm(qa, qb, metrics=False).acc
    with fast_paths(False):
        want = run()
    results = {f"fast, {t} threads": run(t) for t in threads}
    with avx512(False):
        results["avx2"] = run()
    with vector_isa(False):
        results["portable"] = run()
    for name, got in results.items():
        assert_same(got, want, f"{mac.name} {dataflow}: {name} vs general")
    return want


def codes(fmt, finite=False):
    f = acs.formats.get(fmt)
    c = f.all_codes()
    if finite:
        c = c[np.isfinite(f.decode(c))]
    return f, c.astype(f.code_dtype)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("acc", list(ACCS))
@pytest.mark.parametrize("mode", MODES)
def test_every_code_pair(mode, acc, fmt):
    """K = 1 and K = 2: every product of two codes (NaN, inf, zeros, subnormals) rounded once,
    and each added to another; os, ws (whose buffer adds the tile sum once more) and is."""
    f, c = codes(fmt)
    mac = acs.MAC(f, f, ACCS[acc](mode))
    gemm_all_ways(mac, c[:, None], c[None, :], "os")
    gemm_all_ways(mac, c[:, None], c[None, :], "ws")
    rng = np.random.default_rng(zlib.crc32(f"{mode} {acc} {fmt}".encode()))
    A = np.stack([c, rng.permutation(c)], axis=1)
    B = np.stack([c, rng.permutation(c)], axis=0)
    gemm_all_ways(mac, A, B, "is", rows=1)
    gemm_all_ways(mac, A, B, "ws", rows=1)


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("acc", list(ACCS))
@pytest.mark.parametrize("mode", MODES)
def test_random_gemms_odd_shapes_and_threads(mode, acc, dataflow):
    """Shapes that are not multiples of the 4 x 16 register block, many tiles (5 x 3 array),
    1 to 3 threads; operands from every code (specials included) and from finite ones."""
    rng = np.random.default_rng(zlib.crc32(f"{mode} {acc} {dataflow}".encode()))
    for fmt in FORMATS:
        for finite in (False, True):
            f, c = codes(fmt, finite)
            mac = acs.MAC(f, f, ACCS[acc](mode))
            m, k, n = (int(x) for x in rng.integers(1, 40, 3))
            A, B = rng.choice(c, (m, k)), rng.choice(c, (k, n))
            gemm_all_ways(mac, A, B, dataflow, threads=(1, 2, 3))


@pytest.mark.parametrize("acc", list(ACCS))
@pytest.mark.parametrize("mode", MODES)
def test_long_chains(mode, acc):
    """K of a few hundred on finite operands, small and scaled (the benchmarks' case) or
    spanning the format: sums past the grid's precision, the buffer joining many ws tiles."""
    rng = np.random.default_rng(3)
    for fmt in ("e4m3fn", "e5m2"):
        f, c = codes(fmt, finite=True)
        small = c[np.abs(f.decode(c)) <= 4]
        mac = acs.MAC(f, f, ACCS[acc](mode))
        for pool in (small, c):
            A, B = rng.choice(pool, (9, 300)), rng.choice(pool, (300, 21))
            for dataflow in ("os", "ws"):
                gemm_all_ways(mac, A, B, dataflow, rows=16)


@pytest.mark.parametrize("mode", MODES)
def test_exact_zero_sums_and_signed_zeros(mode):
    """Exact zero sums are +0, -0 when rounding down (IEEE 754); -0 terms alone sum to +0
    from the chain's +0 start; a nonzero sum that rounds to zero keeps its sign."""
    f = acs.formats.get("e5m2")
    for acc in (acs.FloatAcc(5, 10, mode), acs.FloatAcc(8, 7, mode), acs.FloatAcc(8, 23, mode),
                acs.FloatAcc(4, 3, mode)):
        mac = acs.MAC(f, f, acc)
        rows = [[3.0, -3.0, 0.0], [-0.0, -0.0, -0.0], [0.0, -0.0, -0.0], [-0.0, 0.0, -0.0],
                [1.5, 2.0, -3.5], [-1.5, -2.0, 3.5], [57344.0, -57344.0, -0.0], [-0.0, 2.0**-16, -2.0**-16],
                [-2.0**-16, -0.0, -0.0]]
        A = f.encode(np.array(rows))
        B = f.encode(np.array([[1.0, -1.0, 0.0, -0.0, 2.0**-16]] * 3))
        for dataflow in ("os", "ws", "is"):
            got = gemm_all_ways(mac, A, B, dataflow, rows=2)
            zero = raw(-0.0 if mode == "rdn" else 0.0)
            assert raw(got[0, 0]) == zero and raw(got[0, 1]) == zero      # 3 - 3


@pytest.mark.parametrize("mode", MODES)
def test_subnormal_results(mode):
    """Products below the accumulator's smallest subnormal, sums in its subnormal range."""
    f = acs.formats.get("e5m2")
    rng = np.random.default_rng(4)
    for acc in (acs.FloatAcc(5, 10, mode), acs.FloatAcc(4, 3, mode), acs.FloatAcc(5, 2, mode)):
        e = (acc.emin - acc.man_bits) // 2            # products around the smallest subnormal
        tiny = f.encode(np.array([1.0, -1.0, 4.0, 1.5, -8.0, 1.25, 0.0, -0.0]) * 2.0 ** (e - 1))
        mac = acs.MAC(f, f, acc)
        A, B = rng.choice(tiny, (13, 50)), rng.choice(tiny, (50, 18))
        for dataflow in ("os", "ws", "is"):
            got = gemm_all_ways(mac, A, B, dataflow, rows=7)
            assert np.any((got != 0) & (np.abs(got) < 2.0 ** (acc.emin)))   # subnormals reached


@pytest.mark.parametrize("overflow", ["inf", "saturate"])
@pytest.mark.parametrize("mode", MODES)
def test_overflow(mode, overflow):
    """Sums beyond the grid and in its top binade (left to the general step); infinite and NaN
    operands."""
    f = acs.formats.get("e4m3fn")
    rng = np.random.default_rng(6)
    for acc in (acs.FloatAcc(4, 3, mode, overflow=overflow), acs.FloatAcc(5, 10, mode, overflow=overflow)):
        mac = acs.MAC(f, f, acc)
        vals = f.encode(np.array([448.0, -448.0, 240.0, 16.0, -15.5, 15.0, 1.0, -1.0, 0.0]))
        A, B = rng.choice(vals, (11, 6)), rng.choice(vals, (6, 17))
        for dataflow in ("os", "ws", "is"):
            got = gemm_all_ways(mac, A, B, dataflow, rows=2)
            if overflow == "saturate":
                assert np.all(np.isfinite(got)) and np.all(np.abs(got) <= acc.max)
        e5 = acs.formats.get("e5m2")
        mac = acs.MAC(e5, e5, acc)
        specials = e5.encode(np.array([np.inf, -np.inf, 1.0, 0.0, np.nan, 2.0, 57344.0, -0.0]))
        A, B = rng.choice(specials, (9, 4)), rng.choice(specials, (4, 9))
        for dataflow in ("os", "ws", "is"):
            gemm_all_ways(mac, A, B, dataflow, rows=2)


@pytest.mark.parametrize("mode", MODES)
def test_inexact_binary64_sums(mode):
    """A 51-bit accumulator: large and tiny products whose sums binary64 cannot hold exactly,
    and sums that stay exact, in the same GEMM."""
    f = acs.formats.get("e5m2")
    mac = acs.MAC(f, f, acs.FloatAcc(8, 50, mode))
    vals = f.encode(np.array([57344.0, -57344.0, 2.0**-16, -2.0**-16, 3.0 * 2.0**-14, 1.0, 0.0]))
    rng = np.random.default_rng(8)
    A, B = rng.choice(vals, (10, 33)), rng.choice(vals, (33, 20))
    for dataflow in ("os", "ws", "is"):
        gemm_all_ways(mac, A, B, dataflow, rows=4, threads=(1, 2))


TENSOR_CORES = [("h100", "e4m3", "fp32"), ("h100", "e5m2", "fp16"), ("ada", "e4m3", "fp16"),
                ("a100", "fp16", "fp32"), ("a100", "bf16", "fp16"), ("v100", "fp16", "fp32"),
                ("h100", "fp16", "fp16")]


@pytest.mark.parametrize("gpu,informat,out", TENSOR_CORES)
def test_tensor_core_block_sums(gpu, informat, out):
    """BlockFMA (block64, block sums rounded by exact64_add_cheap): random codes with specials,
    finite ones spanning the format (fp16 outputs overflow), odd shapes, small arrays, threads."""
    mac = acs.presets.tensor_core(gpu, informat, out)
    f = mac.a
    rng = np.random.default_rng(zlib.crc32(f"{gpu} {informat} {out}".encode()))
    c = f.all_codes().astype(f.code_dtype)
    vals = f.decode(c)
    pools = [c, c[np.isfinite(vals)], c[np.isfinite(vals) & (np.abs(vals) <= 4)]]
    for pool in pools:
        for dataflow in ("os", "ws", "is"):
            m, k, n = (int(x) for x in rng.integers(1, 70, 3))
            A, B = rng.choice(pool, (m, k)), rng.choice(pool, (k, n))
            gemm_all_ways(mac, A, B, dataflow, rows=int(rng.integers(1, 9)), threads=(1, 2, 3))


@pytest.mark.parametrize("gpu,informat", [("h100", "e4m3"), ("ada", "e5m2"), ("a100", "fp16")])
def test_tensor_core_fp16_top_binade(gpu, informat):
    """fp16 outputs whose block sums land near 65504: in the top binade, just past max (IEEE
    rounds some to 65504, others to inf) and beyond it."""
    mac = acs.presets.tensor_core(gpu, informat, "fp16")
    f = mac.a
    rng = np.random.default_rng(11)
    vals = f.encode(np.array([256.0, 240.0, 224.0, 128.0, 120.0, 64.0, 16.0, 8.0, 1.0, 0.5, -1.0, -16.0, 0.0]))
    for k in (1, 2, 3, 40):
        A, B = rng.choice(vals, (23, k)), rng.choice(vals, (k, 37))
        for dataflow in ("os", "ws"):
            got = gemm_all_ways(mac, A, B, dataflow, rows=4, threads=(1, 2))
            assert np.any(np.abs(got[np.isfinite(got)]) >= 32768) or k == 40


@pytest.mark.parametrize("mode", MODES)
def test_subnormal_sums_on_the_grid(mode):
    """Products' last bits at or above the grid's subnormal spacing (e3m2: 2^-8; FloatAcc(4,3):
    2^-9, (4,2): 2^-8): subnormal sums are already on the grid (no spacing clamp), and the
    clamped kernel next to them ((3,4): 2^-6)."""
    f = acs.formats.get("e3m2")
    c = f.all_codes().astype(f.code_dtype)
    small = c[np.abs(f.decode(c)) <= 0.25]
    rng = np.random.default_rng(12)
    for acc in (acs.FloatAcc(4, 3, mode), acs.FloatAcc(4, 2, mode), acs.FloatAcc(3, 4, mode),
                acs.FloatAcc(4, 3, mode, overflow="saturate")):
        mac = acs.MAC(f, f, acc)
        gemm_all_ways(mac, c[:, None], c[None, :], "os")
        A, B = rng.choice(small, (13, 40)), rng.choice(small, (40, 18))
        for dataflow in ("os", "ws", "is"):
            got = gemm_all_ways(mac, A, B, dataflow, rows=7, threads=(1, 2))
            assert np.any((got != 0) & (np.abs(got) < 2.0 ** acc.emin))   # subnormals reached
