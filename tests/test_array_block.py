"""Block-scaled GEMMs on the array (OCP MX, VS-Quant): Array.gemm with block-scaled QTensors,
compared bit for bit with an independent model written here.

Oracle: per output and K-block, the block's partial sum (exact with gmpy2 rationals where the
MAC's accumulator is exact -- IntAcc, a wide FixedAcc, or fp32 over products exact in fp32 --
and otherwise reference.gemm_order, the slow model of the dataflow order), times the two block
scales as exact rationals, joined into the scale register with MPFR rounding (gmpy2 contexts of
the register's precision, exponent range, subnormals and rounding) or rational rounding onto a
fixed grid; then the fp32 epilogue fp32(acc * fp32(coarse_a * coarse_b)) with MPFR."""
from __future__ import annotations

import contextlib
import math
import zlib
from fractions import Fraction

import gmpy2
import numpy as np
import pytest

import accel_sim as acs
from accel_sim import reference as ref
from accel_sim.mac import MAC, FixedAcc, FloatAcc, IntAcc
from accel_sim.quant import QTensor, quantize

from conftest import assert_bits

DATAFLOWS = ("os", "ws", "is")
MPFR_ROUND = {"rne": gmpy2.RoundToNearest, "rtz": gmpy2.RoundToZero, "rup": gmpy2.RoundUp,
              "rdn": gmpy2.RoundDown}


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


@contextlib.contextmanager
def mpfr_in(ctx):
    """Make ctx gmpy2's current context inside the block, and restore the previous one after.
    (`with ctx:` itself restores it only from gmpy2 2.2 on: 2.1 leaves ctx in force, which would
    leak this register's exponent range into every later gmpy2 test.)"""
    previous = gmpy2.get_context()
    gmpy2.set_context(ctx)
    try:
        yield
    finally:
        gmpy2.set_context(previous)


def float_context(acc: FloatAcc):
    """MPFR context of an IEEE-style FloatAcc(e, m): precision m+1, normal exponents up to the
    bias, subnormals down to 2^(emin - m)."""
    bias = 2 ** (acc.exp_bits - 1) - 1
    return gmpy2.context(precision=acc.man_bits + 1, emax=bias + 1, emin=2 - bias - acc.man_bits,
                         subnormalize=True, round=MPFR_ROUND[acc.rounding])


def join_step(scale_acc, value, term):
    """value + term (an mpq) with the scale register's one rounding: an MPFR add of a rational
    (correctly rounded, infinities included) for a FloatAcc, rational rounding for a FixedAcc."""
    if isinstance(scale_acc, FloatAcc):
        if gmpy2.is_infinite(value):
            return value
        with mpfr_in(float_context(scale_acc)):   # one rounding of the exact rational sum
            return gmpy2.mpfr(gmpy2.mpq(value) + term)
    assert scale_acc.rounding == "rne"
    grid = gmpy2.mpq(1, 2 ** scale_acc.frac_bits)
    return value + round(term / grid) * grid   # round() of an mpq: nearest, ties to even


def model(qa, qb, partials, scale_acc, bias=None):
    """(raw scale-register values, epilogue output) from per-block partials[b][i][j] (mpq)."""
    m, n = qa.shape[0], qb.shape[1]
    sa, sb = qa.block_scales(), qb.block_scales()
    ca = qa.scale.astype(np.float64).reshape(-1) if qa.axis is not None else np.full(m, float(qa.scale))
    cb = qb.scale.astype(np.float64).reshape(-1) if qb.axis is not None else np.full(n, float(qb.scale))
    acc = np.zeros((m, n))
    out = np.zeros((m, n))
    for i in range(m):
        for j in range(n):
            v = gmpy2.mpfr(0) if isinstance(scale_acc, FloatAcc) else gmpy2.mpq(0)
            for b, part in enumerate(partials):
                v = join_step(scale_acc, v, part[i][j] * gmpy2.mpq(float(sa[i, b])) * gmpy2.mpq(float(sb[b, j])))
            acc[i, j] = float(gmpy2.mpfr(v, 53))   # a fixed register reads out rounded to float64
            with mpfr_in(gmpy2.ieee(32)):
                s = gmpy2.mpfr(gmpy2.mpq(ca[i]) * gmpy2.mpq(cb[j]))
                y = gmpy2.mpfr(acc[i, j], 53) * s     # mpfr * mpfr: one rounding
                if bias is not None:
                    y = y + gmpy2.mpfr(float(np.float32(bias[j])))
            out[i, j] = float(y)
    return acc, out


def exact_partials(qa, qb):
    """Per K-block exact inner sums of the element values (no scales)."""
    va, vb = qa.format.decode(qa.codes), qb.format.decode(qb.codes)
    bs = qa.block
    parts = []
    for b in range(qa.shape[1] // bs):
        sl = slice(b * bs, (b + 1) * bs)
        parts.append([[sum((gmpy2.mpq(float(x)) * gmpy2.mpq(float(y)) for x, y in zip(va[i, sl], vb[sl, j])),
                           gmpy2.mpq(0)) for j in range(qb.shape[1])] for i in range(qa.shape[0])])
    return parts


def operands(kind, elem, m, k, n, seed, scale_format=None):
    rng = rng_for(kind, elem, m, k, n, seed)
    a = rng.standard_t(3, (m, k)) * np.exp2(rng.integers(-6, 6, (m, 1)))
    b = rng.standard_t(3, (k, n)) * np.exp2(rng.integers(-6, 6, (1, n)))
    opts = {} if scale_format is None else {"scale_format": scale_format}
    return (quantize(a, elem, scale=kind, axis=1, **opts), quantize(b, elem, scale=kind, axis=0, **opts))


# Exact inner accumulators: (scaling, element, inner acc, scale formats)
EXACT_CASES = [
    ("block", "e4m3fn", FixedAcc(30, 18), None),         # MXFP8, Kulisch-like inner register
    ("block", "e2m1", FloatAcc(8, 23), None),            # MXFP4, fp32 sums of e2m1 products are exact
    ("block", "e3m2", FixedAcc(24, 8), None),            # MXFP6 E3M2
    ("block", "e2m3", FloatAcc(8, 23), None),            # MXFP6 E2M3
    ("block", "mxint8", FixedAcc(20, 12), None),         # MXINT8
    ("vector", "int4", IntAcc(32), "uint4"),             # VSQ-INT4
    ("vector", "int8", IntAcc(32), "uint6"),
]
SCALE_ACCS = [FloatAcc(8, 23), FloatAcc(5, 10), FloatAcc(8, 7, rounding="rtz"), FixedAcc(40, 24)]


@pytest.mark.parametrize("scale_acc", SCALE_ACCS, ids=lambda a: a.name)
@pytest.mark.parametrize("case", EXACT_CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_block_gemm_matches_model_bit_for_bit(case, scale_acc):
    kind, elem, inner, sf = case
    qa, qb = operands(kind, elem, 5, 96 if kind == "block" else 64, 4, 0, sf)
    mac = MAC(elem, elem, inner, scale_acc=scale_acc)
    want_acc, want_out = model(qa, qb, exact_partials(qa, qb), scale_acc)
    for df in DATAFLOWS:
        res = acs.Array(4, 3, df, mac).gemm(qa, qb)
        assert_bits(res.acc, want_acc, f"{df} scale register")
        assert_bits(res.output, want_out, f"{df} output")


def test_block_gemm_inexact_inner_sum_follows_the_dataflow_order():
    """A bf16 inner accumulator rounds inside each block, so the dataflow order shows; each
    block's partial comes from reference.gemm_order over that block alone."""
    qa, qb = operands("block", "e4m3fn", 4, 64, 3, 1)
    inner = FloatAcc(8, 7)
    spec = dict(kind="float", exp_bits=8, man_bits=7, rounding="rne", subnormals=True, overflow="inf")
    va, vb = qa.format.decode(qa.codes), qb.format.decode(qb.codes)
    mac = MAC("e4m3fn", "e4m3fn", inner)
    outs = {}
    for df, rows in (("os", 4), ("ws", 8), ("is", 5)):
        parts = []
        for b in range(2):
            sl = slice(32 * b, 32 * (b + 1))
            raw = ref.gemm_order(va[:, sl].tolist(), vb[sl].tolist(), dataflow=df, rows=rows, pe=spec)
            parts.append([[gmpy2.mpq(float(v)) for v in r] for r in raw])
        want_acc, want_out = model(qa, qb, parts, mac.scale_acc)
        res = acs.Array(rows, 3, df, mac).gemm(qa, qb)
        assert_bits(res.acc, want_acc, df)
        assert_bits(res.output, want_out, df)
        outs[df] = res.output
    assert not np.array_equal(outs["os"], outs["ws"])  # the order mattered for this data


def test_vsq_coarse_scales_and_bias_in_the_epilogue():
    qa, qb = operands("vector", "int4", 6, 48, 5, 2, "uint4")
    assert qa.axis == 0 and qb.axis == 1          # coarse scales per row of A, per column of B
    bias = rng_for("bias").standard_normal(5)
    mac = MAC("int4", "int4", "int32")
    want_acc, want_out = model(qa, qb, exact_partials(qa, qb), mac.scale_acc, bias)
    res = acs.Array(4, 4, "ws", mac).gemm(qa, qb, bias=bias)
    assert_bits(res.acc, want_acc, "acc")
    assert_bits(res.output, want_out, "output")


def test_identical_across_dataflows_and_array_sizes_when_inner_sums_are_exact():
    qa, qb = operands("vector", "int4", 9, 160, 7, 3, "uint8")
    mac = MAC("int4", "int4", "int32", scale_acc=FloatAcc(5, 10))
    base = acs.Array(4, 4, "os", mac).gemm(qa, qb)
    for df in DATAFLOWS:
        for rows, cols in ((1, 1), (3, 5), (16, 2), (64, 64)):
            res = acs.Array(rows, cols, df, mac).gemm(qa, qb)
            assert_bits(res.acc, base.acc, f"{df} {rows}x{cols}")
            assert_bits(res.output, base.output, f"{df} {rows}x{cols}")


def test_stochastic_join_is_seeded_and_independent_of_order_and_threads():
    """A stochastically rounded fp16 join: block b of output (i, j) rounds with the draw
    reference.rand32(seed, i*N + j, b) (reference.round_float's sr rule), the same under every
    dataflow and thread count."""
    qa, qb = operands("vector", "int4", 5, 64, 4, 6, "uint4")
    acc = FloatAcc(5, 10, rounding="sr")
    mac = MAC("int4", "int4", "int32", scale_acc=acc)
    parts = exact_partials(qa, qb)
    sa, sb = qa.block_scales(), qb.block_scales()
    want = np.zeros((5, 4))
    for i in range(5):
        for j in range(4):
            v = 0.0
            for b, part in enumerate(parts):
                term = Fraction(int(part[i][j])) * Fraction(float(sa[i, b])) * Fraction(float(sb[b, j]))
                v = ref.round_float(Fraction(v) + term, man_bits=10, emin=-14, emax=15, max_sig=2047,
                                    rounding="sr", rand=ref.rand32(7, i * 4 + j, b))
            want[i, j] = v
    for df in DATAFLOWS:
        for threads in (1, 3):
            res = acs.Array(4, 4, df, mac, seed=7, threads=threads).gemm(qa, qb)
            assert_bits(res.acc, want, f"{df} threads={threads}")
    other = acs.Array(4, 4, "os", mac, seed=8).gemm(qa, qb)
    assert not np.array_equal(other.acc, want)


def test_nan_scale_code_poisons_its_outputs():
    a = np.zeros((2, 32), np.uint8) + 0x38   # e4m3fn 1.0
    b = np.zeros((32, 2), np.uint8) + 0x38
    qa = QTensor(a, "e4m3fn", block=32, block_axis=1, block_scale_codes=np.array([[127], [255]]),
                 scale_format="e8m0")
    qb = QTensor(b, "e4m3fn", block=32, block_axis=0, block_scale_codes=np.array([[128, 127]]), scale_format="e8m0")
    res = acs.Array(4, 4, "os", MAC("e4m3fn", "e4m3fn", "fp32")).gemm(qa, qb, metrics=False)
    assert res.output[0].tolist() == [64.0, 32.0]
    assert np.all(np.isnan(res.output[1]))


def scale_part(res, arr):
    """The breakdown minus the energy model applied to the run's own MAC counts: what the
    scale steps were charged."""
    _, base = acs.energy.evaluate(arr.energy, arr, res.counts, True)
    return {p: res.energy_breakdown[p] - base[p] for p in base}


def test_cycles_plan_and_scale_energy():
    qa, qb = operands("block", "e4m3fn", 8, 128, 6, 4)
    mac = MAC("e4m3fn", "e4m3fn", "fp32")
    arr = acs.Array(4, 4, "ws", mac)
    res = arr.gemm(qa, qb)
    plain = arr.gemm(QTensor(qa.codes, "e4m3fn"), QTensor(qb.codes, "e4m3fn"))
    plan = arr.plan_gemm(8, 6, 128)
    assert res.cycles == plain.cycles == plan.cycles and res.folds == plan.folds
    joins = 8 * 6 * (128 // 32)
    assert res.counts["scale_mults"] == res.counts["scale_joins"] == joins
    for key in ("zero_macs", "macs", "pe_adds", "buffer_adds", "sram_read_bytes_a", "dram_bytes"):
        assert res.counts[key] == plain.counts[key], key
    t = arr.energy
    extra = scale_part(res, arr)
    # e8m0 x e8m0: an exponent add for the scale product and one to apply it; an fp32 join add
    # and a 32-bit register write per join
    assert math.isclose(extra["mult"], joins * 2 * t.scale_exp_add, rel_tol=1e-12)
    assert math.isclose(extra["buffer_add"], joins * t.fp_add_32, rel_tol=1e-12)
    assert math.isclose(extra["reg"], joins * 32 * t.reg_bit, rel_tol=1e-12)
    assert all(extra[p] == 0 for p in ("pe_add", "sram", "dram", "leakage"))
    assert math.isclose(res.energy_pj, sum(res.energy_breakdown.values()), rel_tol=1e-12)


def test_vsq_scale_multiplies_cost_integer_multiplies():
    qa, qb = operands("vector", "int4", 4, 32, 4, 5, "uint4")
    arr = acs.Array(4, 4, "os", MAC("int4", "int4", "int32", scale_acc=FixedAcc(40, 0)))
    res = arr.gemm(qa, qb)
    t = arr.energy
    joins = 4 * 4 * 2
    extra = scale_part(res, arr)
    # uint4 x uint4, then the int32 partial by that 8-bit product; a 40-bit integer join add
    assert math.isclose(extra["mult"], joins * (t.int_mult(4, 4) + t.int_mult(32, 8)), rel_tol=1e-12)
    assert math.isclose(extra["buffer_add"], joins * t.int_add(40), rel_tol=1e-12)


# ---------------------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------------------

def test_bad_block_gemm_inputs():
    rng = rng_for("bad")
    a, b = rng.standard_normal((4, 64)), rng.standard_normal((64, 3))
    arr = acs.Array(4, 4, "ws", MAC("e4m3fn", "e4m3fn", "fp32"))
    qa32 = quantize(a, "e4m3fn", scale="block", axis=1)
    qb32 = quantize(b, "e4m3fn", scale="block", axis=0)
    with pytest.raises(ValueError, match="share the block size along K, got 32 and 16"):
        arr.gemm(qa32, quantize(b, "e4m3fn", scale="block", block=16, axis=0))
    with pytest.raises(ValueError, match=r"A must be block-scaled along K \(axis 1\), got block_axis 0"):
        arr.gemm(quantize(a, "e4m3fn", scale="block", block=4, axis=0), qb32)
    with pytest.raises(ValueError, match=r"B must be block-scaled along K \(axis 0\)"):
        arr.gemm(qa32, quantize(b, "e4m3fn", scale="block", block=3, axis=1))
    with pytest.raises(ValueError, match="B must be a block-scaled QTensor"):
        arr.gemm(qa32, b)
    with pytest.raises(ValueError, match="A must be a block-scaled QTensor"):
        arr.gemm(quantize(a, "e4m3fn"), qb32)
    with pytest.raises(ValueError, match="the MAC takes e4m3fn and e4m3fn"):
        arr.gemm(quantize(a, "e5m2", scale="block", axis=1), quantize(b, "e5m2", scale="block", axis=0))
    with pytest.raises(ValueError, match="K differs"):
        arr.gemm(qa32, quantize(rng.standard_normal((32, 3)), "e4m3fn", scale="block", axis=0))
    with pytest.raises(ValueError, match="block-scaled operands are taken by Array.gemm"):
        arr.linear(a, QTensor(qa32.codes, "e4m3fn", block=32, block_axis=1,
                              block_scale_codes=qa32.block_scale_codes, scale_format="e8m0"))
    with pytest.raises(ValueError, match="block-scaled operands are taken by Array.gemm"):
        arr.matmul(qa32, qb32)


def test_bad_scale_acc():
    with pytest.raises(ValueError, match="scale_acc must be a FloatAcc or a FixedAcc"):
        MAC("int4", "int4", "int32", scale_acc=IntAcc(32))
    with pytest.raises(ValueError, match="unknown accumulator 'fp64' for scale_acc"):
        MAC("int4", "int4", "int32", scale_acc="fp64")
    with pytest.raises(TypeError, match="scale_acc must be a name"):
        MAC("int4", "int4", "int32", scale_acc=3)
