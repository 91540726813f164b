"""acs.accumulate against independent oracles, bit for bit.

Oracles: gmpy2/MPFR fused multiply-add chains (FloatAcc with rne/rtz/rup/rdn and subnormals),
the exact Fraction model accel_sim/reference.py (every other mode and accumulator), plain
Python integers (IntAcc) and exact Fraction sums (Kulisch FixedAcc).  float64 results are
compared through their uint64 patterns (signed zeros count), NaN by class.

Operands are random codes drawn per step from chosen binades, so that chains reach every
region of the accumulator: normal, subnormal, overflow, exact cancellation to zero, and the
special values (NaN, inf, zeros of both signs) of the formats that have them.
"""
from __future__ import annotations

import math
import zlib
from fractions import Fraction

import gmpy2
import numpy as np
import pytest

import accel_sim as acs
from accel_sim import reference as ref
from accel_sim.formats import FixedFormat, FloatFormat
from accel_sim.mac import MAC, BlockFMA, FixedAcc, FloatAcc, IntAcc, accumulate

MPFR_MODES = {"rne": gmpy2.RoundToNearest, "rtz": gmpy2.RoundToZero,
              "rup": gmpy2.RoundUp, "rdn": gmpy2.RoundDown}
U8 = np.uint8
ALL_MODES = ("rne", "rna", "rtz", "rup", "rdn", "rto", "sr")


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------

def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def bad_positions(got, want):
    got = np.ascontiguousarray(got, dtype=np.float64)
    want = np.ascontiguousarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    gn, wn = np.isnan(got), np.isnan(want)
    bad = (gn != wn) | (~gn & ~wn & (got.view(np.uint64) != want.view(np.uint64)))
    return np.flatnonzero(bad.reshape(-1))


def hexf(x):
    x = float(x)
    return "nan" if math.isnan(x) else x.hex()


def assert_bits(got, want, describe=None, what=""):
    """got == want bit for bit (NaN by class); describe(i) explains flat index i."""
    bad = bad_positions(got, want)
    if bad.size:
        i = int(bad[0])
        g = np.asarray(got, np.float64).reshape(-1)[i]
        w = np.asarray(want, np.float64).reshape(-1)[i]
        extra = describe(i) if describe else ""
        raise AssertionError(f"{what}: {bad.size} of {np.size(got)} chains differ; first #{i}: "
                             f"engine {hexf(g)} != oracle {hexf(w)}; {extra}")


def mpfr_context(e, m, mode):
    """MPFR emulating FloatAcc(e, m): precision m+1, subnormals, IEEE overflow.
    (MPFR's exponent is the IEEE one plus 1; emin is that of the smallest subnormal.)"""
    bias = 2 ** (e - 1) - 1
    emin, emax = 1 - bias, bias
    return gmpy2.context(precision=m + 1, emin=emin - m + 1, emax=emax + 1,
                         subnormalize=True, round=MPFR_MODES[mode])


def mp(x):
    return gmpy2.mpfr(float(x), 53)


def mpfr_chain(av, bv, init, ctx):
    acc = mp(init)
    for x, y in zip(av, bv):
        acc = ctx.fma(mp(x), mp(y), acc)
    return float(acc)


def acc_grid(acc: FloatAcc):
    return ref.float_format_params(acc.exp_bits, acc.man_bits, style="ieee")


def round_to_acc(x, acc: FloatAcc):
    """x rounded to nearest-even onto acc's grid, with acc's subnormal and overflow rules (the
    way accumulate rounds init)."""
    return ref.round_float(x, **acc_grid(acc), subnormals=acc.subnormals, rounding="rne",
                           overflow=acc.overflow)


class Ops:
    """The codes of one operand format, sorted by binade, for drawing operands of chosen size."""

    _cache: dict = {}

    def __new__(cls, name):
        if name not in cls._cache:
            self = super().__new__(cls)
            self._build(name)
            cls._cache[name] = self
        return cls._cache[name]

    def _build(self, name):
        f = acs.formats.get(name)
        self.name, self.fmt = name, f
        codes = f.all_codes()
        vals = f.decode(codes)
        fin = np.isfinite(vals) & (vals != 0)
        exps = np.frexp(vals[fin])[1].astype(np.int64) - 1  # floor(log2|v|), exactly
        order = np.argsort(exps, kind="stable")
        self.codes, self.exps = codes[fin][order], exps[order]
        self.lo, self.hi = int(self.exps[0]), int(self.exps[-1])
        self.zeros = codes[vals == 0]
        self.specials = codes[~np.isfinite(vals)]
        self.table = vals
        lo = f.min if isinstance(f, FixedFormat) else -f.max
        neg = codes.copy()
        ok = np.isfinite(vals) & (-vals <= f.max) & (-vals >= lo)
        neg[ok] = f.encode(-vals[ok])
        self.neg = neg  # code of -value where it exists, else the code itself
        self.emin = getattr(f, "emin", None)

    def values(self, codes):
        return self.table[np.asarray(codes, dtype=np.int64)]

    def draw(self, rng, centers):
        """One code per entry of centers (binades; clipped to the format's)."""
        c = np.clip(np.asarray(centers, dtype=np.int64), self.lo, self.hi)
        lo = np.searchsorted(self.exps, c, "left")
        hi = np.searchsorted(self.exps, c, "right")
        idx = lo + (rng.random(c.shape) * (hi - lo)).astype(np.int64)
        return self.codes[idx]


ROW_KINDS = ("random", "specials", "high", "low", "mirror", "zeros")


def make_rows(rng, A: Ops, B: Ops, R, K, t_lo, t_hi, high, low, specials=True, spreads=(0, 1, 3, 8, 24)):
    """R chains of K steps: codes (R, K) for A and B, and each row's kind.

    t_lo..t_hi: binades of products for general rows; high / low: (lo, hi) binades for rows
    driven toward overflow (products of one sign) and toward the bottom of the grid."""
    p_lo, p_hi = A.lo + B.lo, A.hi + B.hi
    a = np.empty((R, K), dtype=A.fmt.code_dtype)
    b = np.empty((R, K), dtype=B.fmt.code_dtype)
    kinds = []
    for r in range(R):
        kind = ROW_KINDS[r % len(ROW_KINDS)]
        if kind == "specials" and not (specials and (A.specials.size or B.specials.size)):
            kind = "random"
        kinds.append(kind)
        lo, hi = {"high": high, "low": low}.get(kind, (t_lo, t_hi))
        lo = min(lo, hi)
        lo, hi = min(max(lo, p_lo), p_hi), min(max(hi, p_lo), p_hi)
        T = int(rng.integers(lo, hi + 1))
        spread = int(rng.choice(spreads)) if kind not in ("high", "low") else 1
        Tk = np.clip(T - rng.integers(0, spread + 1, K), p_lo, p_hi)
        ea_lo = np.maximum(A.lo, Tk - B.hi)
        ea_hi = np.minimum(A.hi, Tk - B.lo)
        ea = ea_lo + (rng.random(K) * (ea_hi - ea_lo + 1)).astype(np.int64)
        ar, br = A.draw(rng, ea), B.draw(rng, Tk - ea)
        p_zero = {"random": 0.05, "specials": 0.1, "zeros": 0.5, "mirror": 0.1}.get(kind, 0.0)
        u = rng.random(K)
        z = u < p_zero
        if z.any():
            side = rng.random(K) < 0.5
            if A.zeros.size:
                ar[z & side] = rng.choice(A.zeros, int((z & side).sum()))
            if B.zeros.size:
                br[z & ~side] = rng.choice(B.zeros, int((z & ~side).sum()))
        if kind == "specials":
            s = (u >= p_zero) & (u < p_zero + 0.12)
            for ops, arr in ((A, ar), (B, br)):
                pick = s & (rng.random(K) < 0.6)
                if ops.specials.size and pick.any():
                    arr[pick] = rng.choice(ops.specials, int(pick.sum()))
        if kind == "high":  # products of one sign: the chain grows to overflow
            want_neg = rng.random() < 0.5
            neg = (A.values(ar) < 0) != (B.values(br) < 0)
            flip = neg != want_neg
            ar[flip] = A.neg[ar[flip]]
        if kind == "mirror" and K >= 2:  # second half cancels the first exactly, in reverse
            h = K // 2
            ar[K - h:] = A.neg[ar[:h][::-1]]
            br[K - h:] = br[:h][::-1]
        if kind == "zeros" and K >= 2:  # some steps cancel the previous product
            for k in np.flatnonzero(rng.random(K) < 0.3):
                if k:
                    ar[k], br[k] = A.neg[ar[k - 1]], br[k - 1]
        a[r], b[r] = ar, br
    return a, b, kinds


def random_float_init(rng, kind, T, acc: FloatAcc):
    if kind in ("mirror", "zeros") or rng.random() < 0.3:
        return float(rng.choice([0.0, -0.0]))
    x = float(rng.choice([-1.0, 1.0]) * rng.uniform(1, 2) * 2.0 ** T)
    return round_to_acc(x, acc)


def describe_rows(A, B, a, b, inits, kinds):
    def describe(i):
        av, bv = A.values(a[i]), B.values(b[i])
        return (f"row kind {kinds[i]}, init {hexf(inits[i])}, a {A.name} {av.tolist()}, "
                f"b {B.name} {bv.tolist()}")
    return describe


def float_acc_bands(acc: FloatAcc):
    bias = 2 ** (acc.exp_bits - 1) - 1
    emin, emax, m = 1 - bias, bias, acc.man_bits
    return dict(t_lo=emin - m - 3, t_hi=emax + 1, high=(emax - 3, emax + 1), low=(emin - m - 2, emin - 1))


# ---------------------------------------------------------------------------------------
# 1. FloatAcc against MPFR (rne, rtz, rup, rdn; subnormals; IEEE overflow)
# ---------------------------------------------------------------------------------------

ACC_SHAPES = [(5, 10), (8, 7), (8, 23), (4, 3), (6, 5), (11, 52), (3, 2)]
OPERAND_PAIRS = [("e4m3fn", "e4m3fn"), ("e5m2", "e5m2"), ("fp16", "fp16"), ("bf16", "bf16"),
                 ("int8", "int8"), ("e4m3fn", "e5m2"), ("fp16", "e4m3fn"), ("bf16", "int8"),
                 ("e4m3fnuz", "e3m4")]
KS = (1, 3, 16, 64)


@pytest.mark.parametrize("mode", sorted(MPFR_MODES))
@pytest.mark.parametrize("pair", OPERAND_PAIRS, ids="x".join)
@pytest.mark.parametrize("shape", ACC_SHAPES, ids=lambda s: f"e{s[0]}m{s[1]}")
def test_float_acc_matches_mpfr(shape, pair, mode):
    e, m = shape
    acc = FloatAcc(e, m, rounding=mode)
    A, B = Ops(pair[0]), Ops(pair[1])
    mac = MAC(A.fmt, B.fmt, acc)
    ctx = mpfr_context(e, m, mode)
    rng = rng_for("mpfr", shape, pair, mode)
    bands = float_acc_bands(acc)
    for K in KS:
        R = 12
        a, b, kinds = make_rows(rng, A, B, R, K, **bands)
        inits = np.array([random_float_init(rng, kinds[r], int(rng.integers(bands["t_lo"], bands["t_hi"] + 1)), acc)
                          for r in range(R)])
        got = accumulate(a, b, mac, init=inits)
        want = np.array([mpfr_chain(A.values(a[r]), B.values(b[r]), inits[r], ctx) for r in range(R)])
        assert_bits(got, want, describe_rows(A, B, a, b, inits, kinds), f"{mac.name} K={K}")


@pytest.mark.parametrize("mode", sorted(MPFR_MODES))
@pytest.mark.parametrize("shape", [(11, 52), (8, 23), (5, 10)], ids=lambda s: f"e{s[0]}m{s[1]}")
@pytest.mark.parametrize("opname", ["fp32", "fp64"])
def test_float_acc_wide_operands_match_mpfr(opname, shape, mode):
    """Operands with 24- and 53-bit significands (products of up to 106 bits), exponent gaps
    far wider than any register, and near-cancellations: the fused sum stays exact."""
    f = FloatFormat(11, 52) if opname == "fp64" else acs.formats.get("fp32")
    sig_bits, max_exp = (53, 1023) if opname == "fp64" else (24, 127)
    e, m = shape
    ctx = mpfr_context(e, m, mode)
    rng = rng_for("wide", opname, shape, mode)
    R, K = 60, 8
    span = {11: 500, 8: 70, 5: 14}[e]
    ex = rng.integers(-span, span // 2, (R, K)).clip(-max_exp + 1, max_exp)
    sig = rng.integers(2 ** (sig_bits - 1), 2**sig_bits, (R, K)).astype(np.float64)
    a = np.ldexp(sig, ex - sig_bits + 1) * rng.choice([-1.0, 1.0], (R, K))
    b = np.ldexp(rng.integers(2 ** (sig_bits - 1), 2**sig_bits, (R, K)).astype(np.float64),
                 rng.integers(-4, 4, (R, K)) - sig_bits + 1)
    a[::3, 1::2], b[::3, 1::2] = -a[::3, ::2], b[::3, ::2]  # products cancel pairwise, exactly
    a[1::3, 1] = -a[1::3, 0] * (1 + 2.0 ** (1 - sig_bits))  # cancel all but the last bits
    b[1::3, 1] = b[1::3, 0]
    ac, bc = f.encode(a), f.encode(b)
    av, bv = f.decode(ac), f.decode(bc)
    got = accumulate(ac, bc, MAC(f, f, FloatAcc(e, m, mode)))
    want = np.array([mpfr_chain(av[r], bv[r], 0.0, ctx) for r in range(R)])
    assert_bits(got, want, lambda i: f"a {av[i].tolist()}, b {bv[i].tolist()}", f"{opname} into e{e}m{m} {mode}")


SPECIAL_FP16 = [0.0, -0.0, 1.0, -1.0, 0.5, 65504.0, -65504.0, 2.0**-24, -(2.0**-24), 2.0**-14,
                math.inf, -math.inf, math.nan]


@pytest.mark.parametrize("mode", sorted(MPFR_MODES))
@pytest.mark.parametrize("shape", [(5, 10), (8, 23), (4, 3)], ids=lambda s: f"e{s[0]}m{s[1]}")
def test_float_acc_zeros_and_specials_match_mpfr(shape, mode):
    """Every pair of steps over fp16 specials and edge values, from every special init:
    signed zeros (IEEE fma rules), inf - inf, inf * 0, NaN, overflow by one product."""
    e, m = shape
    acc = FloatAcc(e, m, rounding=mode)
    f = acs.formats.get("fp16")
    ctx = mpfr_context(e, m, mode)
    vals = SPECIAL_FP16
    rows = [(x, y, x2, y2) for x in vals for y in vals for x2, y2 in ((0.0, 1.0), (-1.0, 0.0), (-0.0, -0.0),
                                                                         (x, -y), (-x, y))]
    inits = [round_to_acc(v, acc) for v in (0.0, -0.0, 1.0, -0.5, math.inf, -math.inf, math.nan)]
    a_vals = np.array([[r[0], r[2]] for r in rows for _ in inits])
    b_vals = np.array([[r[1], r[3]] for r in rows for _ in inits])
    init = np.array([i for _ in rows for i in inits])
    a, b = f.encode(a_vals), f.encode(b_vals)
    assert np.array_equal(f.decode(a), a_vals, equal_nan=True)
    got = accumulate(a, b, MAC(f, f, acc), init=init)
    want = np.array([mpfr_chain(x, y, i, ctx) for x, y, i in zip(a_vals, b_vals, init)])
    assert_bits(got, want, lambda i: f"a {a_vals[i]}, b {b_vals[i]}, init {init[i]}", acc.name)


@pytest.mark.parametrize("mode", sorted(MPFR_MODES))
def test_float_acc_one_step_zero_signs(mode):
    """The IEEE 754 sign of an exact zero sum, step by step (and MPFR agrees)."""
    f = acs.formats.get("e5m2")
    acc = FloatAcc(5, 10, rounding=mode)
    mac = MAC(f, f, acc)
    neg_default = mode == "rdn"
    cases = [  # (a, b, init, negative zero expected)
        ([0.0], [1.0], 0.0, False), ([-0.0], [1.0], -0.0, True), ([0.0], [-1.0], -0.0, True),
        ([-0.0], [1.0], 0.0, neg_default), ([0.0], [1.0], -0.0, neg_default),
        ([1.0], [1.0], -1.0, neg_default), ([-2.0], [0.5], 1.0, neg_default),
        ([1.0, -1.0], [3.0, 3.0], 0.0, neg_default), ([], [], -0.0, True), ([], [], 0.0, False),
    ]
    for av, bv, init, negative in cases:
        a = f.encode(np.array(av, np.float64)).reshape(len(av))
        b = f.encode(np.array(bv, np.float64)).reshape(len(bv))
        got = float(accumulate(a, b, mac, init=init))
        assert got == 0 and (math.copysign(1, got) < 0) == negative, (mode, av, bv, init, got)
        assert hexf(got) == hexf(mpfr_chain(av, bv, init, mpfr_context(5, 10, mode)))


@pytest.mark.parametrize("mode,pos,neg", [("rne", math.inf, -math.inf), ("rtz", 65504.0, -65504.0),
                                          ("rup", math.inf, -65504.0), ("rdn", 65504.0, -math.inf),
                                          ("rna", math.inf, -math.inf), ("rto", 65504.0, -65504.0),
                                          ("sr", math.inf, -math.inf)])
def test_float_acc_overflow_by_direction(mode, pos, neg):
    f = acs.formats.get("e5m2")
    mac = MAC(f, f, FloatAcc(5, 10, rounding=mode))
    a = f.encode(np.array([[256.0, 256.0], [-256.0, 256.0]]))
    b = f.encode(np.array([[256.0, 2.0], [256.0, -2.0]]))  # 65536 = 2^16 > max 65504: overflow
    got = accumulate(a, b, mac)
    assert_bits(got, [pos, neg], what=mode)
    sat = accumulate(a, b, MAC(f, f, FloatAcc(5, 10, rounding=mode, overflow="saturate")))
    assert_bits(sat, [65504.0, -65504.0], what=f"{mode}, saturate")


# ---------------------------------------------------------------------------------------
# 2. FloatAcc against the reference (rna, rto, sr; no subnormals; saturate)
# ---------------------------------------------------------------------------------------

REF_PAIRS = [("e4m3fn", "e4m3fn"), ("e5m2", "fp16"), ("bf16", "bf16"), ("int8", "e5m2")]


def check_float_acc_against_reference(acc: FloatAcc, pairs, key, R=8, Ks=(1, 9, 40), seed=0):
    for pair in pairs:
        A, B = Ops(pair[0]), Ops(pair[1])
        mac = MAC(A.fmt, B.fmt, acc)
        rng = rng_for(key, acc, pair)
        bands = float_acc_bands(acc)
        for K in Ks:
            a, b, kinds = make_rows(rng, A, B, R, K, **bands)
            inits = np.array([random_float_init(rng, kinds[r], int(rng.integers(bands["t_lo"], bands["t_hi"] + 1)), acc)
                              for r in range(R)])
            got = accumulate(a, b, mac, init=inits, seed=seed)
            want = [ref.float_acc(A.values(a[r]).tolist(), B.values(b[r]).tolist(), exp_bits=acc.exp_bits,
                                  man_bits=acc.man_bits, rounding=acc.rounding, subnormals=acc.subnormals,
                                  overflow=acc.overflow, init=float(inits[r]), seed=seed, element=r)
                    for r in range(R)]
            assert_bits(got, want, describe_rows(A, B, a, b, inits, kinds), f"{mac.name} K={K} seed={seed}")


@pytest.mark.parametrize("mode", ["rna", "rto", "sr"])
@pytest.mark.parametrize("shape", ACC_SHAPES, ids=lambda s: f"e{s[0]}m{s[1]}")
def test_float_acc_other_modes_match_reference(shape, mode):
    check_float_acc_against_reference(FloatAcc(*shape, rounding=mode), REF_PAIRS, "modes",
                                      seed=12345 if mode == "sr" else 0)


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("shape", [(5, 10), (8, 7), (4, 3), (3, 2)], ids=lambda s: f"e{s[0]}m{s[1]}")
def test_float_acc_without_subnormals_matches_reference(shape, mode):
    check_float_acc_against_reference(FloatAcc(*shape, rounding=mode, subnormals=False),
                                      REF_PAIRS[:3], "ftz", Ks=(1, 24), seed=7)


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("shape", [(5, 10), (8, 7), (4, 3), (3, 2)], ids=lambda s: f"e{s[0]}m{s[1]}")
def test_float_acc_saturate_matches_reference(shape, mode):
    check_float_acc_against_reference(FloatAcc(*shape, rounding=mode, overflow="saturate"),
                                      REF_PAIRS[:3], "sat", Ks=(1, 24), seed=2**64 - 1)


def test_float_acc_saturate_never_leaves_the_range():
    f = acs.formats.get("fp16")
    acc = FloatAcc(5, 10, overflow="saturate")
    a = f.encode(np.array([[65504.0] * 8, [-65504.0] * 8, [65504.0, -65504.0] * 4]))
    b = f.encode(np.ones((3, 8)))
    got = accumulate(a, b, MAC(f, f, acc))
    assert_bits(got, [65504.0, -65504.0, 0.0])
    got = accumulate(a, a, MAC(f, f, acc))
    assert_bits(got, [65504.0, 65504.0, 65504.0])


def test_float_acc_sr_uses_row_index_and_step():
    """sr: chain r's step k draws rand32(seed, r, k) (checked on a case with a known outcome:
    1 + 2^-12 onto fp16 (ulp 2^-10) rounds up iff rand < 2^30)."""
    f = acs.formats.get("fp16")
    acc = FloatAcc(5, 10, rounding="sr")
    mac = MAC(f, f, acc)
    R, seed = 64, 99
    a = np.tile(f.encode(np.array([2.0**-6, 0.0, 2.0**-6])), (R, 1))
    b = np.tile(f.encode(np.array([2.0**-6, 1.0, 2.0**-6])), (R, 1))
    got = accumulate(a, b, mac, init=1.0, seed=seed)
    for r in range(R):
        v = 1.0
        for k in (0, 2):  # step 1 adds +0: no rounding, no draw that matters
            # v + 2^-12 lies a quarter ulp (2^-10) above v: up with probability 1/4
            if ref.rand32(seed, r, k) < 2**30:
                v += 2.0**-10
        assert got[r] == v, r


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("acc", [FloatAcc(5, 10), FloatAcc(4, 3, subnormals=False),
                                 FloatAcc(5, 10, overflow="saturate"), FloatAcc(8, 7)], ids=lambda a: a.name)
def test_float_acc_init_is_rounded_to_nearest_even(acc, mode):
    """Any float64 init is first rounded (rne) onto the accumulator's grid."""
    acc = FloatAcc(acc.exp_bits, acc.man_bits, mode, acc.subnormals, acc.overflow)
    f = acs.formats.get("e4m3fn")
    rng = rng_for("init", acc)
    inits = np.concatenate([rng.uniform(-3, 3, 20) * 2.0 ** rng.integers(-30, 20, 20),
                            [1e6, -1e6, 1e300, 1 + 2.0**-11, 1 + 3 * 2.0**-11, 2.0**-25, -(2.0**-25),
                             3 * 2.0**-26, 1e-300, -0.0, 0.0, math.inf, -math.inf, math.nan]])
    R = inits.size
    a = f.encode(rng.choice([0.0, 0.5, -1.0, 2.0**-9], (R, 2)))
    b = f.encode(rng.choice([0.0, 1.5, -3.0, 2.0**-6], (R, 2)))
    got = accumulate(a, b, MAC(f, f, acc), init=inits, seed=5)
    want = [ref.float_acc(f.decode(a[r]).tolist(), f.decode(b[r]).tolist(), exp_bits=acc.exp_bits,
                          man_bits=acc.man_bits, rounding=mode, subnormals=acc.subnormals,
                          overflow=acc.overflow, init=round_to_acc(inits[r], acc), seed=5, element=r)
            for r in range(R)]
    assert_bits(got, want, lambda i: f"init {inits[i]!r}", acc.name)
    # with no steps the result is the rounded init itself
    got0 = accumulate(np.zeros((R, 0), np.uint8), np.zeros((R, 0), np.uint8), MAC(f, f, acc), init=inits)
    assert_bits(got0, [round_to_acc(x, acc) for x in inits], lambda i: f"init {inits[i]!r}", "K=0")


# ---------------------------------------------------------------------------------------
# 3. IntAcc against Python integers
# ---------------------------------------------------------------------------------------

def python_int_chain(av, bv, bits, overflow, init):
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    acc = init
    for x, y in zip(av, bv):
        acc += int(x) * int(y)
        if overflow == "wrap":
            acc = (acc - lo) % 2**bits + lo
        else:
            acc = min(max(acc, lo), hi)
    return acc


@pytest.mark.parametrize("overflow", ["wrap", "saturate"])
@pytest.mark.parametrize("bits", [2, 5, 8, 16, 24, 32, 64])
@pytest.mark.parametrize("pair", [("int8", "int8"), ("uint8", "uint8"), ("int4", "int4"), ("int8", "uint8"),
                                  ("int4", "uint8")], ids="x".join)
def test_int_acc_matches_python_ints(pair, bits, overflow):
    A, B = Ops(pair[0]), Ops(pair[1])
    acc = IntAcc(bits, overflow)
    mac = MAC(A.fmt, B.fmt, acc)
    rng = rng_for("int", pair, bits, overflow)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    for K in (1, 7, 64):
        R = 16
        a = rng.choice(A.fmt.all_codes(), (R, K))
        b = rng.choice(B.fmt.all_codes(), (R, K))
        b[1::4] = b[1::4][:, ::-1]
        a[2::4, K // 2:] = A.neg[a[2::4, :K - K // 2][:, ::-1]]  # partial cancellation
        # inits: zero, near the top and bottom of the register, random (all exact in float64)
        span = min(hi, 2**52)
        inits = []
        for r in range(R):
            c = r % 4
            if c == 0:
                inits.append(0)
            elif c == 1:  # near the top (multiples of 4096 below 2^63 are exact in float64)
                if bits == 64:
                    inits.append(hi + 1 - 4096 * int(rng.integers(1, 100)))
                else:
                    inits.append(hi - int(rng.integers(0, min(hi - lo, 300))))
            elif c == 2:  # near the bottom
                if bits == 64:
                    inits.append(lo + 4096 * int(rng.integers(0, 100)))
                else:
                    inits.append(lo + int(rng.integers(0, min(hi - lo, 300))))
            else:
                inits.append(int(rng.integers(-span, span + 1)) if bits <= 53 else int(rng.integers(-2**52, 2**52)))
        inits = [min(max(i, lo), hi) for i in inits]
        assert all(float(i) == i for i in inits)
        got = accumulate(a, b, mac, init=np.array(inits, dtype=np.float64))
        assert got.dtype == np.int64 and got.shape == (R,)
        for r in range(R):
            av, bv = A.values(a[r]).astype(int).tolist(), B.values(b[r]).astype(int).tolist()
            want = python_int_chain(av, bv, bits, overflow, inits[r])
            assert int(got[r]) == want == ref.int_acc(av, bv, bits=bits, overflow=overflow, init=inits[r]), (
                r, av, bv, inits[r], int(got[r]), want)


def test_int_acc_wraps_and_saturates_at_the_register_edges():
    i8 = acs.formats.get("int8")
    a = i8.encode(np.array([127.0, 127.0, 127.0]))
    b = i8.encode(np.array([127.0, 127.0, -128.0]))
    # 16129 * 2 = 32258, then -16256 -> 16002; 32-bit: no overflow
    assert accumulate(a, b, MAC(i8, i8, IntAcc(32)))[()] == 16002
    # 16 bits, init 1000: 17129, 33258 -> -32278 (wrapped), -48534 -> 17002 (wrapped)
    assert accumulate(a, b, MAC(i8, i8, IntAcc(16)), init=1000)[()] == 17002
    assert accumulate(a, b, MAC(i8, i8, IntAcc(16, "saturate")), init=1000)[()] == 32767 - 16256
    assert accumulate(a, b, MAC(i8, i8, IntAcc(8)))[()] == ((16129 * 2 - 16256 + 128) % 256) - 128
    x = i8.encode(np.array([-128.0] * 4))
    assert accumulate(x, x, MAC(i8, i8, IntAcc(64)), init=float(2**63 - 2**15))[()] == -(2**63) + 2**15
    assert accumulate(x, x, MAC(i8, i8, IntAcc(64, "saturate")), init=float(2**63 - 2**15))[()] == 2**63 - 1
    assert accumulate(x, x, MAC(i8, i8, IntAcc(2)))[()] == 0  # 65536 mod 4
    assert accumulate(x[:1], x[:1], MAC(i8, i8, IntAcc(2, "saturate")), init=-2.0)[()] == 1


@pytest.mark.parametrize("init", [2.0**70 + 2.0**20, 2.0**107 + 2.0**60, -(2.0**107 + 2.0**60), 2.0**130 + 2.0**90,
                                  2.0**52 + 2.5, -(2.0**40) - 0.75, 1e300, -1e300])
@pytest.mark.parametrize("acc", [IntAcc(32), IntAcc(64), IntAcc(64, "saturate"), FixedAcc(100, 20, overflow="wrap"),
                                 FixedAcc(8, 8, overflow="wrap"), FixedAcc(1, 119, overflow="wrap"),
                                 FixedAcc(60, 60, "rtz", "saturate"), FixedAcc(24, -4, overflow="wrap")],
                         ids=lambda a: a.name)
def test_register_init_far_out_of_range(acc, init):
    """An init far beyond the register is wrapped (exact two's complement residue) or
    saturated like any sum; +0 products then leave it unchanged."""
    if isinstance(acc, IntAcc):
        if init != round(init):
            pytest.skip("IntAcc takes integer inits only")
        want = python_int_chain([0], [0], acc.bits, acc.overflow, int(init))
        assert accumulate(np.zeros(1, U8), np.zeros(1, U8), MAC("int8", "int8", acc), init=init)[()] == want
        return
    got = accumulate(np.zeros(1, U8), np.zeros(1, U8), MAC("e4m3fn", "e4m3fn", acc), init=init)[()]
    # init is first rounded (rne) onto the register's grid
    q = Fraction(2) ** acc.frac_bits
    on_grid = Fraction(round(Fraction(init) * q)) / q  # round() of a Fraction: ties to even
    want = fixed_oracle([0.0], [0.0], acc.int_bits, acc.frac_bits, acc.rounding, acc.overflow, on_grid, 0, 0)
    assert hexf(got) == hexf(float(want)), (got, float(want))


# ---------------------------------------------------------------------------------------
# 4. FixedAcc against the reference
# ---------------------------------------------------------------------------------------

FIXED_SHAPES = [(8, 8), (16, 0), (4, 12), (2, 6), (20, -3), (32, 24), (60, 60), (1, 30), (100, 20), (12, 100)]
FIXED_PAIRS = [("e4m3fn", "e4m3fn"), ("e5m2", "fp16"), ("bf16", "bf16"), ("int8", "e4m3fn")]


def fixed_init(rng, acc: FixedAcc, r):
    total = acc.int_bits + acc.frac_bits
    hi = 2 ** (total - 1) - 1
    c = r % 4
    if c == 0:
        k = 0
    elif c == 1:
        k = hi - int(rng.integers(0, min(hi, 2**10) + 1))
    elif c == 2:
        k = -hi - 1 + int(rng.integers(0, min(hi, 2**10) + 1))
    else:
        k = int(rng.integers(-min(hi, 2**50), min(hi, 2**50) + 1))
    # keep k exact in float64 (at most 53 significant bits)
    sh = max(k.bit_length() - 53, 0)
    k = (k >> sh) << sh
    return Fraction(k, 2**acc.frac_bits) if acc.frac_bits >= 0 else Fraction(k * 2**-acc.frac_bits)


def fixed_oracle(av, bv, ib, fb, mode, overflow, init, seed, element):
    """reference.fixed_acc; a grid 2^s coarser than the integers (frac_bits = -s < 0) is the
    integer grid of the problem scaled by 2^-s (a's values and init), scaled back."""
    s = max(-fb, 0)
    scale = Fraction(1, 2**s)
    r = ref.fixed_acc([Fraction(x) * scale for x in av], [Fraction(y) for y in bv], int_bits=ib - s,
                      frac_bits=fb + s, rounding=mode, overflow=overflow, init=Fraction(init) * scale,
                      seed=seed, element=element)
    return r * 2**s


@pytest.mark.parametrize("overflow", ["saturate", "wrap"])
@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("shape", FIXED_SHAPES, ids=lambda s: f"fix{s[0]}.{s[1]}")
def test_fixed_acc_matches_reference(shape, mode, overflow):
    ib, fb = shape
    acc = FixedAcc(ib, fb, mode, overflow)
    seed = 31337
    for pair in FIXED_PAIRS:
        A, B = Ops(pair[0]), Ops(pair[1])
        mac = MAC(A.fmt, B.fmt, acc)
        rng = rng_for("fixed", shape, mode, overflow, pair)
        # product binades around the register: below its resolution up to past its top, and
        # never so large that a product exceeds 2^120 register units (see the test below)
        top = min(ib + 1, 120 - fb - 8)
        bands = dict(t_lo=-fb - 4, t_hi=top, high=(min(ib - 4, top), top), low=(-fb - 3, -fb + 2))
        for K in (1, 20):
            R = 8
            a, b, kinds = make_rows(rng, A, B, R, K, specials=False, **bands)
            inits = [fixed_init(rng, acc, r) for r in range(R)]
            got = accumulate(a, b, mac, init=np.array([float(i) for i in inits]), seed=seed)
            want = [float(fixed_oracle(A.values(a[r]), B.values(b[r]), ib, fb, mode, overflow, inits[r], seed, r))
                    for r in range(R)]
            assert_bits(got, want, describe_rows(A, B, a, b, [float(i) for i in inits], kinds), f"{acc.name} K={K}")


def wide_operands(rng, opname, R, K, span, top=None):
    """fp32 or fp64 operand codes (24/53-bit significands): a over binades -span..top
    (default span/4), b near 1."""
    f = FloatFormat(11, 52) if opname == "fp64" else acs.formats.get("fp32")
    sig_bits, max_exp = (53, 1023) if opname == "fp64" else (24, 127)
    ex = rng.integers(-span, (span // 4 if top is None else top) + 1, (R, K)).clip(-max_exp + 1, max_exp)
    ex[::2] = rng.integers(-10, 10, ex[::2].shape)
    a = np.ldexp(rng.integers(2 ** (sig_bits - 1), 2**sig_bits, (R, K)).astype(np.float64), ex - sig_bits + 1)
    a *= rng.choice([-1.0, 1.0], (R, K))
    b = np.ldexp(rng.integers(2 ** (sig_bits - 1), 2**sig_bits, (R, K)).astype(np.float64),
                 rng.integers(-5, 3, (R, K)) - sig_bits + 1)
    ac, bc = f.encode(a), f.encode(b)
    return f, ac, bc, f.decode(ac), f.decode(bc)


@pytest.mark.parametrize("opname", ["fp32", "fp64"])
def test_fixed_acc_wide_operands_match_reference(opname):
    rng = rng_for("fixed-wide", opname)
    for ib, fb in ((8, 8), (60, 60), (30, 4), (2, 100), (40, -10)):
        for mode in ALL_MODES:
            for overflow in ("wrap", "saturate"):
                # products below 2^115 register units (larger ones: test_fixed_acc_huge_products)
                f, ac, bc, av, bv = wide_operands(rng, opname, 12, 6, 60 if opname == "fp32" else 200,
                                                  top=min(15 if opname == "fp32" else 50, 110 - fb))
                got = accumulate(ac, bc, MAC(f, f, FixedAcc(ib, fb, mode, overflow)), seed=5)
                want = [float(fixed_oracle(av[r], bv[r], ib, fb, mode, overflow, 0, 5, r)) for r in range(12)]
                assert_bits(got, want, lambda i: f"a {av[i].tolist()}, b {bv[i].tolist()}",
                            f"{opname} fix({ib}.{fb},{mode},{overflow})")


@pytest.mark.parametrize("opname", ["fp32", "fp64"])
def test_block_fma_wide_operands_match_reference(opname):
    rng = rng_for("block-wide", opname)
    for terms in (1, 3, 8):
        for align in (0, 13, 50, 100):
            for shape in ((8, 23), (11, 52), (5, 10)):
                for mode in ("rne", "rtz", "rup", "sr"):
                    f, ac, bc, av, bv = wide_operands(rng, opname, 6, 2 * terms + 1, 140 if opname == "fp32" else 1000)
                    block = BlockFMA(terms, align, FloatAcc(*shape, mode))
                    got = accumulate(ac, bc, MAC(f, f, block), seed=9)
                    want = [ref.block_fma(av[r].tolist(), bv[r].tolist(), terms=terms, align_bits=align, a_emin=f.emin,
                                          b_emin=f.emin, acc_exp_bits=shape[0], acc_man_bits=shape[1],
                                          acc_rounding=mode, seed=9, element=r) for r in range(6)]
                    assert_bits(got, want, lambda i: f"a {av[i].tolist()}, b {bv[i].tolist()}",
                                f"{opname} {block.name}")


@pytest.mark.parametrize("overflow", ["saturate", "wrap"])
@pytest.mark.parametrize("shape", [(8, 8), (1, 119), (60, 60), (100, 20)], ids=lambda s: f"fix{s[0]}.{s[1]}")
def test_fixed_acc_huge_products(shape, overflow):
    """Products far beyond the register (bf16 2^100 * 2^100, fp16 max^2 on a fine grid):
    saturate clamps; wrap keeps the two's complement residue of the exact sum (DESIGN.md)."""
    ib, fb = shape
    acc = FixedAcc(ib, fb, "rne", overflow)
    cases = [("bf16", [2.0**100], [2.0**100]), ("bf16", [-(2.0**100)], [3 * 2.0**90]),
             ("bf16", [2.0**100, 1.5], [2.0**100, 1.0]), ("fp16", [65504.0], [65504.0]),
             ("e5m2", [57344.0, -57344.0], [57344.0, 49152.0])]
    for name, av, bv in cases:
        f = acs.formats.get(name)
        got = accumulate(f.encode(np.array(av)), f.encode(np.array(bv)), MAC(f, f, acc))[()]
        want = float(ref.fixed_acc(av, bv, int_bits=ib, frac_bits=fb, rounding="rne", overflow=overflow))
        assert hexf(got) == hexf(want), (acc.name, name, av, bv, got, want)


@pytest.mark.parametrize("name", ["e4m3fn", "e5m2", "e4m3"])
def test_fixed_acc_kulisch_is_exact_sum_rounded_once(name):
    """FixedAcc(40, 40) holds every sum of 64 fp8 products exactly: the result is the exact
    sum rounded once to float64 (whatever the rounding mode)."""
    A = Ops(name)
    rng = rng_for("kulisch", name)
    R, K = 200, 64
    a, b = rng.choice(A.codes, (R, K)), rng.choice(A.codes, (R, K))
    a[::7, :5] = A.zeros[0]
    a[1::5, K // 2:] = A.neg[a[1::5, :K // 2][:, ::-1]]  # exact cancellation
    b[1::5, K // 2:] = b[1::5, :K // 2][:, ::-1]
    inits = np.ldexp(rng.integers(-2**40, 2**40, R).astype(np.float64), -30)
    inits[::3] = 0.0
    # every fp8 value is a multiple of 2^-16: the exact sum in units of 2^-32, as a Python int
    ai = (A.values(a) * 2.0**16).astype(np.int64).tolist()
    bi = (A.values(b) * 2.0**16).astype(np.int64).tolist()
    want = []
    for r in range(R):
        units = int(inits[r] * 2.0**32) + sum(x * y for x, y in zip(ai[r], bi[r]))
        want.append(units / 2**32)  # int / int: correctly rounded, ties to even
    for mode in ("rne", "rtz", "rup", "sr"):
        got = accumulate(a, b, MAC(A.fmt, A.fmt, FixedAcc(40, 40, mode)), init=inits, seed=3)
        assert_bits(got, want, lambda i: f"row {i}", f"Kulisch {name} {mode}")


def test_fixed_acc_readout_rounds_wide_registers_to_nearest_even():
    """A 120-bit register is read out once, rounded to nearest-even float64."""
    f = acs.formats.get("fp16")
    acc = FixedAcc(60, 60)
    # 2^30 + 2^-11 + 2^-12 + 2^-48: 79 significant bits
    av = [32768.0, 2.0**-12, 2.0**-24, 1.0]
    bv = [32768.0, 1.0, 2.0**-24, 2.0**-11]
    got = accumulate(f.encode(np.array(av)), f.encode(np.array(bv)), MAC(f, f, acc))[()]
    exact = sum(Fraction(x) * Fraction(y) for x, y in zip(av, bv))
    assert hexf(got) == hexf(exact.numerator / exact.denominator)
    # an exact tie below 53 bits: 2^53 + 1 rounds to 2^53 (even); 2^53 + 3 rounds to 2^53 + 4
    i8 = acs.formats.get("int8")
    for init, want in ((2.0**53, 2.0**53), (2.0**53 + 2, 2.0**53 + 4)):
        got = accumulate(i8.encode(np.array([1.0])), i8.encode(np.array([1.0])), MAC(i8, i8, acc), init=init)[()]
        assert got == want, (init, got)


# ---------------------------------------------------------------------------------------
# 5. BlockFMA against the reference
# ---------------------------------------------------------------------------------------

BLOCK_PAIRS = [("e4m3fn", "e4m3fn"), ("e5m2", "e5m2"), ("fp16", "fp16"), ("bf16", "bf16"),
               ("e4m3fn", "e5m2"), ("e4m3fnuz", "e5m2fnuz")]
BLOCK_ACCS = [(8, 23), (5, 10), (8, 13), (4, 3)]


def check_block(block: BlockFMA, pairs, key, R=6, Ks=None, seed=0):
    """block against reference.block_fma; K mostly not a multiple of terms (padding)."""
    terms = block.terms
    acc = block.acc
    if Ks is None:
        Ks = (1, 5, 17) if terms == 1 else sorted({1, terms + 1, 2 * terms + terms // 2, min(3 * terms - 1, 70)})
    for pair in pairs:
        A, B = Ops(pair[0]), Ops(pair[1])
        mac = MAC(A.fmt, B.fmt, block)
        rng = rng_for(key, block, pair)
        bands = float_acc_bands(acc)
        for K in Ks:
            a, b, kinds = make_rows(rng, A, B, R, K, spreads=(0, 2, 6, 14, 30), **bands)
            inits = np.array([random_float_init(rng, kinds[r], int(rng.integers(bands["t_lo"], bands["t_hi"] + 1)),
                                                block.addend or acc) for r in range(R)])
            got = accumulate(a, b, mac, init=inits, seed=seed)
            want = [ref.block_fma(A.values(a[r]).tolist(), B.values(b[r]).tolist(), terms=terms,
                                  align_bits=block.align_bits, a_emin=A.emin, b_emin=B.emin,
                                  acc_exp_bits=acc.exp_bits, acc_man_bits=acc.man_bits, acc_rounding=acc.rounding,
                                  acc_subnormals=acc.subnormals, acc_overflow=acc.overflow, init=float(inits[r]),
                                  seed=seed, element=r)
                    for r in range(R)]
            assert_bits(got, want, describe_rows(A, B, a, b, inits, kinds), f"{block.name} {mac.name} K={K}")


@pytest.mark.parametrize("mode", ["rtz", "rne", "rup", "sr"])
@pytest.mark.parametrize("align", [0, 3, 13, 24, 60])
@pytest.mark.parametrize("terms", [1, 2, 4, 8, 16, 32])
def test_block_fma_matches_reference(terms, align, mode):
    i = (terms * 7 + align + len(mode)) % len(BLOCK_ACCS)
    acc = FloatAcc(*BLOCK_ACCS[i], rounding=mode)
    pairs = [BLOCK_PAIRS[(terms + align) % len(BLOCK_PAIRS)], BLOCK_PAIRS[(terms + align + 3) % len(BLOCK_PAIRS)]]
    check_block(BlockFMA(terms, align, acc), pairs, "block", seed=2024 if mode == "sr" else 0)


@pytest.mark.parametrize("acc", [FloatAcc(8, 23, "rdn"), FloatAcc(5, 10, "rna", subnormals=False),
                                 FloatAcc(5, 10, "rto", overflow="saturate"),
                                 FloatAcc(4, 3, "rtz", overflow="saturate"),
                                 FloatAcc(8, 13, "sr", subnormals=False)], ids=lambda a: a.name)
def test_block_fma_other_accumulators_match_reference(acc):
    for terms, align in ((4, 23), (16, 13), (3, 5)):
        check_block(BlockFMA(terms, align, acc), BLOCK_PAIRS[:4], "block-acc", R=6, seed=77)


def test_block_fma_hand_cases():
    f = acs.formats.get("fp16")
    blk = lambda n, F, **kw: MAC(f, f, BlockFMA(n, F, FloatAcc(8, 23, "rtz"), **kw))
    enc = lambda v: f.encode(np.array(v, np.float64))
    run = lambda m, a, b, init=0.0: float(accumulate(enc(a), enc(b), m, init=init))
    # the small product is truncated away below the grid 2^(0-3)
    assert run(blk(2, 3), [1.0, 0.09375], [1.0, 1.0]) == 1.0
    assert run(blk(2, 3), [1.0, 0.3125], [1.0, 1.0]) == 1.25
    assert run(blk(2, 3), [1.0, -0.3125], [1.0, 1.0]) == 0.75  # toward zero, not floor
    assert run(blk(2, 2), [1.5, 0.125], [1.5, 1.0]) == 2.25  # products unnormalised
    assert run(blk(1, 13), [1.0], [1.0], init=1 + 2.0**-20) == 2.0  # the accumulator is truncated too
    assert run(blk(1, 13), [16.0], [1.0], init=1 + 2.0**-20) == 17.0
    # operand exponents clamp at the format's emin (fp16: -14): 2^-16 has exponent -14 there
    assert hexf(run(blk(1, 1), [2.0**-16], [1.0])) == hexf(0.0)
    assert run(blk(1, 2), [2.0**-16], [1.0]) == 2.0**-16
    # padding: e5m2-like accumulator, rtz, products 3,3,3,2 | 3 with n = 4
    m = MAC(f, f, BlockFMA(4, 30, FloatAcc(5, 2, "rtz")))
    assert run(m, [3.0, 3.0, 3.0, 2.0, 3.0], [1.0] * 5) == 12.0
    # specials: NaN, inf - inf, inf
    assert math.isnan(run(blk(4, 13), [math.inf, 1.0, -math.inf, 0.0], [1.0, 1.0, 1.0, 1.0]))
    assert math.isnan(run(blk(4, 13), [math.inf, 0.0], [0.0, 1.0]))
    assert run(blk(4, 13), [math.inf, 1.0, 2.0], [1.0, -1.0, 5.0]) == math.inf
    assert run(blk(4, 13), [1.0], [1.0], init=-math.inf) == -math.inf
    # zero signs: all -0 products and a -0 accumulator keep -0; padding adds +0 * +0
    assert hexf(run(blk(2, 13), [-0.0, -0.0], [1.0, 1.0], init=-0.0)) == hexf(-0.0)
    assert hexf(run(blk(4, 13), [-0.0, -0.0], [1.0, 1.0], init=-0.0)) == hexf(0.0)


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("variant", ["plain", "ftz", "saturate"])
@pytest.mark.parametrize("shape,pairs", [((8, 23), [("e4m3fn", "e4m3fn"), ("e5m2", "e5m2"), ("e4m3fn", "e5m2")]),
                                         ((5, 10), [("fp16", "fp16"), ("e5m2", "e4m3fn")]),
                                         ((8, 7), [("e5m2", "e5m2")])], ids=["fp32", "fp16", "bf16"])
def test_block_fma_one_term_wide_alignment_equals_float_acc(shape, pairs, variant, mode):
    """terms=1 with align_bits=100 never truncates these products, so it is FloatAcc exactly
    (the engine's two paths agree, sr draws included: a block is a step)."""
    acc = FloatAcc(*shape, rounding=mode, subnormals=variant != "ftz",
                   overflow="saturate" if variant == "saturate" else "inf")
    for pair in pairs:
        A, B = Ops(pair[0]), Ops(pair[1])
        rng = rng_for("one-term", shape, variant, mode, pair)
        R = 40
        a, b, kinds = make_rows(rng, A, B, R, 48, **float_acc_bands(acc))
        inits = np.array([random_float_init(rng, kinds[r], int(rng.integers(-20, 20)), acc) for r in range(R)])
        x = accumulate(a, b, MAC(A.fmt, B.fmt, acc), init=inits, seed=8)
        y = accumulate(a, b, MAC(A.fmt, B.fmt, BlockFMA(1, 100, acc)), init=inits, seed=8)
        assert_bits(y, x, describe_rows(A, B, a, b, inits, kinds), f"BlockFMA(1, 100, {acc.name}) vs FloatAcc")


@pytest.mark.parametrize("terms", [1, 4, 16, 32])
@pytest.mark.parametrize("pair", [("e4m3fn", "e4m3fn"), ("e5m2", "e5m2"), ("e4m3fn", "e5m2")], ids="x".join)
def test_block_fma_wider_addend_matches_reference(pair, terms):
    """FP8 tensor cores: C is fp32 (addend=FloatAcc(8, 23)) while blocks keep 13 fraction bits.
    The first block's accumulator is C exactly (it is on the fp32 grid), with its own
    exponent for the alignment: the reference given that C must agree."""
    block = BlockFMA(terms, 13, FloatAcc(8, 13, "rtz"), addend=FloatAcc(8, 23))
    check_block(block, [pair], "addend", R=16, Ks=(terms, 2 * terms + 1))


@pytest.mark.parametrize("terms", [1, 16, 32])
def test_block_fma_wider_addend_when_c_dominates(terms):
    """C (24 significant bits) is the largest term: aligned at C's own exponent, its low bits
    and those of the smaller products fall below the 2^(E-13) grid."""
    A = Ops("e4m3fn")
    rng = rng_for("c-dominates", terms)
    R = 64
    e = rng.integers(-8, 9, R)
    c = np.ldexp(rng.integers(2**23, 2**24, R).astype(np.float64), e - 23) * rng.choice([-1, 1], R)
    T = (e[:, None] - rng.integers(1, 15, (R, terms))).clip(A.lo * 2, A.hi * 2)
    ea = (T // 2).clip(A.lo, A.hi)
    a, b = A.draw(rng, ea), A.draw(rng, T - ea)
    mac = MAC(A.fmt, A.fmt, BlockFMA(terms, 13, FloatAcc(8, 13, "rtz"), addend=FloatAcc(8, 23)))
    got = accumulate(a, b, mac, init=c)
    want = [ref.block_fma(A.values(a[r]).tolist(), A.values(b[r]).tolist(), terms=terms, align_bits=13,
                          a_emin=A.emin, b_emin=A.emin, acc_exp_bits=8, acc_man_bits=13, acc_rounding="rtz",
                          init=float(c[r])) for r in range(R)]
    assert_bits(got, want, lambda i: f"C {hexf(c[i])}, a {A.values(a[i]).tolist()}, b {A.values(b[i]).tolist()}",
                mac.name)


def test_block_fma_wider_addend_minimal():
    """acc = 1 + 2^-20 (exponent 0) and one product -2^-14: E = 0, the grid is 2^-13, the
    product truncates to 0 and C to 1, so the result is 1.0 exactly (DESIGN.md)."""
    f = acs.formats.get("e4m3fn")
    mac = MAC(f, f, BlockFMA(1, 13, FloatAcc(8, 13, "rtz"), addend=FloatAcc(8, 23)))
    got = accumulate(f.encode(np.array([-(2.0**-7)])), f.encode(np.array([2.0**-7])), mac, init=1 + 2.0**-20)[()]
    want = ref.block_fma([-(2.0**-7)], [2.0**-7], terms=1, align_bits=13, a_emin=-6, b_emin=-6, acc_exp_bits=8,
                         acc_man_bits=13, acc_rounding="rtz", init=1 + 2.0**-20)
    assert want == 1.0
    assert hexf(got) == hexf(want)


@pytest.mark.parametrize("out", ["fp32", "fp16"])
@pytest.mark.parametrize("gpu,informat", [("h100", "e4m3"), ("ada", "e5m2"), ("a100", "bf16"), ("v100", "fp16")])
def test_tensor_core_presets_match_reference(gpu, informat, out):
    """The presets against the reference, C rounded (rne) onto the addend grid first."""
    mac = acs.presets.tensor_core(gpu, informat, out)
    block = mac.acc
    addend = block.addend or block.acc
    A = Ops(mac.a.name)
    rng = rng_for("preset", gpu, informat, out)
    R, K = 64, 2 * block.terms + 3
    a, b, kinds = make_rows(rng, A, A, R, K, spreads=(0, 3, 10, 25), **float_acc_bands(FloatAcc(5, 10)))
    c = (rng.uniform(-2, 2, R) * 2.0 ** rng.integers(-20, 12, R)).astype(np.float32).astype(np.float64)
    c[::5] = 0.0
    got = accumulate(a, b, mac, init=c)
    acc = block.acc
    want = [ref.block_fma(A.values(a[r]).tolist(), A.values(b[r]).tolist(), terms=block.terms,
                          align_bits=block.align_bits, a_emin=A.emin, b_emin=A.emin, acc_exp_bits=acc.exp_bits,
                          acc_man_bits=acc.man_bits, acc_rounding=acc.rounding, init=round_to_acc(c[r], addend))
            for r in range(R)]
    assert_bits(got, want, describe_rows(A, A, a, b, c, kinds), mac.name)


# ---------------------------------------------------------------------------------------
# 7. determinism, seeds, broadcasting, memory layout
# ---------------------------------------------------------------------------------------

DET_MACS = [
    lambda: MAC("fp16", "fp16", FloatAcc(5, 4, "sr")),
    lambda: MAC("e4m3fn", "e5m2", BlockFMA(4, 12, FloatAcc(8, 7, "sr"))),
    lambda: MAC("e5m2", "e5m2", FixedAcc(6, 3, "sr", "wrap")),
    lambda: MAC("int8", "uint8", IntAcc(12, "wrap")),
    lambda: MAC("bf16", "bf16", FloatAcc(8, 23, "rne")),
]


def random_codes(rng, fmt, shape):
    """Finite codes of moderate size (binades -4..3; any code of an integer format)."""
    ops = Ops(fmt.name)
    pool = ops.codes[(ops.exps >= -4) & (ops.exps <= 3)] if isinstance(fmt, acs.formats.FloatFormat) else ops.codes
    return rng.choice(pool, shape).astype(fmt.code_dtype)


def same(x, y):
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind == "i" or y.dtype.kind == "i":
        return x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
    return x.shape == y.shape and bad_positions(x, y).size == 0


@pytest.mark.parametrize("make", DET_MACS, ids=lambda m: m().name)
def test_same_call_twice_same_bits(make):
    mac = make()
    rng = rng_for("det", mac.name)
    a, b = random_codes(rng, mac.a, (50, 37)), random_codes(rng, mac.b, (50, 37))
    init = np.zeros(50) if mac.int_output else rng.uniform(-4, 4, 50).round(2)
    x = accumulate(a, b, mac, init=init, seed=11)
    y = accumulate(a.copy(), b.copy(), make(), init=init.copy(), seed=11)
    assert same(x, y)
    assert np.array_equal(a, a.copy())  # inputs untouched


@pytest.mark.parametrize("make", DET_MACS[:3], ids=lambda m: m().name)
def test_sr_seeds_matter(make):
    mac = make()
    rng = rng_for("seeds", mac.name)
    a, b = random_codes(rng, mac.a, (64, 40)), random_codes(rng, mac.b, (64, 40))
    results = [accumulate(a, b, mac, seed=s) for s in (0, 1, 2**63, 2**64 - 1)]
    for i in range(len(results)):
        for j in range(i + 1, len(results)):
            assert bad_positions(results[i], results[j]).size > 0, (i, j)
    # numpy integer seeds are the same seeds
    assert same(accumulate(a, b, mac, seed=np.uint64(2**63)), results[2])


@pytest.mark.parametrize("make", DET_MACS, ids=lambda m: m().name)
def test_broadcasting_equals_tiling(make):
    mac = make()
    rng = rng_for("bcast", mac.name)
    R, K = 9, 21
    a, b = random_codes(rng, mac.a, (R, K)), random_codes(rng, mac.b, (K,))
    init = np.zeros(R) if mac.int_output else rng.uniform(-2, 2, R).round(1)
    x = accumulate(a, b, mac, init=init, seed=4)
    y = accumulate(a, np.tile(b, (R, 1)), mac, init=init, seed=4)
    assert same(x, y)
    # a column of a against rows of b: (R, 1, K) x (1, S, K) -> (R, S); element = r*S + s
    S = 4
    a3, b3 = random_codes(rng, mac.a, (R, 1, K)), random_codes(rng, mac.b, (1, S, K))
    z = accumulate(a3, b3, mac, seed=4)
    assert z.shape == (R, S)
    flat = accumulate(np.broadcast_to(a3, (R, S, K)).reshape(R * S, K),
                      np.broadcast_to(b3, (R, S, K)).reshape(R * S, K), mac, seed=4)
    assert same(z.reshape(-1), flat)
    # scalar init broadcasts like a full one
    v = 0 if mac.int_output else 1.5
    assert same(accumulate(a, b, mac, init=v, seed=4), accumulate(a, b, mac, init=np.full(R, v), seed=4))
    assert same(accumulate(a, b, mac, init=[v], seed=4), accumulate(a, b, mac, init=np.full(R, v), seed=4))


@pytest.mark.parametrize("make", DET_MACS, ids=lambda m: m().name)
def test_layout_and_dtype_do_not_matter(make):
    mac = make()
    rng = rng_for("layout", mac.name)
    a, b = random_codes(rng, mac.a, (12, 30)), random_codes(rng, mac.b, (12, 30))
    want = accumulate(a, b, mac, seed=6)
    assert same(accumulate(np.asfortranarray(a), np.asfortranarray(b), mac, seed=6), want)
    big_a, big_b = random_codes(rng, mac.a, (24, 60)), random_codes(rng, mac.b, (24, 60))
    big_a[::2, ::2], big_b[::2, ::2] = a, b
    assert same(accumulate(big_a[::2, ::2], big_b[::2, ::2], mac, seed=6), want)
    rev = accumulate(a[::-1], b[::-1], mac, seed=6)
    assert same(rev, accumulate(np.ascontiguousarray(a[::-1]), np.ascontiguousarray(b[::-1]), mac, seed=6))
    # wider integer dtypes holding the same codes
    for dt in (np.uint16, np.int32, np.int64, np.uint64):
        assert same(accumulate(a.astype(dt), b.astype(dt), mac, seed=6), want), dt
    # lists of ints
    assert same(accumulate(a.tolist(), b.tolist(), mac, seed=6), want)
    # transposed views (K along the last axis of a non-contiguous view)
    at, bt = np.ascontiguousarray(a.T).T, np.ascontiguousarray(b.T).T
    assert not at.flags.c_contiguous
    assert same(accumulate(at, bt, mac, seed=6), want)


@pytest.mark.parametrize("make", DET_MACS[:3], ids=lambda m: m().name)
def test_sr_element_is_flat_c_order_index(make):
    mac = make()
    rng = rng_for("elem", mac.name)
    a, b = random_codes(rng, mac.a, (2, 3, 4, 25)), random_codes(rng, mac.b, (2, 3, 4, 25))
    x = accumulate(a, b, mac, seed=21)
    assert x.shape == (2, 3, 4)
    y = accumulate(a.reshape(24, 25), b.reshape(24, 25), mac, seed=21)
    assert same(x.reshape(-1), y)
    # a chain alone is element 0: row 0 matches, and 1-D input gives a 0-d result
    z = accumulate(a[0, 0, 0], b[0, 0, 0], mac, seed=21)
    assert np.ndim(z) == 0 and same(z.reshape(1), y[:1])


def test_empty_shapes():
    mac = MAC("e4m3fn", "e4m3fn", FloatAcc(8, 23))
    out = accumulate(np.zeros((0, 5), np.uint8), np.zeros((0, 5), np.uint8), mac)
    assert out.shape == (0,) and out.dtype == np.float64
    out = accumulate(np.zeros((3, 0), np.uint8), np.zeros((3, 0), np.uint8), mac, init=[1.0, -0.0, 2.0])
    assert_bits(out, [1.0, -0.0, 2.0])
    im = MAC("int8", "int8", IntAcc(32))
    out = accumulate(np.zeros((2, 0), np.uint8), np.zeros((2, 0), np.uint8), im, init=[5, -7])
    assert out.dtype == np.int64 and out.tolist() == [5, -7]


# ---------------------------------------------------------------------------------------
# 8. tensor-core presets (the published table, written out here)
# ---------------------------------------------------------------------------------------

# Khattak & Mikaitis (arXiv:2512.07004), as listed in shared/vectors/tensor-cores/README.md:
# (gpu, informat) -> (n products per block, F alignment bits, fp32-output fraction bits).
# H200 is the H100's Hopper tensor core; the README lists H100 fp8 and fp16/bf16 and
# "H100/H200 fp8"; the H200 fp16/bf16 row is the same Hopper part.
PUBLISHED = {
    ("v100", "fp16"): (4, 23, 23),
    ("a100", "fp16"): (8, 24, 23), ("a100", "bf16"): (8, 24, 23),
    ("ada", "e4m3"): (16, 13, 13), ("ada", "e5m2"): (16, 13, 13),
    ("l40s", "e4m3"): (16, 13, 13), ("l40s", "e5m2"): (16, 13, 13),
    ("h100", "e4m3"): (32, 13, 13), ("h100", "e5m2"): (32, 13, 13),
    ("h200", "e4m3"): (32, 13, 13), ("h200", "e5m2"): (32, 13, 13),
    ("h100", "fp16"): (16, 25, 23), ("h100", "bf16"): (16, 25, 23),
    ("h200", "fp16"): (16, 25, 23), ("h200", "bf16"): (16, 25, 23),
}
OPERANDS = {"fp16": "fp16", "bf16": "bf16", "e4m3": "e4m3fn", "e5m2": "e5m2"}


def test_preset_table_is_the_published_one():
    assert dict(acs.presets.TENSOR_CORES) == PUBLISHED


@pytest.mark.parametrize("out", ["fp32", "fp16"])
@pytest.mark.parametrize("key", sorted(PUBLISHED), ids="-".join)
def test_tensor_core_preset_parameters(key, out):
    gpu, informat = key
    n, F, frac = PUBLISHED[key]
    mac = acs.presets.tensor_core(gpu, informat, out=out)
    assert isinstance(mac, MAC) and isinstance(mac.acc, BlockFMA)
    assert mac.a == acs.formats.get(OPERANDS[informat]) and mac.b == mac.a
    assert (mac.acc.terms, mac.acc.align_bits, mac.terms) == (n, F, n)
    addend = mac.acc.addend or mac.acc.acc
    if out == "fp32":
        assert mac.acc.acc == FloatAcc(8, frac, rounding="rtz")
        assert (addend.exp_bits, addend.man_bits, addend.subnormals) == (8, 23, True)
    else:
        assert mac.acc.acc == FloatAcc(5, 10, rounding="rne")
        assert (addend.exp_bits, addend.man_bits) == (5, 10)
    assert mac.name == f"{gpu}-{informat}-{out}"
    # the gpu name is case-insensitive
    assert acs.presets.tensor_core(gpu.upper(), informat, out=out).acc == mac.acc
    # the E4M3 of tensor cores is OCP's: max 448
    if informat == "e4m3":
        assert mac.a.max == 448.0


@pytest.mark.parametrize("args,match,error", [
    (("b200", "fp16"), "gpu", ValueError), (("h100", "fp8"), "informat", ValueError),
    (("h100", "E4M3"), "informat", ValueError), (("v100", "bf16"), "v100", ValueError),
    (("a100", "e4m3"), "informat", ValueError), ((None, "fp16"), "gpu", TypeError),
    (("h100", "e4m3", "bf16"), "out", ValueError), (("h100", "e4m3", "fp64"), "out", ValueError),
    (("h100", "e4m3", None), "out", TypeError),
])
def test_tensor_core_preset_rejects_unknown(args, match, error):
    """Unknown names are ValueErrors, names that are not strings TypeErrors; both name the argument."""
    with pytest.raises(error, match=match):
        acs.presets.tensor_core(*args)
