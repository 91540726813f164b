"""Number formats: codes <-> exact values, and a registry by name.

Float formats follow ml_dtypes' float8_* / float16 / bfloat16 semantics exactly; integer and
fixed-point formats are two's complement (or unsigned) integers times 2^-frac_bits.  Encoding
rounds each value once from its exact float32/float64 value in the C engine (csrc/round.c).
"""
from __future__ import annotations

import math

import numpy as np

from accel_sim._native import check_int as _check_int, check_memory, check_seed, ffi, lib, pointer, rounding_code

__all__ = ["Format", "FloatFormat", "FixedFormat", "IntFormat", "PositFormat", "get", "names", "register"]

_CODE_DTYPES = ((8, np.uint8), (16, np.uint16), (32, np.uint32), (64, np.uint64))
_NAN_STYLES = {"ieee": lib.ACS_NAN_IEEE, "fn": lib.ACS_NAN_FN, "fnuz": lib.ACS_NAN_FNUZ,
               "none": lib.ACS_NAN_NONE, "pow2": lib.ACS_NAN_POW2}


class Format:
    """A number format with codes of `bits` bits, stored in the smallest unsigned dtype."""

    name: str
    bits: int
    has_inf: bool = False
    has_nan: bool = False

    def __init__(self, name: str, bits: int, struct):
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty string, got {name!r}")
        self.name = name
        self.bits = bits
        self.code_dtype = np.dtype(next(t for b, t in _CODE_DTYPES if bits <= b))
        self._c = struct  # acs_format *, owned

    # -- properties every format has -------------------------------------------------
    @property
    def max(self) -> float:
        """Largest finite value."""
        raise NotImplementedError

    @property
    def min_normal(self) -> float:
        raise NotImplementedError

    @property
    def min_subnormal(self) -> float:
        raise NotImplementedError

    # -- conversions ----------------------------------------------------------------
    def encode(self, x, rounding: str = "rne", saturate: bool = False, seed: int = 0):
        """Round values onto this format and return their codes.

        x: float16/32/64 or integer array (float64 is rounded once from its exact value).
        rounding: rne rna rtz rup rdn rto sr; sr draws from (seed, flat C-order index).
        saturate: clamp overflow (and +-inf) to +-max instead of inf/NaN (floats) or an error
        (integers)."""
        mode = rounding_code(rounding)
        seed = check_seed(seed)
        if not isinstance(saturate, (bool, np.bool_)):
            raise TypeError(f"saturate must be a bool, got {type(saturate).__name__}")
        is_scalar = np.ndim(x) == 0 and not isinstance(x, np.ndarray)
        check_memory(np.size(x), 8 + self.code_dtype.itemsize, "x")   # a float copy and the codes
        values = _as_float_input(x)
        codes = np.empty(values.shape, dtype=self.code_dtype)
        overflow = lib.ACS_OVF_SATURATE if saturate else self._overflow_policy()
        bad = ffi.new("int64_t *", -1)
        in_bits = 8 * values.itemsize
        table = self._encode_table(in_bits, mode, overflow, values.size)
        encode = lib.acs_encode_f32 if in_bits == 32 else lib.acs_encode_f64
        status = encode(self._c, pointer(values, "float *" if in_bits == 32 else "double *"), values.size,
                        pointer(codes, "void *"), mode, overflow, seed, 0, table, bad)
        if status != lib.ACS_OK:
            self._raise_encode_error(status, values, bad[0])
        return codes[()] if is_scalar else codes

    def decode(self, codes) -> np.ndarray:
        """Exact float64 values of codes (any integer array holding codes of this format)."""
        arr = np.asarray(codes)
        if arr.dtype.kind not in "ui":
            raise TypeError(f"codes must be an integer array of {self.name} codes, got dtype {arr.dtype}")
        check_memory(arr.size, 8 + self.code_dtype.itemsize, "codes")
        if arr.size and (arr.min() < 0 or (self.bits < 64 and int(arr.max()) >= 1 << self.bits)):
            raise ValueError(f"codes must lie in [0, {(1 << self.bits) - 1}] for {self.name}, "
                             f"got values in [{arr.min()}, {arr.max()}]")
        arr = np.require(arr, dtype=self.code_dtype, requirements="C")
        out = np.empty(arr.shape, dtype=np.float64)
        lib.acs_decode(self._c, pointer(arr, "void *"), arr.size, pointer(out, "double *"))
        return out

    def all_codes(self) -> np.ndarray:
        """Every code of the format, in order (formats of at most 16 bits)."""
        if self.bits > 16:
            raise ValueError(f"{self.name} has 2**{self.bits} codes; all_codes is for formats of at most 16 bits")
        return np.arange(1 << self.bits, dtype=self.code_dtype)

    def _overflow_policy(self) -> int:
        raise NotImplementedError

    _TABLE_MIN_VALUES = 1 << 14  # below this, building a table costs more than it saves

    def _encode_table(self, in_bits, mode, overflow, n):
        """The engine's memo of its rounding for this case (built once, cached), or NULL."""
        key = (in_bits, mode, overflow)
        tables = self.__dict__.setdefault("_tables", {})
        if key not in tables:
            if n < self._TABLE_MIN_VALUES:
                return ffi.NULL
            size = lib.acs_encode_table_size(self._c, in_bits, mode)
            table = ffi.new("acs_encode_entry[]", size) if size else ffi.NULL
            if size and lib.acs_encode_table_build(self._c, in_bits, mode, overflow, table, size) != lib.ACS_OK:
                table = ffi.NULL
            tables[key] = table
        return tables[key]

    def _raise_encode_error(self, status, values, index):
        where = _position(values, index)
        if status == lib.ACS_ERR_NAN:
            raise ValueError(f"x{where} is NaN, which {self.name} cannot represent")
        if status == lib.ACS_ERR_RANGE:
            raise ValueError(f"x{where} = {float(values.reshape(-1)[index])!r} is outside {self.name}'s range "
                             f"[{self.min}, {self.max}]; pass saturate=True to clamp")
        raise ValueError(f"the engine rejected the arguments for {self.name} (status {status})")

    def __repr__(self):
        return f"<Format {self.name}>"

    def _key(self):
        raise NotImplementedError

    def __eq__(self, other):
        return isinstance(other, Format) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())


class FloatFormat(Format):
    """A binary floating-point format: 1 sign bit, exp_bits exponent bits, man_bits fraction bits.

    nan: "ieee" (the all-ones exponent holds inf, if `inf`, and NaNs), "fn" (no inf; only the
    all-ones code of each sign is NaN, as float8_e4m3fn), "fnuz" (no inf, no negative zero; the
    negative-zero code is the NaN, as float8_*fnuz), "none" (no inf, no NaN: every code is a
    number, as float4_e2m1fn / float6_*; overflow saturates, NaN input is an error), "pow2"
    (man_bits=0 only: unsigned powers of two 2^(field - bias) with no sign, no zero, and the
    all-ones code NaN, as float8_e8m0fnu).  bias defaults to 2^(e-1)-1, or 2^(e-1) for fnuz.
    subnormals=False decodes subnormal codes as zero and flushes results below the smallest
    normal to a zero of the same sign.  See docs/numerics.md for the rules of "none"/"pow2"."""

    def __init__(self, exp_bits: int, man_bits: int, bias: int | None = None, inf: bool = True,
                 nan: str = "ieee", subnormals: bool = True, name: str | None = None):
        _check_int("exp_bits", exp_bits, 2, 11)
        _check_int("man_bits", man_bits, 0, 52)
        if nan not in _NAN_STYLES:
            raise ValueError(f"nan must be one of {sorted(_NAN_STYLES)}, got {nan!r}")
        if inf and nan != "ieee":
            raise ValueError(f"inf=True needs nan='ieee' (an all-ones exponent for inf), got nan={nan!r}")
        if nan in ("ieee", "fn") and man_bits == 0:
            raise ValueError(f"nan={nan!r} needs man_bits >= 1 to encode NaN apart from inf/max")
        if nan == "pow2" and (man_bits != 0 or not subnormals):
            raise ValueError("nan='pow2' (unsigned powers of two) needs man_bits=0 and the default subnormals=True")
        if bias is None:
            bias = 2 ** (exp_bits - 1) - (0 if nan == "fnuz" else 1)
        _check_int("bias", bias, -(2**20), 2**20)
        emin = 1 - bias
        top_exponent = 2**exp_bits - 1 - bias
        if nan == "ieee":
            emax, max_sig = top_exponent - 1, 2 ** (man_bits + 1) - 1
        elif nan == "fn":
            emax, max_sig = top_exponent, 2 ** (man_bits + 1) - 2
        elif nan == "pow2":  # every field but the all-ones NaN is a normal power of two
            emin, emax, max_sig = -bias, top_exponent - 1, 1
        else:
            emax, max_sig = top_exponent, 2 ** (man_bits + 1) - 1
        if emin - man_bits < -1074 or emax > 1023:
            raise ValueError(f"bias={bias} puts values of e{exp_bits}m{man_bits} outside float64's range")
        self.exp_bits, self.man_bits, self.bias = exp_bits, man_bits, bias
        self.has_inf, self.has_nan, self.nan_style = bool(inf), nan != "none", nan
        self.signed = nan != "pow2"
        self.subnormals = bool(subnormals) and nan != "pow2"  # pow2: no zero, all fields normal
        self.emin, self.emax, self.max_sig = emin, emax, max_sig
        bits = int(self.signed) + exp_bits + man_bits
        struct = ffi.new("acs_format *")
        g = struct.grid
        g.kind, g.man_bits, g.emin, g.emax, g.max_sig = lib.ACS_GRID_FLOAT, man_bits, emin, emax, max_sig
        g.subnormals = self.subnormals
        struct.bits, struct.exp_bits, struct.bias = bits, exp_bits, bias
        struct.has_inf, struct.nan_style = self.has_inf, _NAN_STYLES[nan]
        if name is None:
            name = f"e{exp_bits}m{man_bits}" + ("" if nan == "ieee" else nan)
            if bias != 2 ** (exp_bits - 1) - (0 if nan == "fnuz" else 1):
                name += f"b{bias}"
            if not inf and nan == "ieee":
                name += "noinf"
            if not subnormals and nan != "pow2":
                name += "ftz"
        super().__init__(name, bits, struct)

    @property
    def max(self) -> float:
        return math.ldexp(self.max_sig, self.emax - self.man_bits)

    @property
    def min(self) -> float:
        """Most negative finite value (the smallest one for unsigned pow2 formats)."""
        return -self.max if self.signed else self.min_normal

    @property
    def min_normal(self) -> float:
        return math.ldexp(1.0, self.emin)

    @property
    def min_subnormal(self) -> float:
        return math.ldexp(1.0, self.emin - self.man_bits) if self.subnormals else self.min_normal

    def _overflow_policy(self) -> int:
        if self.nan_style == "none":  # no inf or NaN to overflow to: clamp, as ml_dtypes does
            return lib.ACS_OVF_SATURATE
        return lib.ACS_OVF_INF if self.has_inf else lib.ACS_OVF_NAN

    def _key(self):
        return ("float", self.exp_bits, self.man_bits, self.bias, self.has_inf, self.nan_style, self.subnormals)


class FixedFormat(Format):
    """Signed (two's complement) or unsigned fixed point: an integer k of int_bits + frac_bits
    bits standing for k * 2^-frac_bits.  int_bits counts the sign bit of signed formats."""

    has_inf = False
    has_nan = False

    def __init__(self, int_bits: int, frac_bits: int, signed: bool = True, name: str | None = None):
        _check_int("int_bits", int_bits, 0, 53)
        _check_int("frac_bits", frac_bits, -64, 64)
        bits = int_bits + frac_bits
        _check_int("int_bits + frac_bits", bits, 2 if signed else 1, 53)
        self.int_bits, self.frac_bits, self.signed = int_bits, frac_bits, bool(signed)
        struct = ffi.new("acs_format *")
        g = struct.grid
        g.kind, g.total_bits, g.frac_bits, g.is_signed = lib.ACS_GRID_FIXED, bits, frac_bits, self.signed
        struct.bits = bits
        if name is None:
            name = f"{'s' if signed else 'u'}fix{int_bits}.{frac_bits}"
        super().__init__(name, bits, struct)

    @property
    def max(self) -> float:
        return math.ldexp(2 ** (self.bits - self.signed) - 1, -self.frac_bits)

    @property
    def min(self) -> float:
        return -math.ldexp(2 ** (self.bits - 1), -self.frac_bits) if self.signed else 0.0

    @property
    def min_normal(self) -> float:
        """Smallest nonzero magnitude (fixed point has no subnormals)."""
        return math.ldexp(1.0, -self.frac_bits)

    min_subnormal = min_normal

    def _overflow_policy(self) -> int:
        return lib.ACS_OVF_ERROR

    def _key(self):
        return ("fixed", self.int_bits, self.frac_bits, self.signed)


class IntFormat(FixedFormat):
    """An integer format of `bits` bits; int4 codes are the two's complement nibble (0..15)."""

    def __init__(self, bits: int, signed: bool = True, name: str | None = None):
        super().__init__(bits, 0, signed, name or f"{'' if signed else 'u'}int{bits}")


class PositFormat(Format):
    """A posit of n bits with es exponent bits (Posit Standard 2022; es=2 is the standard's,
    es=0 SoftPosit's posit8).  One zero, one NaR (code 100..0, decoded as NaN).

    Encoding rounds the bit pattern: rne (ties to the even pattern; in the tapered region the
    tie point is the (n+1)-bit posit between two neighbours, not their arithmetic mean), rna,
    rtz, rup, rdn, rto; sr is refused.  Nonzero values never round to 0 (+-minpos instead)
    and saturate at +-maxpos; NaN and +-inf encode to NaR; `saturate` changes nothing.
    max = maxpos = 2^((n-2) 2^es); min_normal = min_subnormal = minpos = 1/maxpos (posits have
    no subnormals: precision tapers in the regime instead)."""

    has_inf = False
    has_nan = True
    signed = True

    def __init__(self, n: int = 8, es: int = 0, name: str | None = None):
        _check_int("n", n, 3, 16)
        _check_int("es", es, 0, 3)
        self.n, self.es = n, es
        self.max_scale = (n - 2) << es
        self.grid_man_bits = max(n - 3 - es, 0)  # the widest fraction (next to 1.0)
        struct = ffi.new("acs_format *")
        g = struct.grid
        g.kind, g.man_bits = lib.ACS_GRID_POSIT, self.grid_man_bits
        g.emin, g.emax = -self.max_scale, self.max_scale
        # every value is a multiple of 2^-frac_bits below 2^(emax+1)
        g.total_bits, g.frac_bits, g.is_signed = 2 * self.max_scale + 2, self.max_scale, 1
        struct.bits, struct.exp_bits = n, es
        super().__init__(name or f"posit{n}es{es}", n, struct)

    @property
    def max(self) -> float:
        """maxpos."""
        return math.ldexp(1.0, self.max_scale)

    @property
    def min(self) -> float:
        return -self.max

    @property
    def min_normal(self) -> float:
        """minpos (posits have no subnormals)."""
        return math.ldexp(1.0, -self.max_scale)

    min_subnormal = min_normal

    @property
    def nar(self) -> int:
        """The NaR code."""
        return 1 << (self.n - 1)

    def encode(self, x, rounding: str = "rne", saturate: bool = False, seed: int = 0):
        if rounding == "sr":
            raise ValueError(f"rounding 'sr' is not supported for {self.name}: posits round their bit "
                             "pattern (rne rna rtz rup rdn rto)")
        return super().encode(x, rounding=rounding, saturate=saturate, seed=seed)

    def _overflow_policy(self) -> int:
        return lib.ACS_OVF_SATURATE  # posits saturate at maxpos by definition

    def _key(self):
        return ("posit", self.n, self.es)


def _position(values, index) -> str:
    """The multi-index of a flat C-order index, as the user would write it."""
    return str([int(i) for i in np.unravel_index(index, values.shape)]) if values.ndim else "[()]"


def _as_float_input(x) -> np.ndarray:
    """Native-endian float32 or float64 C-contiguous values, converted exactly or refused."""
    arr = np.asarray(x)
    kind = arr.dtype.kind
    if kind == "f":
        if arr.dtype.itemsize == 2:
            return np.require(arr, dtype=np.float32, requirements="C")
        if arr.dtype.itemsize in (4, 8):
            return np.require(arr, dtype=np.dtype(f"f{arr.dtype.itemsize}"), requirements="C")
        raise TypeError(f"x must be float16, float32 or float64, got {arr.dtype} (convert it first)")
    if kind in "uib":
        if arr.size and kind != "b" and np.abs(arr.astype(np.float64)).max() > 2.0**53:
            raise ValueError("x holds integers beyond 2**53, which float64 cannot hold exactly")
        return np.require(arr, dtype=np.float64, requirements="C")
    raise TypeError(f"x must be a float or integer array, got dtype {arr.dtype}")


_FACTORIES = {
    "int8": lambda: IntFormat(8),
    "uint8": lambda: IntFormat(8, signed=False),
    "int4": lambda: IntFormat(4),
    "e5m2": lambda: FloatFormat(5, 2, name="e5m2"),
    "e4m3": lambda: FloatFormat(4, 3, name="e4m3"),
    "e4m3fn": lambda: FloatFormat(4, 3, inf=False, nan="fn", name="e4m3fn"),
    "e4m3fnuz": lambda: FloatFormat(4, 3, inf=False, nan="fnuz", name="e4m3fnuz"),
    "e5m2fnuz": lambda: FloatFormat(5, 2, inf=False, nan="fnuz", name="e5m2fnuz"),
    "e3m4": lambda: FloatFormat(3, 4, name="e3m4"),
    "e2m1": lambda: FloatFormat(2, 1, inf=False, nan="none", name="e2m1"),
    "e2m3": lambda: FloatFormat(2, 3, inf=False, nan="none", name="e2m3"),
    "e3m2": lambda: FloatFormat(3, 2, inf=False, nan="none", name="e3m2"),
    "e8m0": lambda: FloatFormat(8, 0, inf=False, nan="pow2", name="e8m0"),
    "posit8": lambda: PositFormat(8, 0, name="posit8"),
    "posit8es2": lambda: PositFormat(8, 2, name="posit8es2"),
    "posit16": lambda: PositFormat(16, 1, name="posit16"),   # SoftPosit's posit16 (es=1)
    "fp16": lambda: FloatFormat(5, 10, name="fp16"),
    "bf16": lambda: FloatFormat(8, 7, name="bf16"),
    "fp32": lambda: FloatFormat(8, 23, name="fp32"),
}
_REGISTRY: dict[str, Format] = {}


def names() -> list[str]:
    """Names accepted by get()."""
    return list(_FACTORIES) + [n for n in _REGISTRY if n not in _FACTORIES]


def register(fmt: Format) -> Format:
    """Make a format available to get() by its name."""
    if not isinstance(fmt, Format):
        raise TypeError(f"fmt must be a Format, got {type(fmt).__name__}")
    existing = _REGISTRY.get(fmt.name) or (_FACTORIES[fmt.name]() if fmt.name in _FACTORIES else None)
    if existing is not None and existing != fmt:
        raise ValueError(f"a different format is already registered as {fmt.name!r}")
    _REGISTRY[fmt.name] = fmt
    return fmt


def get(fmt, argname: str = "format") -> Format:
    """The Format named `fmt` (a Format is returned as it is); errors name `argname`."""
    if isinstance(fmt, Format):
        return fmt
    if not isinstance(fmt, str):
        raise TypeError(f"{argname} must be a format name or a Format, got {type(fmt).__name__}")
    if fmt not in _REGISTRY:
        if fmt not in _FACTORIES:
            raise ValueError(f"unknown format {fmt!r} for {argname}; known formats: {', '.join(names())}")
        _REGISTRY[fmt] = _FACTORIES[fmt]()
    return _REGISTRY[fmt]
