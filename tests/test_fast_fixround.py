"""FixedAcc whose products are rounded onto the register's grid, through csrc/kernel_fixround.c
(issue 16): the AVX-512 kernel, its portable twin and the general per-step path agree bit for
bit (accumulators as float64 bit patterns, outputs and counts) for every rounding mode, wrap and
saturate that really overflow, every code pair, odd shapes, os/ws/is, threads 1-3 and sr seeds;
small cases also against the exact model (reference.gemm_order)."""
from __future__ import annotations

import numpy as np
import pytest

import accel_sim as acs
from accel_sim.mac import FixedAcc

from test_fast_fixed import all_paths_agree, assert_matches_exact_model, codes, extreme_operands

MODES = ["rne", "rna", "rtz", "rup", "rdn", "rto", "sr"]
CASES = [
    acs.MAC("e4m3fn", "e4m3fn", FixedAcc(24, 4)),                          # products below 2^-4 rounded
    acs.MAC("int8", "int8", FixedAcc(30, -3, overflow="wrap")),            # products rounded to multiples of 8
    acs.MAC("e4m3fn", "int8", FixedAcc(9, 2, rounding="rtz", overflow="wrap")),
    acs.MAC("int8", "e4m3fn", FixedAcc(64, 0, rounding="rup", overflow="wrap")),   # 64-bit wrap: the int64 itself
    acs.MAC("e5m2", "e5m2", FixedAcc(40, 8, rounding="rdn")),              # products past 2^30 lsbs: the general path
    acs.MAC("int4", "int8", FixedAcc(4, -2, rounding="rna", overflow="wrap")),
    acs.MAC("uint8", "e2m1", FixedAcc(8, 0, rounding="rto")),
] + [acs.MAC("e4m3fn", "e4m3fn", FixedAcc(10, 2, rounding=r, overflow=o)) for r in MODES for o in ("wrap", "saturate")] \
  + [acs.MAC("int8", "int8", FixedAcc(12, -4, rounding=r, overflow=o)) for r in MODES for o in ("wrap", "saturate")] \
  + [acs.MAC("e2m1", "e4m3fn", FixedAcc(16, 1, rounding=r)) for r in MODES]


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("mac", CASES, ids=lambda m: m.name)
def test_random_codes_all_paths_agree(mac, dataflow):
    rng = np.random.default_rng(abs(hash((mac.name, dataflow))) % 2**32)
    for m, k, n in ((23, 67, 37), (1, 1, 1), (5, 1, 17), (4, 2, 16), (9, 133, 3)):
        A, B = codes(mac.a, (m, k), rng), codes(mac.b, (k, n), rng)
        all_paths_agree(mac, A, B, dataflow)


@pytest.mark.parametrize("mac", CASES, ids=lambda m: m.name)
def test_every_code_pair(mac):
    """K = 1: each output is one rounded product, over every pair of finite codes; then every
    code (NaN and inf included) in longer chains: the same accumulators or the same error."""
    ca, cb = mac.a.all_codes(), mac.b.all_codes()
    fa, fb = ca[np.isfinite(mac.a.decode(ca))], cb[np.isfinite(mac.b.decode(cb))]
    A, B = fa[:, None].astype(mac.a.code_dtype), fb[None, :].astype(mac.b.code_dtype)
    for df in ("os", "ws"):
        all_paths_agree(mac, A, B, df, threads=(1, 2))
    rng = np.random.default_rng(9)
    A = np.stack([rng.permutation(np.resize(ca, 40)) for _ in range(len(ca))])
    A[:, 0] = ca
    B = np.stack([rng.permutation(np.resize(cb, 40)) for _ in range(len(cb))], axis=1)
    all_paths_agree(mac, A.astype(mac.a.code_dtype), B.astype(mac.b.code_dtype), "os", threads=(1, 2))


@pytest.mark.parametrize("mac", CASES, ids=lambda m: m.name)
def test_extremes_really_wrap_and_saturate(mac):
    """Rows and columns of the largest magnitudes of each sign: narrow registers wrap or
    saturate along the chain (and back), on arrays whose tiles join the buffer many times."""
    A, B = extreme_operands(mac, np.random.default_rng(3))
    for df in ("os", "ws", "is"):
        all_paths_agree(mac, A, B, df, rows=4, cols=3, threads=(1, 3))


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**63 + 7])
@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_sr_seeds(seed, dataflow):
    rng = np.random.default_rng(seed % 2**32)
    for mac in (acs.MAC("e4m3fn", "e4m3fn", FixedAcc(24, 4, rounding="sr")),
                acs.MAC("int8", "int8", FixedAcc(12, -4, rounding="sr", overflow="wrap"))):
        A, B = codes(mac.a, (13, 70), rng), codes(mac.b, (70, 35), rng)
        r = all_paths_agree(mac, A, B, dataflow, seed=seed, threads=(1, 3))
        other = acs.Array(3, 2, dataflow, mac, seed=seed + 1).gemm(acs.QTensor(A, mac.a), acs.QTensor(B, mac.b),
                                                                   metrics=False)
        assert (other.acc != r.acc).any()   # the draws depend on the seed


def test_long_chains_and_many_blocks():
    """K of many int32 runs (e4m3fn products up to 448^2 * 16 lsbs: 670 a run), saturation
    reached and left again mid-chain, many register blocks and panels."""
    rng = np.random.default_rng(8)
    for mac in (acs.MAC("e4m3fn", "e4m3fn", FixedAcc(40, 4)), acs.MAC("e4m3fn", "e4m3fn", FixedAcc(28, 4, "rna")),
                acs.MAC("e4m3fn", "e4m3fn", FixedAcc(26, 4, "rto", "wrap"))):
        A, B = codes(mac.a, (41, 1500), rng), codes(mac.b, (1500, 35), rng)
        big = mac.a.encode(np.float64(mac.a.max))
        A[:2, :700], A[:2, 700:] = big, mac.a.encode(-np.float64(mac.a.max))
        B[:, :2] = big
        for df in ("os", "ws"):
            all_paths_agree(mac, A, B, df, rows=32, cols=8, threads=(1, 2))


@pytest.mark.parametrize("mac", [acs.MAC("e4m3fn", "e4m3fn", FixedAcc(10, 2, rounding=r, overflow=o))
                                 for r in MODES for o in ("wrap", "saturate")]
                         + [acs.MAC("int8", "int8", FixedAcc(14, -3, rounding=r, overflow="wrap")) for r in ("rne", "rna")],
                         ids=lambda m: m.name)
@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_against_the_exact_model(mac, dataflow):
    assert_matches_exact_model(mac, None, dataflow)
