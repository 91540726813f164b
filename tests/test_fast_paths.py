"""The engine's exact fast paths (native fp32 adds for FloatAcc fp32 rne when operand products
are exact in fp32; native integer sums for IntAcc wrap) against its general path, bit for bit."""
import numpy as np
import pytest

import accel_sim as acs
from accel_sim._native import fast_paths, vector_isa

FP32_FAST = ["e4m3fn", "e4m3", "e5m2", "e4m3fnuz", "e5m2fnuz", "e3m4", "fp16", "int8", "uint8", "int4", "e2m1", "e2m3",
             "e3m2", "posit8", "posit8es2"]


def bits(x):
    x = np.asarray(x)
    if x.dtype.kind in "iu":
        return x
    return np.where(np.isnan(x), np.uint64(0x7FF8000000000000), x.view(np.uint64))


def both_paths(fn):
    with fast_paths(True):
        fast = fn()
    with fast_paths(False):
        general = fn()
    return fast, general


def kernels_agree(arr, A, B):
    """The GEMM through the AVX2 kernels, their portable twins and the general path: the same
    accumulators and counts, bit for bit.  Returns the first."""
    ref = arr.gemm(A, B, metrics=False)
    with vector_isa(False):
        portable = arr.gemm(A, B, metrics=False)
    with fast_paths(False):
        general = arr.gemm(A, B, metrics=False)
    for r in (portable, general):
        assert np.array_equal(bits(r.acc), bits(ref.acc))
        assert r.counts == ref.counts
    return ref


def random_codes(fmt, shape, rng):
    codes = fmt.all_codes()
    return rng.choice(codes, size=shape).astype(fmt.code_dtype)


@pytest.mark.parametrize("a", FP32_FAST)
@pytest.mark.parametrize("b", ["e4m3fn", "e5m2", "int8"])
def test_fp32_fast_path_equals_general(a, b):
    rng = np.random.default_rng(abs(hash((a, b))) % 2**32)
    fa, fb = acs.formats.get(a), acs.formats.get(b)
    mac = acs.MAC(fa, fb, "fp32")
    A, B = random_codes(fa, (200, 150), rng), random_codes(fb, (200, 150), rng)  # NaN, inf, zeros included
    init = rng.standard_normal(200) * 10.0 ** rng.integers(-40, 40, 200)
    fast, general = both_paths(lambda: acs.accumulate(A, B, mac, init=init))
    assert np.array_equal(bits(fast), bits(general))
    assert np.array_equal(np.signbit(fast), np.signbit(general))


def test_fp32_fast_path_overflow_subnormals_and_signed_zeros():
    f = acs.formats.get("e5m2")
    mac = acs.MAC(f, f, "fp32")
    big = f.encode(np.full((4, 300), 57344.0))          # products 2^31.6: the sum overflows fp32? no: 300 * 3.3e9
    tiny = f.encode(np.full((4, 300), 2.0 ** -16))      # products 2^-32: sums stay exact
    negz = f.encode(np.full((4, 300), -0.0))
    for A, B, init in ((big, big, 3e38), (tiny, tiny, 1e-45), (negz, tiny, -0.0), (big, negz, -3.4e38)):
        fast, general = both_paths(lambda: acs.accumulate(A, B, mac, init=init))
        assert np.array_equal(bits(fast), bits(general)), (fast, general)
        assert np.array_equal(np.signbit(fast), np.signbit(general))


@pytest.mark.parametrize("a", ["int8", "uint8", "int4"])
@pytest.mark.parametrize("bits_", [8, 16, 24, 32, 64])
def test_int_wrap_fast_path_equals_general(a, bits_):
    rng = np.random.default_rng(bits_)
    f = acs.formats.get(a)
    mac = acs.MAC(f, f, acs.IntAcc(bits_, overflow="wrap"))
    A, B = random_codes(f, (100, 500), rng), random_codes(f, (100, 500), rng)
    init = rng.integers(-(2 ** (bits_ - 1)), 2 ** (bits_ - 1) - 1, 100, dtype=np.int64).astype(np.float64)
    init = np.clip(init, -2.0**52, 2.0**52)
    fast, general = both_paths(lambda: acs.accumulate(A, B, mac, init=init))
    assert np.array_equal(fast, general)


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("mac", [acs.MAC("e4m3fn", "e4m3fn", "fp32"), acs.MAC("int8", "int8", "int32"),
                                 acs.MAC("fp16", "fp16", "fp32")], ids=lambda m: m.name)
def test_array_fast_paths_equal_general(dataflow, mac):
    rng = np.random.default_rng(7)
    A = acs.QTensor(random_codes(mac.a, (37, 70), rng), mac.a)
    B = acs.QTensor(random_codes(mac.b, (70, 23), rng), mac.b)
    arr = acs.Array(8, 4, dataflow, mac)
    fast, general = both_paths(lambda: arr.gemm(A, B))
    assert np.array_equal(bits(fast.acc), bits(general.acc))
    assert fast.counts == general.counts


def test_ineligible_formats_use_the_general_path():
    """bf16 products can underflow or overflow fp32, so bf16 -> fp32 must not take the fast
    path: a product of two tiny bf16 values is below fp32's subnormals, and the general path
    (exact fused step) keeps it in the sum."""
    f = acs.formats.get("bf16")
    mac = acs.MAC(f, f, "fp32")
    a = f.encode(np.array([[2.0 ** -100, 2.0 ** -100]]))
    b = f.encode(np.array([[2.0 ** -60, 2.0 ** -60]]))
    fast, general = both_paths(lambda: acs.accumulate(a, b, mac, init=2.0 ** -149))
    assert fast[0] == general[0] == 2.0 ** -149  # each product (2^-160) rounds away in the fused step
    a2 = f.encode(np.array([[2.0 ** 100]]))
    fast, general = both_paths(lambda: acs.accumulate(a2, a2, mac))
    assert np.isinf(fast[0]) and np.isinf(general[0])


@pytest.mark.parametrize("mac", [acs.MAC("e4m3fn", "e4m3fn", "fp32"), acs.MAC("int8", "int8", "int32"),
                                 acs.MAC("int4", "int4", acs.IntAcc(12)), acs.MAC("e5m2", "e5m2", "fp16"),
                                 acs.presets.tensor_core("h100", "e4m3")], ids=lambda m: m.name)
@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_bits_do_not_depend_on_threads_or_vector_kernels(mac, dataflow):
    """Odd shapes (not multiples of the 4x16 register block, odd K for the int16 pairs),
    specials included: every thread count, the portable and the AVX2 kernels, and the general
    path give the same accumulators and counts."""
    rng = np.random.default_rng(11)
    A = acs.QTensor(random_codes(mac.a, (23, 41), rng), mac.a)
    B = acs.QTensor(random_codes(mac.b, (41, 19), rng), mac.b)
    results = [acs.Array(5, 3, dataflow, mac, threads=t).gemm(A, B, metrics=False) for t in (1, 2, 3, 7)]
    with vector_isa(False):
        results += [acs.Array(5, 3, dataflow, mac, threads=t).gemm(A, B, metrics=False) for t in (1, 2)]
    with fast_paths(False):
        results.append(acs.Array(5, 3, dataflow, mac, threads=1).gemm(A, B, metrics=False))
    for r in results[1:]:
        assert np.array_equal(bits(r.acc), bits(results[0].acc))
        assert np.array_equal(r.output.view(np.uint64), results[0].output.view(np.uint64))
        assert r.counts == results[0].counts


@pytest.mark.parametrize("mac", [acs.MAC("e4m3fn", "e4m3fn", "fp32"), acs.MAC("int8", "int8", "int32"),
                                 acs.MAC("int8", "int8", acs.IntAcc(20))], ids=lambda m: m.name)
def test_vector_kernels_on_large_blocks_equal_general_path(mac):
    """Several register blocks and panels, K spanning many ws tiles: AVX2, portable and general
    paths agree bit for bit (int8 extremes: -128 * -128 pairs sum to 2^15 per pair)."""
    rng = np.random.default_rng(5)
    A = acs.QTensor(random_codes(mac.a, (70, 301), rng), mac.a)
    B = acs.QTensor(random_codes(mac.b, (301, 50), rng), mac.b)
    if mac.a.name == "int8":
        A.codes[:8] = 0x80
        B.codes[:, :5] = 0x80
    kernels_agree(acs.Array(16, 8, "ws", mac, threads=2), A, B)


EXACT64 = [acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(5, 10, rounding=r, overflow=o))
           for r in ("rne", "rtz", "rup", "rdn") for o in ("inf", "saturate")]
EXACT64 += [acs.MAC("e4m3", "int8", acs.FloatAcc(5, 10)), acs.MAC("int4", "e4m3fnuz", acs.FloatAcc(5, 6, "rdn")),
            acs.MAC("e3m4", "e3m4", acs.FloatAcc(6, 12, "rup"))]


@pytest.mark.parametrize("dataflow", ["os", "ws"])
@pytest.mark.parametrize("mac", EXACT64, ids=lambda m: f"{m.a.name}x{m.b.name}-{m.acc.name}")
def test_narrow_float_vector_kernel_equals_general(mac, dataflow):
    """Narrow float accumulators whose acc + a*b is exact in binary64 take a vector kernel
    (one rounding of that double per step); it must equal the general step bit for bit with
    every code (NaN, inf, signed zeros), overflow in each direction, and exact zero sums."""
    rng = np.random.default_rng(3)
    A = random_codes(mac.a, (45, 90), rng)
    B = random_codes(mac.b, (90, 37), rng)
    big_a, big_b = mac.a.encode(np.float64(mac.a.max)), mac.b.encode(np.float64(mac.b.max))
    A[:6] = big_a                                         # rows that overflow a narrow accumulator
    A[6:10] = mac.a.encode(-np.float64(mac.a.max))
    B[:, :4] = big_b
    A[10:14, ::2], A[10:14, 1::2] = mac.a.encode(1.0), mac.a.encode(-1.0)   # exact zero sums
    B[:, 4:8] = mac.b.encode(1.0)
    A[14:16] = mac.a.encode(-0.0)
    qa, qb = acs.QTensor(A, mac.a), acs.QTensor(B, mac.b)
    arr = acs.Array(16, 8, dataflow, mac, threads=2)
    ref = kernels_agree(arr, qa, qb)
    finite = np.isfinite(ref.acc)
    assert finite.any() and (~finite).any() or mac.acc.overflow == "saturate"


@pytest.mark.parametrize("bits_", [12, 16, 20, 32])
@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_int_saturate_fast_path_equals_general(bits_, dataflow):
    """IntAcc saturate takes the exact integer sum only where no partial sum can reach the
    register's bounds (K * max|a*b| below 2^(bits-1)); otherwise the general step saturates.
    Both cases, in the array and in accumulate with inits near the bound, equal the general path."""
    rng = np.random.default_rng(bits_)
    f = acs.formats.get("int8")
    mac = acs.MAC(f, f, acs.IntAcc(bits_, overflow="saturate"))
    for k in (3, 40, 300):
        A = acs.QTensor(random_codes(f, (21, k), rng), f)
        B = acs.QTensor(random_codes(f, (k, 18), rng), f)
        A.codes[:3] = f.encode(-128.0)
        B.codes[:, :2] = f.encode(-128.0)
        arr = acs.Array(8, 4, dataflow, mac, threads=2)
        fast, general = both_paths(lambda: arr.gemm(A, B, metrics=False))
        assert np.array_equal(fast.acc, general.acc)
        assert fast.counts == general.counts
        top = 2.0 ** (bits_ - 1) - 1
        init = np.array([0.0, top, -top - 1, top - 16384 * k, 5.0] * 5)[:21]
        Bt = random_codes(f, (21, k), rng)
        fast, general = both_paths(lambda: acs.accumulate(A.codes, Bt, mac, init=init))
        assert np.array_equal(fast, general)


TENSOR_CORE_MACS = [acs.presets.tensor_core(g, f, out) for g, f in (("h100", "e4m3"), ("ada", "e5m2"),
                    ("a100", "bf16"), ("h100", "fp16"), ("v100", "fp16")) for out in ("fp32", "fp16")]


@pytest.mark.parametrize("dataflow", ["os", "ws"])
@pytest.mark.parametrize("mac", TENSOR_CORE_MACS, ids=lambda m: m.name)
def test_block_fma_vector_kernel_equals_general(mac, dataflow):
    """The BlockFMA vector kernel (block sums exact in binary64) against the general block step:
    normal data over a wide dynamic range, blocks of zeros, K not a multiple of the block, rows
    that overflow the output format, NaN/inf operands (recomputed by the general step), and tile
    sums whose exponents lie too far apart for an exact binary64 join (recomputed too)."""
    rng = np.random.default_rng(17)
    f = mac.a
    x = rng.standard_normal((37, 203)) * 2.0 ** rng.integers(-12, 12, (37, 203))
    w = rng.standard_normal((203, 29)) * 2.0 ** rng.integers(-12, 12, (203, 29))
    A, B = f.encode(x, saturate=True), f.encode(w, saturate=True)
    A[:, 40:80] = f.encode(0.0)                             # whole blocks of zeros
    A[0], A[1] = f.encode(f.max), f.encode(-f.max)          # overflow the output
    B[:, 0] = f.encode(f.max)
    A[2, 5], B[7, 3] = f.all_codes()[~np.isfinite(f.decode(f.all_codes()))][:1].repeat(2)[:2] \
        if (~np.isfinite(f.decode(f.all_codes()))).any() else (A[2, 5], B[7, 3])
    A[3, :64] = f.encode(2.0 ** 100 if f.max > 2.0 ** 100 else f.max)   # a huge first tile ...
    A[3, 64:] = f.encode(2.0 ** -100 if f.max > 2.0 ** 100 else 2.0 ** -6)  # ... then tiny ones
    qa, qb = acs.QTensor(A, f), acs.QTensor(B, f)
    arr = acs.Array(2, 8, dataflow, mac, threads=2)
    kernels_agree(arr, qa, qb)


BLOCK_EDGE_MACS = [acs.MAC("e4m3", "e4m3", acs.BlockFMA(t, al, acs.FloatAcc(e, mb, rounding=r)))
                   for t, al, e, mb, r in ((8, 40, 8, 23, "rtz"),    # terms past 2^31: the generic truncation
                                           (4, 27, 8, 23, "rne"),    # 27 + 2 + 3 = 32: just past int32 sums
                                           (7, 26, 8, 23, "rup"),    # 26 + 2 + 3 = 31: just within
                                           (4, 13, 5, 10, "rne"),    # a binary16 register overflows mid-tile
                                           (32, 13, 5, 10, "rup"))]


@pytest.mark.parametrize("dataflow", ["os", "ws"])
@pytest.mark.parametrize("mac", BLOCK_EDGE_MACS, ids=lambda m: f"{m.acc.terms}-{m.acc.align_bits}-{m.acc.acc.name}")
def test_block_fma_kernel_truncation_variants_equal_general(mac, dataflow):
    """BlockFMA kernels by alignment width: hardware truncation summed in int32 lanes where every
    scaled term and their sum stay below 2^31, the generic truncation past it (both sides of the
    bound), and block partials that overflow a narrow register mid-tile (marked at once, since a
    truncated infinity would be garbage): AVX2, portable and general agree bit for bit."""
    rng = np.random.default_rng(23)
    f = mac.a
    x = rng.standard_normal((29, 150)) * 2.0 ** rng.integers(-9, 8, (29, 150))
    w = rng.standard_normal((150, 35)) * 2.0 ** rng.integers(-9, 8, (150, 35))
    A, B = f.encode(x, saturate=True), f.encode(w, saturate=True)
    A[0], A[1], B[:, 0] = f.encode(f.max), f.encode(-f.max), f.encode(f.max)   # extreme terms
    A[2, :40], A[2, 40:] = f.encode(0.25), f.encode(f.max)    # overflow only after some blocks
    A[3, 5], B[9, 4] = f.encode(np.inf), f.encode(np.nan)     # special codes: general step
    qa, qb = acs.QTensor(A, f), acs.QTensor(B, f)
    ref = kernels_agree(acs.Array(4, 8, dataflow, mac, threads=2), qa, qb)
    assert not np.isfinite(ref.acc[3]).any() and np.isnan(ref.acc[:, 4]).all()


def half_chain_mpfr(a, b, rounding):
    """One output's os chain on the IEEE binary16 grid by MPFR: +0, then each exact product
    added and rounded once (11 bits, subnormals, IEEE overflow and signed zeros)."""
    import gmpy2
    mode = {"rne": gmpy2.RoundToNearest, "rtz": gmpy2.RoundToZero, "rup": gmpy2.RoundUp,
            "rdn": gmpy2.RoundDown}[rounding]
    ctx = gmpy2.context(precision=11, emin=-23, emax=16, subnormalize=True, round=mode)
    acc = gmpy2.mpfr(0.0)
    for x, y in zip(a, b):
        acc = ctx.add(acc, gmpy2.mpfr(float(x) * float(y), 53))   # the product is exact in binary64
    return float(acc)


@pytest.mark.parametrize("rounding", ["rne", "rtz", "rup", "rdn"])
def test_half_accumulator_kernel_equals_mpfr(rounding):
    """IEEE half accumulators (on x86 with F16C: rounding to odd at binary32's precision, then the
    hardware's binary16 conversion) against MPFR, one rounding per step: sums in the subnormal
    range, overflow both ways, exact zero sums, and sums that a binary32 rounding to nearest
    would turn into binary16 ties (32768 + 16 + 2^-10 must round up under rne)."""
    rng = np.random.default_rng(8)
    fa, fb = acs.formats.get("fp16"), acs.formats.get("int8")
    mac = acs.MAC(fa, fb, acs.FloatAcc(5, 10, rounding=rounding))
    m, k, n = 24, 30, 20
    x = rng.standard_normal((m, k)) * 2.0 ** rng.integers(-26, 4, (m, k))
    x[:6] = rng.standard_normal((6, k)) * 2.0 ** rng.integers(-24, -20, (6, k))   # subnormal sums
    x[6:8] = 60000.0 * np.sign(x[6:8])                   # overflow (with B's big columns)
    x[8:10, ::2], x[8:10, 1::2] = 3.0, -3.0              # exact zero sums
    hazard = np.array([512.0, 145 * 2.0 ** -10, -512.0, -145 * 2.0 ** -10, 2.0 ** -5, 145 * 2.0 ** -24])
    x[10, :2], x[11, :2], x[12, :2] = hazard[:2], hazard[2:4], hazard[4:]   # 2^14+1 = 145 * 113
    x[10:13, 2:] = 0.0
    w = rng.integers(-127, 128, (k, n)).astype(np.float64)
    w[:, 0], w[:, 1] = 127.0, -127.0
    w[:, 2] = 1.0
    w[:2, 3] = [64.0, 113.0]
    A, B = fa.encode(x), fb.encode(w)
    qa, qb = acs.QTensor(A, fa), acs.QTensor(B, fb)
    xa, wb = fa.decode(A), fb.decode(B)
    want = np.array([[half_chain_mpfr(xa[i], wb[:, j], rounding) for j in range(n)] for i in range(m)])
    arr = acs.Array(8, 8, "os", mac, threads=2)
    got = arr.gemm(qa, qb, metrics=False).acc
    assert np.array_equal(bits(got), bits(want))
    with vector_isa(False):
        assert np.array_equal(bits(arr.gemm(qa, qb, metrics=False).acc), bits(want))
    assert want[10, 3] == (32768.0 + 32.0 if rounding in ("rne", "rup") else 32768.0)   # the hazards
    assert want[11, 3] == (-32768.0 - 32.0 if rounding in ("rne", "rdn") else -32768.0)
    assert want[12, 3] == (2.0 + 2.0 ** -9 if rounding in ("rne", "rup") else 2.0)        # 2 + 2^-10 + 2^-24
    assert (np.abs(want[:6]) < 2.0 ** -14).any() and (want[:6] != 0).any()
    assert np.isinf(want).any() or rounding != "rne"
    assert np.signbit(want[8:10, 2]).all() == (rounding == "rdn")


@pytest.mark.parametrize("rounding", ["rne", "rtz", "rup", "rdn"])
def test_half_accumulator_kernel_special_codes_and_tiles(rounding):
    """Every fp16 code (NaN, inf, subnormals, signed zeros) through ws tiles joined in the
    buffer: the vector kernels (F16C where the CPU has it, portable) equal the general step."""
    rng = np.random.default_rng(9)
    for fa, fb in (("fp16", "int8"), ("e4m3fn", "e5m2")):
        fa, fb = acs.formats.get(fa), acs.formats.get(fb)
        mac = acs.MAC(fa, fb, acs.FloatAcc(5, 10, rounding=rounding))
        A, B = random_codes(fa, (33, 70), rng), random_codes(fb, (70, 21), rng)
        A[:3], B[:, :2] = fa.encode(-0.0), fb.encode(1.0)
        qa, qb = acs.QTensor(A, fa), acs.QTensor(B, fb)
        kernels_agree(acs.Array(16, 4, "ws", mac, threads=2), qa, qb)


CHECKED = [acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(8, 7, rounding=r)) for r in ("rne", "rtz")]
CHECKED += [acs.MAC("e5m2", "e5m2", acs.FloatAcc(8, 7, rounding="rdn", overflow="saturate")),
            acs.MAC("bf16", "bf16", acs.FloatAcc(8, 23, rounding="rtz")),
            acs.MAC("bf16", "e4m3fn", acs.FloatAcc(8, 23, rounding="rup")),
            acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(8, 23, rounding="rdn")),
            acs.MAC("e5m2", "e5m2", acs.FloatAcc(5, 10, rounding="rne"))]


@pytest.mark.parametrize("dataflow", ["os", "ws"])
@pytest.mark.parametrize("mac", CHECKED, ids=lambda m: f"{m.a.name}x{m.b.name}-{m.acc.name}")
def test_checked_float_kernel_equals_general(mac, dataflow):
    """Float accumulators whose acc + a*b is not provably exact in binary64 (bf16 and fp32
    grids, directed modes, bf16 operands, e5m2 into fp16) take the vector kernel with every sum
    checked (TwoSum); outputs whose sum was inexact go to the general step.  Data spanning
    exponents far enough apart forces both kinds of output; all equal the general path."""
    rng = np.random.default_rng(23)
    fa, fb = mac.a, mac.b
    span = 100 if fa.max > 1e30 and fb.max > 1e30 else 12
    x = rng.standard_normal((29, 75)) * 2.0 ** rng.integers(-span, span, (29, 75))
    w = rng.standard_normal((75, 22)) * 2.0 ** rng.integers(-span, span, (75, 22))
    A, B = fa.encode(x, saturate=True), fb.encode(w, saturate=True)
    A[:3] = random_codes(fa, (3, 75), rng)                        # specials, signed zeros
    A[3, ::2], A[3, 1::2] = fa.encode(1.0), fa.encode(-1.0)       # exact zero sums
    B[:, 0] = fb.encode(1.0)
    A[4] = fa.encode(fa.max)                                      # overflow
    kernels_agree(acs.Array(16, 8, dataflow, mac, threads=2), acs.QTensor(A, fa), acs.QTensor(B, fb))


def test_threads_argument_and_environment(monkeypatch):
    monkeypatch.setenv("ACCEL_SIM_THREADS", "3")
    assert acs.Array(4, 4).threads == 3
    assert acs.Array(4, 4, threads=1).threads == 1
    monkeypatch.setenv("ACCEL_SIM_THREADS", "many")
    with pytest.raises(ValueError, match="ACCEL_SIM_THREADS"):
        acs.Array(4, 4)
    with pytest.raises(ValueError, match="threads"):
        acs.Array(4, 4, threads=0)
    with pytest.raises(TypeError, match="threads"):
        acs.Array(4, 4, threads=1.5)


def test_epilogue_fast_case_equals_exact_rounding():
    """The epilogue's exact fast case (accumulator values of at most 29 significant bits)
    against one exact rounding of fp32(acc * scale): int32 sums past 2^24 with few and with
    many significant bits (the latter take the general branch)."""
    from fractions import Fraction
    from accel_sim import reference
    f = acs.formats.get("int8")
    a = np.full((3, 80000), 127, np.int8)
    a[1, 0], a[2, :3] = 1, 1
    b = np.full((80000, 2), 127, np.int8)
    b[0, 1] = 3
    A = acs.QTensor(f.encode(a), f, scale=np.float32(0.1))   # sums near 127*127*80000 > 2^30
    B = acs.QTensor(f.encode(b), f, scale=np.float32(0.3))
    res = acs.Array(4, 4, "os", acs.MAC(f, f, "int32")).gemm(A, B, metrics=False)
    s = np.float32(np.float64(np.float32(0.1)) * np.float64(np.float32(0.3)))
    acc = a.astype(np.int64) @ b.astype(np.int64)
    assert np.array_equal(res.acc, acc)
    bits = [len(bin(v).rstrip("0")) - 2 for v in acc.reshape(-1).tolist()]
    assert min(bits) <= 29 < max(bits)
    for (i, j), v in np.ndenumerate(acc):
        want = reference.round_float(Fraction(int(v)) * Fraction(float(s)), **reference.float_format_params(8, 23))
        assert res.output[i, j] == want
