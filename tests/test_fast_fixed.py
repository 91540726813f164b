"""Register accumulators through csrc/kernel_fixed.c (FixedAcc and Kulisch accumulators, the
posit quire, IntAcc saturate and wide wrap): the vector kernels (AVX2 / AVX-512 where the CPU
has them), their portable twins and the general per-step path agree bit for bit (accumulators
as int64 or float64 bit patterns, and the counts), for wrap and saturate cases that really
wrap and saturate, NaR, odd shapes, every dataflow and several threads; small cases also
against the exact model (reference.gemm_order)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import accel_sim as acs
from accel_sim import reference as ref
from accel_sim._native import fast_paths, vector_isa
from accel_sim.mac import FixedAcc, IntAcc, Quire

from conftest import assert_bits


def codes(fmt, shape, rng, finite=True):
    """Random codes of fmt (without NaN / inf / NaR when finite)."""
    c = fmt.all_codes()
    if finite:
        c = c[np.isfinite(fmt.decode(c))]
    return rng.choice(c, size=shape).astype(fmt.code_dtype)


def run(arr, A, B):
    try:
        return arr.gemm(acs.QTensor(A, arr.mac.a), acs.QTensor(B, arr.mac.b), metrics=False)
    except ValueError as e:
        return str(e)


def all_paths_agree(mac, A, B, dataflow, rows=3, cols=2, buffer_acc=None, threads=(1, 2, 3), seed=0):
    """The array's GEMM with the vector kernels at every thread count (AVX-512 where the CPU has
    it, and AVX2), the portable twins and the general path: the same accumulators (bit for
    bit), outputs and counts, or the same error.  Returns the general path's."""
    def arr(t):
        return acs.Array(rows, cols, dataflow, mac, buffer_acc=buffer_acc, threads=t, seed=seed)
    results = [run(arr(t), A, B) for t in threads]
    with vector_isa(False):
        results += [run(arr(t), A, B) for t in (1, 2)]
    with vector_isa(2):   # AVX2 where the CPU also has AVX-512
        results.append(run(arr(threads[-1]), A, B))
    with fast_paths(False):
        results.append(run(arr(1), A, B))
    first = results[-1]
    for r in results[:-1]:
        if isinstance(first, str):
            assert r == first
            continue
        assert not isinstance(r, str), r
        assert_bits(r.acc, first.acc, f"{mac.name} {dataflow}")
        assert np.array_equal(r.output.view(np.uint32), first.output.view(np.uint32))
        assert r.counts == first.counts
    return first


def extreme_operands(mac, rng, k=150):
    """Random codes (21 x k, k x 19) with rows and columns of the largest magnitudes of each
    sign: registers wrap or saturate along the chain, and back."""
    vals_a, vals_b = mac.a.decode(mac.a.all_codes()), mac.b.decode(mac.b.all_codes())
    fa, fb = np.isfinite(vals_a), np.isfinite(vals_b)
    big_a = mac.a.all_codes()[fa & (np.abs(vals_a) == np.abs(vals_a[fa]).max())]
    big_b = mac.b.all_codes()[fb & (np.abs(vals_b) == np.abs(vals_b[fb]).max())]
    A, B = codes(mac.a, (21, k), rng), codes(mac.b, (k, 19), rng)
    A[:4] = rng.choice(big_a, (4, k))
    A[4, :100], A[4, 100:] = big_a[0], big_a[-1]
    B[:, :3] = rng.choice(big_b, (k, 3))
    B[:, 3] = big_b[-1]
    return A, B


INT8 = acs.formats.get("int8")
CASES = [
    # Kulisch accumulators (exact), FixedAcc saturate / wrap that really overflow
    acs.MAC("int8", "int8", FixedAcc(40, 40)),
    acs.MAC("int8", "int8", FixedAcc(40, 40, overflow="wrap")),
    acs.MAC("int8", "int8", FixedAcc(12, 4, overflow="wrap")),
    acs.MAC("int8", "int8", FixedAcc(10, 2)),
    acs.MAC("int8", "int8", FixedAcc(16, 8)),     # B in units 2^-8: -128 is -32768, still an int16 (clamp kernel)
    acs.MAC("int8", "int8", FixedAcc(6, 10, overflow="wrap")),     # products 2^10 lsbs: sums in product units
    acs.MAC("int8", "int8", FixedAcc(30, -3, overflow="wrap")),     # coarse grid: products rounded (kernel_fixround.c)
    acs.MAC("int4", "int8", FixedAcc(4, 2, overflow="wrap")),
    acs.MAC("uint8", "int8", FixedAcc(14, 1)),
    acs.MAC("e4m3fn", "e4m3fn", FixedAcc(20, 20)),
    acs.MAC("e4m3fn", "int8", FixedAcc(9, 20, overflow="wrap", rounding="rtz")),
    acs.MAC("e2m1", "e2m1", FixedAcc(5, 2, rounding="sr")),
    acs.MAC("e5m2", "e5m2", FixedAcc(40, 40)),                      # 33-bit values: kernel_wide.c
    # IntAcc saturate (really saturating) and wide wrap
    acs.MAC("int8", "int8", IntAcc(24, "saturate")),
    acs.MAC("int8", "int8", IntAcc(16, "saturate")),
    acs.MAC("int8", "int8", IntAcc(12, "saturate")),
    acs.MAC("uint8", "int8", IntAcc(20, "saturate")),
    acs.MAC("int4", "int4", IntAcc(5, "saturate")),
    acs.MAC("int8", "int8", IntAcc(48)),
    acs.MAC("int8", "int8", IntAcc(64)),
    acs.MAC("int8", "int8", IntAcc(40, "saturate")),
    acs.MAC("int8", "int8", IntAcc(63, "saturate")),
    acs.MAC("int8", "int8", IntAcc(8)),
    # the quire
    acs.MAC("posit8", "posit8", Quire("posit8")),
    acs.MAC("posit8", "posit8", Quire("posit8", readout="posit16")),
    acs.MAC("posit8", "posit8", Quire("posit8", carry_bits=0)),       # 26 bits: really wraps
    acs.MAC("posit8", "posit8", Quire("posit8es2")),                  # 128 bits: the general path
]


def case_id(mac):
    return mac.name


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("mac", CASES, ids=case_id)
def test_random_codes_all_paths_agree(mac, dataflow):
    rng = np.random.default_rng(abs(hash((mac.name, dataflow))) % 2**32)
    for m, k, n in ((23, 67, 37), (1, 1, 1), (5, 1, 17), (4, 2, 16), (9, 33, 3)):
        A, B = codes(mac.a, (m, k), rng), codes(mac.b, (k, n), rng)
        all_paths_agree(mac, A, B, dataflow)


@pytest.mark.parametrize("mac", CASES, ids=case_id)
def test_extremes_really_wrap_and_saturate(mac):
    """Rows and columns of the largest magnitudes of each sign: narrow registers wrap or
    saturate along the chain (and back), on arrays whose tiles join the buffer many times."""
    A, B = extreme_operands(mac, np.random.default_rng(3))
    for df in ("os", "ws", "is"):
        all_paths_agree(mac, A, B, df, rows=4, cols=3, threads=(1, 3))


@pytest.mark.parametrize("mac", [m for m in CASES if m.a.bits <= 8 and m.b.bits <= 8], ids=case_id)
def test_every_code(mac):
    """Every code of A against every code of B (NaN, inf and NaR included): the same
    accumulators, NaR outputs, or the same error on every path."""
    ca, cb = mac.a.all_codes(), mac.b.all_codes()
    rng = np.random.default_rng(9)
    A = np.stack([rng.permutation(np.resize(ca, 64)) for _ in range(len(ca))])
    A[:, 0] = ca
    B = np.stack([rng.permutation(np.resize(cb, 64)) for _ in range(len(cb))], axis=1)
    B[0] = cb
    for df in ("os", "ws"):
        all_paths_agree(mac, A.astype(mac.a.code_dtype), B.astype(mac.b.code_dtype), df, rows=5, cols=4,
                        threads=(1, 2))
    finite_a = codes(mac.a, (len(ca), 64), rng)
    finite_a[:, 1:] = A[:, 1:]
    finite_a[:, 0] = np.where(np.isfinite(mac.a.decode(ca)), ca, finite_a[:, 0])


def test_quire_nar_rows_and_columns():
    mac = acs.MAC("posit8", "posit8", Quire("posit8", readout="posit16"))
    rng = np.random.default_rng(4)
    A, B = codes(mac.a, (30, 70), rng), codes(mac.b, (70, 35), rng)
    A[3, 17] = B[40, 20] = B[0, 33] = 0x80
    for df in ("os", "ws", "is"):
        r = all_paths_agree(mac, A, B, df, rows=4, cols=4)
        nar = np.isnan(r.acc)
        want = np.zeros_like(nar)
        want[3], want[:, 20], want[:, 33] = True, True, True
        assert np.array_equal(nar, want)


@pytest.mark.parametrize("mac", [acs.MAC("e4m3", "e4m3", FixedAcc(20, 20)), acs.MAC("posit8", "posit8", FixedAcc(20, 20)),
                                 acs.MAC("e5m2", "int8", FixedAcc(40, 40)), acs.MAC("e4m3fn", "e4m3fn", FixedAcc(40, 40)),
                                 acs.MAC("e4m3fn", "int8", FixedAcc(20, 9, overflow="wrap"))], ids=case_id)
def test_fixed_special_operands_are_errors_on_every_path(mac):
    rng = np.random.default_rng(2)
    A, B = codes(mac.a, (13, 40), rng), codes(mac.b, (40, 21), rng)
    specials = mac.a.all_codes()[~np.isfinite(mac.a.decode(mac.a.all_codes()))]
    A[7, 5] = specials[0]
    for df in ("os", "ws"):
        r = all_paths_agree(mac, A, B, df)
        assert isinstance(r, str) and ("NaN" in r or "infinit" in r)


BUFFERS = [  # PE, buffer
    (acs.MAC("int8", "int8", FixedAcc(40, 40)), FixedAcc(50, 50)),          # wider exact buffer
    (acs.MAC("int8", "int8", FixedAcc(40, 40)), FixedAcc(30, 10)),          # narrower: saturates
    (acs.MAC("int8", "int8", FixedAcc(12, 4, overflow="wrap")), FixedAcc(20, 4, overflow="wrap")),
    (acs.MAC("int8", "int8", FixedAcc(12, 4, overflow="wrap")), FixedAcc(12, 4)),
    (acs.MAC("int8", "int8", FixedAcc(30, 8)), FixedAcc(40, 8, overflow="wrap")),
    (acs.MAC("int8", "int8", FixedAcc(30, 8)), acs.FloatAcc(8, 23)),
    (acs.MAC("int8", "int8", IntAcc(24, "saturate")), IntAcc(32)),
    (acs.MAC("int8", "int8", IntAcc(24, "saturate")), IntAcc(24)),
    (acs.MAC("int8", "int8", IntAcc(16, "saturate")), FixedAcc(16, 0)),
    (acs.MAC("int8", "int8", IntAcc(16, "saturate")), FixedAcc(20, 4)),
    (acs.MAC("int8", "int8", IntAcc(20)), FixedAcc(40, 3)),
    (acs.MAC("int8", "int8", IntAcc(48)), IntAcc(48, "saturate")),
    (acs.MAC("posit8", "posit8", Quire("posit8")), Quire("posit8", carry_bits=40)),
    (acs.MAC("posit8", "posit8", Quire("posit8", carry_bits=0)), Quire("posit8")),
    (acs.MAC("posit8", "posit8", Quire("posit8")), Quire("posit8", carry_bits=2, readout="posit16")),
    (acs.MAC("posit8", "posit8", Quire("posit8")), acs.FloatAcc(8, 23)),
]


@pytest.mark.parametrize("pe_buffer", BUFFERS, ids=lambda x: f"{x[0].name}+{x[1].name}")
@pytest.mark.parametrize("dataflow", ["ws", "is"])
def test_buffers_join_as_the_general_path(pe_buffer, dataflow):
    mac, buffer = pe_buffer
    rng = np.random.default_rng(6)
    A, B = codes(mac.a, (19, 130), rng), codes(mac.b, (130, 22), rng)
    big = mac.a.all_codes()[np.argmax(np.where(np.isfinite(mac.a.decode(mac.a.all_codes())),
                                               np.abs(mac.a.decode(mac.a.all_codes())), 0))]
    A[:3] = big
    B[:, :4] = mac.b.all_codes()[np.argmax(np.where(np.isfinite(mac.b.decode(mac.b.all_codes())),
                                                    np.abs(mac.b.decode(mac.b.all_codes())), 0))]
    all_paths_agree(mac, A, B, dataflow, rows=3, cols=5, buffer_acc=buffer)


def test_large_blocks_and_long_chains():
    """Many register blocks and panels, K of many int32 chunks for the quire (posit8 products
    up to 2^24 units), saturation reached and left again mid-chain."""
    rng = np.random.default_rng(8)
    for mac in (acs.MAC("posit8", "posit8", Quire("posit8")), acs.MAC("int8", "int8", IntAcc(16, "saturate")),
                acs.MAC("int8", "int8", IntAcc(24, "saturate")), acs.MAC("int8", "int8", FixedAcc(40, 40))):
        A, B = codes(mac.a, (41, 1200), rng), codes(mac.b, (1200, 35), rng)
        big = mac.a.encode(np.float64(mac.a.max))
        A[:2, :600] = big
        A[:2, 600:] = mac.a.encode(-np.float64(mac.a.max))
        B[:, :2] = big
        exact = mac.a.decode(A).astype(np.float64) @ mac.b.decode(B).astype(np.float64)   # exact: < 2^53
        for df in ("os", "ws"):
            r = all_paths_agree(mac, A, B, df, rows=32, cols=8, threads=(1, 2))
            if not isinstance(mac.acc, Quire):   # (the quire reads out rounded)
                assert (r.acc != exact).any() == isinstance(mac.acc, IntAcc)   # saturated, or exact


def spec(acc):
    if isinstance(acc, IntAcc):
        return dict(kind="int", bits=acc.bits, overflow=acc.overflow)
    return dict(kind="fixed", int_bits=acc.int_bits, frac_bits=acc.frac_bits, rounding=acc.rounding,
                overflow=acc.overflow)


@pytest.mark.parametrize("pe_buffer", [(acs.MAC("int8", "int8", FixedAcc(10, 2)), None),
                                       (acs.MAC("int8", "int8", FixedAcc(8, 4, overflow="wrap")), None),
                                       (acs.MAC("int8", "int8", FixedAcc(40, 40)), FixedAcc(45, 42)),
                                       (acs.MAC("int8", "int8", IntAcc(16, "saturate")), None),
                                       (acs.MAC("int8", "int8", IntAcc(40)), None),
                                       (acs.MAC("e4m3fn", "e4m3fn", FixedAcc(12, 18)), None)],
                         ids=lambda x: x[0].name if isinstance(x, tuple) else str(x))
@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_against_the_exact_model(pe_buffer, dataflow):
    assert_matches_exact_model(*pe_buffer, dataflow)


def assert_matches_exact_model(mac, buffer, dataflow):
    """A small GEMM with full-range rows and columns: its accumulators equal reference.gemm_order's."""
    rng = np.random.default_rng(12)
    m, k, n = 6, 45, 7
    A, B = codes(mac.a, (m, k), rng), codes(mac.b, (k, n), rng)
    A[0] = mac.a.encode(np.float64(mac.a.max))
    B[:, 0] = mac.b.encode(np.float64(mac.b.max))
    arr = acs.Array(4, 3, dataflow, mac, buffer_acc=buffer)
    got = arr.gemm(acs.QTensor(A, mac.a), acs.QTensor(B, mac.b), metrics=False).acc
    va = [[Fraction(float(x)) for x in row] for row in mac.a.decode(A)]
    vb = [[Fraction(float(x)) for x in row] for row in mac.b.decode(B)]
    want = ref.gemm_order(va, vb, dataflow=dataflow, rows=4, pe=spec(mac.acc),
                          buffer=None if buffer is None else spec(buffer))
    out_acc = buffer if buffer is not None and dataflow != "os" else mac.acc
    if isinstance(out_acc, IntAcc):
        assert_bits(got, np.array(want, dtype=np.int64))
    else:
        assert_bits(got, np.array([[float(v) for v in r] for r in want], dtype=np.float64))


@pytest.mark.parametrize("readout", [acs.formats.PositFormat(16, es) for es in range(4)]
                         + [acs.formats.PositFormat(12, 2), acs.formats.PositFormat(5, 1), "posit8", "posit8es2"],
                         ids=lambda r: getattr(r, "name", r))
@pytest.mark.parametrize("quire", [("posit8", 30), ("posit16", 10)], ids=str)
def test_quire_readout_of_every_magnitude(quire, readout):
    """The quire's readout (memoised per bit length, leading bits and sticky bit) against the
    general path's, over sums of every magnitude the operands reach: each row holds one code
    (all codes, NaR included), times random columns, over short and long K."""
    mac = acs.MAC("posit8", "posit8", Quire(quire[0], carry_bits=quire[1], readout=readout))
    rng = np.random.default_rng(10)
    ca = mac.a.all_codes()
    for k in (1, 2, 3, 40):
        A = np.repeat(ca[:, None], k, axis=1).astype(np.uint8)
        A[::3, k // 2] = rng.choice(ca, A[::3].shape[0])
        B = codes(mac.b, (k, 70), rng, finite=False)
        all_paths_agree(mac, A, B, "os", threads=(1, 2))
        all_paths_agree(mac, A, B, "ws", rows=2, cols=3, threads=(1,))


def accumulate_paths(A, B, mac, init):
    out = []
    for on in (True, False):
        with fast_paths(on):
            try:
                out.append(acs.accumulate(A, B, mac, init=init))
            except ValueError as e:
                out.append(str(e))
    return out


@pytest.mark.parametrize("mac", [m for m in CASES if not isinstance(m.acc, IntAcc)]
                         + [acs.MAC("int8", "int8", FixedAcc(100, 19, overflow="wrap")),
                            acs.MAC("int8", "int8", FixedAcc(2, 118)), acs.MAC("int8", "int8", FixedAcc(1, 119, overflow="wrap")),
                            acs.MAC(acs.formats.IntFormat(16), acs.formats.IntFormat(16), FixedAcc(20, 90)),
                            acs.MAC(acs.formats.IntFormat(16), acs.formats.IntFormat(16), FixedAcc(40, 60)),
                            acs.MAC("posit8es2", "posit8es2", Quire("posit8es2")),
                            acs.MAC("posit8es2", "posit8es2", Quire("posit8es2", carry_bits=0))], ids=case_id)
def test_accumulate_chain_equals_general(mac):
    """acs.accumulate's chain for FixedAcc and the quire (products on the register's grid) equals
    the general step: inits near the bounds, saturation and wrapping, NaR, NaN and inf."""
    rng = np.random.default_rng(13)
    for k, finite in ((1, True), (7, True), (300, True), (300, False)):
        A, B = codes(mac.a, (24, k), rng, finite), codes(mac.b, (24, k), rng, finite)
        A[:4] = mac.a.encode(np.float64(mac.a.max))
        B[:2] = mac.b.encode(np.float64(mac.b.max))
        B[2:4] = mac.b.encode(-np.float64(mac.b.max))
        top = 2.0 ** (mac.acc.int_bits - 1)
        init = np.array([0.0, top * 0.99, -top, top - 1, -top * 0.75, 1.5, -0.0, 0.25] * 3)
        fast, general = accumulate_paths(A, B, mac, init)
        if isinstance(general, str):
            assert fast == general and not finite
        else:
            assert_bits(fast, general, mac.name)
