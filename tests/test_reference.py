"""Tests of accel_sim/reference.py against oracles written elsewhere.

Oracles: numpy casts (float64 -> float32 / float16, correctly rounded to
nearest-even; integer wraparound; rint/floor/ceil/trunc), ml_dtypes casts
(float8 flavours and bfloat16), gmpy2/MPFR (directed and nearest rounding with
subnormals, fused multiply-add), the decimal module (ties-away), published
SplitMix64 outputs, and measured NVIDIA tensor-core results (when the vectors
in ../shared are present).  Results are compared bit for bit.
"""

import decimal
import importlib.util
import math
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import gmpy2
import ml_dtypes
import numpy as np
import pytest

_path = Path(__file__).resolve().parents[1] / "accel_sim" / "reference.py"
_spec = importlib.util.spec_from_file_location("accel_sim_reference_under_test", _path)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

NAN = float("nan")
INF = float("inf")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def bits(v):
    """binary64 bit pattern of v (any NaN maps to one token)."""
    v = float(v)
    if math.isnan(v):
        return "nan"
    return int(np.float64(v).view(np.uint64))


def assert_same(got, want, inputs):
    """Bit-for-bit equality of two lists of floats; report the first misses."""
    assert len(got) == len(want) == len(inputs)
    bad = [(x, g, w) for x, g, w in zip(inputs, got, want) if bits(g) != bits(w)]
    assert not bad, f"{len(bad)} mismatches (input, reference, oracle), first: {bad[:5]}"


def grid(e, m, style="ieee"):
    return ref.float_format_params(e, m, style=style)


def random_floats(rng, n, lo, hi, sig_bits=53):
    """n floats with random sign, binade 2^[lo, hi) and sig_bits-bit significands."""
    k = rng.integers(2 ** (sig_bits - 1), 2**sig_bits, size=n, dtype=np.uint64)
    e = rng.integers(lo, hi, size=n)
    s = rng.choice([-1.0, 1.0], size=n)
    return [float(si * math.ldexp(int(ki), int(ei) - sig_bits + 1)) for si, ki, ei in zip(s, k, e)]


SPECIALS = [0.0, -0.0, INF, -INF, NAN]


def mpfr_context(e, m, rnd):
    """An MPFR context emulating the IEEE-style (e, m) grid with subnormals.

    MPFR writes x = 0.1b... * 2^E, i.e. E = (IEEE exponent) + 1, so
    emax_mpfr = emax + 1; with subnormalize=True, emin_mpfr is the E of the
    smallest subnormal 2^(emin - m), i.e. emin - m + 1.  (Checked against
    gmpy2.ieee() and numpy's float16 cast in test_mpfr_context_matches_numpy.)
    """
    p = grid(e, m)
    return gmpy2.context(precision=m + 1, emin=p["emin"] - m + 1, emax=p["emax"] + 1,
                         subnormalize=True, round=rnd)


MPFR_MODES = {"rne": gmpy2.RoundToNearest, "rtz": gmpy2.RoundToZero,
              "rup": gmpy2.RoundUp, "rdn": gmpy2.RoundDown}


def mp(x):
    """Exact mpfr of a Python float (binary64, default 53-bit context)."""
    return gmpy2.mpfr(x, 53)


# ---------------------------------------------------------------------------
# random numbers
# ---------------------------------------------------------------------------

def test_mix64_matches_published_splitmix64():
    # SplitMix64 (Vigna) outputs mix64(seed + k * 0x9E3779B97F4A7C15), k = 1, 2, ...
    golden = 0x9E3779B97F4A7C15
    published = {
        0: [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F],
        1234567: [6457827717110365317, 3203168211198807973, 9817491932198370423],
    }
    for seed, outs in published.items():
        assert [ref.mix64((seed + k * golden) % 2**64) for k in (1, 2, 3)] == outs
    # rand32's first stage is the first SplitMix64 output of the seed.
    z0 = 0xE220A8397B1DCDAF
    z1 = ref.mix64(z0 ^ ((5 * 0xD1B54A32D192ED03) % 2**64))
    z2 = ref.mix64((z1 + 7 * 0xAEF17502108EF2D9) % 2**64)
    assert ref.rand32(0, 5, 7) == z2 >> 32


def test_rand32_deterministic_and_spread():
    a = [ref.rand32(42, i, s) for i in range(50) for s in range(4)]
    b = [ref.rand32(42, i, s) for i in range(50) for s in range(4)]
    assert a == b
    assert all(0 <= r < 2**32 for r in a)
    assert len(set(a)) == len(a)
    assert ref.rand32(43, 0, 0) != ref.rand32(42, 0, 0)
    assert ref.rand32(2**64 - 1, 2**64 - 1, 2**64 - 1) < 2**32
    with pytest.raises(ValueError):
        ref.rand32(-1, 0)
    # Uniformity of the top bit and of the value, loosely (deterministic data).
    draws = np.array([ref.rand32(7, i) for i in range(4000)], dtype=np.float64) / 2**32
    assert abs(draws.mean() - 0.5) < 3 * math.sqrt(1 / 12 / 4000)


# ---------------------------------------------------------------------------
# format parameters vs ml_dtypes / numpy finfo
# ---------------------------------------------------------------------------

FLOAT_DTYPES = {
    "e5m2": ml_dtypes.float8_e5m2,
    "e4m3": ml_dtypes.float8_e4m3,
    "e3m4": ml_dtypes.float8_e3m4,
    "e4m3fn": ml_dtypes.float8_e4m3fn,
    "e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "bf16": ml_dtypes.bfloat16,
    "fp16": np.float16,
}


@pytest.mark.parametrize("name", sorted(FLOAT_DTYPES))
def test_format_params_match_finfo(name):
    _, e, m, style = ref.FORMATS[name]
    p = ref.float_format_params(e, m, style=style)
    fi = ml_dtypes.finfo(FLOAT_DTYPES[name])
    assert p["man_bits"] == fi.nmant
    assert p["max_sig"] * 2.0 ** (p["emax"] - m) == float(fi.max)
    assert 2.0 ** p["emin"] == float(fi.smallest_normal)
    assert 2.0 ** (p["emin"] - m) == float(fi.smallest_subnormal)


# ---------------------------------------------------------------------------
# round_float (rne) vs numpy casts
# ---------------------------------------------------------------------------

def _float32_midpoints(rng, n):
    codes = rng.integers(0, 0x7F7FFFFF, size=n, dtype=np.uint32)
    lo = codes.view(np.float32).astype(np.float64)
    hi = (codes + 1).view(np.float32).astype(np.float64)
    s = rng.choice([-1.0, 1.0], size=n)
    mids = [float(si * (a + b) / 2) for si, a, b in zip(s, lo, hi)]  # exact in binary64
    fmax = float(np.finfo(np.float32).max)
    ulp = 2.0 ** (127 - 23)
    return mids + [fmax + ulp / 2, -(fmax + ulp / 2), fmax + ulp / 2 - 2.0**50, 2.0**-150,
                   -(2.0**-150), 3 * 2.0**-150, 2.0**-150 + 2.0**-200]


def test_round_float_matches_numpy_float32():
    rng = np.random.default_rng(1)
    xs = (random_floats(rng, 3000, -155, 131) + random_floats(rng, 500, -128, -120)
          + _float32_midpoints(rng, 1500) + SPECIALS)
    p = grid(8, 23)
    got = [ref.round_float(x, **p) for x in xs]
    with np.errstate(over="ignore"):
        want = np.array(xs, dtype=np.float64).astype(np.float32).astype(np.float64).tolist()
    assert_same(got, want, xs)


def test_round_float_matches_numpy_float16():
    rng = np.random.default_rng(2)
    finite = np.arange(0, 0x7C00, dtype=np.uint16).view(np.float16).astype(np.float64)
    mids = ((finite[:-1] + finite[1:]) / 2).tolist()
    mids += [65504 + 16.0, 65504 + 16.0 - 2.0**-30, 2.0**-25, 2.0**-25 + 2.0**-60]
    mids += [-v for v in mids[::7]]
    xs = random_floats(rng, 4000, -27, 18) + mids + SPECIALS
    p = grid(5, 10)
    got = [ref.round_float(x, **p) for x in xs]
    with np.errstate(over="ignore"):
        want = np.array(xs, dtype=np.float64).astype(np.float16).astype(np.float64).tolist()
    assert_same(got, want, xs)


# ---------------------------------------------------------------------------
# encode_value vs ml_dtypes (nearest-even, non-saturating)
# ---------------------------------------------------------------------------

def _format_inputs(rng, name, n=1500):
    """float32 inputs around the format's whole range, plus exact midpoints."""
    dtype = FLOAT_DTYPES[name]
    fi = ml_dtypes.finfo(dtype)
    lo = int(math.log2(float(fi.smallest_subnormal))) - 3
    hi = min(int(math.log2(float(fi.max))) + 3, 128)  # stay inside binary32
    xs = np.array(random_floats(rng, n, lo, hi, sig_bits=24), dtype=np.float32)
    nbits = 16 if fi.bits == 16 else 8
    codes = np.arange(2**nbits, dtype=np.uint16 if nbits == 16 else np.uint8)
    with np.errstate(invalid="ignore"):  # NaN codes
        vals = codes.view(dtype).astype(np.float64)
    vals = np.unique(vals[np.isfinite(vals)])
    if nbits == 16:
        vals = rng.choice(vals, size=600, replace=False)
        vals.sort()
    mids = (vals[:-1] + vals[1:]) / 2
    top = float(fi.max)
    ulp_top = top - float(np.nextafter(dtype(top), dtype(0)).astype(np.float64))
    extra = [top + ulp_top / 2, -(top + ulp_top / 2), top + ulp_top, 2.0 * top,
             float(fi.smallest_subnormal) / 2, -float(fi.smallest_subnormal) / 2]
    with np.errstate(over="ignore"):  # bf16's max + ulp/2 is beyond binary32: inf
        extra = np.array(extra + SPECIALS, np.float32)
    return np.concatenate([xs, mids.astype(np.float32), extra])


@pytest.mark.parametrize("name", sorted(FLOAT_DTYPES))
def test_encode_value_matches_ml_dtypes(name):
    rng = np.random.default_rng(sum(map(ord, name)))
    x32 = _format_inputs(rng, name)
    with np.errstate(over="ignore", invalid="ignore"):
        want = x32.astype(FLOAT_DTYPES[name]).astype(np.float64).tolist()
    got = [ref.encode_value(float(x), name) for x in x32]
    assert_same(got, want, x32.tolist())


@pytest.mark.parametrize("name", sorted(FLOAT_DTYPES))
def test_encode_value_saturate(name):
    fmax = float(ml_dtypes.finfo(FLOAT_DTYPES[name]).max)
    for x in (INF, 2 * fmax, 1e300):
        assert bits(ref.encode_value(x, name, saturate=True)) == bits(fmax)
        assert bits(ref.encode_value(-x, name, saturate=True)) == bits(-fmax)
    assert math.isnan(ref.encode_value(NAN, name, saturate=True))
    # Saturation changes only overflowing values (compare with ml_dtypes).
    rng = np.random.default_rng(11)
    hi = min(int(math.log2(fmax)) + 2, 128)
    x32 = np.array(random_floats(rng, 300, -4, hi, sig_bits=24), np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        want = x32.astype(FLOAT_DTYPES[name]).astype(np.float64)
    got = [ref.encode_value(float(x), name, saturate=True) for x in x32]
    ok = np.isfinite(want)
    assert_same([g for g, o in zip(got, ok) if o], want[ok].tolist(), x32[ok].tolist())
    assert all(abs(g) == fmax for g, o in zip(got, ok) if not o)


# ---------------------------------------------------------------------------
# directed rounding vs MPFR
# ---------------------------------------------------------------------------

def test_mpfr_context_matches_numpy():
    """The MPFR emulation of a grid (used below as the oracle) is right."""
    for e, m, ieee_bits in ((5, 10, 16), (8, 23, 32)):
        c = mpfr_context(e, m, gmpy2.RoundToNearest)
        ie = gmpy2.ieee(ieee_bits)
        assert (c.precision, c.emin, c.emax) == (ie.precision, ie.emin, ie.emax)
    rng = np.random.default_rng(3)
    xs = random_floats(rng, 2000, -27, 18)
    xs += [2.0**-25, 3 * 2.0**-25, 65520.0, -65520.0, 65519.0]
    c = mpfr_context(5, 10, gmpy2.RoundToNearest)
    got = [float(c.plus(mp(x))) for x in xs]
    with np.errstate(over="ignore"):
        want = np.array(xs).astype(np.float16).astype(np.float64).tolist()
    assert_same(got, want, xs)


@pytest.mark.parametrize("mode", sorted(MPFR_MODES))
@pytest.mark.parametrize("em", [(5, 10), (8, 7), (4, 3)])
def test_round_float_matches_mpfr(mode, em):
    e, m = em
    p = grid(e, m)
    rng = np.random.default_rng(e * 100 + m + len(mode))
    xs = random_floats(rng, 1500, p["emin"] - m - 3, p["emax"] + 3)
    # values just around grid points and midpoints, in and out of range
    xs += random_floats(rng, 500, p["emin"] - m - 3, p["emax"] + 3, sig_bits=m + 2)
    xs += [math.ldexp(1, p["emin"] - m - 1), math.ldexp(1, p["emin"] - m - 2),
           p["max_sig"] * 2.0 ** (p["emax"] - m), math.ldexp(1, p["emax"] + 1)]
    xs += [-x for x in xs[-4:]]
    ctx = mpfr_context(e, m, MPFR_MODES[mode])
    want = [float(ctx.plus(mp(x))) for x in xs]
    got = [ref.round_float(x, **p, rounding=mode) for x in xs]
    assert_same(got, want, xs)


def test_round_float_rna_matches_decimal_half_up():
    """Ties-away vs decimal ROUND_HALF_UP on the exact scaled value x / ulp."""
    p = grid(5, 10)
    rng = np.random.default_rng(4)
    xs = random_floats(rng, 1500, -20, 15, sig_bits=12) + random_floats(rng, 500, -20, 15)
    ctx = decimal.Context(prec=200, rounding=decimal.ROUND_HALF_UP)
    for x in xs:
        e = max(math.frexp(x)[1] - 1, p["emin"])
        ulp = 2.0 ** (e - 10)
        k = ctx.to_integral_value(ctx.divide(decimal.Decimal(x), decimal.Decimal(ulp)))
        want = float(k) * ulp
        got = ref.round_float(x, **p, rounding="rna")
        if abs(want) > 65504:
            want = math.copysign(INF, x)
        assert bits(got) == bits(want if want != 0 else math.copysign(0.0, x)), x


def test_round_to_odd_then_nearest_is_nearest():
    """Boldo-Melquiond: rounding to odd with 2 extra bits, then to nearest-even,
    equals direct nearest-even (numpy's float16 cast is the oracle)."""
    rng = np.random.default_rng(5)
    xs = random_floats(rng, 3000, -27, 15) + random_floats(rng, 1000, -27, 15, sig_bits=14)
    wide = dict(man_bits=12, emin=-14, emax=40, max_sig=2**13 - 1)
    got = [ref.round_float(ref.round_float(x, **wide, rounding="rto"), **grid(5, 10))
           for x in xs]
    want = np.array(xs).astype(np.float16).astype(np.float64).tolist()
    assert_same(got, want, xs)


def test_round_float_hand_cases():
    p16 = grid(5, 10)
    # round to odd: 1 + 2^-11 (between 1 and 1 + 2^-10) -> 1 + 2^-10 (odd significand)
    assert ref.round_float(1 + 2.0**-11, **p16, rounding="rto") == 1 + 2.0**-10
    assert ref.round_float(1 + 2.0**-9 + 2.0**-12, **p16, rounding="rto") == 1 + 3 * 2.0**-10
    assert ref.round_float(1 + 2.0**-9, **p16, rounding="rto") == 1 + 2.0**-9  # exact
    # rto overflow goes to max (it never rounds away from zero)
    assert ref.round_float(1e6, **p16, rounding="rto") == 65504.0
    # no subnormals: below 2^-14 flushes to a zero of x's sign; rounding up
    # into 2^-14 keeps the normal value.
    kw = dict(p16, subnormals=False)
    assert bits(ref.round_float(2.0**-15, **kw)) == bits(0.0)
    assert bits(ref.round_float(-(2.0**-15) * 1.9, **kw)) == bits(-0.0)
    assert ref.round_float(2.0**-14 * (1 - 2.0**-12), **kw) == 2.0**-14
    assert ref.round_float(-(2.0**-14) * (1 - 2.0**-12), **kw, rounding="rdn") == -(2.0**-14)
    assert bits(ref.round_float(2.0**-14 * (1 - 2.0**-12), **kw, rounding="rtz")) == bits(0.0)
    # without subnormals the spacing below 2^-14 is 2^(e - m) = 2^-25, so
    # 2^-14 - 2^-25 is exact on that grid and flushes (on the subnormal grid,
    # spacing 2^-24, it would be a tie rounding up to 2^-14); rup lifts it.
    assert bits(ref.round_float(2.0**-14 - 2.0**-25, **kw)) == bits(0.0)
    assert ref.round_float(2.0**-14 - 2.0**-25, **p16) == 2.0**-14
    assert ref.round_float(2.0**-14 - 2.0**-26, **kw, rounding="rup") == 2.0**-14
    # overflow policies
    assert math.isnan(ref.round_float(70000.0, **p16, overflow="nan"))
    assert ref.round_float(-70000.0, **p16, overflow="nan", rounding="rup") == -65504.0
    assert ref.round_float(-INF, **p16, overflow="saturate") == -65504.0
    assert math.isnan(ref.round_float(INF, **p16, overflow="nan"))
    # exact Fraction input
    assert ref.round_float(Fraction(1, 3), **p16) == float(np.float16(1 / 3))


# ---------------------------------------------------------------------------
# stochastic rounding
# ---------------------------------------------------------------------------

def test_sr_threshold_rule():
    p = grid(5, 10)
    x = 1 + 2.0**-12  # f = 1/4 of an ulp above 1
    t = math.ceil(Fraction(1, 4) * 2**32)
    assert ref.round_float(x, **p, rounding="sr", rand=t - 1) == 1 + 2.0**-10
    assert ref.round_float(x, **p, rounding="sr", rand=t) == 1.0
    assert ref.round_float(-x, **p, rounding="sr", rand=0) == -(1 + 2.0**-10)
    # f == 0 never rounds, whatever the random number
    for r in (0, 1, 2**31, 2**32 - 1):
        assert ref.round_float(1 + 2.0**-10, **p, rounding="sr", rand=r) == 1 + 2.0**-10
        assert ref.round_fixed(Fraction(5, 4), total_bits=8, frac_bits=2, rounding="sr",
                               rand=r) == Fraction(5, 4)
    # f = 2^-40 < 2^-32: ceil(f * 2^32) = 1, so only rand == 0 rounds up
    x = 1 + 2.0**-50
    assert ref.round_float(x, **p, rounding="sr", rand=0) == 1 + 2.0**-10
    assert ref.round_float(x, **p, rounding="sr", rand=1) == 1.0
    with pytest.raises(ValueError):
        ref.round_float(x, **p, rounding="sr", rand=2**32)


@pytest.mark.parametrize("x", [1 + 2.0**-12, 3.3, -0.7071067811865476, 1e-6])
def test_sr_is_unbiased(x):
    """Mean rounding error over 10^4 draws is within 3 standard errors of 0."""
    n = 10_000
    ys = [ref.encode_value(x, "fp16", rounding="sr", seed=12345, index=i) for i in range(n)]
    lo = float(np.float16(x))
    if lo == x:
        pytest.skip("exactly representable")
    vals = sorted(set(ys))
    assert len(vals) == 2 and vals[0] < x < vals[1]  # only the two neighbours occur
    errs = np.array(ys) - x
    f = (x - vals[0]) / (vals[1] - vals[0])
    se = (vals[1] - vals[0]) * math.sqrt(f * (1 - f) / n)
    assert abs(errs.mean()) < 3 * se
    # same seed and index -> same result; fixed seed is reproducible
    again = [ref.encode_value(x, "fp16", rounding="sr", seed=12345, index=i) for i in range(50)]
    assert again == ys[:50]


def test_sr_fixed_acc_is_unbiased():
    # product 1/3 rounded stochastically onto 2^-2: mean over elements -> 1/3
    n = 10_000
    vals = [ref.fixed_acc([Fraction(1, 3)], [1], int_bits=8, frac_bits=2, rounding="sr",
                          seed=9, element=i) for i in range(n)]
    assert set(vals) == {Fraction(1, 4), Fraction(1, 2)}
    mean = sum(vals) / n
    se = 0.25 * math.sqrt((1 / 3) * (2 / 3) / n)
    assert abs(float(mean) - 1 / 3) < 3 * se


# ---------------------------------------------------------------------------
# integer formats and fixed grids vs numpy integer arithmetic
# ---------------------------------------------------------------------------

NP_ROUND = {"rne": np.rint, "rtz": np.trunc, "rup": np.ceil, "rdn": np.floor}


@pytest.mark.parametrize("mode", sorted(NP_ROUND))
def test_encode_int_formats_match_numpy(mode):
    rng = np.random.default_rng(6)
    for name, lo, hi in (("int8", -128, 127), ("uint8", 0, 255), ("int4", -8, 7)):
        xs = np.concatenate([rng.uniform(lo - 3, hi + 3, 1500),
                             np.arange(lo - 3, hi + 3) + 0.5, np.arange(lo - 2, hi + 2)])
        r = NP_ROUND[mode](xs)
        for x, k in zip(xs.tolist(), r.tolist()):
            if lo <= k <= hi:
                assert bits(ref.encode_value(x, name, rounding=mode)) == bits(k + 0.0), (name, x)
            else:
                with pytest.raises(OverflowError):
                    ref.encode_value(x, name, rounding=mode)
            assert ref.encode_value(x, name, rounding=mode, saturate=True) == float(
                np.clip(k, lo, hi)), (name, x)
        with pytest.raises(ValueError):
            ref.encode_value(NAN, name)
        assert ref.encode_value(INF, name, saturate=True) == hi
        assert ref.encode_value(-INF, name, saturate=True) == lo
        with pytest.raises(OverflowError):
            ref.encode_value(INF, name)


def test_round_fixed_wrap_matches_numpy():
    rng = np.random.default_rng(7)
    xs = rng.uniform(-3000, 3000, 2000)
    # Q4.4 signed (8 bits, 4 fraction bits): wrap is numpy's int64 -> int8 cast
    k = np.rint(xs * 16).astype(np.int64)
    want = k.astype(np.int8).astype(np.int64)
    for x, w in zip(xs.tolist(), want.tolist()):
        assert ref.round_fixed(x, total_bits=8, frac_bits=4, overflow="wrap") == Fraction(w, 16)
    # unsigned 8-bit wrap
    want = k.astype(np.uint8).astype(np.int64)
    for x, w in zip(xs.tolist(), want.tolist()):
        got = ref.round_fixed(x, total_bits=8, frac_bits=4, signed=False, overflow="wrap")
        assert got == Fraction(w, 16)
    with pytest.raises(ValueError):
        ref.round_fixed(NAN, total_bits=8, frac_bits=0)
    with pytest.raises(OverflowError):
        ref.round_fixed(1000, total_bits=8, frac_bits=0, overflow="error")


@pytest.mark.parametrize("bits_,dtype", [(8, np.int8), (16, np.int16), (32, np.int32)])
def test_int_acc_wrap_matches_numpy(bits_, dtype):
    rng = np.random.default_rng(bits_)
    for _ in range(40):
        K = int(rng.integers(1, 300))
        a = rng.integers(-128, 128, K)
        b = rng.integers(-128, 128, K)
        init = int(rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max))
        # numpy fixed-width integer arithmetic wraps silently
        acc = np.array([init], dtype=dtype)
        for x, y in zip(a, b):
            acc = (acc + np.array([x * y]).astype(dtype)).astype(dtype)
        assert ref.int_acc(a.tolist(), b.tolist(), bits=bits_, init=init) == int(acc[0])


def test_int_acc_saturate_and_int24():
    rng = np.random.default_rng(8)
    for bits_ in (8, 16, 24):
        lo, hi = -(2 ** (bits_ - 1)), 2 ** (bits_ - 1) - 1
        for _ in range(40):
            K = int(rng.integers(1, 400))
            a = rng.integers(-128, 128, K).tolist()
            b = rng.integers(0, 128, K).tolist()  # biased sign so saturation happens
            acc_s = acc_w = 0
            for x, y in zip(a, b):
                acc_s = min(hi, max(lo, acc_s + x * y))
                acc_w = (acc_w + x * y) & (2**bits_ - 1)
                if acc_w >= 2 ** (bits_ - 1):
                    acc_w -= 2**bits_
            assert ref.int_acc(a, b, bits=bits_, overflow="saturate") == acc_s
            assert ref.int_acc(a, b, bits=bits_, overflow="wrap") == acc_w


@pytest.mark.parametrize("mode", ["rne", "rdn", "rtz", "rup"])
@pytest.mark.parametrize("overflow", ["wrap", "saturate"])
def test_fixed_acc_matches_numpy(mode, overflow):
    """Q-format operands (int8 codes * 2^-4), products rounded onto 2^-4,
    16-bit register (int_bits 12, frac_bits 4), in numpy int64/float64."""
    rng = np.random.default_rng(len(mode) + len(overflow))
    for _ in range(30):
        K = int(rng.integers(1, 200))
        ia = rng.integers(-128, 128, K)
        ib = rng.integers(-128, 128, K)
        prods = (ia * ib).astype(np.float64) / 16.0  # exact, in units of 2^-4
        q = NP_ROUND[mode](prods).astype(np.int64)
        reg = np.int64(0)
        for v in q:
            reg = reg + v
            if overflow == "wrap":
                reg = np.int64(np.array([reg]).astype(np.int16)[0])
            else:
                reg = np.clip(reg, -(2**15), 2**15 - 1)
        a = [Fraction(int(x), 16) for x in ia]
        b = [float(x) / 16 for x in ib]
        got = ref.fixed_acc(a, b, int_bits=12, frac_bits=4, rounding=mode, overflow=overflow)
        assert got == Fraction(int(reg), 16)


# ---------------------------------------------------------------------------
# float_acc vs chained MPFR fused multiply-add
# ---------------------------------------------------------------------------

def _operands(rng, K, lo, hi, sig_bits, p_zero=0.1):
    """Operand pairs with some zeros of both signs and exact cancellations."""
    a = random_floats(rng, K, lo, hi, sig_bits)
    b = random_floats(rng, K, lo, hi, sig_bits)
    for k in range(K):
        u = rng.random()
        if u < p_zero:
            a[k] = float(rng.choice([0.0, -0.0]))
        elif u < 2 * p_zero and k > 0:  # cancel the previous product exactly
            a[k], b[k] = -a[k - 1], b[k - 1]
    return a, b


def _mpfr_chain(a, b, init, ctx):
    acc = mp(init)
    for x, y in zip(a, b):
        acc = ctx.fma(mp(x), mp(y), acc)
    return float(acc)


FLOAT_ACC_CASES = [
    # (exp_bits, man_bits, operand binades lo..hi, operand significand bits, K)
    ("fp16-normal", 5, 10, -4, 3, 11, 24),
    ("fp16-overflow", 5, 10, 5, 9, 11, 12),
    ("fp16-subnormal", 5, 10, -14, -9, 11, 16),
    ("bf16-normal", 8, 7, -8, 8, 8, 24),
    ("bf16-subnormal", 8, 7, -70, -62, 8, 16),
    ("bf16-overflow", 8, 7, 60, 66, 8, 8),
    ("e4m3-acc", 4, 3, -5, 3, 4, 20),
    ("fp32-fp8ops", 8, 23, -9, 9, 4, 40),
]


@pytest.mark.parametrize("mode", sorted(MPFR_MODES))
@pytest.mark.parametrize("case", FLOAT_ACC_CASES, ids=[c[0] for c in FLOAT_ACC_CASES])
def test_float_acc_matches_mpfr_fma(case, mode):
    _, e, m, lo, hi, sb, K = case
    ctx = mpfr_context(e, m, MPFR_MODES[mode])
    rng = np.random.default_rng(zlib.crc32(f"{case[0]}/{mode}".encode()))
    inputs, got, want = [], [], []
    for trial in range(40):
        a, b = _operands(rng, K, lo, hi, sb)
        init = float(rng.choice([0.0, -0.0])) if trial % 3 == 0 else float(
            ctx.plus(mp(random_floats(rng, 1, lo * 2, hi * 2)[0])))
        inputs.append((a, b, init))
        got.append(ref.float_acc(a, b, exp_bits=e, man_bits=m, rounding=mode, init=init))
        want.append(_mpfr_chain(a, b, init, ctx))
    assert_same(got, want, inputs)


@pytest.mark.parametrize("mode", sorted(MPFR_MODES))
def test_float_acc_zeros_and_specials_match_mpfr(mode):
    ctx = mpfr_context(5, 10, MPFR_MODES[mode])
    vals = [0.0, -0.0, 1.0, -1.0, 0.5, INF, -INF, NAN]
    cases = []
    for x in vals:
        for y in vals:
            for init in (0.0, -0.0, 1.0, -0.5, INF, -INF, NAN):
                cases.append(([x], [y], init))
    cases += [([1.0, -1.0], [1.0, 1.0], 0.0), ([1.0, 1.0], [1.0, -1.0], -0.0),
              ([-0.0, 0.0], [1.0, 1.0], -0.0), ([65504.0, -65504.0], [2.0, 2.0], 0.0),
              ([INF, 1.0], [1.0, -INF], 0.0), ([1.0, 0.0], [1.0, INF], 0.0)]
    got = [ref.float_acc(a, b, exp_bits=5, man_bits=10, rounding=mode, init=i) for a, b, i in cases]
    want = [_mpfr_chain(a, b, i, ctx) for a, b, i in cases]
    assert_same(got, want, cases)


def test_float_acc_hand_cases():
    kw = dict(exp_bits=5, man_bits=10)
    assert ref.float_acc([], [], **kw, init=-0.0) == 0.0 and math.copysign(1, ref.float_acc(
        [], [], **kw, init=-0.0)) < 0
    # one rounding per step: 2048 + 1 rounds to 2048 (ties to even) every time
    assert ref.float_acc([1.0] * 5, [1.0] * 5, **kw, init=2048.0) == 2048.0
    # but rup climbs by an ulp each step
    assert ref.float_acc([1.0] * 5, [1.0] * 5, **kw, init=2048.0, rounding="rup") == 2058.0
    # no subnormals: the sum 2^-15 flushes to +0 each step
    assert bits(ref.float_acc([2.0**-8] * 3, [2.0**-7] * 3, **kw, subnormals=False)) == bits(0.0)
    # saturating accumulator
    assert ref.float_acc([300.0] * 4, [300.0] * 4, **kw, overflow="saturate") == 65504.0


# ---------------------------------------------------------------------------
# block_fma
# ---------------------------------------------------------------------------

BLOCK_KW = dict(a_emin=-14, b_emin=-14, acc_exp_bits=8, acc_man_bits=23)


@pytest.mark.parametrize("mode", ["rtz", "rne"])
def test_block_fma_one_term_wide_alignment_is_float_acc(mode):
    """terms=1 with an alignment wider than any exponent gap is a plain fused
    multiply-add chain, i.e. float_acc (and MPFR's fma)."""
    rng = np.random.default_rng(20 + len(mode))
    ctx = mpfr_context(8, 23, MPFR_MODES[mode])
    for trial in range(60):
        a, b = _operands(rng, 16, -14, 15, 11)
        init = [0.0, -0.0, 1.5, -3.25e-3][trial % 4]
        x = ref.block_fma(a, b, terms=1, align_bits=300, **BLOCK_KW, acc_rounding=mode, init=init)
        y = ref.float_acc(a, b, exp_bits=8, man_bits=23, rounding=mode, init=init)
        z = _mpfr_chain(a, b, init, ctx)
        assert bits(x) == bits(y) == bits(z), (a, b, init)


@pytest.mark.parametrize("mode", sorted(MPFR_MODES))
@pytest.mark.parametrize("terms", [2, 4, 8])
def test_block_fma_wide_alignment_matches_mpfr_block_sum(terms, mode):
    """With a wide alignment nothing is truncated: each block is the exact sum
    of the accumulator and `terms` products (zero padded), rounded once."""
    rng = np.random.default_rng(terms * 10 + len(mode))
    ctx = mpfr_context(5, 10, MPFR_MODES[mode])
    exact = gmpy2.context(precision=4000, round=MPFR_MODES[mode])  # exact for these data
    kw = dict(a_emin=-14, b_emin=-14, acc_exp_bits=5, acc_man_bits=10)
    for trial in range(40):
        K = int(rng.integers(1, 3 * terms))
        a, b = _operands(rng, K, -10, 5, 11, p_zero=0.2)
        init = [0.0, -0.0, 0.75, -1024.0][trial % 4]
        got = ref.block_fma(a, b, terms=terms, align_bits=400, **kw, acc_rounding=mode, init=init)
        pad = -K % terms
        a2, b2 = a + [0.0] * pad, b + [0.0] * pad
        acc = mp(init)
        for blk in range(len(a2) // terms):
            s = acc
            for i in range(blk * terms, (blk + 1) * terms):
                s = exact.add(s, exact.mul(mp(a2[i]), mp(b2[i])))
            acc = ctx.plus(s)
        assert bits(got) == bits(float(acc)), (a, b, init)


def test_block_fma_hand_cases():
    kw = dict(BLOCK_KW, acc_rounding="rtz")
    # (1) Truncation of a small term.  Products 1*1 (exponent 0) and
    # 0.09375*1 = 1.5*2^-4 (exponent -4); E = 0, F = 3 -> grid 2^-3 = 0.125.
    # floor(0.09375 / 0.125) = 0, so the small product vanishes: 1.0.
    assert ref.block_fma([1.0, 0.09375], [1.0, 1.0], terms=2, align_bits=3, **kw) == 1.0
    # 0.3125 / 0.125 = 2.5 -> 2 -> 0.25: 1.25 (exact would be 1.3125)
    assert ref.block_fma([1.0, 0.3125], [1.0, 1.0], terms=2, align_bits=3, **kw) == 1.25
    # truncation is toward zero, not floor: -0.3125 -> -0.25, so 0.75
    # (floor would give -0.375 -> 0.625; exact 0.6875)
    assert ref.block_fma([1.0, -0.3125], [1.0, 1.0], terms=2, align_bits=3, **kw) == 0.75
    # (2) Products are not normalised: 1.5*1.5 = 2.25 has exponent 0 + 0 = 0,
    # so with F = 2 the grid is 2^-2 and 2.25 is kept exactly (a normalised
    # exponent 1 would give the grid 0.5 and 2.0); 0.125 (exponent -3) -> 0.
    assert ref.block_fma([1.5, 0.125], [1.5, 1.0], terms=2, align_bits=2, **kw) == 2.25
    # (3) The accumulator is truncated too: acc = 1 + 2^-20 (exponent 0),
    # product 1*1; E = 0, F = 13: acc -> 1.0, sum 2.0 (fp32 rtz).
    assert ref.block_fma([1.0], [1.0], terms=1, align_bits=13, **kw, init=1 + 2.0**-20) == 2.0
    # ... and a product with a larger exponent shifts the grid: acc 1 + 2^-20,
    # product 2^4 * 1 -> E = 4, grid 2^-9: acc -> 1.0, sum 17.0.
    assert ref.block_fma([16.0], [1.0], terms=1, align_bits=13, **kw, init=1 + 2.0**-20) == 17.0
    # (4) Operand exponents are clamped at their format's emin: a = 2^-16 is
    # a subnormal of fp16 (emin -14): |a| = 0.25 * 2^-14, exponent -14, so
    # the product 2^-16 * 1 has exponent -14 + 0 and significand 0.25.  It is
    # the only term, so E = -14; with F = 1 the grid is 2^-15 and 2^-16
    # truncates to 0: the sum is an exact zero from a non-zero term -> +0.
    # With a_emin = -30 the exponent is -16 = E, the grid 2^-17, and the
    # product survives; with F = 2 and a_emin = -14 it survives too.
    z = ref.block_fma([2.0**-16], [1.0], terms=1, align_bits=1, **kw)
    assert bits(z) == bits(0.0)
    assert ref.block_fma([2.0**-16], [1.0], terms=1, align_bits=1,
                         **dict(kw, a_emin=-30)) == 2.0**-16
    assert ref.block_fma([2.0**-16], [1.0], terms=1, align_bits=2, **kw) == 2.0**-16
    # With the accumulator 2^-14 (exponent -14) and F = 1: 2^-14 + 0.
    assert ref.block_fma([2.0**-16], [1.0], terms=1, align_bits=1, **kw,
                         init=2.0**-14) == 2.0**-14
    # (5) K padding.  acc format e5m2-like grid (exp 5, man 2: 8, 10, 12, 14
    # at exponent 3), rtz, products 3,3,3,2 | 3 with terms = 4, K = 5:
    # block 0: 0 + 11 -> 10 (rtz); block 1: 10 + 3 + 0 + 0 + 0 = 13 -> 12.
    # (One exact sum would be 14.)  Padding equals passing the zeros explicitly.
    kw2 = dict(a_emin=-14, b_emin=-14, acc_exp_bits=5, acc_man_bits=2, acc_rounding="rtz")
    a, b = [3.0, 3.0, 3.0, 2.0, 3.0], [1.0] * 5
    assert ref.block_fma(a, b, terms=4, align_bits=10, **kw2) == 12.0
    assert ref.block_fma(a + [0.0] * 3, b + [0.0] * 3, terms=4, align_bits=10, **kw2) == 12.0
    assert ref.block_fma(a, b, terms=8, align_bits=10, **kw2) == 14.0
    # (6) Specials.
    assert math.isnan(ref.block_fma([INF, 1.0], [0.0, 1.0], terms=2, align_bits=24, **kw))
    assert math.isnan(ref.block_fma([INF, -INF], [1.0, 1.0], terms=2, align_bits=24, **kw))
    assert math.isnan(ref.block_fma([1.0], [1.0], terms=2, align_bits=24, **kw, init=NAN))
    assert ref.block_fma([INF, 1e4], [1.0, 1.0], terms=2, align_bits=24, **kw) == INF
    assert ref.block_fma([1.0], [1.0], terms=2, align_bits=24, **kw, init=-INF) == -INF
    # (7) Signed zeros: all zeros negative -> -0; padding adds +0*+0
    # products, so a partial block of negative zeros gives +0 (rtz).
    z = ref.block_fma([-0.0, 0.0], [1.0, -1.0], terms=2, align_bits=24, **kw, init=-0.0)
    assert bits(z) == bits(-0.0)
    z = ref.block_fma([-0.0], [1.0], terms=2, align_bits=24, **kw, init=-0.0)
    assert bits(z) == bits(0.0)
    z = ref.block_fma([1.0, -1.0], [1.0, 1.0], terms=2, align_bits=24, **kw)
    assert bits(z) == bits(0.0)
    z = ref.block_fma([1.0, -1.0], [1.0, 1.0], terms=2, align_bits=24,
                      **dict(kw, acc_rounding="rdn"))
    assert bits(z) == bits(-0.0)


# Measured tensor-core results (Khattak & Mikaitis data set; see the README
# in ../shared/vectors/tensor-cores).  Published model parameters:
# (terms n, alignment F, output fraction bits, operand emin).
TC_DIR = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "tensor-cores"
TC_SETS = [
    ("V100", "fp16", 4, 23, 23, -14),
    ("A100", "fp16", 8, 24, 23, -14),
    ("A100", "bf16", 8, 24, 23, -126),
    ("Ada", "E4M3", 16, 13, 13, -6),
    ("Ada", "E5M2", 16, 13, 13, -14),
    ("L40S", "E4M3", 16, 13, 13, -6),
]


def _f32_hex(h):
    return struct.unpack(">f", bytes.fromhex(h))[0]


def _f32_bin(s):
    return struct.unpack(">f", int(s, 2).to_bytes(4, "big"))[0]


@pytest.mark.parametrize("tc", TC_SETS, ids=[f"{g}-{f}" for g, f, *_ in TC_SETS])
def test_block_fma_matches_measured_tensor_cores(tc):
    gpu, fmt, n, F, out_man, emin = tc
    d = TC_DIR / gpu / fmt
    if not d.is_dir():
        pytest.skip(f"{d} absent")
    step = 20  # every 20th case keeps the test fast
    rows = lambda name: (d / name).read_text().splitlines()[::step]  # noqa: E731
    A = [[_f32_hex(h) for h in line.split()] for line in rows(f"a_{gpu}_{fmt}.txt")]
    B = [[_f32_hex(h) for h in line.split()] for line in rows(f"b_{gpu}_{fmt}.txt")]
    C = [_f32_bin(s) for s in rows(f"c_{gpu}_fp32.txt")]
    D = [_f32_bin(s) for s in rows(f"d_{gpu}_fp32.txt")]
    kw = dict(terms=n, align_bits=F, a_emin=emin, b_emin=emin)
    got = [ref.block_fma(a, b, **kw, acc_exp_bits=8, acc_man_bits=out_man, acc_rounding="rtz",
                         init=c) for a, b, c in zip(A, B, C)]
    assert_same(got, D, list(zip(A, B, C)))
    f16 = d / f"d_{gpu}_fp16.txt"
    if f16.exists():
        D16 = [_f32_bin(s) for s in rows(f16.name)]
        got = [ref.block_fma(a, b, **kw, acc_exp_bits=5, acc_man_bits=10, acc_rounding="rne",
                             init=ref.encode_value(c, "fp16")) for a, b, c in zip(A, B, C)]
        assert_same(got, D16, list(zip(A, B, C)))
