"""The vector kernels for float accumulators (array.c's exact64 and f16c, kernel_float.c's
AVX-512 ones) in every rounding mode: the array's GEMM, bit for bit (float64 patterns: signed
zeros, NaN), against the general step, the portable C twin, the AVX2 twin where AVX-512 is
taken, and the exact reference model."""
import zlib

import numpy as np
import pytest

import accel_sim as acs
from accel_sim import reference as ref
from accel_sim._native import fast_paths, lib, vector_isa

MODES = ["rna", "rto", "sr", "rne", "rtz", "rup", "rdn"]
ACCS = {  # name: FloatAcc factory by rounding
    "fp16": lambda r: acs.FloatAcc(5, 10, r),
    "bf16": lambda r: acs.FloatAcc(8, 7, r),
    "fp32": lambda r: acs.FloatAcc(8, 23, r),
    "e4m3acc": lambda r: acs.FloatAcc(4, 3, r),                       # overflows to inf
    "e4m3acc-sat": lambda r: acs.FloatAcc(4, 3, r, overflow="saturate"),
    "fp16-sat": lambda r: acs.FloatAcc(5, 10, r, overflow="saturate"),
    "bf16-sat": lambda r: acs.FloatAcc(8, 7, r, overflow="saturate"),
    "fp32-sat": lambda r: acs.FloatAcc(8, 23, r, overflow="saturate"),
    "e8m21": lambda r: acs.FloatAcc(8, 21, r),                        # the most fraction bits kernel_float.c takes
    "e6m9": lambda r: acs.FloatAcc(6, 9, r),
}
FORMATS = ["e4m3fn", "e5m2", "int8", "e2m1"]


def raw(x):
    return np.ascontiguousarray(np.asarray(x, np.float64)).view(np.uint64)


def assert_same(got, want, what):
    g, w = raw(got), raw(want)
    bad = np.flatnonzero(g.reshape(-1) != w.reshape(-1))
    if bad.size:
        i = bad[:5]
        raise AssertionError(f"{what}: {bad.size} of {g.size} differ; first: "
                             f"{list(zip(i.tolist(), np.asarray(got).reshape(-1)[i].tolist(), np.asarray(want).reshape(-1)[i].tolist()))}")


def gemm_all_ways(mac, A, B, dataflow, rows=5, cols=3, seed=0, threads=(1,)):
    """The GEMM's accumulators through every kernel and the general path, all equal; returns them."""
    qa, qb = acs.QTensor(A, mac.a), acs.QTensor(B, mac.b)
    def run(t=1):
        return acs.Array(rows, cols, dataflow, mac, seed=seed, threads=t).gemm(qa, qb, metrics=False).acc
    with fast_paths(False):
        want = run()
    results = {f"fast, {t} threads": run(t) for t in threads}
    with vector_isa(2):   # AVX2 where the CPU also has AVX-512
        results["avx2"] = run()
    with vector_isa(False):
        results["portable"] = run()
    for name, got in results.items():
        assert_same(got, want, f"{mac.name} {dataflow} seed {seed}: {name} vs general")
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
    and each added to another; os and ws (whose buffer adds the tile sum once more)."""
    f, c = codes(fmt)
    mac = acs.MAC(f, f, ACCS[acc](mode))
    for seed in (0, 12345):
        gemm_all_ways(mac, c[:, None], c[None, :], "os", seed=seed)
        gemm_all_ways(mac, c[:, None], c[None, :], "ws", seed=seed)
        rng = np.random.default_rng(seed)
        A = np.stack([c, rng.permutation(c)], axis=1)
        B = np.stack([c, rng.permutation(c)], axis=0)
        gemm_all_ways(mac, A, B, "is", rows=1, seed=seed)


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
            seeds = (0, 7, 2**64 - 1) if mode == "sr" else (0,)
            for seed in seeds:
                gemm_all_ways(mac, A, B, dataflow, seed=seed, threads=(1, 2, 3))


@pytest.mark.parametrize("acc", list(ACCS))
@pytest.mark.parametrize("mode", MODES)
def test_long_chains(mode, acc):
    """K of a few hundred on finite operands: sums that grow past the grid's precision (sr's
    draws over many steps), the buffer joining many ws tiles."""
    rng = np.random.default_rng(3)
    for fmt in ("e4m3fn", "e5m2"):
        f, c = codes(fmt, finite=True)
        small = c[np.abs(f.decode(c)) <= 4]
        mac = acs.MAC(f, f, ACCS[acc](mode))
        A, B = rng.choice(small, (9, 300)), rng.choice(small, (300, 21))
        for dataflow in ("os", "ws"):
            gemm_all_ways(mac, A, B, dataflow, rows=16, seed=99)


@pytest.mark.parametrize("mode", MODES)
def test_exact_zero_sums_and_signed_zeros(mode):
    """Exact zero sums are +0 except under rdn, where they are -0 (IEEE 754; the chain starts
    from +0, so -0 terms alone sum to +0 too in the other modes); a nonzero sum that rounds to
    zero keeps its sign."""
    f = acs.formats.get("e5m2")
    for acc in (acs.FloatAcc(5, 10, mode), acs.FloatAcc(8, 23, mode), acs.FloatAcc(4, 3, mode)):
        mac = acs.MAC(f, f, acc)
        rows = [[3.0, -3.0, 0.0], [-0.0, -0.0, -0.0], [0.0, -0.0, -0.0], [-0.0, 0.0, -0.0],
                [1.5, 2.0, -3.5], [-1.5, -2.0, 3.5], [57344.0, -57344.0, -0.0], [-0.0, 2.0**-16, -2.0**-16],
                [-2.0**-16, -0.0, -0.0]]
        A = f.encode(np.array(rows))
        B = f.encode(np.array([[1.0, -1.0, 0.0, -0.0, 2.0**-16]] * 3))
        for dataflow in ("os", "ws", "is"):
            for seed in (0, 1, 2):
                got = gemm_all_ways(mac, A, B, dataflow, rows=2, seed=seed)
                zero = -0.0 if mode == "rdn" else 0.0
                assert raw(got[0, 0]) == raw(zero) and raw(got[0, 1]) == raw(zero)    # 3 - 3
                if mode == "rdn":
                    continue
                assert np.all(raw(got[1:4]) == raw(0.0))                                # signed zero terms
                assert np.all(raw(got[4:6, :4]) == raw(0.0))
                if acc.max >= 57344:
                    assert raw(got[6, 0]) == raw(0.0)
                tiny = got[8, 4]                  # -2^-32 (ws, is: then +0 + -0 in the buffer)
                if acc.man_bits < 23 and dataflow == "os":
                    assert tiny == {"rna": 0.0, "rto": -(2.0 ** (acc.emin - acc.man_bits))}.get(mode, tiny)
                    assert np.signbit(tiny)


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
            for seed in (0, 5):
                got = gemm_all_ways(mac, A, B, dataflow, rows=7, seed=seed)
                assert np.any((got != 0) & (np.abs(got) < 2.0 ** (acc.emin)))   # subnormals reached


@pytest.mark.parametrize("overflow", ["inf", "saturate"])
@pytest.mark.parametrize("mode", MODES)
def test_overflow(mode, overflow):
    """Sums beyond the grid: rne, rna, sr and (upward) rup round to inf (IEEE), rto, rtz and
    (upward) rdn to the largest finite value; saturation clamps; infinite operands stay infinite
    under IEEE."""
    f = acs.formats.get("e4m3fn")
    acc = acs.FloatAcc(4, 3, mode, overflow=overflow)
    mac = acs.MAC(f, f, acc)
    vals = f.encode(np.array([448.0, -448.0, 16.0, -15.5, 15.0, 1.0, -1.0, 0.0]))
    rng = np.random.default_rng(6)
    A, B = rng.choice(vals, (11, 6)), rng.choice(vals, (6, 17))
    for dataflow in ("os", "ws", "is"):
        for seed in (0, 3):
            got = gemm_all_ways(mac, A, B, dataflow, rows=2, seed=seed)
            if overflow == "saturate" or mode in ("rto", "rtz"):
                assert np.all(np.isfinite(got)) and np.all(np.abs(got) <= acc.max)
    big = f.encode(np.array([[448.0, 448.0]]))
    got = gemm_all_ways(mac, big, big.T, "os")
    assert got[0, 0] == (acc.max if overflow == "saturate" or mode in ("rto", "rtz", "rdn") else np.inf)
    e5 = acs.formats.get("e5m2")
    mac = acs.MAC(e5, e5, acc)
    specials = e5.encode(np.array([np.inf, -np.inf, 1.0, 0.0, np.nan, 2.0]))
    A, B = rng.choice(specials, (9, 4)), rng.choice(specials, (4, 9))
    for dataflow in ("os", "ws", "is"):
        gemm_all_ways(mac, A, B, dataflow, rows=2, seed=1)


def float_spec(acc):
    return dict(kind="float", exp_bits=acc.exp_bits, man_bits=acc.man_bits, rounding=acc.rounding,
                subnormals=bool(acc.subnormals), overflow=acc.overflow)


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("mode", MODES)
def test_against_reference_model(mode, dataflow):
    """Small GEMMs against reference.gemm_order (exact fractions; sr's draws from ref.rand32)."""
    rng = np.random.default_rng(8)
    for fmt, acc in (("e4m3fn", acs.FloatAcc(5, 10, mode)), ("e5m2", acs.FloatAcc(4, 3, mode)),
                     ("e4m3fn", acs.FloatAcc(8, 7, mode, overflow="saturate")), ("int8", acs.FloatAcc(5, 4, mode))):
        f, c = codes(fmt, finite=True)
        mac = acs.MAC(f, f, acc)
        A, B = rng.choice(c, (6, 11)), rng.choice(c, (11, 5))
        for seed in (0, 2**63 + 5):
            got = gemm_all_ways(mac, A, B, dataflow, rows=3, seed=seed)
            want = ref.gemm_order(f.decode(A).tolist(), f.decode(B).tolist(), dataflow=dataflow, rows=3,
                                  pe=float_spec(acc), seed=seed, n=B.shape[1])
            assert_same(got, np.array([[float(v) for v in r] for r in want]), f"{mac.name} {dataflow} vs reference")


def test_sr_draws_follow_the_chain_steps():
    """sr's results depend on the seed: the kernel draws its random bits."""
    f = acs.formats.get("e4m3fn")
    mac = acs.MAC(f, f, acs.FloatAcc(5, 4, "sr"))
    rng = np.random.default_rng(9)
    _, c = codes("e4m3fn", finite=True)
    small = c[np.abs(f.decode(c)) <= 2]
    A, B = rng.choice(small, (5, 40)), rng.choice(small, (40, 7))
    outs = [gemm_all_ways(mac, A, B, "os", seed=s) for s in (0, 1)]
    assert np.any(outs[0] != outs[1])


@pytest.mark.parametrize("mode", MODES)
def test_wide_grids(mode):
    """51 fraction bits (the kernel's widest: the sum in units of its spacing stays below 2^52),
    and 52 (left to the general step), with sums checked for exactness in binary64."""
    rng = np.random.default_rng(10)
    f, c = codes("e4m3fn", finite=True)
    for acc in (acs.FloatAcc(9, 51, mode), acs.FloatAcc(10, 52, mode), acs.FloatAcc(6, 40, mode)):
        mac = acs.MAC(f, f, acc)
        A, B = rng.choice(c, (7, 90)), rng.choice(c, (90, 18))
        for dataflow in ("os", "ws"):
            gemm_all_ways(mac, A, B, dataflow, rows=8, seed=4)


@pytest.mark.parametrize("mode", MODES + ["rne", "rtz", "rup", "rdn"])
def test_wide_grids_full_width_sums(mode):
    """fp16 operands of very different magnitudes: sums that use all 53 bits of binary64 on grids
    of 50 to 52 fraction bits (rtz with 51 once differed by an ulp: its 1.5 * 2^52 rounding
    needs the sum in units of the spacing below 2^51)."""
    rng = np.random.default_rng(1)
    f = acs.formats.get("fp16")
    for man_bits in (50, 51, 52):
        mac = acs.MAC(f, f, acs.FloatAcc(10, man_bits, mode))
        a, b = (np.where(rng.random(shape) < 0.5, rng.standard_normal(shape) * 2.0**-20, rng.standard_normal(shape))
                for shape in ((48, 64), (64, 48)))   # subnormal and normal fp16 values
        A, B = f.encode(a), f.encode(b)
        for dataflow in ("os", "ws"):
            gemm_all_ways(mac, A, B, dataflow, rows=8, seed=2)


FLOAT_KERNELS = [  # MAC, kernel_float.c's kind with AVX-512 (1 binary32, 2 half, 3 wide, 4 narrow, 5 sr)
    (acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(8, 23, "rtz")), 1),
    (acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(8, 23, "rna")), 1),
    (acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(8, 23, "rne", overflow="saturate")), 1),
    (acs.MAC("e5m2", "e5m2", acs.FloatAcc(5, 10, "rdn")), 2),
    (acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(5, 10, "rna")), 4),
    (acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(5, 10, overflow="saturate")), 4),
    (acs.MAC("bf16", "bf16", acs.FloatAcc(8, 7)), 3),
    (acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(8, 21, "rto")), 3),
    (acs.MAC("bf16", "e4m3fn", acs.FloatAcc(6, 9)), 4),     # B scaled (bf16's 2^-133 would leave binary32)
    (acs.MAC("e4m3fn", "bf16", acs.FloatAcc(6, 9)), 4),     # A scaled
    (acs.MAC("bf16", "bf16", acs.FloatAcc(6, 9)), 0),       # neither scales exactly: array.c's kernel
    (acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(8, 22)), 0),  # too fine to round to odd at binary32
    (acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(5, 10, "sr")), 5),    # binary64 lanes
    (acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(8, 19, "sr", overflow="saturate")), 5),
    (acs.MAC("e4m3fn", "e4m3fn", acs.FloatAcc(8, 20, "sr")), 0),     # the draw's 32 bits need 34 below the grid
]


def test_float_kernels_are_taken():
    """Where the CPU has AVX-512, each MAC above runs the kernel named (the other tests then
    check that kernel's bits); never with the AVX2 or portable kernels selected."""
    kinds = [lib.acs_float_kernel(mac._c) for mac, _ in FLOAT_KERNELS]
    if not any(kinds):
        pytest.skip("no AVX-512 on this CPU: kernel_float.c is not used")
    assert kinds == [want for _, want in FLOAT_KERNELS]
    with vector_isa(2):   # AVX2 where the CPU also has AVX-512
        assert not any(lib.acs_float_kernel(mac._c) for mac, _ in FLOAT_KERNELS)
    with vector_isa(False):
        assert not any(lib.acs_float_kernel(mac._c) for mac, _ in FLOAT_KERNELS)


@pytest.mark.parametrize("mode", ["rne", "rna", "rtz", "rup", "rdn", "rto"])
@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_mixed_operands_and_scaling(mode, dataflow):
    """bf16 with e4m3fn (the kernel scales the e4m3fn side into binary32's range) and bf16 with
    bf16 (no side scales exactly: array.c's kernel), into grids narrower than binary32's, and
    into bf16 and fp32 grids (products up to 2^256), with every special: all equal to the
    general step."""
    rng = np.random.default_rng(12)
    for fa, fb in (("bf16", "e4m3fn"), ("e4m3fn", "bf16"), ("bf16", "bf16")):
        for acc in (acs.FloatAcc(6, 9, mode), acs.FloatAcc(4, 3, mode), acs.FloatAcc(6, 9, mode, overflow="saturate"),
                    acs.FloatAcc(8, 7, mode), acs.FloatAcc(8, 23, mode)):   # bf16 products past binary32's range
            mac = acs.MAC(fa, fb, acc)
            (f, ca), (g, cb) = codes(fa), codes(fb)
            A = rng.choice(ca, (9, 70))
            B = rng.choice(cb, (70, 35))
            gemm_all_ways(mac, A, B, dataflow, rows=8, cols=4, threads=(1, 3))
            A = f.encode(rng.standard_normal((6, 40)) * 2.0 ** rng.integers(-30, 8, (6, 40)))
            B = g.encode(rng.standard_normal((40, 33)) * 2.0 ** rng.integers(-6, 6, (40, 33)))
            gemm_all_ways(mac, A, B, dataflow, rows=8, cols=4)
