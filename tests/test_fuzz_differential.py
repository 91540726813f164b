"""Differential fuzzing (hypothesis) of the C engine against the exact Fraction models in
accel_sim/reference.py.

1. GEMMs on the systolic array: random operand formats (FloatFormat with 2..5 exponent and
   0..4 fraction bits in the ieee / fn / fnuz styles, IntFormat of 2..8 bits), random
   accumulators (FloatAcc on small grids with every rounding mode including sr, IntAcc
   wrapping or saturating, FixedAcc, BlockFMA with few terms and align bits and an optional
   wider addend; now and then fp32 / bf16 / fp16 so that the exact fast paths and the vector
   kernels run too), an optional accumulator buffer of another kind, random shapes
   (M, N, K in 0..12), dataflows os / ws / is on arrays of 1..5 x 1..5 PEs, 1..4 engine
   threads, random seeds, and random codes (NaN, infinity and zero codes included) given as
   QTensors with scale 1:
   `Result.acc` must equal `reference.gemm_order` bit for bit (float64 through its bit
   pattern, so signed zeros count; NaN by class; integers exactly), and where the reference
   refuses (NaN or infinity into a fixed-point register) the array must raise ValueError.
2. Encoding: random FloatFormat (any style, bias, subnormals on or off) and FixedFormat
   (signed or not), float32 / float64 inputs with specials, exactly constructed ties and
   their neighbours, every rounding mode, saturate on and off, in several memory layouts:
   decoded codes must equal `reference.round_float` / `round_fixed` (grids from
   `reference.float_format_params`), errors must name an element the reference refuses.
   A second test feeds arrays long enough (>= 16,384 values) for the engine's memo table.

Profiles
--------
By default every test runs the CI profile: `max_examples` ~150 (the table-path test a tenth
of that), no deadline, `derandomize=True` (the same examples on every run) and no example
database, so a CI failure reproduces exactly.  The long profile is for runs by hand:

    ACCEL_SIM_FUZZ_EXAMPLES=20000 OPENBLAS_NUM_THREADS=1 python -m pytest tests/test_fuzz_differential.py

runs that many examples per test (a tenth for the table-path test) with fresh random
choices each run; hypothesis prints the failing example (and a reproduction blob) if one
is found.
"""
from __future__ import annotations

import math
import os
import re
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

import accel_sim as acs
from accel_sim import reference as ref
from accel_sim.formats import FixedFormat, FloatFormat, IntFormat
from accel_sim.mac import MAC, BlockFMA, FixedAcc, FloatAcc, IntAcc

from conftest import assert_bits

ROUNDINGS = ("rne", "rna", "rtz", "rup", "rdn", "rto", "sr")
DETERMINISTIC = ("rne", "rna", "rtz", "rup", "rdn")

# -- profiles ------------------------------------------------------------------------------------
_LONG = int(os.environ.get("ACCEL_SIM_FUZZ_EXAMPLES", "0") or 0)
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


def profile(scale=1.0):
    if _LONG > 0:
        return settings(max_examples=max(1, int(_LONG * scale)), deadline=None, derandomize=False,
                        suppress_health_check=_HEALTH, print_blob=True)
    return settings(max_examples=max(1, int(150 * scale)), deadline=None, derandomize=True, database=None,
                    suppress_health_check=_HEALTH, print_blob=True)


# -- comparison helpers ------------------------------------------------------------------------
# =================================================================================================
# 1. GEMM on the array against reference.gemm_order
# =================================================================================================
@st.composite
def float_operand_formats(draw):
    style = draw(st.sampled_from(["ieee", "fn", "fnuz"]))
    e = draw(st.integers(2, 5))
    m = draw(st.integers(0 if style == "fnuz" else 1, 4))
    return FloatFormat(e, m, inf=style == "ieee", nan=style)


def int_operand_formats():
    return st.builds(IntFormat, st.integers(2, 8), st.booleans())


def operand_formats():
    return st.one_of(float_operand_formats(), int_operand_formats())


@st.composite
def float_accs(draw, wide=True):
    if wide and draw(st.integers(0, 9)) == 0:   # the named ones: fast paths and vector kernels
        return draw(st.sampled_from([FloatAcc(8, 23), FloatAcc(8, 7), FloatAcc(5, 10),
                                     FloatAcc(8, 23, rounding=draw(st.sampled_from(ROUNDINGS)))]))
    return FloatAcc(draw(st.integers(2, 6)), draw(st.integers(0, 6)), rounding=draw(st.sampled_from(ROUNDINGS)),
                    subnormals=draw(st.booleans()), overflow=draw(st.sampled_from(["inf", "saturate"])))


def int_accs():
    return st.builds(IntAcc, st.integers(2, 40), st.sampled_from(["wrap", "saturate"]))


@st.composite
def fixed_accs(draw):
    int_bits = draw(st.integers(1, 16))
    frac_bits = draw(st.integers(max(-4, 2 - int_bits), 12))
    return FixedAcc(int_bits, frac_bits, rounding=draw(st.sampled_from(ROUNDINGS)),
                    overflow=draw(st.sampled_from(["wrap", "saturate"])))


@st.composite
def block_fmas(draw):
    acc = draw(float_accs(wide=False))
    addend = None
    if draw(st.booleans()):
        addend = FloatAcc(draw(st.integers(acc.exp_bits, 8)), draw(st.integers(acc.man_bits, 23)),
                          subnormals=draw(st.booleans()))
    return BlockFMA(draw(st.integers(1, 4)), draw(st.integers(0, 8)), acc, addend)


@st.composite
def macs(draw):
    kind = draw(st.sampled_from(["float", "int", "fixed", "block"]))
    if kind == "int":
        fa, fb = draw(int_operand_formats()), draw(int_operand_formats())
        acc = draw(int_accs())
    else:
        fa, fb = draw(operand_formats()), draw(operand_formats())
        acc = draw({"float": float_accs(), "fixed": fixed_accs(), "block": block_fmas()}[kind])
    buffer_acc = None
    if draw(st.integers(0, 2)) == 0:  # another accumulator buffer (ws/is tiles join it)
        choices = [float_accs(), fixed_accs(), block_fmas()] + ([int_accs()] if kind == "int" else [])
        buffer_acc = draw(st.one_of(*choices))
    return MAC(fa, fb, acc), buffer_acc


def emin_of(fmt):
    # integer operands are s * 2^floor(log2|x|) with no lower clamp (csrc/formats.c)
    return fmt.emin if isinstance(fmt, FloatFormat) else -(10**9)


class _FracBits(int):
    """frac_bits for reference.fixed_acc and round_fixed: they compute `2**frac_bits`, a float
    for negative frac_bits (test_reference_fixed_grids_with_negative_frac_bits); this int makes
    that power an exact Fraction, so the fuzzing still covers the coarse grids."""

    def __rpow__(self, base):
        return Fraction(base) ** int(self)


def test_reference_fixed_grids_with_negative_frac_bits():
    """reference.fixed_acc and round_fixed model FixedAcc's and FixedFormat's grid
    2^-frac_bits, and both classes accept negative frac_bits (down to -64), but the models
    fail for any negative frac_bits: they compute 2**frac_bits, a float (AttributeError in
    fixed_acc, TypeError in round_fixed).  3 rounded to nearest-even onto multiples of 2 is 4;
    the engine gives it."""
    assert acs.accumulate(np.array([1], np.uint8), np.array([3], np.uint8),
                          MAC("int8", "int8", FixedAcc(4, -1)))[()] == 4.0
    assert FixedFormat(4, -1).decode(FixedFormat(4, -1).encode(3.0))[()] == 4.0
    assert ref.round_fixed(3.0, total_bits=3, frac_bits=-1) == Fraction(4)
    assert ref.fixed_acc([1.0], [3.0], int_bits=4, frac_bits=-1) == Fraction(4)


def spec_of(acc, fa, fb):
    if isinstance(acc, FloatAcc):
        return dict(kind="float", exp_bits=acc.exp_bits, man_bits=acc.man_bits, rounding=acc.rounding,
                    subnormals=bool(acc.subnormals), overflow=acc.overflow)
    if isinstance(acc, IntAcc):
        return dict(kind="int", bits=acc.bits, overflow=acc.overflow)
    if isinstance(acc, FixedAcc):
        return dict(kind="fixed", int_bits=acc.int_bits, frac_bits=_FracBits(acc.frac_bits), rounding=acc.rounding,
                    overflow=acc.overflow)
    a = acc.acc
    return dict(kind="block", terms=acc.terms, align_bits=acc.align_bits, a_emin=emin_of(fa), b_emin=emin_of(fb),
                acc_exp_bits=a.exp_bits, acc_man_bits=a.man_bits, acc_rounding=a.rounding,
                acc_subnormals=bool(a.subnormals), acc_overflow=a.overflow)


def random_codes(rng, fmt, shape, special_rate, zero_rate, max_abs):
    """Codes of fmt: finite ones (bounded by max_abs if given), a share of zero codes and a
    share of NaN / infinity / largest-magnitude codes."""
    codes = fmt.all_codes()
    vals = fmt.decode(codes)
    finite = np.isfinite(vals)
    pool = codes[finite & (np.abs(vals) <= max_abs)] if max_abs is not None else codes[finite]
    if pool.size == 0:
        pool = codes[finite]
    out = rng.choice(pool, shape)
    zeros = codes[vals == 0]
    out = np.where(rng.random(shape) < zero_rate, rng.choice(zeros, shape), out)
    big = np.abs(np.where(finite, vals, 0)) == np.max(np.abs(vals[finite]))
    specials = np.concatenate([codes[~finite], codes[big]])
    out = np.where(rng.random(shape) < special_rate, rng.choice(specials, shape), out)
    return out.astype(fmt.code_dtype)


# M, N, K in 0..12; an empty dimension now and then (hypothesis would draw 0 often otherwise)
DIMS = st.sampled_from([0] + 3 * list(range(1, 13)))


@profile()
@given(mac_buffer=macs(), dataflow=st.sampled_from(["os", "ws", "is"]), rows=st.integers(1, 5),
       cols=st.integers(1, 5), m=DIMS, n=DIMS, k=DIMS, threads=st.integers(1, 4),
       seed=st.integers(0, 2**64 - 1), code_seed=st.integers(0, 2**32 - 1),
       special_rate=st.sampled_from([0.0, 0.0, 0.03, 0.2]), zero_rate=st.sampled_from([0.0, 0.1, 0.5]),
       max_abs=st.sampled_from([None, None, 1.0, 8.0, 64.0]))
def test_gemm_acc_equals_reference_gemm_order(mac_buffer, dataflow, rows, cols, m, n, k, threads, seed, code_seed,
                                              special_rate, zero_rate, max_abs):
    mac, buffer_acc = mac_buffer
    rng = np.random.default_rng(code_seed)
    A = random_codes(rng, mac.a, (m, k), special_rate, zero_rate, max_abs)
    B = random_codes(rng, mac.b, (k, n), special_rate, zero_rate, max_abs)
    note(f"mac={mac.name} buffer={None if buffer_acc is None else buffer_acc.name} {dataflow} {rows}x{cols} "
         f"seed={seed}\nA={A.tolist()}\nB={B.tolist()}")
    event(f"PE {type(mac.acc).__name__}, buffer {type(buffer_acc).__name__ if buffer_acc else 'default'}")
    event(f"M*N*K {'0' if m * n * k == 0 else '1..99' if m * n * k < 100 else '>= 100'}")
    arr = acs.Array(rows, cols, dataflow, mac, buffer_acc=buffer_acc, seed=seed, threads=threads)
    pe = spec_of(mac.acc, mac.a, mac.b)
    buf = None if buffer_acc is None else spec_of(buffer_acc, mac.a, mac.b)
    try:
        want = ref.gemm_order(mac.a.decode(A).tolist(), mac.b.decode(B).tolist(), dataflow=dataflow, rows=rows,
                              pe=pe, buffer=buf, seed=seed, n=n)
    except (ValueError, OverflowError) as e:   # NaN / infinity into a fixed-point register
        note(f"reference refuses: {e}")
        event("the reference refuses (NaN or infinity into a fixed-point register)")
        with pytest.raises(ValueError, match="NaN|infinit"):
            with np.errstate(all="ignore"):
                arr.gemm(acs.QTensor(A, mac.a), acs.QTensor(B, mac.b))
        return
    with np.errstate(all="ignore"):
        res = arr.gemm(acs.QTensor(A, mac.a), acs.QTensor(B, mac.b))
    out_acc = mac.acc if dataflow == "os" or buffer_acc is None else buffer_acc
    event(f"some output NaN: {bool(np.isnan(np.asarray(res.acc, np.float64)).any())}")
    if isinstance(out_acc, IntAcc):
        expected = np.array(want, dtype=np.int64).reshape(m, n)
        assert res.acc.dtype == np.int64
    else:
        expected = np.array([[float(v) for v in r] for r in want], dtype=np.float64).reshape(m, n)
        assert res.acc.dtype == np.float64
    assert_bits(res.acc, expected, f"{mac.name} buffer={buffer_acc} {dataflow} {rows}x{cols} M{m} N{n} K{k}")


# =================================================================================================
# 2. Encoding against reference.round_float / round_fixed
# =================================================================================================
class EncodeCase:
    """A format, its reference grid, and the reference result of one value."""

    def __init__(self, fmt, kind, params):
        self.fmt, self.kind, self.params = fmt, kind, params

    def __repr__(self):
        return f"EncodeCase({self.fmt.name}, {self.params})"

    def reference(self, x, rounding, saturate, rand):
        """The decoded value encode should give, or the exception type the reference raises."""
        p = self.params
        if self.kind == "float":
            policy = "saturate" if saturate else ("inf" if p["style"] == "ieee" else "nan")
            y = ref.round_float(x, man_bits=p["man_bits"], emin=p["emin"], emax=p["emax"], max_sig=p["max_sig"],
                                subnormals=p["subnormals"], rounding=rounding, overflow=policy, rand=rand)
            if p["style"] == "fnuz" and y == 0:
                y = 0.0
            return y
        try:
            v = ref.round_fixed(x, total_bits=p["total_bits"], frac_bits=_FracBits(p["frac_bits"]), signed=p["signed"],
                                rounding=rounding, overflow="saturate" if saturate else "error", rand=rand)
        except OverflowError:
            return OverflowError
        except ValueError:
            return ValueError
        f = float(v)
        assert Fraction(f) == v
        return f


@st.composite
def encode_formats(draw):
    if draw(st.booleans()):
        style = draw(st.sampled_from(["ieee", "fn", "fnuz"]))
        e = draw(st.integers(2, 8))
        m = draw(st.integers(0 if style == "fnuz" else 1, 10))
        default_bias = 2 ** (e - 1) - (0 if style == "fnuz" else 1)
        bias = draw(st.one_of(st.none(), st.integers(default_bias - 3, default_bias + 3)))
        subnormals = draw(st.booleans())
        fmt = FloatFormat(e, m, bias=bias, inf=style == "ieee", nan=style, subnormals=subnormals)
        grid = ref.float_format_params(e, m, bias=bias, style=style)
        assert (grid["emin"], grid["emax"], grid["max_sig"]) == (fmt.emin, fmt.emax, fmt.max_sig)
        return EncodeCase(fmt, "float", dict(grid, style=style, subnormals=subnormals))
    signed = draw(st.booleans())
    int_bits = draw(st.integers(0, 14))
    frac_bits = draw(st.integers(max(-6, (2 if signed else 1) - int_bits), 14))
    fmt = FixedFormat(int_bits, frac_bits, signed=signed)
    return EncodeCase(fmt, "fixed", dict(total_bits=int_bits + frac_bits, frac_bits=frac_bits, signed=signed))


@st.composite
def encode_values(draw, case, dtype):
    """One input value: anything the dtype holds, a grid value, an exact tie, a tie's
    neighbour in the input dtype, values around the overflow threshold, or tiny values."""
    fmt, p = case.fmt, case.params
    how = draw(st.sampled_from(["any", "grid", "tie", "tie", "near tie", "edge", "tiny"]))
    sign = draw(st.sampled_from([1.0, -1.0]))
    if how == "any":
        return draw(st.floats(width=32 if dtype == np.float32 else 64, allow_nan=True, allow_infinity=True))
    if case.kind == "float":
        m, emin, emax = p["man_bits"], p["emin"], p["emax"]
        binade = draw(st.integers(emin - 3, emax + 2))
        if binade >= emin or not p["subnormals"]:   # a normal binade (unbounded below without subnormals)
            s = draw(st.integers(2**m, 2 ** (m + 1) - 1))
            unit_exp = binade - m
        else:                                           # the subnormal range
            s = draw(st.integers(0, 2**m - 1))
            unit_exp = emin - m
        top = fmt.max + math.ldexp(1.0, emax - m - 1)   # the overflow threshold (a tie with the next binade)
        tiny = math.ldexp(1.0, emin - m - 1)             # half the smallest subnormal
    else:
        unit_exp = -p["frac_bits"]
        lo = -(2 ** (p["total_bits"] - 1)) if p["signed"] else 0
        hi = 2 ** (p["total_bits"] - (1 if p["signed"] else 0)) - 1
        s = draw(st.integers(lo - 4, hi + 4))
        top = math.ldexp(hi + 0.5, unit_exp)
        tiny = math.ldexp(0.5, unit_exp)
    if how == "grid":
        v = math.ldexp(s, unit_exp)
    elif how in ("tie", "near tie"):
        v = math.ldexp(2 * s + 1, unit_exp - 1)
    elif how == "edge":
        v = draw(st.sampled_from([top, fmt.max, 2 * top, math.inf]))
    else:
        v = draw(st.sampled_from([tiny, 2 * tiny, 3 * tiny, tiny / 2, 0.0]))
    v = sign * v
    with np.errstate(over="ignore"):
        x = dtype(v)
    if how == "near tie" and np.isfinite(x):
        x = np.nextafter(x, dtype(draw(st.sampled_from([math.inf, -math.inf]))))
    return float(x)


LAYOUTS = ("1d", "c", "fortran", "reversed")


def laid_out(values, dtype, layout):
    """The values as an array of the layout; the logical C-order flattening is `values`."""
    x = np.array(values, dtype=dtype)
    if layout == "1d" or x.size % 2:
        return x if layout != "reversed" else x[::-1].copy()[::-1]
    x2 = x.reshape(2, -1)
    if layout == "c":
        return x2
    if layout == "fortran":
        return np.asfortranarray(x2)
    return x2[:, ::-1].copy()[:, ::-1]   # negative strides, same logical values


@st.composite
def encode_cases(draw):
    case = draw(encode_formats())
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    values = draw(st.lists(encode_values(case, dtype), min_size=1, max_size=40))
    return case, dtype, values


ERROR_INDEX = re.compile(r"x\[([0-9, ]+)\]")


def check_encode(case, x, rounding, saturate, seed):
    """encode(x) against the reference, element by element (sr draws use the flat C index)."""
    flat = np.asarray(x).reshape(-1)   # logical C order
    want = [case.reference(float(v), rounding, saturate, ref.rand32(seed, i) if rounding == "sr" else 0)
            for i, v in enumerate(flat)]
    errors = [i for i, w in enumerate(want) if isinstance(w, type)]
    if errors:
        with pytest.raises(ValueError) as info:
            case.fmt.encode(x, rounding=rounding, saturate=saturate, seed=seed)
        msg = str(info.value)
        found = ERROR_INDEX.search(msg)
        assert found, f"the error does not name an element: {msg}"
        pos = [int(v) for v in found.group(1).split(",")]
        i = int(np.ravel_multi_index(pos, np.shape(x)))
        assert i in errors, f"the error names {pos}, which the reference encodes to {want[i]!r}: {msg}"
        if want[i] is ValueError:
            assert "NaN" in msg, msg
        else:
            assert "outside" in msg, msg
        return
    codes = case.fmt.encode(x, rounding=rounding, saturate=saturate, seed=seed)
    assert codes.shape == np.shape(x) and codes.dtype == case.fmt.code_dtype
    got = case.fmt.decode(codes).reshape(-1)
    assert_bits(got, np.array(want, dtype=np.float64), f"{case} {rounding} saturate={saturate} inputs={flat.tolist()}")


@profile()
@given(data=encode_cases(), rounding=st.sampled_from(ROUNDINGS), saturate=st.booleans(),
       seed=st.integers(0, 2**64 - 1), layout=st.sampled_from(LAYOUTS))
def test_encode_equals_reference(data, rounding, saturate, seed, layout):
    case, dtype, values = data
    x = laid_out(values, dtype, layout)
    note(f"{case} dtype={np.dtype(dtype).name} layout={layout} x={x.tolist()}")
    check_encode(case, x, rounding, saturate, seed)
    # every value on its own, as a 0-d array and as a scalar: the same value as in the array
    if rounding != "sr":
        for v in values[:4]:
            w = case.reference(float(dtype(v)), rounding, saturate, 0)
            if isinstance(w, type):
                continue
            for arg in (np.asarray(v, dtype), dtype(v)):
                code = case.fmt.encode(arg, rounding=rounding, saturate=saturate)
                assert_bits(case.fmt.decode(np.asarray(code)).reshape(-1), np.array([w]), f"{case} scalar {v!r}")


@profile(scale=0.1)
@given(data=encode_cases(), rounding=st.sampled_from(DETERMINISTIC), saturate=st.booleans(),
       fill_seed=st.integers(0, 2**32 - 1))
def test_encode_long_arrays_equal_reference(data, rounding, saturate, fill_seed):
    """Arrays of at least 16,384 values go through the engine's memo table: the drawn values
    (specials, ties, neighbours) plus random bit patterns and random in-range values."""
    case, dtype, values = data
    rng = np.random.default_rng(fill_seed)
    n = (1 << 14) + 7
    if dtype == np.float32:
        patterns = rng.integers(0, 2**32, n // 2, dtype=np.uint64).astype(np.uint32).view(np.float32)
    else:
        patterns = rng.integers(0, 2**64, n // 2, dtype=np.uint64).view(np.float64)
    span = np.ldexp(rng.random(n) + 1.0, rng.integers(-30, 30, n)) * rng.choice([-1.0, 1.0], n)
    with np.errstate(over="ignore", invalid="ignore"):
        near = (span * math.ldexp(1.0, -20) * case.fmt.max).astype(dtype)
        # every kind of tie: midpoints of neighbouring grid values (and their neighbours)
        grid = case.fmt.decode(rng.choice(1 << case.fmt.bits, min(1 << case.fmt.bits, 4000), replace=False))
        grid = np.unique(np.abs(grid[np.isfinite(grid)]))
        step = np.ldexp(1.0, -case.fmt.frac_bits) if case.kind == "fixed" else \
            np.ldexp(1.0, (np.maximum(np.floor(np.log2(np.maximum(grid, 1e-300))), case.fmt.emin)
                          - case.fmt.man_bits).astype(np.int64))
        mids = (grid + step / 2) * rng.choice([-1.0, 1.0], grid.size)
        mids = mids[mids.astype(dtype).astype(np.float64) == mids].astype(dtype)
        ties = np.concatenate([mids, np.nextafter(mids, dtype(np.inf)), np.nextafter(mids, dtype(-np.inf))])
        x = np.concatenate([np.array(values, dtype), ties, patterns.astype(dtype), near])[:n]
        if case.kind == "fixed" and not saturate:   # keep the array encodable (errors: the other test)
            x = np.where(np.isfinite(x) & (np.abs(x.astype(np.float64)) <= case.fmt.max / 2), x, dtype(0))
        if case.kind == "fixed":
            x = np.where(np.isnan(x), dtype(0), x)
    assert x.size == n
    note(f"{case} dtype={np.dtype(dtype).name}")
    check_encode(case, x, rounding, saturate, 0)
