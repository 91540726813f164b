"""Shared fixtures and helpers for the format, rounding and quantization tests.

Oracles used across the files: ml_dtypes (float8_* / bfloat16 / int4), numpy (float16,
float32, int8/uint8, rint), and the exact Fraction model in accel_sim/reference.py.
Everything is compared bit for bit: float64 values through their uint64 patterns (so signed
zeros count), codes as integers, NaN by class (and sign where the contract defines it).
"""
from __future__ import annotations

import math
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import accel_sim as acs  # noqa: E402
from accel_sim._native import lib  # noqa: E402
from accel_sim.formats import FloatFormat, IntFormat  # noqa: E402

# Small test shapes split among every thread count asked for (the engine's default leaves
# work under its grain on one thread; the bits do not depend on it).
lib.acs_set_thread_grain(0)

# Named formats and their independent oracle dtypes.
FLOAT8_DTYPES = {
    "e5m2": ml_dtypes.float8_e5m2,
    "e4m3": ml_dtypes.float8_e4m3,
    "e4m3fn": ml_dtypes.float8_e4m3fn,
    "e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "e3m4": ml_dtypes.float8_e3m4,
}
FLOAT_DTYPES = dict(FLOAT8_DTYPES, bf16=ml_dtypes.bfloat16, fp16=np.float16)
INT_DTYPES = {"int8": np.int8, "uint8": np.uint8, "int4": ml_dtypes.int4}
INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int4": (-8, 7)}
FLOAT_NAMES = list(FLOAT_DTYPES)
INT_NAMES = list(INT_DTYPES)
NAMED = FLOAT_NAMES + INT_NAMES
DETERMINISTIC_MODES = ("rne", "rna", "rtz", "rup", "rdn")
ALL_MODES = ("rne", "rna", "rtz", "rup", "rdn", "rto", "sr")
FNUZ = ("e4m3fnuz", "e5m2fnuz")

# Public constructor calls that build a format equal to each registered name (a fresh object,
# with none of the encode tables the registry's instance may have cached).
FRESH = {
    "int8": lambda: IntFormat(8),
    "uint8": lambda: IntFormat(8, signed=False),
    "int4": lambda: IntFormat(4),
    "e5m2": lambda: FloatFormat(5, 2),
    "e4m3": lambda: FloatFormat(4, 3),
    "e4m3fn": lambda: FloatFormat(4, 3, inf=False, nan="fn"),
    "e4m3fnuz": lambda: FloatFormat(4, 3, inf=False, nan="fnuz"),
    "e5m2fnuz": lambda: FloatFormat(5, 2, inf=False, nan="fnuz"),
    "e3m4": lambda: FloatFormat(3, 4),
    "fp16": lambda: FloatFormat(5, 10),
    "bf16": lambda: FloatFormat(8, 7),
    "fp32": lambda: FloatFormat(8, 23),
}


def fmt(name):
    return acs.formats.get(name)


def fresh(name):
    f = FRESH[name]()
    assert f == acs.formats.get(name)
    return f


# ---------------------------------------------------------------------------------------
# bit-level comparison helpers
# ---------------------------------------------------------------------------------------

def f64bits(a):
    return np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)


def assert_codes_equal(got, want, inputs=None, what="codes"):
    got = np.asarray(got).astype(np.int64)
    want = np.asarray(want).astype(np.int64)
    assert got.shape == want.shape
    bad = np.flatnonzero(got.reshape(-1) != want.reshape(-1))
    if bad.size:
        i = bad[:8]
        msg = f"{bad.size} of {got.size} {what} differ; first (index, got, want"
        rows = [got.reshape(-1)[i], want.reshape(-1)[i]]
        if inputs is not None:
            msg += ", input"
            rows.append(np.asarray(inputs).reshape(-1)[i])
        raise AssertionError(msg + "): " + repr(list(zip(i.tolist(), *[r.tolist() for r in rows]))))


def assert_values_equal(got, want, inputs=None, nan_sign=True):
    """float64 arrays equal bit for bit; NaNs compared by class (and sign if nan_sign)."""
    got = np.asarray(got, dtype=np.float64).reshape(-1)
    want = np.asarray(want, dtype=np.float64).reshape(-1)
    assert got.shape == want.shape
    gn, wn = np.isnan(got), np.isnan(want)
    bad = gn != wn
    both = ~gn & ~wn
    bad[both] = f64bits(got[both]) != f64bits(want[both])
    if nan_sign:
        nn = gn & wn
        bad[nn] = np.signbit(got[nn]) != np.signbit(want[nn])
    idx = np.flatnonzero(bad)
    if idx.size:
        i = idx[:8]
        rows = [got[i].tolist(), want[i].tolist()]
        if inputs is not None:
            rows.append(np.asarray(inputs).reshape(-1)[i].tolist())
        raise AssertionError(f"{idx.size} of {got.size} values differ; first (index, got, want, input): "
                             + repr(list(zip(i.tolist(), *rows))))


def assert_bits(got, want, what=""):
    """float64 arrays equal bit for bit (NaN by class); integer arrays exactly."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    if got.dtype.kind in "iu" or want.dtype.kind in "iu":
        assert got.dtype.kind in "iu" and want.dtype.kind in "iu", (what, got.dtype, want.dtype)
        bad = np.flatnonzero((got != want).reshape(-1))
    else:
        g = np.ascontiguousarray(got, np.float64).reshape(-1)
        w = np.ascontiguousarray(want, np.float64).reshape(-1)
        gn, wn = np.isnan(g), np.isnan(w)
        bad = np.flatnonzero((gn != wn) | (~gn & ~wn & (g.view(np.uint64) != w.view(np.uint64))))
    if bad.size:
        i = bad[:6]
        raise AssertionError(f"{what}: {bad.size} of {got.size} differ; first (flat index, got, want): "
                             f"{list(zip(i.tolist(), got.reshape(-1)[i].tolist(), want.reshape(-1)[i].tolist()))}")


def assert_float_codes_match(got_codes, want_codes, code_dtype, oracle_dtype, inputs=None):
    """Codes equal, except that where the oracle gives a NaN only the NaN class and sign
    are compared (payloads are not part of the contract)."""
    got = np.asarray(got_codes).astype(code_dtype).reshape(-1)
    want = np.asarray(want_codes).astype(code_dtype).reshape(-1)
    with np.errstate(invalid="ignore"):
        gv = got.view(oracle_dtype).astype(np.float64)
        wv = want.view(oracle_dtype).astype(np.float64)
    wnan = np.isnan(wv)
    bad = np.where(wnan, ~np.isnan(gv) | (np.signbit(gv) != np.signbit(wv)), got != want)
    idx = np.flatnonzero(bad)
    if idx.size:
        i = idx[:8]
        rows = [got[i].tolist(), want[i].tolist(), gv[i].tolist(), wv[i].tolist()]
        if inputs is not None:
            rows.append(np.asarray(inputs).reshape(-1)[i].tolist())
        raise AssertionError(f"{idx.size} of {got.size} codes differ; first (index, got, want, got value, "
                             "want value, input): " + repr(list(zip(i.tolist(), *rows))))


# ---------------------------------------------------------------------------------------
# input generators
# ---------------------------------------------------------------------------------------

def float_grid_of(f):
    """Sorted non-negative finite values of a float or fixed format of at most 16 bits."""
    v = f.decode(f.all_codes())
    v = np.abs(v[np.isfinite(v)])
    return np.unique(v)


def overflow_threshold(f):
    """Midpoint between max and the next value of the unbounded grid."""
    if isinstance(f, FloatFormat):
        return f.max + math.ldexp(1.0, f.emax - f.man_bits - 1)
    return f.max + math.ldexp(1.0, -f.frac_bits - 1)


def edge_inputs(f, dtype):
    """Every value, every midpoint (incl. the overflow threshold) and each one's two
    neighbours in `dtype`, both signs, plus zeros, infinities, NaN and dtype subnormals."""
    g = float_grid_of(f)
    mids = (g[:-1] + g[1:]) / 2
    h = overflow_threshold(f) - f.max
    ext = [f.max + h, f.max + 2 * h, f.max + 3 * h]
    exact = np.concatenate([g, mids, ext])
    with np.errstate(over="ignore"):
        core = exact.astype(dtype)
    fits = np.isfinite(core)  # the values past bf16's threshold are beyond float32
    assert np.all(fits[:-3]) and np.all(core[fits].astype(np.float64) == exact[fits]), "edge values not exact"
    core = core[fits]
    hi = np.asarray(np.inf, dtype)
    lo = np.asarray(-np.inf, dtype)
    pts = np.concatenate([core, np.nextafter(core, hi), np.nextafter(core, lo)])
    pts = np.concatenate([pts, -pts])
    tiny = np.nextafter(np.zeros(4, dtype), hi) * np.asarray([1, 2, 3, 1000], dtype)
    info = np.finfo(dtype)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, info.max, -info.max,
                         info.tiny, -info.tiny], dtype)
    return np.concatenate([pts, tiny, -tiny, specials]).astype(dtype)


def random_patterns(rng, n, dtype):
    """Random bit patterns viewed as floats of `dtype` (float32 or float64)."""
    if dtype == np.float32:
        return rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    return rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False).view(np.float64)


def random_in_range(rng, n, f, dtype=np.float64, extra_exp=3):
    """Random values with random full-width significands and exponents spanning the format's
    range (a few binades beyond each end), both signs."""
    if isinstance(f, FloatFormat):
        lo_e, hi_e = f.emin - f.man_bits - extra_exp, f.emax + extra_exp
    else:
        lo_e, hi_e = -f.frac_bits - extra_exp, f.bits - f.frac_bits + extra_exp
    e = rng.integers(lo_e, hi_e + 1, n)
    m = rng.random(n) + 1.0
    v = np.ldexp(m, e) * rng.choice([-1.0, 1.0], n)
    with np.errstate(over="ignore"):  # bf16's top binades lie past float32's max
        return v.astype(dtype)


def mixed_inputs(rng, f, dtype, n_random):
    """Random patterns + random in-range values + the edge set, shuffled."""
    parts = [edge_inputs(f, dtype), random_patterns(rng, n_random // 2, dtype),
             random_in_range(rng, n_random - n_random // 2, f, dtype)]
    x = np.concatenate(parts)
    rng.shuffle(x)
    return x


def f64_to_f32_round_to_odd(x):
    """float64 -> float32 with round-to-odd (then any round-to-nearest to a format with at
    least two fewer significand bits is the correctly rounded result: Boldo & Melquiond)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        y = x.astype(np.float32)
    yb = y.astype(np.float64)
    inexact = np.isfinite(x) & (yb != x)
    t = np.where(inexact & (np.abs(yb) > np.abs(x)), np.nextafter(y, np.float32(0)), y)
    t = np.where(inexact & (t == 0), np.copysign(np.float32(0), x).astype(np.float32), t).astype(np.float32)
    bits = t.view(np.uint32).copy()
    bits[inexact] |= 1
    return bits.view(np.float32)


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name (stable across runs and orderings)."""
    import zlib
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def captured(monkeypatch):
    """The Figure each accel_sim.plot call saves (plot._save wrapped)."""
    from accel_sim import plot
    figs = []
    real = plot._save

    def spy(fig, canvas, path, dpi):
        figs.append(fig)
        return real(fig, canvas, path, dpi)

    monkeypatch.setattr(plot, "_save", spy)
    return figs
