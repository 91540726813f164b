"""FP8 (and other) operands whose values are integers of up to 31 bits in units of their
smallest step, into register accumulators: csrc/kernel_fixed.c's int32 kernels (products of up
to 62 bits formed exactly in int64 lanes, summed modulo 2^64), AVX-512 / AVX2 where the CPU has
them, their portable twins and the general per-step path agree bit for bit (accumulators as
int64 or float64 bit patterns, outputs, counts, or the same error), on every code pair, random
GEMMs of odd shapes, every dataflow, small arrays and several threads, registers that really
wrap and saturate; small cases also against the exact model (reference.gemm_order)."""
from __future__ import annotations

import numpy as np
import pytest

import accel_sim as acs
from accel_sim.formats import FixedFormat, FloatFormat
from accel_sim._engine import ffi, lib
from accel_sim.mac import FixedAcc, IntAcc, Quire

from test_fast_fixed import all_paths_agree, assert_matches_exact_model, codes, extreme_operands

# Values of up to 31 bits (e5m1: 2^-15 .. 1.5 * 2^15): products beyond 2^44, the int32 kernels
E5M1 = FloatFormat(5, 1, name="e5m1_wide_test")
INT16 = FixedFormat(16, 0, name="int16_wide_test")

# Operands beyond 31 bits (e5m2: 2^-16 .. 57344; posit8es2: 2^-24 .. 2^24): kernel_wide.c's bands
WIDE = [
    acs.MAC("e5m2", "e5m2", FixedAcc(40, 40)),                           # Kulisch, saturate: norm bound
    acs.MAC("e5m2", "e5m2", FixedAcc(40, 40, overflow="wrap")),
    acs.MAC("e5m2", "e5m2", FixedAcc(20, 40, overflow="wrap")),          # really wraps
    acs.MAC("e5m2", "e5m2", FixedAcc(34, 32)),                           # saturates: bound, then general
    acs.MAC("e5m2", "e5m2", FixedAcc(60, 60)),                           # provably exact
    acs.MAC("e5m2", "e4m3fn", FixedAcc(40, 40)),
    acs.MAC("e4m3fn", "e5m2", FixedAcc(30, 40, overflow="wrap")),
    acs.MAC("posit8es2", "posit8es2", Quire("posit8es2")),              # 128 bits, two B bands
    acs.MAC("posit8es2", "posit8es2", Quire("posit8es2", carry_bits=2)),  # 100 bits: wraps
    acs.MAC("posit8es2", "e5m2", FixedAcc(60, 60, overflow="wrap")),
]

CASES = [
    acs.MAC("e4m3fn", "e4m3fn", FixedAcc(40, 40)),                       # Kulisch: exact
    acs.MAC("e4m3fn", "e4m3fn", FixedAcc(40, 40, overflow="wrap")),
    acs.MAC("e4m3fn", "e4m3fn", FixedAcc(20, 18, overflow="wrap")),      # wraps after a few products
    acs.MAC("e4m3fn", "e4m3fn", FixedAcc(12, 30, overflow="wrap")),      # products 2^12 lsbs
    acs.MAC("e4m3fn", "e4m3fn", FixedAcc(30, 20)),                       # saturate, provably never
    acs.MAC("e4m3fn", "e4m3fn", FixedAcc(24, 18)),                       # saturates: clamped in int64 lanes
    acs.MAC("e4m3fn", "e4m3fn", FixedAcc(24, 9)),                        # off the grid: the general path
    acs.MAC("e4m3", "e4m3", FixedAcc(30, 30, overflow="wrap")),
    acs.MAC("e4m3fnuz", "e4m3fn", FixedAcc(40, 40)),
    acs.MAC("e4m3fn", "int8", FixedAcc(20, 9, overflow="wrap")),         # really wraps
    acs.MAC("e4m3fn", "int8", FixedAcc(40, 9)),
    acs.MAC("int8", "e4m3fn", FixedAcc(12, 9)),                          # saturates
    acs.MAC("e4m3fn", "e2m1", FixedAcc(16, 10, overflow="wrap")),
    acs.MAC("e2m1", "e4m3fn", FixedAcc(30, 10)),
    acs.MAC("e3m4", "e4m3fn", FixedAcc(30, 20, overflow="wrap")),
    acs.MAC("e3m4", "e3m4", FixedAcc(20, 12, overflow="wrap")),          # int16 operands (pmaddwd)
    acs.MAC("e2m3", "e4m3fn", FixedAcc(30, 20)),
    acs.MAC("e5m2", "e4m3fn", FixedAcc(60, 60)),                         # 32-bit values: kernel_wide.c, exact
    acs.MAC(E5M1, "e4m3fn", FixedAcc(60, 24)),                           # int32 kernels, exact
    acs.MAC(E5M1, E5M1, FixedAcc(20, 30, overflow="wrap")),              # int32 kernels, wraps
    acs.MAC(E5M1, E5M1, FixedAcc(34, 30, overflow="wrap")),              # 64 bits: wraps with the int64
    acs.MAC(E5M1, "e3m4", FixedAcc(40, 21, overflow="wrap")),            # binary64 runs of ~1400 products
    acs.MAC(E5M1, E5M1, FixedAcc(60, 30)),                               # sums beyond int64: general
    acs.MAC(E5M1, "e4m3fn", FixedAcc(30, 24)),                           # 54 bits, saturates
    acs.MAC(E5M1, E5M1, FixedAcc(40, 30)),                               # 70 bits, can saturate: general
] + WIDE




def case_id(mac):
    return mac.name


@pytest.mark.parametrize("mac", [m for m in CASES if m.a.bits <= 8 and m.b.bits <= 8], ids=case_id)
@pytest.mark.parametrize("k", [1, 2])
def test_every_code_pair(mac, k):
    """Every code of A against every code of B at k = 1 and 2: finite codes (the kernels), then
    all codes (NaN / inf: the same errors)."""
    rng = np.random.default_rng(k)
    for finite in (True, False):
        ca, cb = mac.a.all_codes(), mac.b.all_codes()
        if finite:
            ca, cb = ca[np.isfinite(mac.a.decode(ca))], cb[np.isfinite(mac.b.decode(cb))]
        A = np.stack([ca] + [rng.permutation(ca) for _ in range(k - 1)], axis=1).astype(mac.a.code_dtype)
        B = np.stack([cb] + [rng.permutation(cb) for _ in range(k - 1)]).astype(mac.b.code_dtype)
        for df in ("os", "ws"):
            all_paths_agree(mac, A, B, df, rows=3, cols=5, threads=(1, 3))


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("mac", CASES, ids=case_id)
def test_random_codes_all_paths_agree(mac, dataflow):
    import zlib
    rng = np.random.default_rng(zlib.crc32(f"{mac.name} {dataflow}".encode()))
    for m, k, n in ((23, 67, 37), (1, 1, 1), (5, 1, 17), (4, 2, 16), (9, 33, 3), (17, 130, 33)):
        A, B = codes(mac.a, (m, k), rng), codes(mac.b, (k, n), rng)
        all_paths_agree(mac, A, B, dataflow)


@pytest.mark.parametrize("mac", CASES, ids=case_id)
def test_extremes_really_wrap_and_saturate(mac):
    """Rows and columns of the largest magnitudes of each sign, on small arrays (many tiles)."""
    A, B = extreme_operands(mac, np.random.default_rng(3))
    for df in ("os", "ws", "is"):
        all_paths_agree(mac, A, B, df, rows=4, cols=3, threads=(1, 2, 3))


BUFFERS = [  # PE, buffer
    (acs.MAC("e4m3fn", "e4m3fn", FixedAcc(40, 40)), FixedAcc(50, 50)),
    (acs.MAC("e4m3fn", "e4m3fn", FixedAcc(40, 40)), FixedAcc(30, 18)),                 # narrower: saturates
    (acs.MAC("e4m3fn", "e4m3fn", FixedAcc(20, 18, overflow="wrap")), FixedAcc(20, 18, overflow="wrap")),
    (acs.MAC("e4m3fn", "e4m3fn", FixedAcc(20, 18, overflow="wrap")), FixedAcc(30, 18, overflow="wrap")),
    (acs.MAC("e4m3fn", "e4m3fn", FixedAcc(30, 20)), FixedAcc(40, 20, overflow="wrap")),
    (acs.MAC("e4m3fn", "e4m3fn", FixedAcc(30, 20)), acs.FloatAcc(8, 23)),
    (acs.MAC("e4m3fn", "e4m3fn", FixedAcc(24, 18)), FixedAcc(24, 18)),                 # clamped, same buffer
    (acs.MAC("e4m3fn", "e4m3fn", FixedAcc(24, 18)), FixedAcc(30, 18)),                 # wider buffer: general
]


@pytest.mark.parametrize("pe_buffer", BUFFERS, ids=lambda x: f"{x[0].name}+{x[1].name}")
@pytest.mark.parametrize("dataflow", ["ws", "is"])
def test_buffers_join_as_the_general_path(pe_buffer, dataflow):
    buffers_join_as_the_general_path(*pe_buffer, dataflow, np.random.default_rng(6), 22)


def buffers_join_as_the_general_path(mac, buffer, dataflow, rng, n):
    """Random codes with rows and columns of the largest value, tiles joining `buffer`."""
    A, B = codes(mac.a, (19, 130), rng), codes(mac.b, (130, n), rng)
    A[:3] = mac.a.encode(np.float64(mac.a.max))
    B[:, :4] = mac.b.encode(np.float64(mac.b.max))
    all_paths_agree(mac, A, B, dataflow, rows=3, cols=5, buffer_acc=buffer)


def test_wide_operands_long_chains():
    """Registers wrapping at 2^64 and below, int16 operands into IntAcc (pair sums beyond int32),
    and K of several binary64 runs (E5M1 x e3m4: runs of ~1400 products)."""
    rng = np.random.default_rng(5)
    for mac, k in ((acs.MAC("e4m3fn", "e4m3fn", FixedAcc(46, 18, overflow="wrap")), 300),
                   (acs.MAC(INT16, INT16, IntAcc(48)), 300),
                   (acs.MAC(INT16, INT16, IntAcc(40, "saturate")), 300),
                   (acs.MAC(INT16, "int8", IntAcc(20)), 300),
                   (acs.MAC(E5M1, "e3m4", FixedAcc(40, 21, overflow="wrap")), 3000),
                   (acs.MAC(E5M1, "e3m4", FixedAcc(60, 21)), 3000),
                   (acs.MAC("e4m3fn", "e4m3fn", FixedAcc(30, 18)), 3000),   # saturates and comes back
                   (acs.MAC("e5m2", "e5m2", FixedAcc(40, 40, overflow="wrap")), 700),   # kernel_wide.c: full
                   (acs.MAC("posit8es2", "posit8es2", Quire("posit8es2")), 700)):      # K tiles, 3 row blocks
        A, B = codes(mac.a, (37, k), rng), codes(mac.b, (k, 31), rng)
        A[:3] = mac.a.encode(np.float64(mac.a.max))
        A[3, : k // 2], A[3, k // 2:] = mac.a.encode(np.float64(mac.a.max)), mac.a.encode(-np.float64(mac.a.max))
        B[:, :3] = mac.b.encode(np.float64(mac.b.max))
        for df in ("os", "ws"):
            all_paths_agree(mac, A, B, df, rows=8, cols=4, threads=(1, 2))


@pytest.mark.parametrize("pe_buffer", [(acs.MAC("e4m3fn", "e4m3fn", FixedAcc(20, 18, overflow="wrap")), None),
                                       (acs.MAC("e4m3fn", "e4m3fn", FixedAcc(40, 40)), None),
                                       (acs.MAC("e4m3fn", "e4m3fn", FixedAcc(24, 18)), None),
                                       (acs.MAC("e4m3fn", "e4m3fn", FixedAcc(24, 18)), FixedAcc(24, 18)),
                                       (acs.MAC("e4m3fn", "int8", FixedAcc(20, 9, overflow="wrap")), None),
                                       (acs.MAC("e4m3fn", "e4m3fn", FixedAcc(30, 20)), FixedAcc(35, 22))],
                         ids=lambda x: x[0].name if isinstance(x, tuple) else str(x))
@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_against_the_exact_model(pe_buffer, dataflow):
    assert_matches_exact_model(*pe_buffer, dataflow)


@pytest.mark.parametrize("pe_buffer", [(acs.MAC("e5m2", "e5m2", FixedAcc(40, 40)), None),
                                       (acs.MAC("e5m2", "e5m2", FixedAcc(20, 40, overflow="wrap")), None),
                                       (acs.MAC("e5m2", "e5m2", FixedAcc(34, 32)), None),
                                       (acs.MAC("e5m2", "e5m2", FixedAcc(40, 40)), FixedAcc(50, 50)),
                                       (acs.MAC("e5m2", "e5m2", FixedAcc(40, 40)), FixedAcc(36, 40)),
                                       (acs.MAC("e5m2", "e4m3fn", FixedAcc(60, 60)), None)],
                         ids=lambda x: f"{x[0].name}+{x[1].name if x[1] else ''}" if isinstance(x, tuple) else str(x))
@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_wide_against_the_exact_model(pe_buffer, dataflow):
    assert_matches_exact_model(*pe_buffer, dataflow)


@pytest.mark.parametrize("mac, kind", [(acs.MAC("e4m3fn", "e4m3fn", FixedAcc(40, 40)), 1),
                                       (acs.MAC("e4m3fn", "e4m3fn", FixedAcc(20, 18, overflow="wrap")), 1),
                                       (acs.MAC("e4m3fn", "int8", FixedAcc(20, 9, overflow="wrap")), 1),
                                       (acs.MAC(E5M1, "e4m3fn", FixedAcc(60, 24)), 1), (acs.MAC(INT16, INT16, IntAcc(48)), 1),
                                       (acs.MAC("e4m3fn", "e4m3fn", FixedAcc(24, 18)), 2),
                                       (acs.MAC(E5M1, "e4m3fn", FixedAcc(30, 24)), 2)],
                         ids=lambda x: case_id(x) if isinstance(x, acs.MAC) else str(x))
def test_the_kernels_are_taken(mac, kind):
    """The int32-operand kernels (sums: 1, clamped sums: 2) run, not the general step (0), on a
    32-row ws array with K = 256 (acs_fixed_kernel: acs_gemm's own choice)."""
    b = ffi.new("acs_acc *")
    mac.acc._fill(b)
    assert lib.acs_fixed_kernel(mac._c, b, 1, 32, 256) == kind


WIDE_BUFFERS = [  # PE, buffer
    (acs.MAC("e5m2", "e5m2", FixedAcc(40, 40)), FixedAcc(50, 50)),
    (acs.MAC("e5m2", "e5m2", FixedAcc(40, 40)), FixedAcc(36, 40)),                    # narrower: bound, saturates
    (acs.MAC("e5m2", "e5m2", FixedAcc(40, 40)), FixedAcc(40, 44)),                    # finer grid
    (acs.MAC("e5m2", "e5m2", FixedAcc(20, 40, overflow="wrap")), FixedAcc(20, 40, overflow="wrap")),
    (acs.MAC("e5m2", "e5m2", FixedAcc(20, 40, overflow="wrap")), FixedAcc(30, 40, overflow="wrap")),  # general
    (acs.MAC("e5m2", "e5m2", FixedAcc(40, 40)), acs.FloatAcc(8, 23)),                 # general
    (acs.MAC("posit8es2", "posit8es2", Quire("posit8es2")), Quire("posit8es2")),
]


@pytest.mark.parametrize("pe_buffer", WIDE_BUFFERS, ids=lambda x: f"{x[0].name}+{x[1].name}")
@pytest.mark.parametrize("dataflow", ["ws", "is"])
def test_wide_buffers_join_as_the_general_path(pe_buffer, dataflow):
    buffers_join_as_the_general_path(*pe_buffer, dataflow, np.random.default_rng(16), 35)


def test_wide_long_chains_and_mixed_rows():
    """K of several binary64 runs and k-blocks, rows mixing every band, saturating rows (the
    norm bound sends them to the general step) beside bounded ones."""
    rng = np.random.default_rng(17)
    for mac, k in ((acs.MAC("e5m2", "e5m2", FixedAcc(40, 40)), 1100),
                   (acs.MAC("e5m2", "e5m2", FixedAcc(20, 40, overflow="wrap")), 700),
                   (acs.MAC("posit8es2", "posit8es2", Quire("posit8es2")), 1100)):
        A, B = codes(mac.a, (9, k), rng), codes(mac.b, (k, 37), rng)
        A[:2] = mac.a.encode(np.float64(mac.a.max))
        B[:, :2] = mac.b.encode(np.float64(mac.b.max))
        small = mac.a.all_codes()[np.isfinite(mac.a.decode(mac.a.all_codes()))]
        A[5] = rng.choice(small[np.abs(mac.a.decode(small)) < 1e-2], k)   # low bands only
        for df in ("os", "ws"):
            all_paths_agree(mac, A, B, df, rows=32, cols=4, threads=(1, 3))


def test_wide_kernel_is_taken():
    """acs_fixed_kernel: the bands for the wide configurations, not the general step (3), the
    general step where no plan holds (0)."""
    def kind(mac, buffer=None, df="ws", rows=32, k=512):
        b = ffi.new("acs_acc *")
        (buffer or mac.acc)._fill(b)
        return lib.acs_fixed_kernel(mac._c, b, {"os": 0, "ws": 1, "is": 2}[df], rows, k)
    for mac in WIDE:
        for df in ("os", "ws", "is"):
            assert kind(mac, df=df) == 3, (mac.name, df)
    assert kind(acs.MAC("e5m2", "e5m2", FixedAcc(20, 40, overflow="wrap")), FixedAcc(30, 40, overflow="wrap")) == 0
    assert kind(acs.MAC("e5m2", "e5m2", FixedAcc(40, 40)), acs.FloatAcc(8, 23)) == 0
    assert kind(acs.MAC("e5m2", "e5m2", FixedAcc(24, 9))) == 0          # off the grid
    assert kind(acs.MAC("e4m3fn", "e4m3fn", FixedAcc(40, 40))) == 1     # kernel_fixed.c's
