"""Slow, obviously-correct model of the accelerator's arithmetic (the test oracle).

Everything here is computed exactly with ``fractions.Fraction`` and Python ints;
the only rounding that happens is the explicit one done by :func:`_round_to_int`,
which every function below reuses.  Written for clarity, not speed.  See the
"Numerics" section of DESIGN.md for the contract implemented here.

Value conventions
-----------------
* Inputs may be Python floats (including -0.0, inf, nan), ints, Fractions, or
  numpy scalars.
* Float-grid results are Python floats: finite values are converted from the
  exact Fraction (every grid used here fits in binary64, so the conversion is
  exact, and this is asserted); zeros keep their sign; NaN is ``float('nan')``.
* Fixed-grid results are Fractions.
"""

import math
import numbers
import operator
from fractions import Fraction

__all__ = [
    "MASK", "mix64", "rand32", "ROUNDINGS",
    "round_float", "round_fixed", "float_format_params", "FORMATS", "encode_value",
    "float_acc", "int_acc", "fixed_acc", "block_fma", "gemm_order",
]

ROUNDINGS = ("rne", "rna", "rtz", "rup", "rdn", "rto", "sr")

# ---------------------------------------------------------------------------
# Counter-based random numbers for stochastic rounding
# ---------------------------------------------------------------------------

MASK = 2**64 - 1


def mix64(z):
    """The 64-bit finaliser of SplitMix64 (all arithmetic modulo 2^64)."""
    z &= MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def rand32(seed, index, step=0):
    """The 32-bit random integer used by stochastic rounding of element
    ``index`` at chain step ``step`` under ``seed``."""
    seed, index, step = (operator.index(v) for v in (seed, index, step))
    for name, v in (("seed", seed), ("index", index), ("step", step)):
        if not 0 <= v <= MASK:
            raise ValueError(f"{name} must be an int in [0, 2^64), got {v!r}")
    z0 = mix64((seed + 0x9E3779B97F4A7C15) & MASK)
    z1 = mix64(z0 ^ ((index * 0xD1B54A32D192ED03) & MASK))
    z2 = mix64((z1 + step * 0xAEF17502108EF2D9) & MASK)
    return z2 >> 32


# ---------------------------------------------------------------------------
# Small exact helpers
# ---------------------------------------------------------------------------

NAN = float("nan")
INF = float("inf")


def _pow2(e):
    """2^e as an exact Fraction (e may be negative)."""
    return Fraction(2) ** e


def _floor_log2(q):
    """floor(log2(q)) for a Fraction q > 0, computed exactly."""
    assert q > 0
    e = q.numerator.bit_length() - q.denominator.bit_length()
    # q lies in (2^(e-1), 2^(e+1)), so floor(log2 q) is e or e - 1.
    if q < _pow2(e):
        e -= 1
    return e


def _classify(x):
    """Split an input into (kind, negative, value).

    kind is "nan", "inf", "zero" or "finite"; negative is the sign bit
    (False for NaN); value is the exact Fraction for finite non-zero x,
    Fraction(0) for zeros and None otherwise.
    """
    if isinstance(x, Fraction):
        v = x
    elif isinstance(x, numbers.Integral):  # int, bool, numpy integers
        v = Fraction(int(x))
    else:
        f = float(x)  # exact for float16/float32/float64 (numpy scalars too)
        if math.isnan(f):
            return "nan", False, None
        if math.isinf(f):
            return "inf", f < 0, None
        if f == 0:
            return "zero", math.copysign(1.0, f) < 0, Fraction(0)
        v = Fraction(f)
    if v == 0:
        return "zero", False, Fraction(0)
    return "finite", v < 0, v


def _signed_zero(negative):
    return -0.0 if negative else 0.0


def _signed_inf(negative):
    return -INF if negative else INF


def _to_float(v):
    """Convert an exact Fraction that is representable in binary64 to float."""
    f = float(v)
    assert Fraction(f) == v, f"{v} is not exactly representable in binary64"
    return f


def _check_rand(rounding, rand):
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; expected one of {ROUNDINGS}")
    if rounding == "sr" and not (isinstance(rand, numbers.Integral) and 0 <= rand < 2**32):
        raise ValueError(f"rand must be an int in [0, 2^32), got {rand!r}")


# ---------------------------------------------------------------------------
# The one rounding helper
# ---------------------------------------------------------------------------

def _round_to_int(t, rounding, rand=0):
    """Round the exact rational t to an integer with the given mode.

    Let n = floor(|t|) and f = |t| - n (the exact fractional part, 0 <= f < 1).
    If f == 0 the result is t itself.  Otherwise the magnitude becomes n + 1
    ("up") or n by the rule of the mode, and t's sign is put back:
      rne  up iff f > 1/2, or f == 1/2 and n is odd (ties to even)
      rna  up iff f >= 1/2 (ties away from zero)
      rtz  never up (toward zero)
      rup  up iff t > 0 (toward +inf)
      rdn  up iff t < 0 (toward -inf)
      rto  never up, but the result's least significant bit is set to 1
           (round to odd: truncate, then mark inexactness in the last bit)
      sr   up iff rand < ceil(f * 2^32), rand a 32-bit random integer
           (so P(up) = ceil(f * 2^32) / 2^32, which is f on a 2^-32 grid)
    """
    _check_rand(rounding, rand)
    negative = t < 0
    mag = -t if negative else t
    n = mag.numerator // mag.denominator
    f = mag - n
    if f != 0:
        if rounding == "rne":
            up = f > Fraction(1, 2) or (f == Fraction(1, 2) and n % 2 == 1)
        elif rounding == "rna":
            up = f >= Fraction(1, 2)
        elif rounding == "rtz":
            up = False
        elif rounding == "rup":
            up = not negative
        elif rounding == "rdn":
            up = negative
        elif rounding == "rto":
            up = False
            n |= 1
        else:  # "sr"
            up = rand < math.ceil(f * 2**32)
        if up:
            n += 1
    return -n if negative else n


# ---------------------------------------------------------------------------
# Float grids
# ---------------------------------------------------------------------------

def _rounds_away_on_overflow(rounding, negative):
    """Whether an overflowing value goes to infinity (True) or to the largest
    finite value (False) under IEEE-style overflow: the nearest modes and sr
    always go to infinity, rup only for positive values, rdn only for negative
    ones, rtz and rto never."""
    if rounding in ("rne", "rna", "sr"):
        return True
    if rounding == "rup":
        return not negative
    if rounding == "rdn":
        return negative
    return False


def round_float(x, *, man_bits, emin, emax, max_sig, subnormals=True,
                rounding="rne", overflow="inf", rand=0):
    """Round x onto a binary floating-point grid; returns a Python float.

    Grid: m = man_bits fraction bits; normal exponents emin..emax; largest
    finite magnitude max_sig * 2^(emax - m).  For finite x != 0 with
    e = floor(log2|x|), the spacing is ulp = 2^(max(e, emin) - m) with
    subnormals and 2^(e - m) without; x/ulp is rounded to an integer by the
    mode (exponent unbounded above), giving v.
      * no subnormals and 0 < |v| < 2^emin, or v == 0: a zero of x's sign;
      * |v| > max: overflow -- policy "inf" gives +-inf when the mode rounds
        away from zero for x's sign (see _rounds_away_on_overflow) and +-max
        otherwise; "nan" the same with NaN in place of inf; "saturate" +-max.
    Special inputs: NaN -> NaN; +-inf -> +-inf ("inf"), NaN ("nan"),
    +-max ("saturate"); zeros are returned unchanged (sign kept).
    """
    _check_rand(rounding, rand)
    if overflow not in ("inf", "nan", "saturate"):
        raise ValueError(f"unknown overflow policy {overflow!r}")
    m = man_bits
    max_value = max_sig * _pow2(emax - m)
    kind, negative, v = _classify(x)

    def overflowed(to_infinity):
        if overflow == "saturate" or not to_infinity:
            return _to_float(-max_value if negative else max_value)
        if overflow == "inf":
            return _signed_inf(negative)
        return math.copysign(NAN, -1.0 if negative else 1.0)

    if kind == "nan":
        return NAN
    if kind == "inf":
        return overflowed(True)
    if kind == "zero":
        return _signed_zero(negative)

    e = _floor_log2(abs(v))
    ulp = _pow2((max(e, emin) if subnormals else e) - m)
    r = _round_to_int(v / ulp, rounding, rand) * ulp
    if r == 0 or (not subnormals and abs(r) < _pow2(emin)):
        return _signed_zero(negative)
    if abs(r) > max_value:
        return overflowed(_rounds_away_on_overflow(rounding, negative))
    return _to_float(r)


def float_format_params(exp_bits, man_bits, bias=None, style="ieee"):
    """Grid parameters (man_bits, emin, emax, max_sig) of a float format.

    style "ieee": the all-ones exponent is reserved for inf/NaN, so
        emax = 2^e - 2 - bias and max_sig = 2^(m+1) - 1;
    style "fn": only all-ones exponent with all-ones mantissa is NaN, no inf:
        emax = 2^e - 1 - bias, max_sig = 2^(m+1) - 2;
    style "fnuz": only the code 0x80.. (negative zero) is NaN, no inf:
        emax = 2^e - 1 - bias, max_sig = 2^(m+1) - 1.
    Default bias 2^(e-1) for fnuz, 2^(e-1) - 1 otherwise; emin = 1 - bias.
    """
    e, m = exp_bits, man_bits
    if bias is None:
        bias = 2 ** (e - 1) if style == "fnuz" else 2 ** (e - 1) - 1
    if style == "ieee":
        emax, max_sig = 2**e - 2 - bias, 2 ** (m + 1) - 1
    elif style == "fn":
        emax, max_sig = 2**e - 1 - bias, 2 ** (m + 1) - 2
    elif style == "fnuz":
        emax, max_sig = 2**e - 1 - bias, 2 ** (m + 1) - 1
    else:
        raise ValueError(f"unknown float style {style!r}")
    return dict(man_bits=m, emin=1 - bias, emax=emax, max_sig=max_sig)


# Named operand formats: ("float", exp_bits, man_bits, style) or
# ("int", total_bits, signed).  Float meanings are those of ml_dtypes.
FORMATS = {
    "e5m2": ("float", 5, 2, "ieee"),
    "e4m3": ("float", 4, 3, "ieee"),      # ml_dtypes.float8_e4m3: bias 7, inf, max 240
    "e3m4": ("float", 3, 4, "ieee"),      # ml_dtypes.float8_e3m4: bias 3, inf, max 15.5
    "e4m3fn": ("float", 4, 3, "fn"),      # max 448, NaN only, no inf
    "e4m3fnuz": ("float", 4, 3, "fnuz"),  # bias 8, max 240, no -0
    "e5m2fnuz": ("float", 5, 2, "fnuz"),  # bias 16, max 57344, no -0
    "fp16": ("float", 5, 10, "ieee"),
    "bf16": ("float", 8, 7, "ieee"),
    "int8": ("int", 8, True),
    "uint8": ("int", 8, False),
    "int4": ("int", 4, True),
}


def encode_value(x, fmt_name, *, rounding="rne", saturate=False, seed=0, index=0):
    """The value that encoding x into the named format produces (as a float).

    Float formats: round_float on the format's grid, overflow policy "inf" for
    formats with infinities and "nan" for fn/fnuz formats, or "saturate" when
    saturate=True; fnuz formats have no -0, so a zero result is +0.0.
    Integer formats: round_fixed with frac_bits = 0, overflow "error"
    (OverflowError) or "saturate"; NaN raises ValueError.
    For rounding "sr" the random integer is rand32(seed, index, 0).
    """
    try:
        spec = FORMATS[fmt_name]
    except KeyError:
        raise ValueError(f"unknown format {fmt_name!r}") from None
    rand = rand32(seed, index, 0) if rounding == "sr" else 0
    if spec[0] == "int":
        _, bits, signed = spec
        k = round_fixed(x, total_bits=bits, frac_bits=0, signed=signed, rounding=rounding,
                        overflow="saturate" if saturate else "error", rand=rand)
        return float(k)  # integers have a single (positive) zero
    _, e, m, style = spec
    if saturate:
        policy = "saturate"
    else:
        policy = "inf" if style == "ieee" else "nan"
    y = round_float(x, **float_format_params(e, m, style=style), rounding=rounding,
                    overflow=policy, rand=rand)
    if style == "fnuz" and y == 0:
        y = 0.0
    return y


# ---------------------------------------------------------------------------
# Fixed-point grids
# ---------------------------------------------------------------------------

def _fixed_range(total_bits, signed):
    """Smallest and largest integer k of a total_bits wide register."""
    if signed:
        return -(2 ** (total_bits - 1)), 2 ** (total_bits - 1) - 1
    return 0, 2**total_bits - 1


def _fixed_overflow(k, total_bits, signed, overflow):
    """Apply a fixed-point overflow policy to the integer k:
    "saturate" clamps into range, "wrap" reduces modulo 2^total_bits into
    range (two's complement when signed), "error" raises OverflowError."""
    lo, hi = _fixed_range(total_bits, signed)
    if lo <= k <= hi:
        return k
    if overflow == "saturate":
        return lo if k < lo else hi
    if overflow == "wrap":
        return (k - lo) % 2**total_bits + lo
    if overflow == "error":
        raise OverflowError(f"{k} does not fit in {total_bits} bits (signed={signed})")
    raise ValueError(f"unknown overflow policy {overflow!r}")


def round_fixed(x, *, total_bits, frac_bits, signed=True, rounding="rne",
                overflow="saturate", rand=0):
    """Round x onto the fixed-point grid k * 2^-frac_bits; returns a Fraction.

    k = x * 2^frac_bits rounded to an integer by the mode, then the overflow
    policy for k outside [-2^(B-1), 2^(B-1)-1] (signed) or [0, 2^B-1]
    (unsigned), B = total_bits: "saturate" clamps, "wrap" reduces modulo 2^B,
    "error" raises OverflowError.  NaN raises ValueError.  +-inf is an
    overflow: it saturates to the bound of its sign; since it has no residue
    modulo 2^B, "wrap" (like "error") raises OverflowError for it.
    """
    _check_rand(rounding, rand)
    if overflow not in ("saturate", "wrap", "error"):
        raise ValueError(f"unknown overflow policy {overflow!r}")
    kind, negative, v = _classify(x)
    if kind == "nan":
        raise ValueError("NaN cannot be converted to a fixed-point value")
    if kind == "inf":
        if overflow != "saturate":
            raise OverflowError("infinity does not fit a fixed-point grid")
        lo, hi = _fixed_range(total_bits, signed)
        return Fraction(lo if negative else hi) / _pow2(frac_bits)
    k = _round_to_int(v * _pow2(frac_bits), rounding, rand)
    k = _fixed_overflow(k, total_bits, signed, overflow)
    return Fraction(k) / _pow2(frac_bits)


# ---------------------------------------------------------------------------
# Accumulators
# ---------------------------------------------------------------------------

def _check_lengths(a, b):
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"a and b differ in length ({len(a)} != {len(b)})")
    return a, b


def _exact_int(x):
    """x as a Python int; x must be an integer value (int, integral float, ...)."""
    kind, _, v = _classify(x)
    if kind in ("nan", "inf") or v.denominator != 1:
        raise ValueError(f"{x!r} is not an integer")
    return v.numerator


def _product(a, b):
    """The exact product a*b as (kind, negative, value), IEEE 754 style:
    NaN if either is NaN or for inf * 0; inf if either is inf; otherwise the
    exact value; the sign is sign(a) xor sign(b) (this also signs zeros)."""
    ka, na, va = _classify(a)
    kb, nb, vb = _classify(b)
    negative = na != nb
    if ka == "nan" or kb == "nan":
        return "nan", False, None
    if ka == "inf" or kb == "inf":
        if ka == "zero" or kb == "zero":
            return "nan", False, None
        return "inf", negative, None
    if ka == "zero" or kb == "zero":
        return "zero", negative, Fraction(0)
    return "finite", negative, va * vb


def _combine_specials(terms):
    """IEEE addition of specials among classified terms: None if every term is
    finite or zero; else NaN if any term is NaN or +inf meets -inf; else the
    sign of the infinity (as ("inf", negative))."""
    kinds = [t[0] for t in terms]
    if "nan" in kinds:
        return ("nan", False)
    inf_signs = {t[1] for t in terms if t[0] == "inf"}
    if len(inf_signs) == 2:
        return ("nan", False)
    if inf_signs:
        return ("inf", inf_signs.pop())
    return None


def _zero_sum_sign(terms, rounding):
    """Sign (negative?) of an exactly-zero sum, IEEE 754: if every addend is a
    zero and they all have the same sign, that sign; otherwise +0, or -0
    under rdn (round toward -inf)."""
    if all(t[0] == "zero" for t in terms):
        signs = {t[1] for t in terms}
        if len(signs) == 1:
            return signs.pop()
    return rounding == "rdn"


def float_acc(a, b, *, exp_bits, man_bits, rounding="rne", subnormals=True,
              overflow="inf", init=0.0, seed=0, element=0, step0=0):
    """FloatAcc(exp_bits, man_bits): chain acc <- round(acc + a[k]*b[k]) for
    k = 0..K-1, one rounding of the exact sum per step (fused multiply-add),
    onto the IEEE-style grid with bias 2^(e-1)-1.

    Specials as IEEE 754 fusedMultiplyAdd: NaN anywhere, inf*0, or inf + (-inf)
    give NaN; otherwise an infinity propagates (and is then stored by the
    accumulator's overflow policy exactly as round_float stores an infinite
    input: inf under "inf", NaN under "nan", +-max under "saturate").
    An exactly-zero sum is signed by _zero_sum_sign (both addends zeros of one
    sign: that sign; else +0, -0 under rdn).  init is the starting value, used
    as given.  For "sr", step k uses rand32(seed, element, step0 + k) (step0
    numbers a chain that continues a longer one; default 0).
    """
    a, b = _check_lengths(a, b)
    grid = float_format_params(exp_bits, man_bits, style="ieee")
    acc = init
    for k, (ak, bk) in enumerate(zip(a, b)):
        rand = rand32(seed, element, step0 + k) if rounding == "sr" else 0
        addends = [_classify(acc), _product(ak, bk)]
        special = _combine_specials(addends)
        if special is not None:
            exact = NAN if special[0] == "nan" else _signed_inf(special[1])
        else:
            total = addends[0][2] + addends[1][2]
            if total == 0:
                exact = _signed_zero(_zero_sum_sign(addends, rounding))
            else:
                exact = total
        acc = round_float(exact, **grid, subnormals=subnormals, rounding=rounding,
                          overflow=overflow, rand=rand)
    return acc if isinstance(acc, float) else float(acc)


def int_acc(a, b, *, bits, overflow="wrap", init=0):
    """IntAcc(bits): acc <- acc + a[k]*b[k] with exact integer products, then
    after every step wrap to `bits`-bit two's complement ("wrap") or clamp to
    [-2^(bits-1), 2^(bits-1)-1] ("saturate")."""
    if overflow not in ("wrap", "saturate"):
        raise ValueError(f"unknown overflow policy {overflow!r}")
    a, b = _check_lengths(a, b)
    acc = _exact_int(init)
    for ak, bk in zip(a, b):
        acc = _fixed_overflow(acc + _exact_int(ak) * _exact_int(bk), bits, True, overflow)
    return acc


def fixed_acc(a, b, *, int_bits, frac_bits, rounding="rne", overflow="saturate",
              init=0, seed=0, element=0, step0=0):
    """FixedAcc(int_bits, frac_bits): a signed two's-complement register of
    int_bits + frac_bits bits (int_bits includes the sign) holding multiples
    of 2^-frac_bits.  Step k: the exact product a[k]*b[k] is rounded onto the
    2^-frac_bits grid by the mode (no range check; rand32(seed, element,
    step0 + k) for "sr"), added exactly to the register, and then the
    register's overflow policy ("saturate" or "wrap"; "error" raises
    OverflowError) is applied.
    Returns a Fraction.  NaN or infinite operands raise ValueError.
    """
    if overflow not in ("saturate", "wrap", "error"):
        raise ValueError(f"unknown overflow policy {overflow!r}")
    a, b = _check_lengths(a, b)
    total_bits = int_bits + frac_bits
    scale = _pow2(frac_bits)
    kind, _, v = _classify(init)
    if kind in ("nan", "inf") or (v * scale).denominator != 1:
        raise ValueError(f"init {init!r} is not on the 2^-{frac_bits} grid")
    reg = int(v * scale)  # the register, in units of 2^-frac_bits
    for k, (ak, bk) in enumerate(zip(a, b)):
        kind, _, p = _product(ak, bk)
        if kind in ("nan", "inf"):
            raise ValueError("fixed-point accumulation of a NaN or infinite product")
        rand = rand32(seed, element, step0 + k) if rounding == "sr" else 0
        reg = _fixed_overflow(reg + _round_to_int(p * scale, rounding, rand),
                              total_bits, True, overflow)
    return Fraction(reg, scale)


def block_fma(a, b, *, terms, align_bits, a_emin, b_emin, acc_exp_bits, acc_man_bits,
              acc_rounding="rtz", acc_subnormals=True, acc_overflow="inf", init=0.0,
              seed=0, element=0, step0=0):
    """BlockFMA: the multi-term fused adder of tensor cores.

    K is padded with +0 * +0 products to a multiple of `terms`; blocks are
    processed in order and each block's result is the next block's
    accumulator (init, used as given, for the first).  In a block:
      * a non-zero operand x is |x| = s * 2^ex with ex = max(floor(log2|x|),
        emin of its format) (a_emin / b_emin), so s in [0, 2); a non-zero
        product has exponent ea + eb (significand s_a*s_b in [0, 4), kept
        unnormalised); the accumulator c != 0 has exponent
        max(floor(log2|c|), 2 - 2^(acc_exp_bits-1));
      * E = the largest exponent among the non-zero products and accumulator;
      * every such term is truncated toward zero onto multiples of
        2^(E - align_bits);
      * the truncated terms are summed exactly and the sum is rounded once
        onto the IEEE-style (acc_exp_bits, acc_man_bits) grid with
        acc_rounding (rand32(seed, element, step0 + block) for "sr"),
        acc_subnormals and acc_overflow.
    Specials: a NaN operand or accumulator, inf*0, or +inf with -inf among
    the products and accumulator give NaN; otherwise an infinity gives that
    infinity (stored by acc_overflow as round_float stores an infinite
    input).  An exactly-zero sum is signed by _zero_sum_sign: if the
    accumulator and every product (padding included) are zeros of one sign,
    that sign; otherwise +0, or -0 under rdn.
    """
    a, b = _check_lengths(a, b)
    if terms < 1 or align_bits < 0:
        raise ValueError("terms must be >= 1 and align_bits >= 0")
    pad = -len(a) % terms
    a = a + [0.0] * pad
    b = b + [0.0] * pad
    grid = float_format_params(acc_exp_bits, acc_man_bits, style="ieee")
    acc_emin = grid["emin"]  # = 2 - 2^(acc_exp_bits - 1)

    def exponent(v, emin):
        return max(_floor_log2(abs(v)), emin)

    acc = init
    for block in range(len(a) // terms):
        lo = block * terms
        addends = [_classify(acc)] + [_product(a[i], b[i]) for i in range(lo, lo + terms)]
        rand = rand32(seed, element, step0 + block) if acc_rounding == "sr" else 0
        special = _combine_specials(addends)
        if special is not None:
            exact = NAN if special[0] == "nan" else _signed_inf(special[1])
        else:
            # (value, exponent) of every non-zero term.
            nonzero = []
            if addends[0][0] == "finite":
                nonzero.append((addends[0][2], exponent(addends[0][2], acc_emin)))
            for i in range(lo, lo + terms):
                kind, _, p = _product(a[i], b[i])
                if kind == "finite":
                    ea = exponent(_classify(a[i])[2], a_emin)
                    eb = exponent(_classify(b[i])[2], b_emin)
                    nonzero.append((p, ea + eb))
            total = Fraction(0)
            if nonzero:
                E = max(e for _, e in nonzero)
                quantum = _pow2(E - align_bits)
                for v, _ in nonzero:
                    total += _round_to_int(v / quantum, "rtz") * quantum
            if total == 0:
                exact = _signed_zero(_zero_sum_sign(addends, acc_rounding))
            else:
                exact = total
        acc = round_float(exact, **grid, subnormals=acc_subnormals, rounding=acc_rounding,
                          overflow=acc_overflow, rand=rand)
    return acc if isinstance(acc, float) else float(acc)


# ---------------------------------------------------------------------------
# The systolic array's order of accumulation
# ---------------------------------------------------------------------------

_CHAINS = {"float": float_acc, "int": int_acc, "fixed": fixed_acc, "block": block_fma}


def _chain(spec, a, b, *, seed, element, step0):
    """One accumulator chain over a and b from zero, as described by spec: a
    dict with "kind" ("float", "int", "fixed" or "block") and the keyword
    arguments of float_acc / int_acc / fixed_acc / block_fma (grid, rounding,
    overflow; a_emin and b_emin for "block")."""
    params = {k: v for k, v in spec.items() if k != "kind"}
    kind = spec["kind"]
    if kind == "int":  # integer registers have no rounding, hence no steps
        return int_acc(a, b, init=0, **params)
    return _CHAINS[kind](a, b, init=0.0 if kind in ("float", "block") else 0,
                         seed=seed, element=element, step0=step0, **params)


def _buffer_add(spec, buf, part, *, seed, element, step):
    """buf + part with the buffer's rules: one more step of its chain with
    the product part * 1 (exact), so that a float buffer rounds the exact
    sum once (sr draw number `step`), an integer one adds exactly and
    wraps/saturates, and a fixed one rounds part onto its grid, adds and
    wraps/saturates.  A block-FMA buffer adds like a FloatAcc of its
    accumulator format (one addend per step)."""
    params = {k: v for k, v in spec.items() if k != "kind"}
    kind = spec["kind"]
    if kind == "int":
        return int_acc([part], [1], init=buf, **params)
    if kind == "fixed":
        return fixed_acc([part], [1], init=buf, seed=seed, element=element, step0=step, **params)
    if kind == "block":
        params = dict(exp_bits=params["acc_exp_bits"], man_bits=params["acc_man_bits"],
                      rounding=params.get("acc_rounding", "rtz"),
                      subnormals=params.get("acc_subnormals", True),
                      overflow=params.get("acc_overflow", "inf"))
    return float_acc([part], [1], init=buf, seed=seed, element=element, step0=step, **params)


def gemm_order(a, b, *, dataflow, rows, pe, buffer=None, seed=0, n=None):
    """C = A @ B accumulated in the order of a systolic array (DESIGN.md,
    "Order is part of the hardware"); returns an M x N list of lists of the
    raw accumulator values (floats, ints, or Fractions for "fixed").

    a: M rows of K values; b: K rows of N values (exact operand values);
    n: N, needed only when K is 0 (b has no rows to count columns in).
    pe: the PEs' accumulator (see _chain); buffer: the accumulator buffer's
    (default: pe); seed: stochastic rounding's seed.  Output element (i, j)
    is chain number i*N + j (its sr draws use element = i*N + j).

    "os": one chain of pe over all of K, steps 0, 1, ... (blocks for
    "block").
    "ws" and "is" (the same numerics): K is cut into tiles of rows * terms
    products (terms = pe["terms"] for "block", else 1).  Tile t's chain
    starts from zero and its steps are numbered from t * rows (the position
    of its first step in the whole chain).  The buffer starts at +0 and,
    tile after tile, becomes buffer + tile result with the buffer's rules
    (_buffer_add), the add of tile t being sr step ceil(K / terms) + t.
    """
    if dataflow not in ("os", "ws", "is"):
        raise ValueError(f"unknown dataflow {dataflow!r}")
    if rows < 1:
        raise ValueError("rows must be >= 1")
    buffer = pe if buffer is None else buffer
    a = [list(r) for r in a]
    b = [list(r) for r in b]
    m, k = len(a), len(b)
    if b:
        n = len(b[0])
    elif n is None:
        raise ValueError("b has no rows: pass n, the number of output columns")
    if any(len(r) != k for r in a) or any(len(r) != n for r in b):
        raise ValueError("a must be M x K and b K x N")
    terms = pe.get("terms", 1) if pe["kind"] == "block" else 1
    steps = -(-k // terms)
    tile = rows * terms
    zero = {"float": 0.0, "block": 0.0, "int": 0, "fixed": Fraction(0)}[buffer["kind"]]
    out = []
    for i in range(m):
        out_row = []
        for j in range(n):
            element = i * n + j
            col = [b[kk][j] for kk in range(k)]
            if dataflow == "os":
                value = _chain(pe, a[i], col, seed=seed, element=element, step0=0)
            else:
                value = zero
                for t, t0 in enumerate(range(0, k, tile)):
                    part = _chain(pe, a[i][t0:t0 + tile], col[t0:t0 + tile], seed=seed,
                                  element=element, step0=t * rows)
                    value = _buffer_add(buffer, value, part, seed=seed, element=element,
                                        step=steps + t)
            out_row.append(value)
        out.append(out_row)
    return out
