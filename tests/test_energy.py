"""Tests of the energy model (docs/energy.md, accel_sim/energy.py, Plan/Result energy fields).

Every expected value is recomputed here from the formulas of docs/energy.md with this file's own
code, and from Horowitz's published 45 nm figures ("Computing's energy problem", ISSCC 2014) and
Stillmaker & Baas's node factors written as literals.  The data-dependent counts (operand-register
toggles, register loads, zero-operand MACs) are recomputed by a per-PE register simulation of the
model documented in docs/array.md ("Counts") and csrc/array.c: every PE lane has its own operand
registers, which start at 0 and keep their code between folds; a streaming operand is seen by
every active PE of its row/column, a stationary one is loaded once per fold.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np
import pytest

import accel_sim as acs
from accel_sim import presets
from accel_sim.energy import EnergyTable
from accel_sim.mac import MAC, FixedAcc, FloatAcc
from accel_sim.quant import QTensor, quantize

# ------------------------------------------------------------------------------------------------
# Published numbers, as literals
# ------------------------------------------------------------------------------------------------
# Horowitz, ISSCC 2014, 45 nm 0.9 V, pJ per operation / per 64-bit SRAM read.
HOROWITZ = {
    "int_add_8": 0.03, "int_add_32": 0.1,
    "int_mult_8": 0.2, "int_mult_32": 3.1,
    "fp_add_16": 0.4, "fp_add_32": 0.9,
    "fp_mult_16": 1.1, "fp_mult_32": 3.7,
    "sram_8kb_64b": 10.0, "sram_32kb_64b": 20.0, "sram_1mb_64b": 100.0,
}
# The table's own estimates (docs/energy.md): DRAM 1.3-2.6 nJ per 64 bits -> midpoint;
# a flip-flop bit ~ one bit of the 8b add; leakage 5% of an int8 MAC (mult + add) per PE-cycle.
DEFAULTS = dict(HOROWITZ, dram_64b=(1300.0 + 2600.0) / 2, reg_bit=0.03 / 8,
                leakage_pe_cycle=0.05 * (0.2 + 0.03))
# docs/scaling.md: an e8m0 scale product (or applying a power-of-two scale) ~ an 8b add.
DEFAULTS["scale_exp_add"] = 0.03
# Stillmaker & Baas (Integration 58, 2017): energy relative to 45 nm.
NODE_FACTOR = {32: 0.66, 16: 0.17, 14: 0.14, 7: 0.094}
PARTS = {"mult", "pe_add", "buffer_add", "reg", "sram", "dram", "leakage"}
DATAFLOWS = ("os", "ws", "is")

POP = np.array([bin(i).count("1") for i in range(1 << 16)], dtype=np.int64)


def close(x, y, rel=1e-9, abs_=1e-12):
    return math.isclose(x, y, rel_tol=rel, abs_tol=abs_)


def assert_parts_close(got: dict, want: dict, rel=1e-9):
    assert set(got) == PARTS and set(want) == PARTS
    bad = {p: (got[p], want[p]) for p in PARTS if not close(got[p], want[p], rel)}
    assert not bad, f"energy parts differ (got, want): {bad}"


def assert_breakdown_sums(res):
    """The breakdown has exactly the documented parts, all >= 0, and they sum to energy_pj."""
    assert set(res.energy_breakdown) == PARTS
    assert all(v >= 0 for v in res.energy_breakdown.values()), res.energy_breakdown
    assert close(sum(res.energy_breakdown.values()), res.energy_pj, 1e-12)
    assert res.energy_pj > 0


# ------------------------------------------------------------------------------------------------
# An independent implementation of docs/energy.md
# ------------------------------------------------------------------------------------------------
# Operand formats as (kind, ...): ("int", bits) or ("fp", exp_bits, man_bits).
FMT = {"int8": ("int", 8), "int4": ("int", 4), "e4m3fn": ("fp", 4, 3), "e5m2": ("fp", 5, 2),
       "fp16": ("fp", 5, 10), "bf16": ("fp", 8, 7)}


def fmt_bits(f):
    return f[1] if f[0] == "int" else 1 + f[1] + f[2]


def my_int_mult(t, a_bits, b_bits):
    """int_mult_8 * (sqrt(a*b)/8)^p, p through both anchors."""
    p = math.log(t.int_mult_32 / t.int_mult_8) / math.log(32 / 8)
    return t.int_mult_8 * (math.sqrt(a_bits * b_bits) / 8) ** p


def my_int_add(t, w):
    """Linear through (8, int_add_8) and (32, int_add_32)."""
    return t.int_add_8 + (w - 8) * (t.int_add_32 - t.int_add_8) / (32 - 8)


def my_fp_coeffs(t):
    """alpha*(m+1)^2 + kappa*e solved at fp16 (e5 m10) and fp32 (e8 m23)."""
    alpha, kappa = np.linalg.solve([[11.0 * 11.0, 5.0], [24.0 * 24.0, 8.0]], [t.fp_mult_16, t.fp_mult_32])
    return float(alpha), float(kappa)


def my_mult(t, fa, fb):
    if fa[0] == "int" and fb[0] == "int":
        return my_int_mult(t, fa[1], fb[1])
    alpha, kappa = my_fp_coeffs(t)
    (ea, ma), (eb, mb) = [(0, f[1] - 1) if f[0] == "int" else (f[1], f[2]) for f in (fa, fb)]
    return alpha * (ma + 1) * (mb + 1) + kappa * max(ea, eb)


def my_fp_add(t, e, m):
    if (e, m) == (5, 10):
        return t.fp_add_16
    if (e, m) == (8, 23):
        return t.fp_add_32
    return t.fp_add_32 * (1 + e + m) / 32


# Accumulators as ("float", e, m), ("int", bits), ("fixed", int_bits + frac_bits),
# ("block", terms, align_bits, (e, m) of its FloatAcc).
def my_add(t, acc):
    kind = acc[0]
    if kind == "float":
        return my_fp_add(t, acc[1], acc[2])
    if kind in ("int", "fixed"):
        return my_int_add(t, acc[1])
    n, f, (e, m) = acc[1:]
    return n * my_int_add(t, f + 3) + n * my_int_add(t, f + 3 + math.ceil(math.log2(n + 1))) + my_fp_add(t, e, m)


def my_buffer_add(t, acc):
    """A tile sum joining the buffer is a two-operand add: a block-FMA buffer adds in its
    accumulator format (docs/energy.md)."""
    return my_fp_add(t, *acc[3]) if acc[0] == "block" else my_add(t, acc)


def acc_bits(acc):
    kind = acc[0]
    if kind == "float":
        return 1 + acc[1] + acc[2]
    if kind in ("int", "fixed"):
        return acc[1]
    e, m = acc[3]
    return 1 + e + m


def my_sram_byte(t, kb):
    """Per byte: 64-bit anchors / 8, log-log linear between 8 KB, 32 KB and 1 MB, extrapolated
    along the end segments."""
    xs = [math.log(8.0), math.log(32.0), math.log(1024.0)]
    ys = [math.log(t.sram_8kb_64b), math.log(t.sram_32kb_64b), math.log(t.sram_1mb_64b)]
    x = math.log(kb)
    lo = 0 if kb <= 32 else 1
    y = ys[lo] + (ys[lo + 1] - ys[lo]) * (x - xs[lo]) / (xs[lo + 1] - xs[lo])
    return math.exp(y) / 8


@dataclass(frozen=True)
class Case:
    name: str
    a: str
    b: str
    acc: tuple
    make: object           # () -> MAC
    buf: tuple = None      # the buffer accumulator, default the PE's
    buffer_acc: object = None

    @property
    def terms(self):
        return self.acc[1] if self.acc[0] == "block" else 1

    @property
    def buffer(self):
        return self.buf or self.acc


CASES = [
    Case("int8_int32", "int8", "int8", ("int", 32), lambda: MAC("int8", "int8", "int32")),
    Case("int4_int32", "int4", "int4", ("int", 32), lambda: MAC("int4", "int4", "int32")),
    Case("int8xint4_int32", "int8", "int4", ("int", 32), lambda: MAC("int8", "int4", "int32")),
    Case("e4m3_fp32", "e4m3fn", "e4m3fn", ("float", 8, 23), lambda: MAC("e4m3fn", "e4m3fn", "fp32")),
    Case("fp16_fp16_buf_fp32", "fp16", "fp16", ("float", 5, 10), lambda: MAC("fp16", "fp16", "fp16"),
         buf=("float", 8, 23), buffer_acc="fp32"),
    Case("bf16_fp32", "bf16", "bf16", ("float", 8, 23), lambda: MAC("bf16", "bf16", "fp32")),
    Case("int8xe5m2_fp32", "int8", "e5m2", ("float", 8, 23), lambda: MAC("int8", "e5m2", "fp32")),
    Case("int8_fixed16.8", "int8", "int8", ("fixed", 24), lambda: MAC("int8", "int8", FixedAcc(16, 8))),
    Case("h100_e4m3", "e4m3fn", "e4m3fn", ("block", 32, 13, (8, 13)),
         lambda: presets.tensor_core("h100", "e4m3")),
]
CASE_IDS = [c.name for c in CASES]


def my_breakdown(t, case, counts, sram_kb=None, *, measured, toggles=None, zero=None, mult_flips=None):
    """docs/energy.md "The model", from the run's action counts; measured: with the data's
    register toggles, multiplier-input toggles and zero-operand MACs, else every code reaching
    a register or a multiplier input flipping half its bits, and no gating."""
    fa, fb = FMT[case.a], FMT[case.b]
    base = 0.5 * (fmt_bits(fa) * counts["reg_loads_a"] + fmt_bits(fb) * counts["reg_loads_b"])
    flips = toggles if measured else base
    z = zero if measured else 0
    at_mult = mult_flips if measured else (base if counts["macs"] else 0.0)
    sizes = sram_kb or (t.default_sram_kb,) * 3
    return {
        "mult": my_mult(t, fa, fb) * (at_mult / (0.5 * (fmt_bits(fa) + fmt_bits(fb))) + z * t.mult_idle_fraction),
        "pe_add": counts["pe_adds"] * my_add(t, case.acc),
        "buffer_add": counts["buffer_adds"] * my_buffer_add(t, case.buffer),
        "reg": t.reg_bit * (flips / 0.5 + counts["pe_adds"] * acc_bits(case.acc)
                            + counts["buffer_adds"] * acc_bits(case.buffer)),
        "sram": (counts["sram_read_bytes_a"] * my_sram_byte(t, sizes[0])
                 + counts["sram_read_bytes_b"] * my_sram_byte(t, sizes[1])
                 + (counts["sram_write_bytes_out"] + counts["sram_read_bytes_out"]) * my_sram_byte(t, sizes[2])),
        "dram": counts["dram_bytes"] * t.dram_64b / 8,
        "leakage": counts["pe_cycles"] * t.leakage_pe_cycle,
    }


# ------------------------------------------------------------------------------------------------
# An independent per-PE simulation of the operand registers (docs/array.md "Counts")
# ------------------------------------------------------------------------------------------------
def sim_registers(df, R, C, a, b, nt=1):
    """(toggles_a, toggles_b, reg_loads_a, reg_loads_b) of A (M, K) @ B (K, N) given as codes.
    Each PE lane (i, j, t) has its own A and B register, starting at 0, holding its code
    between folds.  K is padded with code 0 to a multiple of nt."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    M, K = a.shape
    N = b.shape[1]
    kp = -(-K // nt)
    ap = np.zeros((M, kp * nt), np.int64)
    ap[:, :K] = a
    bp = np.zeros((kp * nt, N), np.int64)
    bp[:K] = b
    sr, sc = {"os": (M, N), "ws": (kp, N), "is": (kp, M)}[df]
    regs, tog, loads = {}, {"a": 0, "b": 0}, {"a": 0, "b": 0}

    def load(op, key, seq):
        seq = np.atleast_1d(np.asarray(seq, np.int64))
        full = np.concatenate(([regs.get((op, key), 0)], seq))
        tog[op] += int(POP[full[1:] ^ full[:-1]].sum())
        loads[op] += seq.size
        regs[(op, key)] = int(seq[-1])

    for fr in range(-(-sr // R)):
        for fc in range(-(-sc // C)):
            for i in range(min(R, sr - fr * R)):
                for j in range(min(C, sc - fc * C)):
                    for t in range(nt):
                        key = (i, j, t)
                        if df == "os":        # output (row, col): A's row streams, B's column streams
                            row, col = fr * R + i, fc * C + j
                            load("a", key, ap[row, t::nt])
                            load("b", key, bp[t::nt, col])
                        else:
                            kidx = (fr * R + i) * nt + t
                            if df == "ws":    # B stationary, A's column kidx streams over M
                                load("a", key, ap[:, kidx])
                                load("b", key, bp[kidx, fc * C + j])
                            else:             # A stationary, B's row kidx streams over N
                                load("a", key, ap[fc * C + j, kidx])
                                load("b", key, bp[kidx, :])
    return tog["a"], tog["b"], loads["a"], loads["b"]


def sim_multipliers(df, R, C, a, b, za, zb, nt=1):
    """(mult_toggles_a, mult_toggles_b, active multiplies) of A (M, K) @ B (K, N) given as codes,
    with za, zb their zero masks.  Operand isolation: each PE lane (i, j, t) has one multiplier
    whose inputs start at 0; a multiply with a zero operand (or K's padding) is gated and leaves
    them as they are; an active one loads its pair, flipping the bits that differ.  The lane's
    multiplies, fold by fold in (row-fold, column-fold) order, follow DESIGN.md's dataflows:
    os: output (fr*R + i, fc*C + j) over k = t, t + n, ...; ws: B[kidx, fc*C + j] stationary
    times A[:, kidx] over M, kidx = (fr*R + i)*n + t; is: A[fc*C + j, kidx] times B[kidx, :] over N."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    M, K = a.shape
    N = b.shape[1]
    kp = -(-K // nt)
    sr, sc = {"os": (M, N), "ws": (kp, N), "is": (kp, M)}[df]
    latch, flips = {}, {"a": 0, "b": 0}
    active = 0
    for fr in range(-(-sr // R)):
        for fc in range(-(-sc // C)):
            for i in range(min(R, sr - fr * R)):
                for j in range(min(C, sc - fc * C)):
                    for t in range(nt):
                        if df == "os":
                            row, col = fr * R + i, fc * C + j
                            ks = np.arange(t, K, nt)
                            pa, pb = a[row, ks], b[ks, col]
                            live = ~za[row, ks] & ~zb[ks, col]
                        else:
                            kidx = (fr * R + i) * nt + t
                            if kidx >= K:         # padding: every multiply gated
                                continue
                            if df == "ws":
                                pa, pb = a[:, kidx], np.full(M, b[kidx, fc * C + j])
                                live = ~za[:, kidx] & ~zb[kidx, fc * C + j]
                            else:
                                pa, pb = np.full(N, a[fc * C + j, kidx]), b[kidx, :]
                                live = ~za[fc * C + j, kidx] & ~zb[kidx, :]
                        pa, pb = pa[live], pb[live]
                        if not pa.size:
                            continue
                        la, lb = latch.get((i, j, t), (0, 0))
                        seq_a, seq_b = np.concatenate(([la], pa)), np.concatenate(([lb], pb))
                        flips["a"] += int(POP[seq_a[1:] ^ seq_a[:-1]].sum())
                        flips["b"] += int(POP[seq_b[1:] ^ seq_b[:-1]].sum())
                        latch[(i, j, t)] = (int(pa[-1]), int(pb[-1]))
                        active += pa.size
    return flips["a"], flips["b"], active


def zero_mask(codes, f):
    """Codes whose value is zero (+0 or -0 for floats), from the bits."""
    codes = np.asarray(codes, np.int64)
    if f[0] == "int":
        return codes == 0
    return (codes & ((1 << (fmt_bits(f) - 1)) - 1)) == 0


def my_zero_macs(a, b, fa, fb):
    nza = (~zero_mask(a, fa)).astype(np.int64)
    nzb = (~zero_mask(b, fb)).astype(np.int64)
    m, k = nza.shape
    n = nzb.shape[1]
    return m * n * k - int((nza @ nzb).sum())


def qrandom(rng, shape, fmt, zeros=0.15, scale=1.0):
    """A quantized random tensor with about `zeros` of its entries exactly zero."""
    x = rng.standard_normal(shape) * scale
    x[rng.random(shape) < zeros] = 0.0
    return quantize(x, fmt)


def int8_codes(values):
    """int8 values -> two's complement codes."""
    return (np.asarray(values, np.int64) & 0xFF).astype(np.uint8)


def q(codes, fmt="int8"):
    return QTensor(np.asarray(codes, np.int64).astype(acs.formats.get(fmt).code_dtype), fmt, 1.0)


# ================================================================================================
# The table: defaults are the published numbers
# ================================================================================================
def test_default_table_is_horowitz_and_documented_estimates():
    t = EnergyTable.default(45)
    assert t == EnergyTable()
    for name, v in DEFAULTS.items():
        assert close(getattr(t, name), v, 1e-12), name
    assert set(EnergyTable.ENERGIES) == set(DEFAULTS)
    assert (t.node_nm, t.mult_idle_fraction, t.default_sram_kb) == (45, 0.0, 32.0)
    assert close(t.dram_byte(), 1950.0 / 8) and close(t.dram_byte(), 243.75)


# ================================================================================================
# Breakdown parts and sums, and the whole model recomputed (gemm / plan_gemm / layers)
# ================================================================================================
@pytest.mark.parametrize("df", DATAFLOWS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gemm_energy_recomputed_from_the_documented_model(case, df, rng):
    R, C = 4, 3
    M, K, N = 11, 40 if case.terms > 1 else 21, 10
    sram = (4.0, 64.0, 2048.0) if df == "ws" else None      # extrapolated and interpolated sizes
    arr = acs.Array(R, C, df, case.make(), buffer_acc=case.buffer_acc, sram_kb=sram)
    qa, qb = qrandom(rng, (M, K), case.a), qrandom(rng, (K, N), case.b)
    res = arr.gemm(qa, qb)
    assert_breakdown_sums(res)
    assert res.energy_basis.startswith("measured")

    counts = res.counts
    ta, tb, la, lb = sim_registers(df, R, C, qa.codes, qb.codes, case.terms)
    zero = my_zero_macs(qa.codes, qb.codes, FMT[case.a], FMT[case.b])
    kp = -(-K // case.terms)
    assert zero > 0
    assert (counts["toggles_a"], counts["toggles_b"], counts["reg_loads_a"], counts["reg_loads_b"]) == (ta, tb, la, lb)
    assert counts["zero_macs"] == zero
    ma, mb, active = sim_multipliers(df, R, C, qa.codes, qb.codes, zero_mask(qa.codes, FMT[case.a]),
                                     zero_mask(qb.codes, FMT[case.b]), case.terms)
    assert (counts["mult_toggles_a"], counts["mult_toggles_b"]) == (ma, mb)
    assert active == M * N * K - zero
    assert counts["macs"] == res.macs == M * N * K
    assert counts["pe_adds"] == M * N * kp
    assert counts["buffer_adds"] == (0 if df == "os" else M * N * -(-kp // R))
    assert counts["pe_cycles"] == R * C * res.cycles

    want = my_breakdown(arr.energy, case, counts, sram, measured=True, toggles=ta + tb, zero=zero, mult_flips=ma + mb)
    assert_parts_close(res.energy_breakdown, want)
    assert close(res.energy_pj, sum(want.values()))


@pytest.mark.parametrize("df", DATAFLOWS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_plan_gemm_energy_recomputed(case, df):
    R, C = 4, 3
    M, K, N = 11, 70, 10
    kp = -(-K // case.terms)
    arr = acs.Array(R, C, df, case.make(), buffer_acc=case.buffer_acc, sram_kb=96.0)
    plan = arr.plan_gemm(M, N, K)
    assert_breakdown_sums(plan)
    assert plan.energy_basis.startswith("data-independent estimate")
    streamed = M * N * kp * case.terms
    loads = {"os": (streamed, streamed), "ws": (streamed, kp * case.terms * N),
             "is": (kp * case.terms * M, streamed)}[df]
    assert (plan.counts["reg_loads_a"], plan.counts["reg_loads_b"]) == loads
    want = my_breakdown(arr.energy, case, plan.counts, (32.0, 32.0, 32.0), measured=False)
    assert_parts_close(plan.energy_breakdown, want)


def _gemm_energy(arr, a_codes, b_codes, fa, fb):
    return arr.gemm(q(a_codes, fa), q(b_codes, fb))


@pytest.mark.parametrize("df", DATAFLOWS)
@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[8]], ids=lambda c: c.name)
def test_layers_energy_is_the_sum_of_their_gemms(case, df, rng):
    """conv2d, linear and matmul: breakdown parts sum to the total, and equal the GEMMs they
    lower to (built here by hand), run one by one."""
    arr = acs.Array(3, 4, df, case.make(), buffer_acc=case.buffer_acc)

    # linear: x (2, 5, K) @ w.T
    K, O = 36, 7
    x, w = qrandom(rng, (2, 5, K), case.a), qrandom(rng, (O, K), case.b)
    lin = arr.linear(x, w)
    assert_breakdown_sums(lin)
    ref = _gemm_energy(arr, x.codes.reshape(-1, K), w.codes.T, case.a, case.b)
    assert_parts_close(lin.energy_breakdown, ref.energy_breakdown, 1e-12)

    # matmul with a broadcast batch axis: a (2, 3, M, K) @ b (3, K, N)
    a, b = qrandom(rng, (2, 3, 5, K), case.a), qrandom(rng, (3, K, 6), case.b)
    mm = arr.matmul(a, b)
    assert_breakdown_sums(mm)
    parts = [_gemm_energy(arr, a.codes[i, j], b.codes[j], case.a, case.b).energy_breakdown
             for i in range(2) for j in range(3)]
    assert_parts_close(mm.energy_breakdown, {p: sum(d[p] for d in parts) for p in PARTS}, 1e-12)
    assert close(mm.energy_pj, sum(sum(d.values()) for d in parts), 1e-12)

    # conv2d 3x3, padding 1, 2 groups: im2col by hand, padding with code 0, columns (c, kh, kw)
    xc, wc = qrandom(rng, (2, 4, 5, 5), case.a), qrandom(rng, (6, 2, 3, 3), case.b)
    conv = arr.conv2d(xc, wc, padding=1, groups=2)
    assert_breakdown_sums(conv)
    xp = np.pad(xc.codes, ((0, 0), (0, 0), (1, 1), (1, 1)))
    parts = []
    for g in range(2):
        cols = np.stack([xp[:, 2 * g + c, i:i + 5, j:j + 5] for c in range(2) for i in range(3) for j in range(3)],
                        axis=-1)                                    # (n, oh, ow, c*kh*kw)
        parts.append(_gemm_energy(arr, cols.reshape(-1, 18), wc.codes[3 * g:3 * g + 3].reshape(3, -1).T,
                                  case.a, case.b).energy_breakdown)
    assert_parts_close(conv.energy_breakdown, {p: sum(d[p] for d in parts) for p in PARTS}, 1e-12)

    # conv2d 1x1 is a GEMM of the NHWC pixels
    x1, w1 = qrandom(rng, (2, 5, 3, 4), case.a), qrandom(rng, (6, 5, 1, 1), case.b)
    c1 = arr.conv2d(x1, w1)
    ref = _gemm_energy(arr, x1.codes.transpose(0, 2, 3, 1).reshape(-1, 5), w1.codes.reshape(6, 5).T,
                       case.a, case.b)
    assert_parts_close(c1.energy_breakdown, ref.energy_breakdown, 1e-12)
    for r in (lin, mm, conv, c1):
        assert r.energy_basis == ref.energy_basis and r.energy_basis.startswith("measured")


# ================================================================================================
# Gating
# ================================================================================================
def _gating_operands(df, M, K):
    """Two A's (int8 codes) whose streaming registers flip exactly alike, one with no zeros and
    one with half its codes zero.  The streamed sequence alternates between two codes at Hamming
    distance 4: 0x0F <-> 0x3C (no zeros) vs 0x0F <-> 0x00 (every other code zero).  Both start
    with 0x0F, so the first load from a register's initial 0 flips 4 bits in both; with an even
    stream length the wrap to the next fold (second code -> 0x0F) also flips 4 in both.
    (0x30/0x3F vs 0x00/0x0F would have the same distance but different first loads from 0.)
    os streams A's rows along K: alternate along K; ws streams A's columns along M: alternate
    along M.  (is keeps A stationary, so its loads would differ; it is not used here.)"""
    idx = np.arange(K)[None, :] if df == "os" else np.arange(M)[:, None]
    odd = np.broadcast_to(idx % 2 == 1, (M, K))
    return np.where(odd, 0x3C, 0x0F), np.where(odd, 0x00, 0x0F)


@pytest.mark.parametrize("df", ["os", "ws"])
def test_gated_multiplies_hold_their_inputs(df, rng):
    """Half of A's codes zero, placed so that the operand registers flip exactly as without
    them: the registers (which pass codes on) cost the same, but the active multiplies see only
    0x0F at their A input (a gated multiply holds its inputs), so the A inputs flip 4 bits once
    per multiplier and never again.  (The old model scaled the active multiplies by the register
    activity, which counted the zeros a second time.)"""
    R, C, M, K, N = 4, 4, 10, 16, 9
    a_nz, a_z = _gating_operands(df, M, K)
    b = int8_codes(rng.choice([v for v in range(-128, 128) if v != 0], size=(K, N)))
    arr = acs.Array(R, C, df)
    assert arr.energy.mult_idle_fraction == 0
    r_nz, r_z = arr.gemm(q(a_nz), q(b)), arr.gemm(q(a_z), q(b))

    assert r_nz.counts["zero_macs"] == 0
    assert r_z.counts["zero_macs"] == my_zero_macs(a_z, b, FMT["int8"], FMT["int8"]) == M * N * K // 2
    for key in ("toggles_a", "toggles_b", "reg_loads_a", "reg_loads_b"):
        assert r_nz.counts[key] == r_z.counts[key], key
    assert r_nz.counts["toggles_a"] == sim_registers(df, R, C, a_nz, b)[0] == sim_registers(df, R, C, a_z, b)[0]
    for part in PARTS - {"mult"}:
        assert r_z.energy_breakdown[part] == r_nz.energy_breakdown[part], part

    za, zb = a_z == 0, b == 0
    ma, mb, active = sim_multipliers(df, R, C, a_z, b, za, zb)
    assert active == M * N * K // 2
    sr, sc = {"os": (M, N), "ws": (K, N)}[df]
    assert ma == 4 * min(sr, R) * min(sc, C)          # 0x0F once per multiplier, from 0
    assert (r_z.counts["mult_toggles_a"], r_z.counts["mult_toggles_b"]) == (ma, mb)
    ma_nz, mb_nz, _ = sim_multipliers(df, R, C, a_nz, b, a_nz == 0, zb)
    assert (r_nz.counts["mult_toggles_a"], r_nz.counts["mult_toggles_b"]) == (ma_nz, mb_nz)
    assert close(r_z.energy_breakdown["mult"], 0.2 * (ma + mb) / 8)
    assert close(r_nz.energy_breakdown["mult"], 0.2 * (ma_nz + mb_nz) / 8)
    assert r_z.energy_breakdown["mult"] < 0.5 * r_nz.energy_breakdown["mult"]

    # a gated multiplier charged at mult_idle_fraction of an active one
    frac = 0.25
    arr_f = acs.Array(R, C, df, energy=replace(EnergyTable.default(45), mult_idle_fraction=frac))
    f_nz, f_z = arr_f.gemm(q(a_nz), q(b)), arr_f.gemm(q(a_z), q(b))
    assert close(f_z.energy_breakdown["mult"], 0.2 * ((ma + mb) / 8 + (M * N * K // 2) * frac))
    assert close(f_nz.energy_breakdown["mult"], r_nz.energy_breakdown["mult"], 1e-12)  # no zeros: unchanged


@pytest.mark.parametrize("df", DATAFLOWS)
def test_issue_19_gating_reproduction(df):
    """Issue 19: A 256x128 e4m3fn with every second column of K zero, B 128x96, a 16x16 array,
    fp32 accumulator.  Half the multiplies are gated and the others see the dense case's
    operands, so the multiplier energy is about half the dense case's (it was 0.25 in ws)."""
    rng = np.random.default_rng(19)
    A, B = rng.standard_normal((256, 128)), rng.standard_normal((128, 96))
    A_z = A.copy()
    A_z[:, 1::2] = 0.0
    qa, qz, qb = quantize(A, "e4m3fn"), quantize(A_z, "e4m3fn"), quantize(B, "e4m3fn")
    assert np.array_equal(qz.codes[:, ::2], qa.codes[:, ::2])     # one per-tensor scale for both
    arr = acs.Array(16, 16, df, MAC("e4m3fn", "e4m3fn", "fp32"))
    dense, sparse = arr.gemm(qa, qb, metrics=False), arr.gemm(qz, qb, metrics=False)
    ratio = sparse.energy_breakdown["mult"] / dense.energy_breakdown["mult"]
    assert 0.45 <= ratio <= 0.55, ratio
    f = FMT["e4m3fn"]
    for res, qx in ((dense, qa), (sparse, qz)):
        ma, mb, active = sim_multipliers(df, 16, 16, qx.codes, qb.codes, zero_mask(qx.codes, f), zero_mask(qb.codes, f))
        assert (res.counts["mult_toggles_a"], res.counts["mult_toggles_b"]) == (ma, mb)
        assert active == res.counts["macs"] - res.counts["zero_macs"]


def _zeros_where(pattern, shape, rng):
    """A zero mask of `shape` (M, K) or (K, N): zeros along whole rows, whole columns, in 4x4
    blocks, or scattered at random (not correlated with any PE)."""
    rows, cols = np.indices(shape)
    if pattern == "rows":
        return np.isin(rows, rng.choice(shape[0], shape[0] // 3, replace=False))
    if pattern == "columns":
        return np.isin(cols, rng.choice(shape[1], shape[1] // 3, replace=False))
    if pattern == "blocks":
        return ((rows // 4) + (cols // 4)) % 3 == 0
    return rng.random(shape) < 0.4


@pytest.mark.parametrize("df", DATAFLOWS)
@pytest.mark.parametrize("pattern", ["rows", "columns", "blocks", "random", "a_only"])
@pytest.mark.parametrize("fmt,terms", [("int8", 1), ("e4m3fn", 1), ("bf16", 1), ("e4m3fn", 4)],
                         ids=["int8", "e4m3fn", "bf16", "e4m3fn_4term"])
def test_multiplier_toggles_match_a_per_multiplier_model(df, pattern, fmt, terms, rng):
    """Zeros correlated with the PEs (whole rows or columns of A and B, blocks) and not
    (random; in A only), signed zeros included: the engine's multiplier-input flips and active multiplies
    equal sim_multipliers' cycle-by-cycle count, exactly; odd sizes leave partial folds."""
    R, C, M, K, N = 4, 3, 13, 22, 11
    x, y = rng.standard_normal((M, K)), rng.standard_normal((K, N))
    y[np.abs(y) < 0.05] = 0.5     # no zeros from rounding
    x[_zeros_where(pattern, x.shape, rng)] = 0.0
    if pattern != "a_only":       # a_only: B without zeros (os then steps B's rows all at once)
        y[_zeros_where(pattern, y.shape, rng)] = -0.0 if fmt != "int8" else 0.0
    qa, qb = quantize(x, fmt), quantize(y, fmt)
    acc = FloatAcc(8, 23) if terms == 1 else acs.BlockFMA(terms, 13, FloatAcc(8, 23))
    mac = MAC(fmt, fmt, "int32" if fmt == "int8" else acc)
    res = acs.Array(R, C, df, mac).gemm(qa, qb, metrics=False)
    za, zb = zero_mask(qa.codes, FMT[fmt]), zero_mask(qb.codes, FMT[fmt])
    assert za.any() and not za.all() and zb.any() == (pattern != "a_only")
    ma, mb, active = sim_multipliers(df, R, C, qa.codes, qb.codes, za, zb, terms)
    assert (res.counts["mult_toggles_a"], res.counts["mult_toggles_b"]) == (ma, mb)
    assert active == res.counts["macs"] - res.counts["zero_macs"]
    assert close(res.energy_breakdown["mult"], my_mult(acs.energy.EnergyTable(), FMT[fmt], FMT[fmt])
                 * (ma + mb) / (0.5 * 2 * fmt_bits(FMT[fmt])))


@pytest.mark.parametrize("df", DATAFLOWS)
def test_multiplier_toggles_do_not_depend_on_threads(df, rng):
    qa, qb = qrandom(rng, (70, 90), "e4m3fn", zeros=0.3), qrandom(rng, (90, 50), "e4m3fn", zeros=0.3)
    counts = [acs.Array(8, 8, df, MAC("e4m3fn", "e4m3fn", "fp32"), threads=t).gemm(qa, qb, metrics=False).counts
              for t in (1, 3, 8)]
    for c in counts[1:]:
        for key in ("mult_toggles_a", "mult_toggles_b", "toggles_a", "toggles_b", "zero_macs"):
            assert c[key] == counts[0][key], key


# ================================================================================================
# Switching activity: constant operands
# ================================================================================================
@pytest.mark.parametrize("df", DATAFLOWS)
@pytest.mark.parametrize("block", [False, True], ids=["int8", "h100_e4m3"])
def test_constant_operands_toggle_only_on_first_load(df, block, rng):
    R, C = 4, 3
    if block:                       # each of the 32 lanes of a PE is a register of its own
        mac, fmt, nt, M, K, N = presets.tensor_core("h100", "e4m3"), "e4m3fn", 32, 16, 256, 12
        c_a, c_b = 0x38, 0x2B        # e4m3fn 1.0 (3 bits set), 0.34375 (4 bits)
        rand_a = qrandom(rng, (M, K), fmt, zeros=0).codes
        rand_b = qrandom(rng, (K, N), fmt, zeros=0).codes
    else:
        mac, fmt, nt, M, K, N = MAC("int8", "int8", "int32"), "int8", 1, 10, 14, 8
        c_a, c_b = 0x7F, 0x03        # 7 bits set, 2 bits set
        rand_a = rng.integers(0, 256, (M, K))
        rand_b = rng.integers(0, 256, (K, N))
    arr = acs.Array(R, C, df, mac)
    const = arr.gemm(q(np.full((M, K), c_a), fmt), q(np.full((K, N), c_b), fmt))
    rand = arr.gemm(q(rand_a, fmt), q(rand_b, fmt))

    # every register that ever loads a code flips popcount(code) once, on its first load:
    # the registers are the lanes of the PEs any fold uses, min(Sr, R) x min(Sc, C) x n
    kp = -(-K // nt)
    sr, sc = {"os": (M, N), "ws": (kp, N), "is": (kp, M)}[df]
    registers = min(sr, R) * min(sc, C) * nt
    assert const.counts["toggles_a"] == bin(c_a).count("1") * registers
    assert const.counts["toggles_b"] == bin(c_b).count("1") * registers
    assert (const.counts["reg_loads_a"], const.counts["reg_loads_b"]) == (rand.counts["reg_loads_a"],
                                                                          rand.counts["reg_loads_b"])

    bits = 1 + 8 + 13 if block else 32      # the PE accumulator (and buffer) register widths

    def operand_reg_energy(r):
        """reg minus the accumulator registers (charged at 50% activity)."""
        return r.energy_breakdown["reg"] - 0.00375 * bits * (r.counts["pe_adds"] + r.counts["buffer_adds"])

    e_const = operand_reg_energy(const)
    assert close(e_const, 0.00375 * (const.counts["toggles_a"] + const.counts["toggles_b"]) / 0.5, 1e-6)
    e_rand = operand_reg_energy(rand)
    assert close(e_rand, 0.00375 * (rand.counts["toggles_a"] + rand.counts["toggles_b"]) / 0.5, 1e-6)
    assert e_const < 0.05 * e_rand, (e_const, e_rand)
    # the same activity scales the active multipliers
    assert const.energy_breakdown["mult"] < 0.05 * rand.energy_breakdown["mult"]


# ================================================================================================
# Accumulator formats
# ================================================================================================
@pytest.mark.parametrize("df", DATAFLOWS)
def test_accumulator_format_costs(df, rng):
    R, C, M, K, N = 4, 4, 8, 32, 8
    small = [v for v in range(-7, 8) if v != 0]       # no overflow in fp16, no zeros
    a = q(int8_codes(rng.choice(small, (M, K))))
    b = q(int8_codes(rng.choice(small, (K, N))))
    res = {acc: acs.Array(R, C, df, MAC("int8", "int8", acc)).gemm(a, b) for acc in ("fp32", "fp16", "bf16", "int32")}
    # per accumulator step (Horowitz: fp32 add 0.9, fp16 0.4, int32 0.1; bf16 = fp32 * 16/32)
    per_step = {"fp32": 0.9, "fp16": 0.4, "bf16": 0.9 * 16 / 32, "int32": 0.1}
    pe_adds = res["fp32"].counts["pe_adds"]
    buffer_adds = res["fp32"].counts["buffer_adds"]
    for acc, r in res.items():
        assert r.counts["pe_adds"] == pe_adds == M * N * K                 # equal counts
        assert r.counts["buffer_adds"] == buffer_adds
        assert close(r.energy_breakdown["pe_add"] / pe_adds, per_step[acc])
        assert close(r.energy_breakdown["buffer_add"], buffer_adds * per_step[acc])
        assert r.energy_breakdown["mult"] == res["fp32"].energy_breakdown["mult"]   # same operands
    assert per_step["int32"] < per_step["fp16"] < per_step["bf16"] < per_step["fp32"]
    e = {acc: r.energy_pj for acc, r in res.items()}
    assert e["fp32"] > e["fp16"] and e["int32"] < e["fp32"] and e["bf16"] > e["fp16"]
    # int32 vs fp32: same register widths and traffic, only the adders differ
    assert close(e["int32"] - e["fp32"], (pe_adds + buffer_adds) * (0.1 - 0.9))
    # bf16 vs fp16: both 16-bit registers and partial sums, only the adders differ
    assert close(e["bf16"] - e["fp16"], (pe_adds + buffer_adds) * (0.45 - 0.4))


def test_blockfma_adder_per_product_vs_floatacc_fp32(rng):
    """H100's 32-term E4M3 block FMA: 32 alignments of F+3 = 16 bits, a 32-input tree of
    16 + ceil(log2 33) = 22 bits, one FloatAcc(8, 13) normaliser; vs a fp32 add per product."""
    M, K, N = 8, 64, 8
    a, b = qrandom(rng, (M, K), "e4m3fn", zeros=0), qrandom(rng, (K, N), "e4m3fn", zeros=0)
    blk = acs.Array(4, 4, "os", presets.tensor_core("h100", "e4m3")).gemm(a, b)
    f32 = acs.Array(4, 4, "os", MAC("e4m3fn", "e4m3fn", "fp32")).gemm(a, b)
    int_add = lambda w: 0.03 + (w - 8) * (0.1 - 0.03) / 24    # noqa: E731
    step = 32 * int_add(16) + 32 * int_add(22) + 0.9 * (1 + 8 + 13) / 32
    assert abs(step - 4.59) < 0.005 and abs(step / 32 - 0.14) < 0.005          # docs' figures
    assert blk.counts["pe_adds"] == M * N * K // 32 and f32.counts["pe_adds"] == M * N * K
    assert close(blk.energy_breakdown["pe_add"] / blk.counts["pe_adds"], step)
    per_product_block = blk.energy_breakdown["pe_add"] / blk.macs
    per_product_fp32 = f32.energy_breakdown["pe_add"] / f32.macs
    assert close(per_product_block, step / 32) and close(per_product_fp32, 0.9)
    assert per_product_block < per_product_fp32 / 5
    assert blk.energy_pj < f32.energy_pj


# ================================================================================================
# TOML tables
# ================================================================================================
def _run(arr, rng_seed=7):
    g = np.random.default_rng(rng_seed)
    a = quantize(g.standard_normal((9, 40)), arr.mac.a)
    b = quantize(g.standard_normal((40, 11)), arr.mac.b)
    return arr.gemm(a, b)


@pytest.mark.parametrize("table", [
    EnergyTable.default(45), EnergyTable.default(7), EnergyTable.default(32),
    replace(EnergyTable.default(16), mult_idle_fraction=0.3, default_sram_kb=64.0, int_mult_8=0.25, dram_64b=1300.0),
], ids=["45", "7", "32", "16custom"])
def test_toml_round_trip(table, tmp_path):
    text = table.to_toml()
    assert "[model]" in text and "[energy]" in text
    for name in EnergyTable.ENERGIES:
        assert re.search(rf"^{name} = ", text, re.M), name
    assert text.count("Horowitz") >= len(HOROWITZ)                     # sources written as comments
    path = tmp_path / "t.toml"
    path.write_text(text)
    assert EnergyTable.from_toml(path) == table
    assert EnergyTable.from_toml(str(path)) == table


def _doubled_toml(table):
    out, section = [], None
    for line in table.to_toml().splitlines():
        m = re.match(r"^\[(\w+)\]", line)
        if m:
            section = m.group(1)
        kv = re.match(r"^(\w+) = ([^#\s]+)(.*)$", line)
        if section == "energy" and kv:
            line = f"{kv.group(1)} = {2 * float(kv.group(2))!r}{kv.group(3)}"
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("mac,df,sram", [
    (lambda: MAC("int8", "int8", "int32"), "os", None),
    (lambda: MAC("e4m3fn", "e4m3fn", "fp32"), "ws", (6.0, 48.0, 3000.0)),
    (lambda: presets.tensor_core("h100", "e4m3"), "is", None),
    (lambda: MAC("int4", "int8", "int32"), "ws", 24.0),
], ids=["int8_os", "e4m3_ws_sram", "h100_is", "int4xint8_ws"])
def test_toml_doubled_table_doubles_energy(mac, df, sram, tmp_path):
    base = EnergyTable.default(45)
    path = tmp_path / "double.toml"
    path.write_text(_doubled_toml(base))
    doubled = EnergyTable.from_toml(path)
    for name in EnergyTable.ENERGIES:
        assert close(getattr(doubled, name), 2 * DEFAULTS[name], 1e-12), name
    assert (doubled.node_nm, doubled.mult_idle_fraction, doubled.default_sram_kb) == (45, 0.0, 32.0)
    r1 = _run(acs.Array(3, 4, df, mac(), sram_kb=sram))
    r2 = _run(acs.Array(3, 4, df, mac(), sram_kb=sram, energy=path))           # a pathlib path
    r3 = _run(acs.Array(3, 4, df, mac(), sram_kb=sram, energy=str(path)))      # a str path
    assert r2.energy_breakdown == r3.energy_breakdown
    assert close(r2.energy_pj, 2 * r1.energy_pj)
    assert_parts_close(r2.energy_breakdown, {p: 2 * v for p, v in r1.energy_breakdown.items()})


def test_toml_overrides_are_pj_at_the_files_node(tmp_path):
    path = tmp_path / "n7.toml"
    path.write_text("[model]\nnode_nm = 7\nmult_idle_fraction = 0.125\n\n[energy]\nint_add_8 = 0.5\n")
    t = EnergyTable.from_toml(path)
    assert t == replace(EnergyTable.default(7), int_add_8=0.5, mult_idle_fraction=0.125)
    assert close(t.int_mult_8, 0.2 * 0.094)


BAD_TOML = {
    "unknown_section": ("[model]\nnode_nm = 45\n[extras]\nfoo = 1\n", "extras"),
    "unknown_energy_key": ("[energy]\nint_add_16 = 0.05\n", "int_add_16"),
    "unknown_model_key": ("[model]\nvoltage = 0.9\n", "voltage"),
    "negative_energy": ("[energy]\ndram_64b = -1.0\n", "dram_64b"),
    "negative_setting": ("[model]\nmult_idle_fraction = -0.1\n", "mult_idle_fraction"),
    "non_numeric_energy": ("[energy]\nreg_bit = \"tiny\"\n", "reg_bit"),
    "bool_energy": ("[energy]\nsram_1mb_64b = true\n", "sram_1mb_64b"),
    "nan_energy": ("[energy]\nfp_add_16 = nan\n", "fp_add_16"),
}


@pytest.mark.parametrize("name", list(BAD_TOML))
def test_toml_refuses_bad_entries_naming_file_and_key(name, tmp_path):
    text, key = BAD_TOML[name]
    path = tmp_path / f"bad_{name}.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        EnergyTable.from_toml(path)
    assert key in str(e.value) and str(path) in str(e.value), str(e.value)
    with pytest.raises(ValueError, match=re.escape(key)):
        acs.Array(2, 2, energy=path)


@pytest.mark.parametrize("value", ['"7"', "[7]"], ids=["string", "list"])
def test_toml_refuses_non_numeric_node_naming_file_and_key(value, tmp_path):
    """docs/energy.md: non-numeric values are refused (ValueError) with the file and key named."""
    path = tmp_path / "bad_node.toml"
    path.write_text(f"[model]\nnode_nm = {value}\n")
    with pytest.raises(ValueError) as e:
        EnergyTable.from_toml(path)
    assert "node_nm" in str(e.value) and str(path) in str(e.value), str(e.value)


def test_toml_refuses_a_section_that_is_not_a_table(tmp_path):
    path = tmp_path / "flat.toml"
    path.write_text("energy = 5\n")
    with pytest.raises(ValueError) as e:
        EnergyTable.from_toml(path)
    assert str(path) in str(e.value)


def test_toml_refuses_unknown_node_and_unreadable_files(tmp_path):
    path = tmp_path / "n10.toml"
    path.write_text("[model]\nnode_nm = 10\n")
    with pytest.raises(ValueError, match=r"node_nm.*\[7, 14, 16, 32, 45\]"):
        EnergyTable.from_toml(path)
    with pytest.raises(ValueError, match="missing.toml"):
        EnergyTable.from_toml(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[energy\nint_add_8 = \n")
    with pytest.raises(ValueError, match="broken.toml"):
        EnergyTable.from_toml(broken)
    with pytest.raises(TypeError):
        acs.Array(2, 2, energy={"int_add_8": 0.03})


@pytest.mark.parametrize("name", EnergyTable.ENERGIES + ("mult_idle_fraction", "default_sram_kb"))
def test_table_constructor_refuses_negative_values(name):
    with pytest.raises(ValueError, match=name):
        EnergyTable(**{name: -1.0})


# ================================================================================================
# Node scaling
# ================================================================================================
@pytest.mark.parametrize("node", sorted(NODE_FACTOR))
def test_node_scaling(node):
    t, t45 = EnergyTable.default(node), EnergyTable.default(45)
    assert t.node_nm == node
    for name, v in DEFAULTS.items():
        assert close(getattr(t, name), v * NODE_FACTOR[node], 1e-12), name
        assert close(getattr(t, name), getattr(t45, name) * NODE_FACTOR[node], 1e-12), name
    assert (t.mult_idle_fraction, t.default_sram_kb) == (t45.mult_idle_fraction, t45.default_sram_kb)
    for mac, df in ((MAC("int8", "int8", "int32"), "os"), (MAC("e5m2", "e4m3fn", "fp16"), "ws"),
                    (presets.tensor_core("h100", "e4m3"), "is")):
        r45 = _run(acs.Array(3, 3, df, mac))
        rn = _run(acs.Array(3, 3, df, mac, energy=t))
        assert close(rn.energy_pj, r45.energy_pj * NODE_FACTOR[node])
        assert_parts_close(rn.energy_breakdown, {p: v * NODE_FACTOR[node] for p, v in r45.energy_breakdown.items()})
        assert rn.cycles == r45.cycles and rn.counts == r45.counts


@pytest.mark.parametrize("node", [28, 10, 5, 22, 90, "7", None])
def test_unknown_node_is_refused(node):
    with pytest.raises(ValueError, match=r"\[7, 14, 16, 32, 45\]"):
        EnergyTable.default(node)
    with pytest.raises(ValueError, match="node_nm"):
        EnergyTable(node_nm=node)


# ================================================================================================
# Widths the table lacks
# ================================================================================================
def test_int_mult_power_law_through_both_anchors():
    t = EnergyTable.default(45)
    p = math.log(3.1 / 0.2) / math.log(4)
    assert abs(p - 1.98) < 0.005
    assert close(t.int_mult(8, 8), 0.2, 1e-12) and close(t.int_mult(32, 32), 3.1, 1e-12)
    assert close(t.int_mult(4, 4), 0.2 * 0.5 ** p) and abs(t.int_mult(4, 4) - 0.051) < 0.0005
    for a, b in ((4, 8), (16, 16), (8, 16), (12, 3)):
        assert close(t.int_mult(a, b), 0.2 * (math.sqrt(a * b) / 8) ** p)
    # a table with other anchors
    t2 = replace(t, int_mult_8=0.5, int_mult_32=4.0)
    assert close(t2.int_mult(8, 8), 0.5) and close(t2.int_mult(32, 32), 4.0)
    assert close(t2.int_mult(16, 16), my_int_mult(t2, 16, 16))


def test_int_add_linear_through_both_anchors():
    t = EnergyTable.default(45)
    assert close(t.int_add(8), 0.03) and close(t.int_add(32), 0.1)
    assert close(t.int_add(24), 0.03 + 16 * 0.07 / 24) and abs(t.int_add(24) - 0.077) < 0.0005
    for w in (4, 12, 16, 20, 48):
        assert close(t.int_add(w), 0.03 + (w - 8) * (0.1 - 0.03) / 24)


def test_fp_mult_reproduces_fp16_and_fp32():
    t = EnergyTable.default(45)
    alpha, kappa = my_fp_coeffs(t)
    assert abs(alpha - 0.00507) < 5e-6 and abs(kappa - 0.0972) < 5e-5          # the docs' values
    assert close(t.fp_mult(5, 10, 5, 10), 1.1, 1e-12) and close(t.fp_mult(8, 23, 8, 23), 3.7, 1e-12)
    documented = {"e4m3fn": 0.47, "e5m2": 0.53, "bf16": 1.10}
    for name, doc in documented.items():
        _, e, m = FMT[name]
        want = alpha * (m + 1) ** 2 + kappa * e
        assert close(t.fp_mult(e, m, e, m), want) and abs(want - doc) < 0.005, name
    assert close(t.fp_mult(4, 3, 5, 2), alpha * 4 * 3 + kappa * 5)             # mixed e4m3 x e5m2


def test_fp_add_shapes():
    t = EnergyTable.default(45)
    assert t.fp_add(5, 10) == 0.4 and t.fp_add(8, 23) == 0.9
    assert close(t.fp_add(8, 7), 0.9 * 16 / 32) and close(t.fp_add(8, 7), 0.45)
    assert close(t.fp_add(8, 13), 0.9 * 22 / 32) and abs(t.fp_add(8, 13) - 0.62) < 0.005
    for e, m in ((4, 3), (5, 2), (6, 9), (11, 52)):
        assert close(t.fp_add(e, m), 0.9 * (1 + e + m) / 32)


def test_sram_log_log_interpolation():
    t = EnergyTable.default(45)
    assert close(t.sram_byte(8), 10 / 8) and close(t.sram_byte(32), 20 / 8) and close(t.sram_byte(1024), 100 / 8)
    # between anchors a power law: 8->32 KB doubles the energy (x^0.5), 32 KB->1 MB x5 (x^(log 5/log 32))
    assert close(t.sram_byte(16), 10 * math.sqrt(2) / 8)
    assert close(t.sram_byte(256), 20 * 5 ** (math.log(8) / math.log(32)) / 8)
    assert close(t.sram_byte(4), 10 / math.sqrt(2) / 8)                     # extrapolated below 8 KB
    assert close(t.sram_byte(4096), 100 * 5 ** (math.log(4) / math.log(32)) / 8)   # above 1 MB
    for kb in (1.5, 10, 31, 33, 100, 5000):
        assert close(t.sram_byte(kb), my_sram_byte(t, kb))
    sizes = [4, 8, 16, 32, 64, 256, 1024, 4096]
    assert all(t.sram_byte(x) < t.sram_byte(y) for x, y in zip(sizes, sizes[1:]))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_plan_per_mac_multiplier_and_adder_match_the_width_formulas(case):
    """Through the public API: a plan has activity 1 and no gating, so mult/macs is the
    multiplier's energy and pe_add/pe_adds the accumulator step's."""
    plan = acs.Array(2, 2, "os", case.make()).plan_gemm(3, 3, 64)
    t = EnergyTable.default(45)
    assert close(plan.energy_breakdown["mult"] / plan.macs, my_mult(t, FMT[case.a], FMT[case.b]))
    assert close(plan.energy_breakdown["pe_add"] / plan.counts["pe_adds"], my_add(t, case.acc))


# ================================================================================================
# Derived figures: pj_per_mac, tops_per_w, power_w
# ================================================================================================
@pytest.mark.parametrize("df", DATAFLOWS)
def test_per_mac_tops_per_w_and_power(df, rng):
    R, C, clock = 4, 4, 2.0
    arr = acs.Array(R, C, df, clock_ghz=clock, sram_kb=3.0, dram_bytes_per_cycle=2)
    res = arr.gemm(rng.standard_normal((32, 48)), rng.standard_normal((48, 40)))
    plan = arr.plan_gemm(32, 40, 48)
    assert res.stall_cycles > 0 and res.stall_cycles == plan.stall_cycles
    for r in (res, plan):
        seconds = r.cycles / (clock * 1e9)              # stalls included
        assert close(r.time_us, seconds * 1e6)
        assert close(r.pj_per_mac, r.energy_pj / (32 * 40 * 48))
        assert close(r.tops_per_w, 2 * 32 * 40 * 48 / r.energy_pj)          # ops per pJ = TOPS/W
        assert close(r.power_w, r.energy_pj * 1e-12 / seconds)
        # leakage per PE-cycle, PE-cycles including stalls (docs/energy.md)
        assert close(r.energy_breakdown["leakage"], R * C * r.cycles * 0.0115)
        d = r.to_dict()
        for key in ("energy_pj", "pj_per_mac", "tops_per_w", "power_w", "energy_basis"):
            assert d[key] == getattr(r, key)
        assert d["energy_breakdown"] == r.energy_breakdown


@pytest.mark.parametrize("shape", [(0, 5, 5), (5, 0, 5), (5, 5, 0)], ids=["M0", "N0", "K0"])
@pytest.mark.parametrize("df", DATAFLOWS)
def test_empty_gemm_energy_with_a_finite_memory(df, shape):
    """A GEMM with no MACs has no multiplier or adder energy, and a finite total, also when the
    array has a finite SRAM and DRAM bandwidth (the same plan works with ideal memory)."""
    M, N, K = shape
    for arr in (acs.Array(4, 4, df), acs.Array(4, 4, df, sram_kb=3.0, dram_bytes_per_cycle=2)):
        plan = arr.plan_gemm(M, N, K)
        assert plan.macs == 0
        assert plan.energy_breakdown["mult"] == plan.energy_breakdown["pe_add"] == 0
        assert plan.energy_breakdown["buffer_add"] == 0
        assert math.isfinite(plan.energy_pj)
        assert close(sum(plan.energy_breakdown.values()), plan.energy_pj, 1e-12)


def test_default_sram_kb_prices_the_buffers_when_the_array_gives_none():
    t = replace(EnergyTable.default(45), default_sram_kb=8.0)
    plan = acs.Array(4, 4, "ws", energy=t).plan_gemm(20, 20, 20)
    c = plan.counts
    sram_bytes = c["sram_read_bytes_a"] + c["sram_read_bytes_b"] + c["sram_write_bytes_out"] + c["sram_read_bytes_out"]
    assert sram_bytes > 0
    assert close(plan.energy_breakdown["sram"], sram_bytes * 10 / 8)          # the 8 KB anchor
    plan32 = acs.Array(4, 4, "ws").plan_gemm(20, 20, 20)
    assert close(plan32.energy_breakdown["sram"], sram_bytes * 20 / 8)        # default 32 KB
    given = acs.Array(4, 4, "ws", energy=t, sram_kb=(1024, 1024, 1024)).plan_gemm(20, 20, 20)
    assert close(given.energy_breakdown["sram"], sram_bytes * 100 / 8)        # the array's sizes win


# ================================================================================================
# Measured vs estimated
# ================================================================================================
def _half_toggle_operands(df, M, K, N, rng):
    """int8 codes with no zeros whose streaming registers flip exactly 4 of 8 bits on every
    load after the first: each stream alternates between x and x ^ mask, popcount(mask) = 4
    (the stream lengths are even, so a fold's wrap back to the first code flips 4 too).  The
    stationary operand of ws/is uses codes with 4 bits set, so its first loads flip exactly 4
    and its reloads between folds 4 on average."""
    masks = [m for m in range(256) if bin(m).count("1") == 4]
    weight4 = np.array(masks)

    def pairs(count):
        out = []
        while len(out) < count:
            x, m = int(rng.integers(1, 256)), int(rng.choice(masks))
            if x ^ m:
                out.append((x, x ^ m))
        return np.array(out)

    if df == "os":              # A's rows stream along K, B's columns along K
        pa, pb = pairs(M), pairs(N)
        odd = np.arange(K) % 2
        a = pa[np.arange(M)[:, None], odd[None, :]]
        b = pb[np.arange(N)[None, :], odd[:, None]]
    elif df == "ws":            # A's columns stream along M; B stationary
        pa = pairs(K)
        a = pa[np.arange(K)[None, :], (np.arange(M) % 2)[:, None]]
        b = rng.choice(weight4, (K, N))
    else:                       # B's rows stream along N; A stationary
        pb = pairs(K)
        b = pb[np.arange(K)[:, None], (np.arange(N) % 2)[None, :]]
        a = rng.choice(weight4, (M, K))
    return a, b


@pytest.mark.parametrize("df", DATAFLOWS)
def test_measured_equals_plan_at_50_percent_activity(df, rng):
    R, C, M, K, N = 8, 8, 32, 32, 32
    a, b = _half_toggle_operands(df, M, K, N, rng)
    arr = acs.Array(R, C, df)
    res, plan = arr.gemm(q(a), q(b)), arr.plan_gemm(M, N, K)
    c = res.counts
    assert c["zero_macs"] == 0 and my_zero_macs(a, b, FMT["int8"], FMT["int8"]) == 0
    assert (c["toggles_a"], c["toggles_b"]) == sim_registers(df, R, C, a, b)[:2]
    activity = (c["toggles_a"] + c["toggles_b"]) / (0.5 * (8 * c["reg_loads_a"] + 8 * c["reg_loads_b"]))
    assert abs(activity - 1) < 0.02, activity
    # The residual difference is in the operand-driven parts only: the first load of each
    # register is from its initial 0 and flips popcount(code) bits, not 4 (os: every stream's
    # first code is random), and ws/is's stationary reloads between folds flip 4 only on
    # average; everything else (adders, SRAM, DRAM, leakage) is the same count x energy.
    assert abs(res.energy_pj - plan.energy_pj) <= 0.02 * plan.energy_pj
    assert abs(res.energy_pj - plan.energy_pj) <= 0.02 * (plan.energy_breakdown["mult"] + plan.energy_breakdown["reg"])
    for part in PARTS - {"mult", "reg"}:
        assert close(res.energy_breakdown[part], plan.energy_breakdown[part], 1e-12), part
    assert close(res.energy_breakdown["mult"], plan.energy_breakdown["mult"] * activity)
    base_flips = 0.5 * 8 * (c["reg_loads_a"] + c["reg_loads_b"])
    assert close(res.energy_breakdown["reg"] - plan.energy_breakdown["reg"],
                 0.00375 * (c["toggles_a"] + c["toggles_b"] - base_flips) / 0.5)
    assert res.energy_basis != plan.energy_basis
    assert res.energy_basis.startswith("measured") and "gated" in res.energy_basis
    assert plan.energy_basis.startswith("data-independent estimate") and "50%" in plan.energy_basis


# ================================================================================================
# A real quantized layer orders number formats plausibly
# ================================================================================================
def test_quantized_layer_energy_orders_formats(rng):
    """A linear layer (64 tokens, 96 -> 48) of Gaussian activations and weights, quantized per
    tensor into each MAC's format, on the same 8x8 ws array."""
    x = rng.standard_normal((64, 96))
    w = rng.standard_normal((48, 96)) * 0.1
    macs = {
        "int4/int32": MAC("int4", "int4", "int32"),
        "int8/int32": MAC("int8", "int8", "int32"),
        "h100-e4m3": presets.tensor_core("h100", "e4m3"),
        "e4m3fn/fp32": MAC("e4m3fn", "e4m3fn", "fp32"),
        "fp16/fp32": MAC("fp16", "fp16", "fp32"),
    }
    res = {k: acs.Array(8, 8, "ws", m).linear(x, w) for k, m in macs.items()}
    pj = {k: r.pj_per_mac for k, r in res.items()}
    compute = {k: sum(r.energy_breakdown[p] for p in ("mult", "pe_add", "buffer_add", "reg")) / r.macs
               for k, r in res.items()}
    for r in res.values():
        assert_breakdown_sums(r)
        assert r.macs == 64 * 48 * 96
    # int8/int32 < e4m3fn/fp32: an 8x8 integer multiplier (0.2 pJ) vs a 4x4-bit significand
    # multiplier plus exponent adder (0.47 pJ), and above all a 0.1 pJ int32 add vs a 0.9 pJ fp32
    # add per MAC; operand bytes (SRAM/DRAM) are the same 8 bits.
    assert pj["int8/int32"] < pj["e4m3fn/fp32"] and compute["int8/int32"] < compute["e4m3fn/fp32"]
    # int4 halves operand bytes and its multiplier is ~ bits^2 (0.051 pJ)
    assert pj["int4/int32"] < pj["int8/int32"] and compute["int4/int32"] < compute["int8/int32"]
    # fp16 operands: 1.1 pJ multiplier and twice the operand bytes
    assert pj["e4m3fn/fp32"] < pj["fp16/fp32"] and compute["e4m3fn/fp32"] < compute["fp16/fp32"]
    # the tensor core's block adder amortises one normaliser over 32 products (0.14 pJ/product)
    assert compute["h100-e4m3"] < compute["e4m3fn/fp32"] and pj["h100-e4m3"] < pj["e4m3fn/fp32"]
    # TOPS/W orders the other way
    assert res["int8/int32"].tops_per_w > res["e4m3fn/fp32"].tops_per_w > res["fp16/fp32"].tops_per_w


# ================================================================================================
# Presets: each table against the figures its source quotes
# ================================================================================================
def test_presets_are_listed_and_horowitz45_is_the_default():
    assert list(EnergyTable.presets()) == ["horowitz45", "baalen2023"]
    assert all(isinstance(v, str) and v for v in EnergyTable.presets().values())
    t = EnergyTable.preset("horowitz45")
    assert t == EnergyTable()
    for name, v in HOROWITZ.items():          # Horowitz 2014's figures, exactly
        assert getattr(t, name) == v, name


def test_baalen2023_preset_puts_fp8_at_2_8x_int8():
    """van Baalen et al. 2023: FP formats 50-180% less efficient than INT; the preset keeps
    Horowitz's integer (and memory) entries and scales the float ones by one factor so that an
    E4M3 MAC with an fp32 accumulator costs 1 + 1.8 times an INT8 MAC with an int32 one."""
    h, b = EnergyTable.preset("horowitz45"), EnergyTable.preset("baalen2023")
    fp8_mac = my_mult(b, FMT["e4m3fn"], FMT["e4m3fn"]) + my_add(b, ("float", 8, 23))
    int8_mac = my_mult(b, FMT["int8"], FMT["int8"]) + my_add(b, ("int", 32))
    assert close(fp8_mac / int8_mac, 1 + 1.80, 1e-12)
    floats = ("fp_add_16", "fp_add_32", "fp_mult_16", "fp_mult_32")
    factor = b.fp_add_32 / h.fp_add_32
    assert 0 < factor < 1
    for name in EnergyTable.ENERGIES:
        want = getattr(h, name) * (factor if name in floats else 1)
        assert close(getattr(b, name), want, 1e-12), name


@pytest.mark.parametrize("bad", ["horowitz2014", "", "HOROWITZ45", None, 45])
def test_unknown_preset_is_refused_with_the_list(bad):
    with pytest.raises(ValueError, match="horowitz45, baalen2023") as e:
        EnergyTable.preset(bad)
    assert repr(bad) in str(e.value)


def test_sweep_grid_takes_an_energy_table_and_refuses_unknown_ones():
    from accel_sim.sweep import expand_grid, sweep
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((16, 24)), rng.standard_normal((24, 8))
    table = sweep((a, b), {"a": ["e4m3fn"], "array": ["4x4"], "energy_table": ["horowitz45", "baalen2023"]},
                  executor=False, progress=False)
    by = {r["energy_table"]: r for r in table}
    arr = acs.Array(4, 4, "ws", MAC("e4m3fn", "e4m3fn", "fp32"), energy=EnergyTable.preset("baalen2023"))
    assert by["baalen2023"]["energy_pj"] == arr.gemm(a, b).energy_pj
    assert by["baalen2023"]["error"] == by["horowitz45"]["error"]
    with pytest.raises(ValueError, match="baalen2023"):
        expand_grid({"energy_table": ["nope"]})


@pytest.mark.parametrize("b_zeros", [False, True])
def test_multiplier_toggles_on_a_wide_array(b_zeros, rng):
    """os walks a fold's columns 256 at a time in vectors of 16: a 2 x 300 array over 310
    columns (a full and a partial column-fold, a partial last vector), against the model."""
    R, C, M, K, N = 2, 300, 3, 7, 310
    qa = qrandom(rng, (M, K), "int8", zeros=0.4)
    b = rng.choice([v for v in range(-128, 128) if v != 0], size=(K, N))
    if b_zeros:
        b[rng.random((K, N)) < 0.3] = 0
    qb = q(int8_codes(b))
    f = FMT["int8"]
    za, zb = zero_mask(qa.codes, f), zero_mask(qb.codes, f)
    assert za.any() and zb.any() == b_zeros
    res = acs.Array(R, C, "os").gemm(qa, qb, metrics=False)
    ma, mb, active = sim_multipliers("os", R, C, qa.codes, qb.codes, za, zb)
    assert (res.counts["mult_toggles_a"], res.counts["mult_toggles_b"]) == (ma, mb)
    assert active == res.counts["macs"] - res.counts["zero_macs"]


@pytest.mark.parametrize("df", DATAFLOWS)
def test_block_scaled_multiplier_toggles_per_block(df, rng):
    """A block-scaled GEMM (MXFP8) runs each K-block as a GEMM of its own, the multiplier
    inputs starting at 0 in each: the counts are the per-block model's sums."""
    from accel_sim.quant import QTensor as QT
    M, K, N, bs, R, C = 9, 64, 7, 32, 4, 3
    f = acs.formats.get("e4m3fn")
    codes = np.array([c for c in f.all_codes() if np.isfinite(f.decode(np.array([c])))[0]])
    a = rng.choice(codes, (M, K)).astype(f.code_dtype)
    b = rng.choice(codes, (K, N)).astype(f.code_dtype)
    a[rng.random((M, K)) < 0.3] = 0
    scales_a, scales_b = rng.integers(120, 134, (M, K // bs)), rng.integers(120, 134, (K // bs, N))
    A = QT(a, f, scale=1.0, block=bs, block_axis=1, block_scale_codes=scales_a, scale_format="e8m0")
    B = QT(b, f, scale=1.0, block=bs, block_axis=0, block_scale_codes=scales_b, scale_format="e8m0")
    res = acs.Array(R, C, df, MAC("e4m3fn", "e4m3fn", "fp32")).gemm(A, B, metrics=False)
    fm = FMT["e4m3fn"]
    want = np.zeros(3, np.int64)
    for blk in range(K // bs):
        ab, bb = a[:, blk * bs:(blk + 1) * bs], b[blk * bs:(blk + 1) * bs]
        want += sim_multipliers(df, R, C, ab, bb, zero_mask(ab, fm), zero_mask(bb, fm))
    assert (res.counts["mult_toggles_a"], res.counts["mult_toggles_b"]) == tuple(want[:2])
    assert want[2] == res.counts["macs"] - res.counts["zero_macs"]


def test_mult_idle_fraction_is_a_fraction():
    assert EnergyTable(mult_idle_fraction=1.0).mult_idle_fraction == 1.0
    with pytest.raises(ValueError, match="mult_idle_fraction must be in \\[0, 1\\]"):
        EnergyTable(mult_idle_fraction=2.0)


def test_array_takes_a_preset_by_name(tmp_path):
    a = acs.Array(4, 4, "ws", acs.MAC("e4m3fn", "e4m3fn", "fp32"), energy="baalen2023")
    assert a.energy == EnergyTable.preset("baalen2023")
    with pytest.raises(ValueError, match="cannot read energy table .*presets, by name: horowitz45, baalen2023"):
        acs.Array(4, 4, "ws", acs.MAC("e4m3fn", "e4m3fn", "fp32"), energy=str(tmp_path / "baalen2024"))
