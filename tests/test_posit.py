"""Posits posit8 (es=0, SoftPosit's posit8) and posit8es2 (Posit Standard 2022): decode of
every code and rne encode bit for bit against SoftPosit, the other rounding modes against
the standard's rounding rule written out below with exact Fractions, and MACs on posits."""
from __future__ import annotations

import bisect
import functools
import math
from fractions import Fraction

import numpy as np
import pytest
import softposit as sp

import accel_sim as acs
from accel_sim import reference as ref
from accel_sim.formats import PositFormat
from accel_sim.mac import MAC, FloatAcc

from conftest import assert_codes_equal, assert_values_equal, fmt

ES = {"posit8": 0, "posit8es2": 2}
MODES = ("rne", "rna", "rtz", "rup", "rdn", "rto")


def softposit_decode(name, code):
    if name == "posit8":
        p = sp.posit8_t()
        p.v = int(code)
        return sp.convertP8ToDouble(p)
    p = sp.posit_2_t()
    p.v = int(code) << 24
    return sp.convertPX2ToDouble(p)


def softposit_encode(name, x):
    return sp.convertDoubleToP8(float(x)).v if name == "posit8" else sp.convertDoubleToPX2(float(x), 8).v >> 24


def posit_value(code, n, es):
    """The standard's decoding, written out: an exact Fraction, or None for NaR."""
    code &= (1 << n) - 1
    if code == 0:
        return Fraction(0)
    if code == 1 << (n - 1):
        return None
    neg = code >> (n - 1)
    bits = format((-code if neg else code) & ((1 << n) - 1), f"0{n}b")[1:]
    run = len(bits) - len(bits.lstrip(bits[0]))
    regime = run - 1 if bits[0] == "1" else -run
    rest = bits[run + 1:]
    e = int(rest[:es].ljust(es, "0") or "0", 2)
    frac = rest[es:]
    v = (1 + Fraction(int(frac or "0", 2), 2 ** len(frac))) * Fraction(2) ** (regime * 2**es + e)
    return -v if neg else v


@functools.lru_cache(maxsize=None)
def positive_values(n, es):
    return [posit_value(c, n, es) for c in range(1 << (n - 1))]


def round_posit(x, n, es, mode):
    """The code of x (a nonzero Fraction) by the standard's rule: saturate at +-maxpos, never
    0; between neighbours u < |x| < w the tie point is the (n+1)-bit posit u's pattern + '1'."""
    top = (1 << (n - 1)) - 1
    mags = positive_values(n, es)
    ax = abs(x)
    if ax >= mags[top]:
        c = top
    elif ax <= mags[1]:
        c = 1
    else:
        u = bisect.bisect_right(mags, ax) - 1
        w = u + 1
        if mags[u] == ax:
            c = u
        else:
            mid = posit_value((u << 1) | 1, n + 1, es)
            away = {"rne": ax > mid or (ax == mid and w % 2 == 0), "rna": ax >= mid, "rtz": False,
                    "rup": x > 0, "rdn": x < 0, "rto": w % 2 == 1}[mode]
            c = w if away else u
    return (-c if x < 0 else c) & ((1 << n) - 1)


def encode_samples(rng, name, n_random=12000):
    """Log-uniform values over the whole range and 4 binades beyond each end, every value,
    every arithmetic midpoint and every (n+1)-bit pattern midpoint, their float64 neighbours."""
    f = fmt(name)
    top = f.max_scale + 4
    x = np.exp2(rng.uniform(-top, top, n_random))
    vals = np.array([float(posit_value(c, 8, ES[name])) for c in range(1, 128)])
    pattern_mids = np.array([float(posit_value(c, 9, ES[name])) for c in range(1, 256, 2)])
    mids = (vals[:-1] + vals[1:]) / 2
    core = np.concatenate([vals, mids, pattern_mids, [f.max * 1.5, f.max * 2, f.min_normal / 2, f.min_normal * 0.75]])
    core = np.concatenate([core, np.nextafter(core, 0), np.nextafter(core, np.inf)])
    x = np.concatenate([x, core])
    return np.concatenate([x, -x, [0.0, -0.0, 1e300, -1e300, 1e-300, 5e-324, np.finfo(np.float64).max]])


def test_independent_decoding_agrees_with_softposit():
    for c in range(256):
        assert posit_value(c, 8, 0) == (None if c == 128 else Fraction(softposit_decode("posit8", c)))
    for c in range(512):  # SoftPosit's pX2 takes any width: the 9-bit pattern midpoints too
        p = sp.posit_2_t()
        p.v = c << 23
        assert posit_value(c, 9, 2) == (None if c == 256 else Fraction(sp.convertPX2ToDouble(p)))


@pytest.mark.parametrize("name", list(ES))
def test_properties(name):
    f, es = fmt(name), ES[name]
    assert isinstance(f, PositFormat) and (f.bits, f.es, f.name) == (8, es, name)
    assert f.max == float(posit_value(0x7F, 8, es)) == 2.0 ** (6 << es)
    assert f.min_normal == f.min_subnormal == float(posit_value(1, 8, es)) == 1 / f.max
    assert f.min == -f.max and f.nar == 0x80 and not f.has_inf and f.has_nan
    assert f == PositFormat(8, es) and f != fmt("posit8es2" if es == 0 else "posit8")


@pytest.mark.parametrize("name", list(ES))
def test_decode_every_code_matches_softposit(name):
    f = fmt(name)
    codes = f.all_codes()
    got = f.decode(codes)
    real = codes != 0x80
    want = np.array([softposit_decode(name, c) for c in codes])
    assert_values_equal(got[real], want[real], codes[real])
    assert np.isnan(got[0x80])  # NaR (SoftPosit's double conversion says inf or NaN)
    assert_values_equal(f.decode(np.tile(codes, 30))[real.nonzero()[0]], want[real])


@pytest.mark.parametrize("name", list(ES))
def test_encode_matches_softposit(name, rng):
    f = fmt(name)
    x = encode_samples(rng, name)
    assert x.size >= 10**4
    got = f.encode(x)
    assert got.dtype == np.uint8
    want = np.array([softposit_encode(name, v) for v in x])
    assert_codes_equal(got, want, x)
    assert_codes_equal(f.encode(x, saturate=True), want, x)
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    x32 = x32[np.isfinite(x32)]
    assert_codes_equal(f.encode(x32), [softposit_encode(name, float(v)) for v in x32], x32)


@pytest.mark.parametrize("name", list(ES))
def test_specials(name):
    f = fmt(name)
    x = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e300, -1e300, 1e-300, -1e-300])
    want = [0x80, 0x80, 0x80, 0x80, 0, 0, 0x7F, 0x81, 0x01, 0xFF]
    for mode in MODES:
        assert f.encode(x, rounding=mode).tolist() == want
    with pytest.raises(ValueError, match="rounding 'sr' is not supported for " + name):
        f.encode(x, rounding="sr")


def test_tapered_ties_are_pattern_ties():
    """posit8es2 between 2^20 and 2^24 (codes 0x7E, 0x7F): the tie is the 9-bit posit 2^22,
    not the arithmetic mean 8.5 * 2^20; 2^22 itself goes to the even code 0x7E."""
    f = fmt("posit8es2")
    assert f.decode(np.array([0x7E, 0x7F])).tolist() == [2.0**20, 2.0**24]
    x = np.array([2.0**22, 2.0**22 * 1.01, 2.0**22 * 0.99, 5 * 2.0**20])
    assert f.encode(x).tolist() == [0x7E, 0x7F, 0x7E, 0x7F]
    assert [softposit_encode("posit8es2", v) for v in x] == [0x7E, 0x7F, 0x7E, 0x7F]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(ES))
def test_rounding_modes_match_the_standards_rule(name, mode, rng):
    f, es = fmt(name), ES[name]
    x = encode_samples(rng, name, n_random=1500)
    x = x[x != 0]
    got = f.encode(x, rounding=mode)
    want = [round_posit(Fraction(float(v)), 8, es, mode) for v in x]
    assert_codes_equal(got, want, x)
    if mode == "rne":
        assert_codes_equal(got, [softposit_encode(name, v) for v in x], x)


@pytest.mark.parametrize("bad", [dict(n=2), dict(n=17), dict(es=4), dict(es=-1)])
def test_bad_posit_parameters(bad):
    with pytest.raises(ValueError, match=list(bad)[0]):
        PositFormat(**bad)
    with pytest.raises(TypeError, match="n must be an integer"):
        PositFormat(8.0)


@pytest.mark.parametrize("name", list(ES))
def test_posit_mac_accumulates_exact_products(name, rng):
    f = fmt(name)
    real = f.all_codes()[f.all_codes() != 0x80]
    a, b = rng.choice(real, (30, 60)), rng.choice(real, (30, 60))
    for acc in ("fp32", FloatAcc(5, 6, "rtz")):
        mac = MAC(name, name, acc)
        got = acs.accumulate(a, b, mac)
        spec = dict(exp_bits=mac.acc.exp_bits, man_bits=mac.acc.man_bits, rounding=mac.acc.rounding)
        want = [ref.float_acc(f.decode(a[r]).tolist(), f.decode(b[r]).tolist(), **spec) for r in range(30)]
        assert_values_equal(got, want)
    nar = acs.accumulate(np.array([0x40, 0x80, 0x40], np.uint8), np.array([0x40] * 3, np.uint8), MAC(name, name, "fp32"))
    assert math.isnan(nar)
    with pytest.raises(ValueError, match="IntAcc needs integer operands"):
        MAC(name, name, "int32")


def test_posit16_matches_softposit(rng):
    """posit16 (n=16, es=1, SoftPosit's posit16): every code decodes, and log-uniform values
    over the whole range and beyond encode, bit for bit as SoftPosit does."""
    f = fmt("posit16")
    codes = np.arange(1 << 16, dtype=np.uint16)
    got = f.decode(codes)
    for c in codes[::7].tolist() + [0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF]:
        p = sp.posit16_t()
        p.v = int(c)
        want = sp.convertP16ToDouble(p)
        assert (np.isnan(got[c]) and c == 0x8000) or got[c] == want, c
    x = np.exp2(rng.uniform(-62, 62, 20000)) * rng.choice([-1.0, 1.0], 20000)
    want = np.array([sp.convertDoubleToP16(float(v)).v for v in x], dtype=np.uint16)
    assert_codes_equal(f.encode(x), want)
    assert f.max == 2.0 ** 28 and f.min_normal == 2.0 ** -28
