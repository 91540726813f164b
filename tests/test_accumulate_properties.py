"""Property tests: acs.accumulate equals accel_sim/reference.py bit for bit on random operand
formats (FloatFormat exp 2..6, man 0..5, ieee/fn/fnuz, with or without inf and subnormals;
small integer and fixed-point formats), random accumulators of every kind with random
parameters and modes, random chains of codes, random on-grid inits and seeds.

float64 results are compared through their bit patterns (signed zeros count), NaN by class;
IntAcc results as Python ints.  The runs are derandomized (same examples every time) and keep
no example database; pass --hypothesis-seed=N (and drop derandomize) to explore further.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accel_sim import reference as ref
from accel_sim.formats import FixedFormat, FloatFormat, IntFormat
from accel_sim.mac import MAC, BlockFMA, FixedAcc, FloatAcc, IntAcc, accumulate

MODES = ("rne", "rna", "rtz", "rup", "rdn", "rto", "sr")

PROPERTY = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------

def bits_of(x):
    x = float(x)
    return "nan" if math.isnan(x) else int(np.float64(x).view(np.uint64))


def check_rows(got, want, info):
    got = np.asarray(got).reshape(-1)
    assert got.size == len(want)
    for r, w in enumerate(want):
        g = float(got[r])
        assert bits_of(g) == bits_of(w), (
            f"row {r}: engine {g!r} ({'nan' if math.isnan(g) else g.hex()}) != reference {float(w)!r}; {info(r)}")


def grid_of(acc: FloatAcc):
    return ref.float_format_params(acc.exp_bits, acc.man_bits, style="ieee")


def on_grid(x, acc: FloatAcc):
    """x rounded (rne) onto acc's grid the way accumulate rounds init."""
    return ref.round_float(x, **grid_of(acc), subnormals=acc.subnormals, rounding="rne", overflow=acc.overflow)


@st.composite
def float_formats(draw):
    style = draw(st.sampled_from(["ieee", "fn", "fnuz"]))
    e = draw(st.integers(2, 6))
    m = draw(st.integers(0 if style == "fnuz" else 1, 5))
    inf = style == "ieee" and draw(st.booleans())
    subnormals = draw(st.sampled_from([True, True, True, False]))
    return FloatFormat(e, m, inf=inf, nan=style, subnormals=subnormals)


@st.composite
def fixed_formats(draw):
    signed = draw(st.booleans())
    total = draw(st.integers(2 if signed else 1, 8))
    frac = draw(st.integers(-2, 6))
    return FixedFormat(total - frac, frac, signed=signed) if total - frac >= 0 else IntFormat(total, signed)


int_formats = st.builds(lambda bits, signed: IntFormat(bits, signed) if bits >= 2 or not signed else IntFormat(2),
                        st.integers(1, 8), st.booleans())

operand_formats = st.one_of(float_formats(), float_formats(), fixed_formats())


@st.composite
def float_accs(draw, max_exp=11):
    e = draw(st.sampled_from([2, 3, 4, 5, 6, 8, max_exp]))
    m = draw(st.one_of(st.integers(0, 12), st.sampled_from([23, 51, 52])))
    return FloatAcc(e, m, rounding=draw(st.sampled_from(MODES)), subnormals=draw(st.booleans()),
                    overflow=draw(st.sampled_from(["inf", "saturate"])))


@st.composite
def chains(draw, fa, fb, max_k=12, min_k=0):
    """(a codes (R, K), b codes (R, K) or (K,) broadcast)."""
    R = draw(st.integers(1, 3))
    K = draw(st.integers(min_k, max_k))
    row = lambda f: st.lists(st.integers(0, (1 << f.bits) - 1), min_size=K, max_size=K)  # noqa: E731
    a = np.array(draw(st.lists(row(fa), min_size=R, max_size=R)), dtype=fa.code_dtype).reshape(R, K)
    if draw(st.booleans()):
        b = np.array(draw(row(fb)), dtype=fb.code_dtype).reshape(K)
    else:
        b = np.array(draw(st.lists(row(fb), min_size=R, max_size=R)), dtype=fb.code_dtype).reshape(R, K)
    return a, b


def values(fmt, codes):
    return fmt.decode(codes).tolist()


def rows_of(a, b):
    R = a.shape[0]
    return [(a[r], b if b.ndim == 1 else b[r]) for r in range(R)]


@st.composite
def float_inits(draw, acc: FloatAcc, n):
    bias = 2 ** (acc.exp_bits - 1) - 1
    out = []
    for _ in range(n):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            x = draw(st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan]))
        elif kind <= 2:
            x = draw(st.sampled_from([0.0, -0.0]))
        else:
            sig = draw(st.floats(1.0, 2.0, exclude_max=True))
            ex = draw(st.integers(1 - bias - acc.man_bits - 2, min(bias + 1, 1023)))
            x = math.copysign(math.ldexp(sig, ex), draw(st.sampled_from([-1.0, 1.0])))
        out.append(on_grid(x, acc))
    return np.array(out)


seeds = st.one_of(st.integers(0, 2**64 - 1), st.just(0))


# ---------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------

@PROPERTY
@given(data=st.data())
def test_float_acc_equals_reference(data):
    fa = data.draw(operand_formats, "a format")
    fb = data.draw(st.one_of(st.just(fa), operand_formats), "b format")
    acc = data.draw(float_accs(), "acc")
    a, b = data.draw(chains(fa, fb), "codes")
    init = data.draw(float_inits(acc, a.shape[0]), "init")
    seed = data.draw(seeds, "seed")
    got = accumulate(a, b, MAC(fa, fb, acc), init=init, seed=seed)
    want = [ref.float_acc(values(fa, ar), values(fb, br), exp_bits=acc.exp_bits, man_bits=acc.man_bits,
                          rounding=acc.rounding, subnormals=acc.subnormals, overflow=acc.overflow,
                          init=float(init[r]), seed=seed, element=r)
            for r, (ar, br) in enumerate(rows_of(a, b))]
    check_rows(got, want, lambda r: f"a {values(fa, rows_of(a, b)[r][0])}, b {values(fb, rows_of(a, b)[r][1])}")


@st.composite
def block_accs(draw, addend):
    acc = draw(float_accs(max_exp=8))
    terms = draw(st.sampled_from([1, 2, 3, 4, 5, 8]))
    align = draw(st.one_of(st.integers(0, 30), st.sampled_from([60, 100])))
    add = None
    if addend:
        add = FloatAcc(acc.exp_bits, draw(st.integers(min(acc.man_bits + 1, 52), min(acc.man_bits + 15, 52))),
                       subnormals=acc.subnormals, overflow=acc.overflow)
    return BlockFMA(terms, align, acc, addend=add)


def check_block(data, addend):
    fa = data.draw(float_formats(), "a format")
    fb = data.draw(st.one_of(st.just(fa), float_formats()), "b format")
    block = data.draw(block_accs(addend), "block")
    acc = block.acc
    a, b = data.draw(chains(fa, fb, max_k=14), "codes")
    init = data.draw(float_inits(block.addend or acc, a.shape[0]), "init")
    seed = data.draw(seeds, "seed")
    got = accumulate(a, b, MAC(fa, fb, block), init=init, seed=seed)
    want = [ref.block_fma(values(fa, ar), values(fb, br), terms=block.terms, align_bits=block.align_bits,
                          a_emin=fa.emin, b_emin=fb.emin, acc_exp_bits=acc.exp_bits, acc_man_bits=acc.man_bits,
                          acc_rounding=acc.rounding, acc_subnormals=acc.subnormals, acc_overflow=acc.overflow,
                          init=float(init[r]), seed=seed, element=r)
            for r, (ar, br) in enumerate(rows_of(a, b))]
    check_rows(got, want, lambda r: f"{block}, init {init[r]!r}, a {values(fa, rows_of(a, b)[r][0])}, "
                                    f"b {values(fb, rows_of(a, b)[r][1])}")


@PROPERTY
@given(data=st.data())
def test_block_fma_equals_reference(data):
    check_block(data, addend=False)


@PROPERTY
@given(data=st.data())
def test_block_fma_with_wider_addend_equals_reference(data):
    """addend wider than acc: init is rounded onto the addend grid and then used as the first
    block's accumulator with its own exponent (the reference takes that init as given)."""
    check_block(data, addend=True)


@st.composite
def fixed_accs(draw, max_frac):
    fb = draw(st.one_of(st.integers(-8, max_frac), st.integers(max_frac - 24, max_frac)))
    ib = draw(st.integers(max(1, 2 - fb), min(119, 120 - fb)))
    return FixedAcc(ib, fb, rounding=draw(st.sampled_from(MODES)), overflow=draw(st.sampled_from(["saturate", "wrap"])))


def finite_codes(fmt, codes):
    """codes with every NaN/inf replaced by the code of +0 (code 0 in every format here)."""
    codes = codes.copy()
    codes[~np.isfinite(fmt.decode(codes))] = 0
    return codes


def fixed_reference(av, bv, acc, init, seed, element):
    """reference.fixed_acc, which needs frac_bits >= 0: a coarser grid 2^s (frac_bits = -s) is
    the integer grid of the problem scaled by 2^-s."""
    s = max(-acc.frac_bits, 0)
    scale = Fraction(1, 2**s)
    r = ref.fixed_acc([Fraction(x) * scale for x in av], [Fraction(y) for y in bv], int_bits=acc.int_bits - s,
                      frac_bits=acc.frac_bits + s, rounding=acc.rounding, overflow=acc.overflow,
                      init=Fraction(init) * scale, seed=seed, element=element)
    return r * 2**s


def check_fixed(data, max_frac):
    fa = data.draw(operand_formats, "a format")
    fb = data.draw(st.one_of(st.just(fa), operand_formats), "b format")
    acc = data.draw(fixed_accs(max_frac), "acc")
    a, b = data.draw(chains(fa, fb), "codes")
    a, b = finite_codes(fa, a), finite_codes(fb, b)
    total = acc.int_bits + acc.frac_bits
    hi = 2 ** (total - 1) - 1
    inits = []
    for _ in range(a.shape[0]):
        near = lambda base: st.integers(-64, 64).map(lambda d: max(min(base + d, hi), -hi - 1))  # noqa: E731
        k = data.draw(st.one_of(st.integers(-hi - 1, hi), near(hi), near(-hi - 1)), "init units")
        sh = max(k.bit_length() - 53, 0)  # exact in float64
        k = (k >> sh) << sh
        inits.append(Fraction(k) / Fraction(2) ** acc.frac_bits)
    seed = data.draw(seeds, "seed")
    got = accumulate(a, b, MAC(fa, fb, acc), init=np.array([float(i) for i in inits]), seed=seed)
    want = [float(fixed_reference(values(fa, ar), values(fb, br), acc, inits[r], seed, r))
            for r, (ar, br) in enumerate(rows_of(a, b))]
    check_rows(got, want, lambda r: f"init {inits[r]}, a {values(fa, rows_of(a, b)[r][0])}, "
                                    f"b {values(fb, rows_of(a, b)[r][1])}")


@PROPERTY
@given(data=st.data())
def test_fixed_acc_equals_reference(data):
    """Products stay below 2^120 register units here (|product| < 2^64, frac_bits <= 56)."""
    check_fixed(data, max_frac=56)


@PROPERTY
@given(data=st.data())
def test_fixed_acc_fine_grids_equal_reference(data):
    """Any frac_bits: products may exceed the register by far (wrap keeps the exact residue)."""
    check_fixed(data, max_frac=119)


@PROPERTY
@given(data=st.data())
def test_int_acc_equals_reference(data):
    fa = data.draw(int_formats, "a format")
    fb = data.draw(st.one_of(st.just(fa), int_formats), "b format")
    acc = IntAcc(data.draw(st.integers(2, 64), "bits"), data.draw(st.sampled_from(["wrap", "saturate"]), "overflow"))
    a, b = data.draw(chains(fa, fb, max_k=20), "codes")
    lo, hi = -(2 ** (acc.bits - 1)), 2 ** (acc.bits - 1) - 1
    inits = []
    for _ in range(a.shape[0]):
        k = data.draw(st.one_of(st.integers(lo, hi), st.integers(0, 200).map(lambda d: hi - d),
                                st.integers(0, 200).map(lambda d: lo + d)), "init")
        sh = max(abs(k).bit_length() - 53, 0)
        k = max(min((k >> sh) << sh, hi), lo)
        k = k if float(k) == k else 0
        inits.append(k)
    got = accumulate(a, b, MAC(fa, fb, acc), init=np.array(inits, dtype=np.float64))
    assert got.dtype == np.int64
    for r, (ar, br) in enumerate(rows_of(a, b)):
        av = [int(v) for v in values(fa, ar)]
        bv = [int(v) for v in values(fb, br)]
        want = ref.int_acc(av, bv, bits=acc.bits, overflow=acc.overflow, init=inits[r])
        assert int(got[r]) == want, (acc, inits[r], av, bv, int(got[r]), want)
