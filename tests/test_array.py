"""The systolic array (accel_sim/array.py, csrc/array.c, accel_sim/layers.py) against
independent oracles.

Oracles: the exact Fraction model of the dataflow order (reference.gemm_order, over
reference.float_acc / int_acc / fixed_acc / block_fma), the cycle counts SCALE-Sim 3.0.0
reports (ours are exactly one more), numpy models of the zero-operand and register-toggle
counts written from the description in csrc/array.c, an exact Fraction model of the fp32
epilogue, a textbook nested-loop float64 convolution, PyTorch's output-size formula, and
numpy recomputations of the metrics.  Everything exact is compared bit for bit: float64
through uint64 patterns (signed zeros count), NaN by class; integers exactly.
"""
from __future__ import annotations

import math
import zlib
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

import accel_sim as acs
from accel_sim import reference as ref
from accel_sim.mac import MAC, BlockFMA, FixedAcc, FloatAcc, IntAcc, get_acc

from conftest import assert_bits

DATAFLOWS = ("os", "ws", "is")
POP = np.array([bin(i).count("1") for i in range(1 << 16)], dtype=np.int64)


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------

def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def codes_of(rng, fmt, shape, zeros=0.15, specials=False, max_abs=None):
    """Random codes of fmt: finite (optionally bounded) values, a share of +-0 codes, and NaN /
    infinity codes if asked."""
    all_codes = fmt.all_codes()
    vals = fmt.decode(all_codes)
    ok = np.isfinite(vals)
    if max_abs is not None:
        ok &= np.abs(vals) <= max_abs
    out = rng.choice(all_codes[ok], shape)
    zero_codes = all_codes[vals == 0]
    out = np.where(rng.random(shape) < zeros, rng.choice(zero_codes, shape), out)
    if specials:
        sp = all_codes[~np.isfinite(vals)]
        if sp.size:
            out = np.where(rng.random(shape) < 0.02, rng.choice(sp, shape), out)
    return out.astype(fmt.code_dtype)


def spec_of(acc, fa, fb):
    """The reference's description of an accumulator."""
    if isinstance(acc, FloatAcc):
        return dict(kind="float", exp_bits=acc.exp_bits, man_bits=acc.man_bits, rounding=acc.rounding,
                    subnormals=bool(acc.subnormals), overflow=acc.overflow)
    if isinstance(acc, IntAcc):
        return dict(kind="int", bits=acc.bits, overflow=acc.overflow)
    if isinstance(acc, FixedAcc):
        return dict(kind="fixed", int_bits=acc.int_bits, frac_bits=acc.frac_bits, rounding=acc.rounding,
                    overflow=acc.overflow)
    assert isinstance(acc, BlockFMA)
    a = acc.acc
    return dict(kind="block", terms=acc.terms, align_bits=acc.align_bits, a_emin=fa.emin, b_emin=fb.emin,
                acc_exp_bits=a.exp_bits, acc_man_bits=a.man_bits, acc_rounding=a.rounding,
                acc_subnormals=bool(a.subnormals), acc_overflow=a.overflow)


def reference_acc(mac, A, B, dataflow, rows, buffer_acc=None, seed=0):
    """reference.gemm_order on the decoded codes, as the array's raw accumulator array."""
    want = ref.gemm_order(mac.a.decode(A).tolist(), mac.b.decode(B).tolist(), dataflow=dataflow, rows=rows,
                          pe=spec_of(mac.acc, mac.a, mac.b),
                          buffer=None if buffer_acc is None else spec_of(get_acc(buffer_acc), mac.a, mac.b),
                          seed=seed, n=B.shape[1])
    out_acc = mac.acc if dataflow == "os" or buffer_acc is None else get_acc(buffer_acc)
    if isinstance(out_acc, IntAcc):
        return np.array(want, dtype=np.int64).reshape(A.shape[0], B.shape[1])
    return np.array([[float(v) for v in r] for r in want], dtype=np.float64).reshape(A.shape[0], B.shape[1])


def q(codes, fmt, scale=1.0, axis=None):
    return acs.QTensor(codes, fmt, scale=scale, axis=axis)


# ---------------------------------------------------------------------------------------
# 1. order: the raw accumulators against reference.gemm_order
# ---------------------------------------------------------------------------------------

ORDER_CASES = {  # name: (MAC, buffer_acc, seed[, largest operand magnitude])
    "e4m3fn-fp32": (lambda: MAC("e4m3fn", "e4m3fn", "fp32"), None, 0),
    "e4m3fn-fp16acc": (lambda: MAC("e4m3fn", "e4m3fn", FloatAcc(5, 10, "rne")), None, 0),
    "e5m2-bf16": (lambda: MAC("e5m2", "e5m2", "bf16"), None, 0),
    "int8-int32": (lambda: MAC("int8", "int8", "int32"), None, 0),
    "int8-int16sat": (lambda: MAC("int8", "int8", IntAcc(16, "saturate")), None, 0),
    "int8-int12wrap": (lambda: MAC("int8", "uint8", IntAcc(12, "wrap")), None, 0),
    "e4m3fn-fixed12.8": (lambda: MAC("e4m3fn", "e4m3fn", FixedAcc(12, 8)), None, 0),
    "fp16acc-fp32buffer": (lambda: MAC("e4m3fn", "e4m3fn", FloatAcc(5, 10)), "fp32", 0),
    "int16sat-int32buffer": (lambda: MAC("int8", "int8", IntAcc(16, "saturate")), "int32", 0),
    "int32-fp16buffer": (lambda: MAC("int8", "int8", "int32"), "fp16", 0),
    # (a tile result that overflowed fp16 is an error for a fixed buffer: keep products small)
    "fp16acc-fixedbuffer": (lambda: MAC("e4m3fn", "e4m3fn", FloatAcc(5, 10)), FixedAcc(14, 6, "rne", "wrap"), 0, 16),
    "fixed-fixedbuffer-sr": (lambda: MAC("e5m2", "e4m3fn", FixedAcc(10, 10, "rtz")), FixedAcc(16, 4, "sr"), 99),
    "sr-e5m6": (lambda: MAC("e4m3fn", "e4m3fn", FloatAcc(5, 6, "sr")), None, 12345),
    "sr-pe-sr-buffer": (lambda: MAC("e5m2", "e5m2", FloatAcc(6, 5, "sr")), FloatAcc(8, 9, "sr"), 7),
    "rtz-pe-rup-buffer": (lambda: MAC("fp16", "fp16", FloatAcc(5, 7, "rtz")), FloatAcc(6, 12, "rup"), 0),
    "fixed-sr": (lambda: MAC("e4m3fn", "e4m3fn", FixedAcc(14, 3, "sr", "wrap")), None, 2024),
}
# (rows, cols, M, N, K)
ORDER_SHAPES = [(4, 4, 7, 9, 37), (3, 5, 11, 5, 40), (8, 2, 5, 10, 23), (5, 3, 12, 10, 33), (4, 4, 6, 3, 1),
                (3, 5, 2, 3, 0)]


@pytest.mark.parametrize("dataflow", DATAFLOWS)
@pytest.mark.parametrize("case", list(ORDER_CASES))
def test_order_matches_reference(case, dataflow):
    make, buffer_acc, seed, *bound = ORDER_CASES[case]
    mac = make()
    max_abs = bound[0] if bound else None
    for rows, cols, M, N, K in ORDER_SHAPES:
        rng = rng_for("order", case, dataflow, rows, M, N, K)
        A = codes_of(rng, mac.a, (M, K), max_abs=max_abs)
        B = codes_of(rng, mac.b, (K, N), max_abs=max_abs)
        arr = acs.Array(rows, cols, dataflow, mac, buffer_acc=buffer_acc, seed=seed)
        res = arr.gemm(q(A, mac.a.name), q(B, mac.b.name))
        assert_bits(res.acc, reference_acc(mac, A, B, dataflow, rows, buffer_acc, seed),
                    f"{case} {dataflow} {rows}x{cols} M{M} N{N} K{K}")


@pytest.mark.slow
@pytest.mark.parametrize("dataflow", DATAFLOWS)
@pytest.mark.parametrize("case", list(ORDER_CASES))
def test_order_matches_reference_large(case, dataflow):
    """Square 40 x 40 x 40 GEMMs on a 6 x 7 array (slow: the reference is exact Fractions)."""
    make, buffer_acc, seed, *bound = ORDER_CASES[case]
    mac = make()
    rng = rng_for("order-large", case, dataflow)
    A = codes_of(rng, mac.a, (40, 40), max_abs=bound[0] if bound else None)
    B = codes_of(rng, mac.b, (40, 40), max_abs=bound[0] if bound else None)
    res = acs.Array(6, 7, dataflow, mac, buffer_acc=buffer_acc, seed=seed).gemm(q(A, mac.a.name), q(B, mac.b.name))
    assert_bits(res.acc, reference_acc(mac, A, B, dataflow, 6, buffer_acc, seed), f"{case} {dataflow}")


@pytest.mark.parametrize("dataflow", DATAFLOWS)
@pytest.mark.parametrize("preset,rows,shapes", [
    (("h100", "e4m3"), 4, [(3, 4, 300), (2, 3, 128), (2, 2, 31)]),
    (("a100", "fp16"), 3, [(4, 5, 61), (3, 3, 48), (2, 4, 7)]),
    (("v100", "fp16"), 2, [(3, 4, 27)]),
], ids=lambda p: "-".join(p) if isinstance(p, tuple) else None)
def test_order_tensor_core_presets(preset, rows, shapes, dataflow):
    """Block FMA PEs: tiles of rows*terms products, K padded to a multiple of terms, and
    K not a multiple of rows*terms; the buffer (default: the preset) rounds like its acc."""
    mac = acs.presets.tensor_core(*preset)
    for M, N, K in shapes:
        rng = rng_for("tc", preset, dataflow, M, N, K)
        A = codes_of(rng, mac.a, (M, K), max_abs=64)
        B = codes_of(rng, mac.b, (K, N), max_abs=64)
        res = acs.Array(rows, 3, dataflow, mac).gemm(q(A, mac.a.name), q(B, mac.b.name))
        assert_bits(res.acc, reference_acc(mac, A, B, dataflow, rows), f"{mac.name} {dataflow} M{M} N{N} K{K}")


@pytest.mark.parametrize("dataflow", DATAFLOWS)
def test_order_block_fma_sr_and_other_buffer(dataflow):
    """A stochastic-rounding block FMA (steps numbered in blocks over the whole K) with an sr
    buffer of another format."""
    mac = MAC("e4m3fn", "e5m2", BlockFMA(4, 10, FloatAcc(6, 8, "sr")))
    buffer_acc = FloatAcc(8, 12, "sr")
    for rows, M, N, K in ((3, 4, 5, 50), (2, 3, 3, 17)):
        rng = rng_for("block-sr", dataflow, M, N, K)
        A = codes_of(rng, mac.a, (M, K))
        B = codes_of(rng, mac.b, (K, N))
        res = acs.Array(rows, 2, dataflow, mac, buffer_acc=buffer_acc, seed=4242).gemm(q(A, "e4m3fn"), q(B, "e5m2"))
        assert_bits(res.acc, reference_acc(mac, A, B, dataflow, rows, buffer_acc, 4242), f"{dataflow} K{K}")


@pytest.mark.parametrize("dataflow", DATAFLOWS)
def test_order_with_specials(dataflow):
    """Infinities, NaN and zeros of both signs flow through the tiles and the buffer."""
    mac = MAC("e5m2", "e5m2", FloatAcc(5, 10, "rne"))
    for buffer_acc in (None, "fp32", FloatAcc(5, 10, "rdn")):
        rng = rng_for("specials", dataflow, repr(buffer_acc))
        A = codes_of(rng, mac.a, (6, 30), zeros=0.3, specials=True)
        B = codes_of(rng, mac.b, (30, 5), zeros=0.3, specials=True)
        with np.errstate(invalid="ignore", over="ignore"):
            res = acs.Array(4, 4, dataflow, mac, buffer_acc=buffer_acc).gemm(q(A, "e5m2"), q(B, "e5m2"))
        assert_bits(res.acc, reference_acc(mac, A, B, dataflow, 4, buffer_acc), f"{dataflow} {buffer_acc}")


def test_order_matters_with_a_narrow_accumulator():
    """FloatAcc(5, 4): one long chain (os) swamps small addends, ws/is sum tiles of `rows`
    from zero and add them in the buffer; the results differ, each equals its own reference,
    and the tiled sums are closer to the exact ones."""
    mac = MAC("e4m3fn", "e4m3fn", FloatAcc(5, 4))
    rng = rng_for("narrow")
    M, N, K, rows = 4, 5, 96, 4
    f = mac.a
    pos = f.all_codes()[(f.decode(f.all_codes()) >= 0.75) & (f.decode(f.all_codes()) <= 1.5)]
    A = rng.choice(pos, (M, K)).astype(np.uint8)
    B = rng.choice(pos, (K, N)).astype(np.uint8)
    got = {}
    for df in ("os", "ws"):
        res = acs.Array(rows, 4, df, mac).gemm(q(A, "e4m3fn"), q(B, "e4m3fn"))
        assert_bits(res.acc, reference_acc(mac, A, B, df, rows), df)
        got[df] = res.acc
    assert np.any(f64(got["os"]) != f64(got["ws"])), "os and ws agree although the order differs"
    exact = f.decode(A) @ f.decode(B)
    assert np.abs(got["ws"] - exact).mean() < np.abs(got["os"] - exact).mean()


def f64(x):
    return np.ascontiguousarray(x, np.float64).view(np.uint64)


# ---------------------------------------------------------------------------------------
# 2. cycles: SCALE-Sim 3.0.0's reported Total Cycles, plus one
# ---------------------------------------------------------------------------------------

SCALESIM = [  # (M, N, K), (rows, cols), (os, ws, is) as SCALE-Sim reports them
    ((64, 64, 64), (32, 32), (503, 631, 631)),
    ((64, 64, 64), (16, 64), (567, 631, 631)),
    ((100, 50, 70), (32, 32), (1055, 1163, 1727)),
    ((100, 50, 70), (16, 64), (1035, 969, 1439)),
    ((32, 32, 32), (32, 32), (93, 125, 125)),
    ((32, 32, 32), (16, 64), (219, 251, 251)),
    ((64, 32, 144), (32, 32), (411, 789, 1259)),   # conv 10x10, 3x3, 16 -> 32 channels
]


@pytest.mark.parametrize("mnk,shape,want", SCALESIM, ids=lambda v: "x".join(map(str, v)))
def test_plan_gemm_matches_scalesim(mnk, shape, want):
    for df, w in zip(DATAFLOWS, want):
        plan = acs.Array(*shape, df).plan_gemm(*mnk)
        assert plan.cycles == w + 1, (df, plan.cycles, w)
        assert plan.stall_cycles == 0


@pytest.mark.parametrize("xshape,wshape,want", [
    ((1, 16, 10, 10), (32, 16, 3, 3), (411, 789, 1259)),
    ((1, 64, 8, 8), (64, 64, 1, 1), (503, 631, 631)),
])
def test_conv2d_cycles_match_scalesim(xshape, wshape, want):
    rng = rng_for("conv-cycles", xshape)
    x = rng.standard_normal(xshape)
    w = rng.standard_normal(wshape)
    for df, cyc in zip(DATAFLOWS, want):
        arr = acs.Array(32, 32, df)
        res = arr.conv2d(x, w)
        assert res.cycles == cyc + 1, (df, res.cycles)
        n, c, h, wd = xshape
        o, _, kh, kw = wshape
        M, N, K = (h - kh + 1) * (wd - kw + 1), o, c * kh * kw
        assert arr.plan_gemm(M, N, K).cycles == cyc + 1


def fold_model(df, R, C, M, N, K, terms):
    kp = -(-K // terms)
    sr, sc, t = {"os": (M, N, kp), "ws": (kp, N, M), "is": (kp, M, N)}[df]
    folds = math.ceil(sr / R) * math.ceil(sc / C)
    per = t + R + C - 2 if df == "os" else 2 * R + C + t - 2
    return folds, folds * per


@pytest.mark.parametrize("dataflow", DATAFLOWS)
@pytest.mark.parametrize("mac", [lambda: MAC("int8", "int8", "int32"), lambda: acs.presets.tensor_core("a100", "fp16"),
                                 lambda: acs.presets.tensor_core("h100", "e4m3"),
                                 lambda: MAC("e4m3fn", "e4m3fn", BlockFMA(3, 8))], ids=["n1", "n8", "n32", "n3"])
def test_fold_formula_with_n_term_pes(mac, dataflow):
    mac = mac()
    n = mac.terms
    for (R, C), (M, N, K) in [((4, 4), (9, 7, 100)), ((8, 2), (1, 1, 1)), ((3, 5), (20, 13, 257)),
                              ((16, 16), (64, 64, 64)), ((2, 7), (5, 30, 3)), ((4, 4), (3, 3, 0))]:
        arr = acs.Array(R, C, dataflow, mac)
        plan = arr.plan_gemm(M, N, K)
        folds, cycles = fold_model(dataflow, R, C, M, N, K, n)
        assert (plan.folds, plan.cycles) == (folds, cycles), (R, C, M, N, K)
        assert plan.macs == M * N * K
        assert plan.utilization == pytest.approx(M * N * K / (R * C * n * cycles) if cycles else 0.0, rel=1e-12)
        assert plan.time_us == pytest.approx(cycles / 1e3, rel=1e-12)
        assert plan.counts["pe_adds"] == M * N * -(-K // n)
        assert plan.counts["buffer_adds"] == (0 if dataflow == "os" else M * N * -(-K // (R * n)))
        assert plan.counts["pe_cycles"] == R * C * cycles
        assert 0 <= plan.utilization <= 1


def test_clock_sets_time():
    plan = acs.Array(8, 8, "os", clock_ghz=2.0).plan_gemm(30, 20, 10)
    assert plan.time_us == pytest.approx(plan.cycles / 2000.0, rel=1e-12)


# ---------------------------------------------------------------------------------------
# 3. action counts: zero operands and register toggles
# ---------------------------------------------------------------------------------------

def toggles_model(df, R, C, A, B, nt):
    """Bit flips on the operand registers, from the description in csrc/array.c: folds in
    row-major order (row fold outer); a streaming operand's register of array row i (and
    lane t) sees its sequence once per fold and its flips count once per active PE of the
    row (OS: A along rows x active columns, B down columns x active rows; WS: A's column k
    streams M values along row k; IS: B's row k streams N values); a stationary operand
    (WS: B, IS: A) is loaded into every active PE once per fold and flips count once.
    Registers start at 0 and keep their codes between folds; K is zero-padded to whole
    n-term steps."""
    M, K = A.shape
    N = B.shape[1]
    kp = -(-K // nt)
    Ap = np.zeros((M, kp * nt), np.int64)
    Ap[:, :K] = A
    Bp = np.zeros((kp * nt, N), np.int64)
    Bp[:K] = B
    A3 = Ap.reshape(M, kp, nt)          # A3[m, step, lane]
    B3 = Bp.T.reshape(N, kp, nt)        # B3[n, step, lane]

    def stream(reg, seq):
        """flips of a register (lanes,) fed seq (length, lanes); returns flips, new reg."""
        if len(seq) == 0:
            return 0, reg
        full = np.vstack([reg[None, :], seq])
        return int(POP[np.bitwise_xor(full[1:], full[:-1])].sum()), seq[-1].copy()

    sr, sc = {"os": (M, N), "ws": (kp, N), "is": (kp, M)}[df]
    row_reg = np.zeros((R, nt), np.int64)
    col_reg = np.zeros((C, nt), np.int64)
    pe = np.zeros((R, C, nt), np.int64)
    ta = tb = 0
    for fr in range(-(-sr // R)):
        r_act = min(R, sr - fr * R)
        for fc in range(-(-sc // C)):
            c_act = min(C, sc - fc * C)
            if df == "os":
                for i in range(r_act):
                    f, row_reg[i] = stream(row_reg[i], A3[fr * R + i])
                    ta += f * c_act
                for j in range(c_act):
                    f, col_reg[j] = stream(col_reg[j], B3[fc * C + j])
                    tb += f * r_act
                continue
            for i in range(r_act):
                step = fr * R + i
                seq = A3[:, step, :] if df == "ws" else B3[:, step, :]
                f, row_reg[i] = stream(row_reg[i], seq)
                stat = 0
                for j in range(c_act):
                    v = B3[fc * C + j, step, :] if df == "ws" else A3[fc * C + j, step, :]
                    stat += int(POP[np.bitwise_xor(pe[i, j], v)].sum())
                    pe[i, j] = v
                if df == "ws":
                    ta, tb = ta + f * c_act, tb + stat
                else:
                    ta, tb = ta + stat, tb + f * c_act
    return ta, tb


COUNT_MACS = {
    "int8": lambda: MAC("int8", "int8", "int32"),
    "e4m3fn-e5m2": lambda: MAC("e4m3fn", "e5m2", "fp32"),
    "fp16": lambda: MAC("fp16", "fp16", "fp32"),
    "a100": lambda: acs.presets.tensor_core("a100", "fp16"),
    "h100": lambda: acs.presets.tensor_core("h100", "e4m3"),
}


@pytest.mark.parametrize("dataflow", DATAFLOWS)
@pytest.mark.parametrize("name", list(COUNT_MACS))
def test_counts_match_numpy_model(name, dataflow):
    mac = COUNT_MACS[name]()
    nt = mac.terms
    for R, C, M, N, K in [(4, 4, 9, 7, 37), (3, 5, 13, 4, 70), (8, 2, 5, 11, 23), (2, 3, 1, 1, 5), (4, 4, 3, 2, 0)]:
        rng = rng_for("counts", name, dataflow, R, M, N, K)
        A = codes_of(rng, mac.a, (M, K), zeros=0.25)
        B = codes_of(rng, mac.b, (K, N), zeros=0.25)
        res = acs.Array(R, C, dataflow, mac).gemm(q(A, mac.a.name), q(B, mac.b.name))
        za = mac.a.decode(A) == 0
        zb = mac.b.decode(B) == 0
        zero_macs = int(sum(np.sum(za[i][:, None] | zb) for i in range(M)))
        c = res.counts
        where = f"{dataflow} {R}x{C} M{M} N{N} K{K}"
        assert c["zero_macs"] == zero_macs, where
        assert (c["toggles_a"], c["toggles_b"]) == toggles_model(dataflow, R, C, A.astype(np.int64),
                                                                 B.astype(np.int64), nt), where
        assert c["macs"] == res.macs == M * N * K
        assert c["pe_adds"] == M * N * -(-K // nt)
        assert c["buffer_adds"] == (0 if dataflow == "os" else M * N * -(-K // (R * nt)))
        plan = acs.Array(R, C, dataflow, mac).plan_gemm(M, N, K)
        assert (res.cycles, res.folds) == (plan.cycles, plan.folds)
        for key, v in plan.counts.items():
            assert c[key] == v, (key, where)


def test_toggles_hand_case():
    """int8 os on a 1x1 array: A row [1, 3, 0] then B column [2, 2, 255]: the A register goes
    0->1->3->0 (1 + 1 + 2 flips), the B register 0->2->2->0xff (1 + 0 + 7)."""
    A = np.array([[1, 3, 0]], np.uint8)
    B = np.array([[2], [2], [255]], np.uint8)
    res = acs.Array(1, 1, "os").gemm(q(A, "int8"), q(B, "int8"))
    assert (res.counts["toggles_a"], res.counts["toggles_b"]) == (4, 8)
    assert res.counts["zero_macs"] == 1


# ---------------------------------------------------------------------------------------
# 4. epilogue: fp32(fp32(acc * fp32(sa * sb)) + bias), then out_format
# ---------------------------------------------------------------------------------------

F32 = ref.float_format_params(8, 23)


def f32_round(x: Fraction) -> float:
    return ref.round_float(x, **F32, rounding="rne")


def epilogue_model(acc, sa, sb, bias):
    """One output element with exact Fractions and explicit IEEE zero signs."""
    s = f32_round(Fraction(float(sa)) * Fraction(float(sb)))
    if isinstance(acc, (int, np.integer)):
        acc = Fraction(int(acc))
        acc_neg, acc_zero, acc_special = acc < 0, acc == 0, None
    else:
        acc = float(acc)
        acc_special = acc if not math.isfinite(acc) else None
        acc_neg, acc_zero = math.copysign(1.0, acc) < 0, acc == 0
    if acc_special is not None:
        y = acc_special * s if s != 0 else math.nan
    elif acc_zero or s == 0:
        y = -0.0 if (acc_neg != (math.copysign(1.0, s) < 0)) else 0.0
    else:
        y = f32_round(Fraction(acc) * Fraction(s))
    if bias is None:
        return y
    b = float(bias)
    if math.isnan(y) or not math.isfinite(y):
        return y + b
    if y == 0 and b == 0:
        return -0.0 if (math.copysign(1.0, y) < 0 and math.copysign(1.0, b) < 0) else 0.0
    if y == 0:
        return b
    if b == 0:
        return y
    total = Fraction(y) + Fraction(b)
    return 0.0 if total == 0 else f32_round(total)


def random_scales(rng, n):
    return (rng.uniform(1, 2, n) * 2.0 ** rng.integers(-12, 6, n)).astype(np.float32)


@pytest.mark.parametrize("macname", ["fp32", "int32", "fp16acc"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["tensor", "channel"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
def test_epilogue_exact(macname, per_channel, with_bias):
    mac = {"fp32": MAC("e4m3fn", "e4m3fn", "fp32"), "int32": MAC("int8", "int8", "int32"),
           "fp16acc": MAC("e5m2", "e5m2", FloatAcc(5, 10))}[macname]
    rng = rng_for("epilogue", macname, per_channel, with_bias)
    M, N, K = 9, 7, 21
    A = codes_of(rng, mac.a, (M, K))
    B = codes_of(rng, mac.b, (K, N))
    if per_channel:
        sa, sb = random_scales(rng, M), random_scales(rng, N)
        qa, qb = q(A, mac.a.name, sa, 0), q(B, mac.b.name, sb, 1)
    else:
        sa, sb = np.full(M, random_scales(rng, 1)[0]), np.full(N, random_scales(rng, 1)[0])
        qa, qb = q(A, mac.a.name, sa[0]), q(B, mac.b.name, sb[0])
    bias = None
    if with_bias:
        bias = (rng.standard_normal(N) * 2.0 ** rng.integers(-6, 8, N)).astype(np.float32)
        bias[0], bias[1] = 0.0, -0.0
    with np.errstate(over="ignore", invalid="ignore"):
        res = acs.Array(4, 3, "ws", mac).gemm(qa, qb, bias=bias)
    want = np.array([[epilogue_model(res.acc[i, j], sa[i], sb[j], None if bias is None else bias[j])
                      for j in range(N)] for i in range(M)])
    assert_bits(res.output, want, "epilogue")
    assert_bits(res.acc, reference_acc(mac, A, B, "ws", 4), "acc")


def test_epilogue_cancellation_gives_plus_zero_and_signed_zeros():
    mac = MAC("e4m3fn", "e4m3fn", "fp32")
    rng = rng_for("cancel")
    A = codes_of(rng, mac.a, (3, 8), zeros=0)
    A[2] = 0                                       # an all-zero row: acc +0
    B = codes_of(rng, mac.b, (8, 4), zeros=0)
    arr = acs.Array(4, 4, "os", mac)
    base = arr.gemm(q(A, "e4m3fn", 0.375), q(B, "e4m3fn", 0.125))
    bias = (-base.output[0]).astype(np.float32)   # exact cancellation in row 0
    bias[0] = -0.0
    res = arr.gemm(q(A, "e4m3fn", 0.375), q(B, "e4m3fn", 0.125), bias=bias)
    want = np.array([[epilogue_model(res.acc[i, j], 0.375, 0.125, bias[j]) for j in range(4)] for i in range(3)])
    assert_bits(res.output, want)
    nz = base.output[0] != 0
    nz[0] = False                                  # column 0 has bias -0: y + -0 = y
    assert nz.sum() >= 2
    assert np.all(f64(res.output[0][nz]) == f64(np.zeros(nz.sum()))), "x + (-x) must be +0"
    assert_bits(res.output[0, 0], base.output[0, 0])
    assert np.signbit(res.output[2, 0]) == np.signbit(np.float64(0.0) + np.float64(-0.0))


@pytest.mark.parametrize("dataflow", DATAFLOWS)
def test_epilogue_negative_integer_accumulator(dataflow):
    """int8 -1 * 1 = -1 through an int32 accumulator; scale 1: the output is -1.0."""
    A = np.array([[0xFF, 0x02]], np.uint8)   # int8 -1, 2
    B = np.array([[1], [0]], np.uint8)
    res = acs.Array(2, 2, dataflow).gemm(q(A, "int8"), q(B, "int8"))
    assert res.acc.tolist() == [[-1]]
    assert_bits(res.output, np.array([[-1.0]]))
    res = acs.Array(2, 2, dataflow).gemm(q(A, "int8", 0.5), q(B, "int8", 0.25), bias=np.array([3.0]))
    assert_bits(res.output, np.array([[2.875]]))


def test_epilogue_overflow_to_inf():
    mac = MAC("e4m3fn", "e4m3fn", "fp32")
    A = np.full((2, 4), 0x7E, np.uint8)     # 448
    B = np.full((4, 2), 0x7E, np.uint8)
    res = acs.Array(2, 2, "os", mac).gemm(q(A, "e4m3fn", 2.0 ** 100), q(B, "e4m3fn", 2.0 ** 20))
    assert np.all(np.isposinf(res.output))
    assert_bits(res.acc, np.full((2, 2), 4 * 448.0 * 448.0))


@pytest.mark.parametrize("out_format,dtype", [("bf16", ml_dtypes.bfloat16), ("fp16", np.float16)])
def test_out_format_rounds_the_fp32_output(out_format, dtype):
    mac = MAC("e4m3fn", "e4m3fn", "fp32")
    rng = rng_for("out_format", out_format)
    A = codes_of(rng, mac.a, (6, 30))
    B = codes_of(rng, mac.b, (30, 5))
    arr = acs.Array(4, 4, "ws", mac)
    full = arr.gemm(q(A, "e4m3fn", 0.03125), q(B, "e4m3fn", 0.5))
    res = arr.gemm(q(A, "e4m3fn", 0.03125), q(B, "e4m3fn", 0.5), out_format=out_format)
    want = full.output.astype(np.float32).astype(dtype).astype(np.float64)
    assert_bits(res.output, want)
    assert_bits(res.acc, full.acc)
    bits = acs.formats.get(out_format).bits
    assert res.counts["dram_bytes"] == math.ceil(6 * 30 + 30 * 5 + 6 * 5 * bits / 8)


def test_float_inputs_are_quantized_per_the_quant_spec():
    rng = rng_for("quant-spec")
    X, W = rng.standard_normal((10, 24)), rng.standard_normal((24, 6)) * np.arange(1, 7)
    mac = MAC("e4m3fn", "e4m3fn", "fp32")
    for spec in ({"a": "tensor", "b": "tensor"}, {"a": "channel", "b": "channel"}, {"a": "tensor", "b": "channel"}):
        arr = acs.Array(4, 4, "ws", mac, quant=spec)
        res = arr.gemm(X, W)
        qa = acs.quant.quantize(X, "e4m3fn", scale=spec["a"], axis=0 if spec["a"] == "channel" else None)
        qb = acs.quant.quantize(W, "e4m3fn", scale=spec["b"], axis=1 if spec["b"] == "channel" else None)
        again = arr.gemm(qa, qb)
        assert_bits(res.output, again.output, str(spec))
        assert_bits(res.acc, again.acc, str(spec))


# ---------------------------------------------------------------------------------------
# 5. conv2d, linear, matmul
# ---------------------------------------------------------------------------------------

def conv_textbook(x, w, stride, padding, dilation, groups):
    """float64 convolution by its definition: out[n, o, p, r] = sum over the group's input
    channels c and taps (i, j) of xpad[n, c, p*sh + i*dh, r*sw + j*dw] * w[o, c', i, j]."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, o, oh, ow))
    og = o // groups
    for oc in range(o):
        g = oc // og
        for p in range(oh):
            for r in range(ow):
                acc = 0.0
                for ci in range(cg):
                    for i in range(kh):
                        for j in range(kw):
                            acc += xp[:, g * cg + ci, p * sh + i * dh, r * sw + j * dw] * w[oc, ci, i, j]
                out[:, oc, p, r] = acc
    return out


def im2col_codes(codes, kernel, stride, padding, dilation):
    """Rows (n, p, r) of patch codes ordered (c, i, j), padding code 0, by explicit loops."""
    n, c, h, wd = codes.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    rows = []
    for b in range(n):
        for p in range(oh):
            for r in range(ow):
                patch = []
                for ci in range(c):
                    for i in range(kh):
                        for j in range(kw):
                            y, x = p * sh + i * dh - ph, r * sw + j * dw - pw
                            patch.append(codes[b, ci, y, x] if 0 <= y < h and 0 <= x < wd else 0)
                rows.append(patch)
    return np.array(rows, dtype=codes.dtype).reshape(n * oh * ow, c * kh * kw), (oh, ow)


def torch_size(size, k, s, p, d):
    return math.floor((size + 2 * p - d * (k - 1) - 1) / s) + 1


CONV_CASES = [  # x shape, w shape, stride, padding, dilation, groups
    ((1, 3, 9, 9), (4, 3, 3, 3), 1, 0, 1, 1),
    ((2, 4, 8, 7), (6, 4, 3, 2), (2, 1), (1, 2), 1, 1),
    ((1, 4, 11, 10), (4, 2, 3, 3), 2, 1, (2, 1), 2),
    ((1, 6, 7, 7), (6, 1, 3, 3), 1, 1, 1, 6),            # depthwise
    ((2, 3, 6, 9), (6, 1, 2, 3), (1, 3), 0, (1, 2), 3),  # depthwise, channel multiplier 2
    ((1, 2, 5, 5), (3, 2, 5, 5), 1, 0, 1, 1),            # one output pixel
    ((1, 2, 4, 4), (2, 2, 1, 1), 3, 2, 1, 1),            # padding > kernel reach
]


@pytest.mark.parametrize("dataflow", ["os", "ws"])
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv2d_against_textbook_and_im2col_gemm(case, dataflow):
    xs, ws_, stride, padding, dilation, groups = CONV_CASES[case]
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    st, pd, dl = pair(stride), pair(padding), pair(dilation)
    rng = rng_for("conv", case, dataflow)
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws_)
    bias = rng.standard_normal(ws_[0]).astype(np.float32)
    mac = MAC("e4m3fn", "e4m3fn", "fp32")
    arr = acs.Array(4, 3, dataflow, mac, quant={"b": "channel"})
    res = arr.conv2d(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias)
    oh = torch_size(xs[2], ws_[2], st[0], pd[0], dl[0])
    ow = torch_size(xs[3], ws_[3], st[1], pd[1], dl[1])
    assert res.output.shape == res.acc.shape == (xs[0], ws_[0], oh, ow)
    # the same quantization by hand: x per tensor, w per output channel
    qx = acs.quant.quantize(x, "e4m3fn")
    qw = acs.quant.quantize(w, "e4m3fn", scale="channel", axis=0)
    want_q = conv_textbook(qx.dequantize(), qw.dequantize(), st, pd, dl, groups) + bias[None, :, None, None]
    err = np.abs(res.output - want_q)
    assert err.max() <= 1e-5 * max(1.0, np.abs(want_q).max())
    assert res.metrics["vs_dequantized"]["rel_fro"] < 1e-6
    want = conv_textbook(x, w, st, pd, dl, groups) + bias[None, :, None, None]
    rel = np.linalg.norm(res.output - want) / np.linalg.norm(want)
    assert rel < 0.08 and res.metrics["vs_float64"]["rel_fro"] == pytest.approx(rel, rel=1e-9)
    # and bit for bit the GEMMs of the im2col of the codes, one per group
    same = arr.conv2d(qx, qw, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias)
    assert_bits(same.output, res.output)
    o, cg = ws_[0], ws_[1]
    og = o // groups
    for g in range(groups):
        cols, (oh2, ow2) = im2col_codes(qx.codes[:, g * cg:(g + 1) * cg], ws_[2:], st, pd, dl)
        assert (oh2, ow2) == (oh, ow)
        wt = qw.codes[g * og:(g + 1) * og].reshape(og, -1).T
        gr = arr.gemm(q(cols, "e4m3fn", qx.scale), q(wt, "e4m3fn", qw.scale[g * og:(g + 1) * og], 1),
                      bias=bias[g * og:(g + 1) * og])
        back = lambda v: v.reshape(xs[0], oh, ow, og).transpose(0, 3, 1, 2)  # noqa: E731
        assert_bits(res.output[:, g * og:(g + 1) * og], back(gr.output), f"group {g} output")
        assert_bits(res.acc[:, g * og:(g + 1) * og], back(gr.acc), f"group {g} acc")


@pytest.mark.parametrize("groups", [1, 2])
def test_conv2d_per_sample_scales_apply_to_each_sample(groups):
    """x quantized per sample (axis 0): each sample's outputs carry its own scale, bit for bit what
    the sample alone gives per tensor, and against the textbook convolution of the dequantized x."""
    rng = rng_for("conv per sample", groups)
    x = rng.standard_normal((3, 4, 6, 5)) * np.array([1.0, 30.0, 0.01])[:, None, None, None]
    w = rng.standard_normal((6, 4 // groups, 3, 3))
    arr = acs.Array(4, 3, "ws", MAC("int8", "int8", "int32"))
    qx = acs.quant.quantize(x, "int8", scale="channel", axis=0)
    qw = acs.quant.quantize(w, "int8")
    res = arr.conv2d(qx, qw, padding=1, groups=groups)
    for s in range(3):
        alone = arr.conv2d(q(qx.codes[s:s + 1], "int8", qx.scale[s]), qw, padding=1, groups=groups)
        assert_bits(res.output[s:s + 1], alone.output, f"sample {s}")
    want = conv_textbook(qx.dequantize(), qw.dequantize(), (1, 1), (1, 1), (1, 1), groups)
    assert np.abs(res.output - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("h,k,s,p,d", [(7, 3, 1, 0, 1), (7, 3, 2, 1, 1), (10, 3, 3, 2, 2), (5, 5, 1, 0, 1),
                                       (6, 2, 4, 0, 1), (9, 4, 2, 3, 2), (1, 1, 1, 0, 1), (3, 3, 1, 1, 1)])
def test_conv2d_output_sizes_follow_pytorch(h, k, s, p, d):
    x = np.ones((1, 2, h, h + 1))
    w = np.ones((2, 2, k, k))
    res = acs.Array(2, 2, "os").conv2d(x, w, stride=s, padding=p, dilation=d)
    assert res.output.shape == (1, 2, torch_size(h, k, s, p, d), torch_size(h + 1, k, s, p, d))
    assert acs.layers.conv_output_size(h, k, s, p, d) == torch_size(h, k, s, p, d)


@pytest.mark.parametrize("dataflow", DATAFLOWS)
def test_linear_equals_gemm(dataflow):
    rng = rng_for("linear", dataflow)
    mac = MAC("int8", "int8", IntAcc(20, "saturate"))
    arr = acs.Array(4, 3, dataflow, mac, quant={"b": "channel"})
    x = rng.standard_normal((2, 3, 17))
    w = rng.standard_normal((5, 17))
    bias = rng.standard_normal(5)
    res = arr.linear(x, w, bias=bias)
    g = arr.gemm(x.reshape(-1, 17), w.T, bias=bias)
    assert res.output.shape == res.acc.shape == (2, 3, 5)
    assert_bits(res.output, g.output.reshape(2, 3, 5))
    assert_bits(res.acc, g.acc.reshape(2, 3, 5))
    assert res.cycles == g.cycles and res.counts == g.counts
    # one sample (1-D x), and QTensor operands
    r1 = arr.linear(x[0, 0], w)
    assert r1.output.shape == (5,)
    qx = acs.quant.quantize(x, "int8")
    qw = acs.quant.quantize(w, "int8", scale="channel", axis=0)
    rq = arr.linear(qx, qw, bias=bias)
    gq = arr.gemm(q(qx.codes.reshape(-1, 17), "int8", qx.scale), q(qw.codes.T, "int8", qw.scale, 1), bias=bias)
    assert_bits(rq.output, gq.output.reshape(2, 3, 5))
    assert_bits(rq.acc, gq.acc.reshape(2, 3, 5))


@pytest.mark.parametrize("dataflow", DATAFLOWS)
def test_matmul_batched_broadcast_equals_gemms(dataflow):
    rng = rng_for("matmul", dataflow)
    mac = MAC("e4m3fn", "e4m3fn", FloatAcc(5, 10, "sr"))
    arr = acs.Array(3, 4, dataflow, mac, seed=5)
    a = rng.standard_normal((2, 3, 6, 9))
    b = rng.standard_normal((3, 9, 5))
    res = arr.matmul(a, b)
    assert res.output.shape == res.acc.shape == (2, 3, 6, 5)
    qa, qb = acs.quant.quantize(a, "e4m3fn"), acs.quant.quantize(b, "e4m3fn")
    cycles = 0
    for i in range(2):
        for j in range(3):
            g = arr.gemm(q(qa.codes[i, j], "e4m3fn", qa.scale), q(qb.codes[j], "e4m3fn", qb.scale))
            assert_bits(res.output[i, j], g.output, f"batch {i},{j}")
            assert_bits(res.acc[i, j], g.acc, f"batch {i},{j}")
            cycles += g.cycles
    assert res.cycles == cycles
    assert res.macs == 6 * 6 * 5 * 9
    # broadcasting the other way, QTensor operands
    c = codes_of(rng, mac.a, (5, 6))
    res2 = arr.matmul(q(c, "e4m3fn", 0.5), qa)               # (5, 6) @ (2, 3, 6, 9)
    assert res2.output.shape == (2, 3, 5, 9)
    for i, j in ((0, 0), (1, 2)):
        g = arr.gemm(q(c, "e4m3fn", 0.5), q(qa.codes[i, j], "e4m3fn", qa.scale))
        assert_bits(res2.output[i, j], g.output)
        assert_bits(res2.acc[i, j], g.acc)


# ---------------------------------------------------------------------------------------
# 6. metrics
# ---------------------------------------------------------------------------------------

def metrics_model(out, ref64):
    err = out - ref64
    return {"rel_fro": np.linalg.norm(err) / np.linalg.norm(ref64),
            "sqnr_db": 10 * np.log10(np.sum(ref64 ** 2) / np.sum(err ** 2)),
            "max_abs": np.max(np.abs(err)),
            "cosine": np.sum(out * ref64) / (np.linalg.norm(out) * np.linalg.norm(ref64))}


@pytest.mark.parametrize("mac", ["int8", "e4m3fn", "e5m2-bf16"])
def test_metrics_equal_numpy_recomputation(mac):
    m = {"int8": MAC("int8", "int8", "int32"), "e4m3fn": MAC("e4m3fn", "e4m3fn", "fp32"),
         "e5m2-bf16": MAC("e5m2", "e5m2", "bf16")}[mac]
    rng = rng_for("metrics", mac)
    A, B = rng.standard_normal((12, 40)), rng.standard_normal((40, 9))
    bias = rng.standard_normal(9)
    res = acs.Array(4, 4, "ws", m).gemm(A, B, bias=bias)
    qa, qb = acs.quant.quantize(A, m.a.name), acs.quant.quantize(B, m.b.name)
    refs = {"vs_float64": np.einsum("ik,kj->ij", A, B) + bias,
            "vs_dequantized": np.einsum("ik,kj->ij", qa.dequantize(), qb.dequantize()) + bias.astype(np.float32)}
    for key, r in refs.items():
        want = metrics_model(res.output, r)
        for name, v in want.items():
            assert res.metrics[key][name] == pytest.approx(float(v), rel=1e-9), (key, name)
    assert res.to_dict()["metrics"] == res.metrics


def test_metrics_count_nonfinite_outputs():
    """e5m2 products past fp16's range overflow the accumulator: the infinite outputs are
    counted and make the error infinite."""
    mac = MAC("e5m2", "e5m2", "fp16")
    A = np.full((2, 3), 0x7B, np.uint8)            # e5m2 57344
    A[1] = 0x3C                                    # 1.0
    B = np.full((3, 4), 0x3C, np.uint8)
    res = acs.Array(2, 2, "ws", mac).gemm(q(A, "e5m2"), q(B, "e5m2"))
    n_bad = int(np.sum(~np.isfinite(res.output)))
    assert n_bad == 4 and np.all(np.isposinf(res.output[0]))
    assert_bits(res.output[1], np.full(4, 3.0))
    for key in ("vs_float64", "vs_dequantized"):
        assert res.metrics[key]["nonfinite"] == n_bad
        assert res.metrics[key]["rel_fro"] == math.inf and res.metrics[key]["max_abs"] == math.inf


def test_metrics_of_an_exact_result():
    """Small integers through an exact accumulator: no error at all."""
    A = np.arange(12.0).reshape(3, 4) - 5
    B = np.arange(8.0).reshape(4, 2) - 3
    res = acs.Array(2, 2, "os", MAC("int8", "int8", "int32")).gemm(q(A.astype(np.int8).view(np.uint8), "int8"),
                                                                   q(B.astype(np.int8).view(np.uint8), "int8"))
    assert_bits(res.output, A @ B)
    for key in ("vs_float64", "vs_dequantized"):
        mt = res.metrics[key]
        assert mt["rel_fro"] == 0 and mt["max_abs"] == 0 and mt["sqnr_db"] == math.inf
        assert mt["cosine"] == pytest.approx(1.0, abs=1e-15)


# ---------------------------------------------------------------------------------------
# 7. memory model
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dataflow", DATAFLOWS)
@pytest.mark.parametrize("mac", [lambda: MAC("int8", "int8", "int32"), lambda: acs.presets.tensor_core("a100", "fp16")],
                         ids=["int8", "a100"])
def test_memory_model(mac, dataflow):
    mac = mac()
    ab, bb = mac.a.bits / 8, mac.b.bits / 8
    for M, N, K in [(64, 48, 100), (7, 5, 3), (128, 16, 256)]:
        ideal = acs.Array(8, 8, dataflow, mac).plan_gemm(M, N, K)
        assert ideal.stall_cycles == ideal.counts["stall_cycles"] == 0
        assert ideal.counts["dram_bytes"] == math.ceil(M * K * ab + K * N * bb + M * N * 4)
        for sram in (0.25, 4.0, 512.0, (1.0, 64.0, 0.5)):
            prev = None
            for bw in (0.25, 1, 2, 4, 16, 64, 1024, 1e9):
                p = acs.Array(8, 8, dataflow, mac, sram_kb=sram, dram_bytes_per_cycle=bw).plan_gemm(M, N, K)
                assert p.stall_cycles >= 0 and p.stall_cycles == p.counts["stall_cycles"]
                assert p.cycles == ideal.cycles + p.stall_cycles
                assert p.folds == ideal.folds
                assert p.counts["dram_bytes"] >= ideal.counts["dram_bytes"]
                if prev is not None:
                    assert p.stall_cycles <= prev, (sram, bw, M, N, K)
                prev = p.stall_cycles
    # the GEMM's Result carries the plan's memory numbers
    arr = acs.Array(4, 4, dataflow, mac, sram_kb=1.0, dram_bytes_per_cycle=2)
    rng = rng_for("mem", dataflow)
    res = arr.gemm(rng.standard_normal((20, 30)), rng.standard_normal((30, 10)))
    plan = arr.plan_gemm(20, 10, 30)
    assert (res.cycles, res.stall_cycles, res.counts["dram_bytes"]) == \
           (plan.cycles, plan.stall_cycles, plan.counts["dram_bytes"])


# ---------------------------------------------------------------------------------------
# 8. determinism and memory layout
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dataflow", DATAFLOWS)
def test_deterministic_and_layout_independent(dataflow):
    mac = MAC("e4m3fn", "e4m3fn", FloatAcc(5, 6, "sr"))
    arr = acs.Array(3, 4, dataflow, mac, buffer_acc=FloatAcc(6, 8, "sr"), seed=11)
    rng = rng_for("det", dataflow)
    X, W = rng.standard_normal((9, 33)), rng.standard_normal((33, 7))
    r1, r2 = arr.gemm(X, W), arr.gemm(X, W)
    r3 = arr.gemm(np.asfortranarray(X), np.asfortranarray(W))
    big = np.zeros((18, 66))
    big[::2, ::2] = X
    r4 = arr.gemm(big[::2, ::2], W)                        # strided view
    for r in (r2, r3, r4):
        assert_bits(r.acc, r1.acc)
        assert_bits(r.output, r1.output)
        assert r.counts == r1.counts
    qa, qb = acs.quant.quantize(X, "e4m3fn"), acs.quant.quantize(W, "e4m3fn")
    r5 = arr.gemm(q(np.asfortranarray(qa.codes), "e4m3fn", qa.scale),
                  q(np.asfortranarray(qb.codes), "e4m3fn", qb.scale))
    assert_bits(r5.acc, r1.acc)
    assert_bits(r5.output, r1.output)
    other = acs.Array(3, 4, dataflow, mac, buffer_acc=FloatAcc(6, 8, "sr"), seed=12).gemm(X, W)
    assert np.any(f64(other.acc) != f64(r1.acc)), "the seed must matter for sr"


def test_to_dict():
    res = acs.Array(4, 4, "os").gemm(np.ones((3, 5)), np.ones((5, 2)))
    d = res.to_dict(arrays=True)
    assert d["cycles"] == res.cycles and d["output_shape"] == [3, 2]
    assert np.array_equal(np.array(d["output"]), res.output) and np.array_equal(np.array(d["acc"]), res.acc)
