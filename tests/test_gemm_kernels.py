"""The fp32 and integer-wrap GEMM kernels (array.c's portable and AVX2 ones, kernel_gemm.c's AVX-512
and AVX-512 VNNI ones, two B panels a pass) against each other and the general step, bit for bit:
every code (NaN, inf, signed zeros, max), shapes that are not multiples of the 4-row block, the
16-column panel or its pairs, odd K (int16 pairs), every dataflow and 1-3 threads.  Also the
operand-register toggle counts against an independent per-PE simulation."""
import numpy as np
import pytest
from test_energy import sim_registers

import accel_sim as acs
from accel_sim._native import fast_paths, lib, vector_isa


def raw(x):
    x = np.ascontiguousarray(x)
    return x if x.dtype.kind in "iu" else x.view(np.uint64)


MACS = [acs.MAC("e4m3fn", "e4m3fn", "fp32"), acs.MAC("e5m2", "int8", "fp32"), acs.MAC("fp16", "e4m3", "fp32"),
        acs.MAC("int8", "int8", "int32"), acs.MAC("int8", "uint8", acs.IntAcc(20)), acs.MAC("int4", "int8", acs.IntAcc(12)),
        acs.MAC("int8", "int8", acs.IntAcc(24, overflow="saturate"))]
SHAPES = [(1, 1, 1), (3, 5, 17), (5, 31, 33), (9, 2, 16), (23, 41, 19), (8, 64, 48), (13, 70, 49)]   # M, K, N


def every_way(mac, A, B, dataflow, rows, cols):
    """Accumulators, outputs and counts through the general step, then each kernel level and
    thread count; all must be equal to the first."""
    qa, qb = acs.QTensor(A, mac.a), acs.QTensor(B, mac.b)

    def run(threads=1):
        r = acs.Array(rows, cols, dataflow, mac, threads=threads).gemm(qa, qb, metrics=False)
        return raw(r.acc), raw(r.output), r.counts

    with fast_paths(False):
        want = run()
    runs = {}
    for level, name in ((1, "best"), (2, "avx2"), (0, "portable")):
        with vector_isa(level):
            for t in (1, 2, 3):
                runs[f"{name}, {t} threads"] = run(t)
    for name, got in runs.items():
        assert np.array_equal(got[0], want[0]), f"{mac.name} {dataflow} {A.shape}x{B.shape}: acc, {name}"
        assert np.array_equal(got[1], want[1]), f"{mac.name} {dataflow} {A.shape}x{B.shape}: output, {name}"
        assert got[2] == want[2], f"{mac.name} {dataflow} {A.shape}x{B.shape}: counts, {name}"


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("mac", MACS, ids=lambda m: f"{m.a.name}x{m.b.name}-{m.acc.name}")
def test_kernels_equal_general_on_every_code_and_odd_shapes(mac, dataflow):
    rng = np.random.default_rng(16)
    ca, cb = mac.a.all_codes(), mac.b.all_codes()
    for m, k, n in SHAPES:
        A = rng.choice(ca, size=(m, k)).astype(mac.a.code_dtype)
        B = rng.choice(cb, size=(k, n)).astype(mac.b.code_dtype)
        every_way(mac, A, B, dataflow, rows=5, cols=3)


@pytest.mark.parametrize("mac", MACS[:4], ids=lambda m: f"{m.a.name}x{m.b.name}-{m.acc.name}")
def test_kernels_on_extremes_and_many_tiles(mac):
    """Largest magnitudes (fp32 overflow to inf in both directions, int8 -128 * -128 pairs that
    wrap int32 lanes' pair sums), zeros of both signs, and K over many ws tiles and both panels."""
    rng = np.random.default_rng(3)
    m, k, n = 19, 300, 40

    def extremes(f, shape):
        v = f.decode(f.all_codes())
        finite = f.all_codes()[np.isfinite(v)]
        big = finite[np.abs(v[np.isfinite(v)]) == np.abs(v[np.isfinite(v)]).max()]
        zero = finite[v[np.isfinite(v)] == 0]
        c = rng.choice(finite, size=shape)
        pick = rng.random(shape)
        c[pick < 0.4] = rng.choice(big, size=int((pick < 0.4).sum()))
        c[(pick >= 0.4) & (pick < 0.5)] = rng.choice(zero, size=int(((pick >= 0.4) & (pick < 0.5)).sum()))
        return c.astype(f.code_dtype)

    A, B = extremes(mac.a, (m, k)), extremes(mac.b, (k, n))
    for dataflow in ("os", "ws", "is"):
        every_way(mac, A, B, dataflow, rows=16, cols=8)


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("ab", [("e4m3fn", "e4m3fn"), ("fp16", "int8"), ("int8", "bf16")])
def test_toggle_counts_equal_register_simulation(ab, dataflow):
    """Mixed code widths (one or two bytes), lanes past K, partial folds, 1-3 threads."""
    rng = np.random.default_rng(9)
    fa, fb = (acs.formats.get(x) for x in ab)
    for m, k, n, rows, cols in ((7, 13, 5, 4, 3), (11, 40, 9, 6, 4), (3, 5, 17, 8, 2)):
        A = rng.choice(fa.all_codes(), size=(m, k)).astype(fa.code_dtype)
        B = rng.choice(fb.all_codes(), size=(k, n)).astype(fb.code_dtype)
        want = sim_registers(dataflow, rows, cols, A, B)[:2]
        for t in (1, 2, 3):
            c = acs.Array(rows, cols, dataflow, acs.MAC(fa, fb, "fp32"), threads=t).gemm(
                acs.QTensor(A, fa), acs.QTensor(B, fb), metrics=False).counts
            assert (c["toggles_a"], c["toggles_b"]) == want, (m, k, n, rows, cols, t)


def special_floats(rng, size, dtype):
    v = (rng.standard_normal(size) * 2.0 ** rng.integers(-60, 60, size)).astype(dtype)
    pick = rng.integers(0, 12, size)
    for p, x in enumerate((np.nan, np.inf, -np.inf, 0.0, -0.0, np.finfo(dtype).max, np.finfo(dtype).tiny / 4, 1.0)):
        v[pick == p] = x
    return v


@pytest.mark.parametrize("int_acc", [False, True])
def test_epilogue_vector_case_equals_scalar(int_acc):
    """acs_epilogue through its AVX-512 fast case and the scalar code: accumulators in and out of
    the fast case (more than 24 significant bits, beyond +-2^53, NaN, inf, signed zeros), scales
    per tensor, row or column (0, inf, NaN, subnormal), biases with specials, ragged rows."""
    from accel_sim._native import ffi
    rng = np.random.default_rng(24)
    m, n = 7, 37
    if int_acc:
        acc = rng.integers(-2**24, 2**24, (m, n), dtype=np.int64)
        edges = [0, 2**24 + 1, -(2**24) - 3, 2**53 - 1, -(2**53) + 1, 2**53, -(2**53), 2**62 + 1, -2**63, 2**63 - 1]
        pick = rng.random((m, n)) < 0.3
        acc[pick] = rng.choice(np.array(edges, np.int64), size=int(pick.sum()))
        acc[0, :9] = 3 * 2**56 + 1   # as binary64 3 * 2^56: times 1 + 3 * 2^-23 a tie in fp32, the exact value not
    else:
        acc = special_floats(rng, (m, n), np.float32).astype(np.float64)
        wide = rng.random((m, n)) < 0.2
        acc[wide] = rng.standard_normal(int(wide.sum())) * 1e-3 + 1.0    # beyond fp32's 24 bits
    scales = [(np.float32([1.0]), np.float32([1 + 3 * 2.0**-23]))]
    for sa_len, sb_len in ((1, 1), (m, 1), (1, n), (m, n)):
        scales.append((special_floats(rng, sa_len, np.float32), special_floats(rng, sb_len, np.float32)))
        scales[-1][0][0], scales[-1][1][0] = np.float32(0.37), np.float32(3.1)
    for sa, sb in scales:
        sa_len, sb_len = sa.size, sb.size
        for bias in (None, special_floats(rng, n, np.float32)):
            outs = []
            for level in (1, 2, 0):
                y = np.empty((m, n), np.float64)
                with vector_isa(level):
                    status = lib.acs_epilogue(ffi.NULL if int_acc else ffi.cast("double *", acc.ctypes.data),
                                              ffi.cast("int64_t *", acc.ctypes.data) if int_acc else ffi.NULL, m, n,
                                              ffi.cast("float *", sa.ctypes.data), int(sa_len > 1),
                                              ffi.cast("float *", sb.ctypes.data), int(sb_len > 1),
                                              ffi.NULL if bias is None else ffi.cast("float *", bias.ctypes.data),
                                              ffi.cast("double *", y.ctypes.data), 1)
                assert status == 0
                outs.append(y.view(np.uint64).copy())
            assert np.array_equal(outs[0], outs[2]) and np.array_equal(outs[1], outs[2]), (sa_len, sb_len, bias is None)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64])
def test_transpose_of_codes_equals_numpy(dtype):
    """B's codes transposed in the engine's threads (array.py's _transposed) against numpy's
    transpose, for shapes around its 64 x 64 tiles, empty ones and 1-3 threads."""
    from accel_sim.array import _transposed
    rng = np.random.default_rng(5)
    for shape in ((0, 5), (5, 0), (1, 1), (64, 64), (65, 130), (3, 200), (200, 3)):
        b = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
        for threads in (1, 2, 3):
            bt = _transposed(b, np.dtype(dtype), threads)
            assert bt.flags.c_contiguous and bt.dtype == dtype and np.array_equal(bt, b.T)
    from accel_sim._native import ffi
    assert lib.acs_transpose(ffi.NULL, ffi.NULL, 2, 2, 3, 1) != 0   # bad element size: refused
