"""MAC and accumulator descriptions, and `accumulate`: chains of multiply-accumulate steps
run bit-exactly in the C engine (csrc/accumulate.c).

FloatAcc  acc <- round(acc + a*b): one rounding of the exact sum (fused), IEEE-style grid.
IntAcc    exact integer sum in a `bits`-wide two's complement register, wrapped or saturated.
FixedAcc  each exact product rounded onto 2^-frac_bits, added exactly, wrapped or saturated.
BlockFMA  the multi-term fused adder of tensor cores (see DESIGN.md "Numerics").
Quire     the exact register of posit dot products, rounded once to the posit when read.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from accel_sim import formats
from accel_sim._native import (ROUNDING_MODES, check_int as _check_int, check_memory, check_seed, ffi, lib, pointer,
                               raise_for_status)

__all__ = ["FloatAcc", "IntAcc", "FixedAcc", "BlockFMA", "Quire", "MAC", "accumulate", "get_acc", "mac_from_names",
           "ACCUMULATORS"]

_FLOAT_OVERFLOW = {"inf": lib.ACS_OVF_INF, "saturate": lib.ACS_OVF_SATURATE}
_REGISTER_OVERFLOW = {"wrap": lib.ACS_OVF_WRAP, "saturate": lib.ACS_OVF_SATURATE}


def _check_choice(argname, value, choices):
    if value not in choices:
        raise ValueError(f"{argname} must be one of {sorted(choices)}, got {value!r}")


@dataclass(frozen=True)
class FloatAcc:
    """A floating-point accumulator with exp_bits exponent and man_bits fraction bits.

    IEEE-style: bias 2^(e-1)-1, the all-ones exponent reserved, so max = (2 - 2^-m) * 2^bias.
    overflow: "inf" (IEEE) or "saturate" (clamp to +-max, infinities too)."""

    exp_bits: int
    man_bits: int
    rounding: str = "rne"
    subnormals: bool = True
    overflow: str = "inf"

    def __post_init__(self):
        _check_int("exp_bits", self.exp_bits, 2, 11)
        _check_int("man_bits", self.man_bits, 0, 52)
        _check_choice("rounding", self.rounding, ROUNDING_MODES)
        _check_choice("overflow", self.overflow, _FLOAT_OVERFLOW)
        if not isinstance(self.subnormals, (bool, np.bool_)):
            raise TypeError(f"subnormals must be a bool, got {type(self.subnormals).__name__}")

    @property
    def bias(self) -> int:
        return 2 ** (self.exp_bits - 1) - 1

    @property
    def emin(self) -> int:
        return 1 - self.bias

    @property
    def max(self) -> float:
        return math.ldexp(2 ** (self.man_bits + 1) - 1, self.bias - self.man_bits)

    @property
    def bits(self) -> int:
        """Width of the register: sign, exponent and fraction."""
        return 1 + self.exp_bits + self.man_bits

    @property
    def clamp(self):
        """(lo, hi) a saturating register clamps to, or None when it overflows to inf."""
        return (-self.max, self.max) if self.overflow == "saturate" else None

    @property
    def name(self) -> str:
        for n, acc in ACCUMULATORS.items():
            if acc == self:
                return n
        extra = "" if self.subnormals else ",ftz"
        extra += "" if self.overflow == "inf" else f",{self.overflow}"
        return f"fp(e{self.exp_bits}m{self.man_bits},{self.rounding}{extra})"

    def _fill(self, c):
        c.kind = lib.ACS_ACC_FLOAT
        self._fill_grid(c.grid)
        self._fill_grid(c.addend)
        c.rounding, c.overflow = ROUNDING_MODES[self.rounding], _FLOAT_OVERFLOW[self.overflow]

    def _fill_grid(self, g):
        g.kind, g.man_bits, g.emin, g.emax = lib.ACS_GRID_FLOAT, self.man_bits, self.emin, self.bias
        g.max_sig, g.subnormals = 2 ** (self.man_bits + 1) - 1, bool(self.subnormals)


@dataclass(frozen=True)
class IntAcc:
    """An integer accumulator register of `bits` bits (2..64): exact sums, then wrap (two's
    complement) or saturate after every step.  Operands must be integer formats."""

    bits: int
    overflow: str = "wrap"

    def __post_init__(self):
        _check_int("bits", self.bits, 2, 64)
        _check_choice("overflow", self.overflow, _REGISTER_OVERFLOW)

    @property
    def name(self) -> str:
        for n, acc in ACCUMULATORS.items():
            if acc == self:
                return n
        return f"int{self.bits}" + ("" if self.overflow == "wrap" else ",sat")

    @property
    def max(self) -> int:
        return 2 ** (self.bits - 1) - 1

    @property
    def clamp(self):
        """(lo, hi) a saturating register clamps to, or None when it wraps."""
        return (-self.max - 1, self.max) if self.overflow == "saturate" else None

    def _fill(self, c):
        c.kind = lib.ACS_ACC_INT
        g = c.grid
        g.kind, g.total_bits, g.frac_bits, g.is_signed = lib.ACS_GRID_FIXED, self.bits, 0, 1
        c.rounding, c.overflow = lib.ACS_RNE, _REGISTER_OVERFLOW[self.overflow]


@dataclass(frozen=True)
class FixedAcc:
    """A fixed-point accumulator: a two's complement register of int_bits + frac_bits bits
    (int_bits counts the sign) holding multiples of 2^-frac_bits.  Each exact product is
    rounded onto that grid with `rounding`, added exactly, then wrapped or saturated.  With
    enough frac_bits and int_bits it is a Kulisch (exact) accumulator; results wider than 53
    bits are read out rounded to nearest float64."""

    int_bits: int
    frac_bits: int
    rounding: str = "rne"
    overflow: str = "saturate"

    def __post_init__(self):
        _check_int("int_bits", self.int_bits, 1, 119)
        _check_int("frac_bits", self.frac_bits, -64, 119)
        _check_int("int_bits + frac_bits", self.int_bits + self.frac_bits, 2, 120)
        _check_choice("rounding", self.rounding, ROUNDING_MODES)
        _check_choice("overflow", self.overflow, _REGISTER_OVERFLOW)

    @property
    def name(self) -> str:
        return f"fix({self.int_bits}.{self.frac_bits},{self.rounding},{self.overflow})"

    @property
    def bits(self) -> int:
        return self.int_bits + self.frac_bits

    @property
    def max(self) -> float:
        """The largest register value, read out as float64 (rounded to nearest)."""
        return float(Fraction(2 ** (self.bits - 1) - 1, 1) * Fraction(2) ** -self.frac_bits)

    @property
    def clamp(self):
        """(lo, hi) a saturating register clamps to, as float64, or None when it wraps."""
        return (math.ldexp(-1.0, self.int_bits - 1), self.max) if self.overflow == "saturate" else None

    def _fill(self, c):
        c.kind = lib.ACS_ACC_FIXED
        g = c.grid
        g.kind, g.total_bits, g.frac_bits, g.is_signed = lib.ACS_GRID_FIXED, self.int_bits + self.frac_bits, self.frac_bits, 1
        c.rounding, c.overflow = ROUNDING_MODES[self.rounding], _REGISTER_OVERFLOW[self.overflow]


@dataclass(frozen=True)
class BlockFMA:
    """The block fused multiply-add of tensor cores: one step consumes `terms` products and
    the accumulator, aligns them to the largest exponent, truncates each to `align_bits`
    fraction bits below it, sums exactly and rounds once onto `acc` (a FloatAcc).

    addend: the format of the starting accumulator (the C of D = A*B + C), when it is wider
    than a block's result (FP8 tensor cores take an fp32 C but keep 13 fraction bits);
    default: acc."""

    terms: int
    align_bits: int
    acc: FloatAcc = field(default_factory=lambda: FloatAcc(8, 23, rounding="rtz"))
    addend: FloatAcc | None = None

    def __post_init__(self):
        _check_int("terms", self.terms, 1, 64)
        _check_int("align_bits", self.align_bits, 0, 100)
        for arg in ("acc", "addend"):
            value = getattr(self, arg)
            if not isinstance(value, FloatAcc) and not (arg == "addend" and value is None):
                raise TypeError(f"{arg} must be a FloatAcc, got {type(value).__name__}")

    @property
    def name(self) -> str:
        addend = "" if self.addend in (None, self.acc) else f",addend={self.addend.name}"
        return f"block({self.terms},{self.align_bits},{self.acc.name}{addend})"

    @property
    def bits(self) -> int:
        """Width of the register each block's result is rounded onto (acc's)."""
        return self.acc.bits

    @property
    def max(self) -> float:
        return self.acc.max

    @property
    def clamp(self):
        return self.acc.clamp

    def _fill(self, c):
        self.acc._fill(c)
        (self.addend or self.acc)._fill_grid(c.addend)
        c.kind, c.terms, c.align_bits = lib.ACS_ACC_BLOCK, self.terms, self.align_bits


@dataclass(frozen=True)
class Quire:
    """The quire of a posit format (Posit Standard 2022): a two's complement fixed-point
    register that holds every product of two posits exactly and sums them exactly; reading
    it out rounds once (rne on the bit pattern) to the posit format, from the exact register.

    The least significant bit is minpos^2 = 2^-frac_bits; the width is
    bits = 4 * max_scale + 2 + carry_bits (a sign, the 4*max_scale + 1 bits between minpos^2
    and maxpos^2, and carry bits), at most 128.  Default carry_bits=30: posit8es2 gets the
    standard's 16n = 128 bits (lsb 2^-48), posit8 (es=0) 56 bits (lsb 2^-12).  Any dot product
    of up to max_terms = 2^(carry_bits+1) - 1 products is exact; a longer one can wrap (the
    register wraps modulo 2^bits, like any adder of that width).  A NaR operand makes the
    quire NaR until the end.  Operands must be posits no wider in range than `fmt`.
    readout: the posit format the sum is rounded to when read (default fmt; e.g. "posit16"
    for a wider output than the operands)."""

    fmt: object = "posit8"
    carry_bits: int = 30
    readout: object = None

    def __post_init__(self):
        f = formats.get(self.fmt, "fmt")
        if not isinstance(f, formats.PositFormat):
            raise ValueError(f"a Quire needs a posit format, got fmt={f.name}")
        object.__setattr__(self, "fmt", f)
        r = f if self.readout is None else formats.get(self.readout, "readout")
        if not isinstance(r, formats.PositFormat):
            raise ValueError(f"a quire reads out to a posit format, got readout={r.name}")
        object.__setattr__(self, "readout", r)
        _check_int("carry_bits", self.carry_bits, 0, 126)
        if self.bits > 128:
            raise ValueError(f"a quire of {f.name} with carry_bits={self.carry_bits} needs {self.bits} bits; "
                             "at most 128 are supported")

    @property
    def frac_bits(self) -> int:
        return 2 * self.fmt.max_scale

    @property
    def bits(self) -> int:
        """Width of the register."""
        return 4 * self.fmt.max_scale + 2 + self.carry_bits

    @property
    def int_bits(self) -> int:
        """Bits above the binary point, sign included (bits - frac_bits)."""
        return self.bits - self.frac_bits

    @property
    def max(self) -> float:
        """The largest register value, read out as float64 (rounded to nearest)."""
        return float(Fraction(2 ** (self.bits - 1) - 1, 1) * Fraction(2) ** -self.frac_bits)

    @property
    def clamp(self):
        """(lo, hi) of the read-out values: the register wraps, but reading it out saturates at
        the readout posit's +-maxpos (posits have no overflow to infinity)."""
        return (-self.readout.max, self.readout.max)

    @property
    def max_terms(self) -> int:
        """Products of any posits (maxpos^2 included) that always sum without wrapping."""
        return 2 ** (self.carry_bits + 1) - 1

    @property
    def name(self) -> str:
        if self == ACCUMULATORS["quire"]:
            return "quire"
        extra = "" if self.readout == self.fmt else f",{self.readout.name}"
        return f"quire({self.fmt.name},{self.carry_bits}{extra})"

    def _fill(self, c):
        c.kind = lib.ACS_ACC_QUIRE
        g = c.grid
        g.kind, g.total_bits, g.frac_bits, g.is_signed = lib.ACS_GRID_FIXED, self.bits, self.frac_bits, 1
        c.rounding, c.overflow = lib.ACS_RNE, lib.ACS_OVF_WRAP
        c.readout = self.readout._c[0]


ACCUMULATORS = {
    "fp32": FloatAcc(8, 23),
    "fp16": FloatAcc(5, 10),
    "bf16": FloatAcc(8, 7),
    "int32": IntAcc(32),
    "int24": IntAcc(24),
    "int16": IntAcc(16),
    "quire": Quire("posit8"),
}
_ACC_TYPES = (FloatAcc, IntAcc, FixedAcc, BlockFMA, Quire)


def get_acc(acc, argname: str = "acc"):
    """An accumulator description from its name or itself; errors name `argname`."""
    if isinstance(acc, _ACC_TYPES):
        return acc
    if isinstance(acc, str):
        if acc not in ACCUMULATORS:
            raise ValueError(f"unknown accumulator {acc!r} for {argname}; known: {', '.join(ACCUMULATORS)} "
                             "(or pass FloatAcc/IntAcc/FixedAcc/BlockFMA/Quire)")
        return ACCUMULATORS[acc]
    raise TypeError(f"{argname} must be a name or a FloatAcc/IntAcc/FixedAcc/BlockFMA/Quire, got {type(acc).__name__}")


class MAC:
    """A multiply-accumulate unit: operand formats a and b, and an accumulator.

    scale_acc: the output register of block-scaled GEMMs (OCP MX, VS-Quant): each K-block's
    partial sum times the product of its two block scales is added to it with one rounding
    (a FloatAcc, or a FixedAcc that first rounds the scaled partial onto its grid); default
    fp32 rne.  Unused by unscaled GEMMs.  See docs/scaling.md."""

    def __init__(self, a="int8", b=None, acc="int32", name=None, scale_acc="fp32"):
        self.a = formats.get(a, "a")
        self.b = formats.get(a if b is None else b, "b")
        self.acc = get_acc(acc)
        self.scale_acc = get_acc(scale_acc, "scale_acc")
        if not isinstance(self.scale_acc, (FloatAcc, FixedAcc)):
            raise ValueError(f"scale_acc must be a FloatAcc or a FixedAcc (an integer register is "
                             f"FixedAcc(bits, 0)), got {self.scale_acc.name}")
        if isinstance(self.acc, IntAcc):
            for arg, f in (("a", self.a), ("b", self.b)):
                if not isinstance(f, formats.FixedFormat) or f.frac_bits != 0:
                    raise ValueError(f"IntAcc needs integer operands; {arg} is {f.name}")
        if isinstance(self.acc, Quire):
            for arg, f in (("a", self.a), ("b", self.b)):
                if not isinstance(f, formats.PositFormat) or f.max_scale > self.acc.fmt.max_scale:
                    raise ValueError(f"a quire of {self.acc.fmt.name} needs posit operands within its range; "
                                     f"{arg} is {f.name}")
        self.name = name or f"{self.a.name}x{self.b.name}->{self.acc.name}"
        c = ffi.new("acs_mac *")
        c.a, c.b = self.a._c[0], self.b._c[0]
        self.acc._fill(c.acc)
        self._c = c
        self._scale_c = ffi.new("acs_acc *")
        self.scale_acc._fill(self._scale_c)

    @property
    def terms(self) -> int:
        """Products one step consumes (n of an n-term block fused adder, else 1)."""
        return self.acc.terms if isinstance(self.acc, BlockFMA) else 1

    @property
    def int_output(self) -> bool:
        return isinstance(self.acc, IntAcc)

    def __repr__(self):
        return f"MAC({self.name})"


# Named MAC presets for mac_from_names' "PREFIX:NAME" accumulators: prefix -> builder(a, b, name,
# rounding).  accel_sim.presets registers "tensor_core"; the package imports it, so the table
# is full before any call (and mac.py needs no import of its presets).
NAMED_PRESETS = {}


def register_preset(prefix: str, builder):
    """Let mac_from_names build "prefix:NAME" accumulators with builder(a, b, NAME, rounding)."""
    NAMED_PRESETS[prefix] = builder


def mac_from_names(a, b, acc, rounding=None) -> MAC:
    """A MAC from names: acc is an accumulator name (fp32 fp16 bf16 int32 int24 int16),
    tensor_core:GPU for that GPU's preset (then a and b must both be its input format), or
    quire / quire:READOUT for the quire of the operands' posit format (read out to READOUT);
    rounding replaces a float accumulator's rounding mode."""
    if not isinstance(acc, str):
        raise TypeError(f"acc must be a name, got {type(acc).__name__}")
    prefix, _, rest = acc.partition(":")
    if rest and prefix in NAMED_PRESETS:
        return NAMED_PRESETS[prefix](a, b, rest, rounding)
    if acc == "quire" or acc.startswith("quire:"):   # the quire of the operands' posit format
        if a != b:
            raise ValueError(f"acc {acc} needs a and b of one posit format, got {a} and {b}")
        return MAC(a, b, Quire(a, readout=acc[6:] or None))
    desc = get_acc(acc)
    if rounding is not None:
        if not isinstance(desc, FloatAcc):
            raise ValueError(f"rounding applies to float accumulators, not {acc}")
        desc = FloatAcc(desc.exp_bits, desc.man_bits, rounding=rounding)
    return MAC(a, b, desc)


def _codes(x, fmt, argname):
    arr = np.asarray(x)
    if arr.dtype.kind not in "ui":
        raise TypeError(f"{argname} must be an integer array of {fmt.name} codes (encode values first), "
                        f"got dtype {arr.dtype}")
    check_memory(arr.size, fmt.code_dtype.itemsize, argname)
    if arr.size and (arr.min() < 0 or int(arr.max()) >> fmt.bits):
        raise ValueError(f"{argname} holds values outside [0, {(1 << fmt.bits) - 1}], not {fmt.name} codes")
    return arr


def accumulate(a_codes, b_codes, mac: MAC, init=0.0, seed: int = 0):
    """Multiply-accumulate along the last axis, in order, one chain per leading index.

    a_codes, b_codes: codes of mac.a and mac.b, broadcast against each other (..., K).
    init: starting accumulator value(s), broadcast to the leading shape; rounded to nearest
    even onto the accumulator's grid (integer for IntAcc).
    seed: stochastic rounding draws acs_rand32(seed, chain's flat index, step).
    Returns float64 accumulator values (int64 for IntAcc) of the leading shape."""
    if not isinstance(mac, MAC):
        raise TypeError(f"mac must be a MAC, got {type(mac).__name__}")
    seed = check_seed(seed)
    a = _codes(a_codes, mac.a, "a_codes")
    b = _codes(b_codes, mac.b, "b_codes")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("a_codes and b_codes need at least one axis (the reduction axis, last)")
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"a_codes {a.shape} and b_codes {b.shape} do not broadcast") from None
    lead, k = shape[:-1], shape[-1]
    check_memory(math.prod(shape), mac.a.code_dtype.itemsize + mac.b.code_dtype.itemsize, "a_codes and b_codes")
    a = np.ascontiguousarray(np.broadcast_to(a, shape), dtype=mac.a.code_dtype)
    b = np.ascontiguousarray(np.broadcast_to(b, shape), dtype=mac.b.code_dtype)
    init_arr = np.asarray(init)
    if init_arr.dtype.kind not in "fiub":
        raise TypeError(f"init must be numbers, got dtype {init_arr.dtype}")
    try:
        init_arr = np.ascontiguousarray(np.broadcast_to(init_arr.astype(np.float64), lead))
    except ValueError:
        raise ValueError(f"init of shape {init_arr.shape} does not broadcast to {lead}") from None
    if not isinstance(mac.acc, (FloatAcc, BlockFMA)):
        if not np.all(np.isfinite(init_arr)):
            raise ValueError(f"init must be finite for {mac.acc.name}")
        if isinstance(mac.acc, IntAcc) and not np.all(init_arr == np.round(init_arr)):
            raise ValueError("init must be integers for an IntAcc")
    rows = int(np.prod(lead, dtype=np.int64))
    out = np.empty(lead, dtype=np.int64 if mac.int_output else np.float64)
    status = lib.acs_accumulate(
        mac._c, pointer(a, "void *"), pointer(b, "void *"), rows, k, pointer(init_arr, "double *"),
        ffi.NULL if mac.int_output else pointer(out, "double *"),
        pointer(out, "int64_t *") if mac.int_output else ffi.NULL, seed, 0)
    raise_for_status(status, mac.acc.name, mac)
    return out
