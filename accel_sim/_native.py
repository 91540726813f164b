"""Glue between numpy arrays and the C engine: the built module, enum lookups, pointers."""
from __future__ import annotations

import os

import numpy as np

from accel_sim._engine import ffi, lib

# the engine's dataflow codes (acs_gemm's `dataflow`)
DATAFLOWS = {"os": lib.ACS_OS, "ws": lib.ACS_WS, "is": lib.ACS_IS}

ROUNDING_MODES = {
    "rne": lib.ACS_RNE,  # nearest, ties to even
    "rna": lib.ACS_RNA,  # nearest, ties away from zero
    "rtz": lib.ACS_RTZ,  # toward zero
    "rup": lib.ACS_RUP,  # toward +inf
    "rdn": lib.ACS_RDN,  # toward -inf
    "rto": lib.ACS_RTO,  # to odd
    "sr": lib.ACS_SR,    # stochastic, seeded
}


def rounding_code(rounding, argname: str = "rounding") -> int:
    if not isinstance(rounding, str) or rounding not in ROUNDING_MODES:
        raise ValueError(f"{argname} must be one of {sorted(ROUNDING_MODES)}, got {rounding!r}")
    return ROUNDING_MODES[rounding]


def check_seed(seed, argname: str = "seed") -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{argname} must be an integer, got {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"{argname} must be in [0, 2**64), got {seed}")
    return seed


def raise_for_status(status: int, acc_name: str, what) -> None:
    """Turn an engine status from accumulating into the exception the user should see."""
    if status == lib.ACS_ERR_NAN:
        raise ValueError(f"the operands hold NaN, which {acc_name} cannot accumulate")
    if status == lib.ACS_ERR_RANGE:
        raise ValueError(f"the operands hold infinities, which {acc_name} cannot accumulate")
    if status != lib.ACS_OK:
        raise ValueError(f"the engine rejected {what!r} (status {status})")


def check_int(argname: str, value, lo: int, hi: int) -> None:
    """An integer (not a bool) in [lo, hi], or an error naming argname."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argname} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{argname} must be in [{lo}, {hi}], got {value}")


def check_float_array(value, argname: str, ndim=None, finite: bool = True, what: str = "a float array"):
    """value as a numpy array of a float or integer dtype (of ndim dimensions, all finite when
    asked), or an error naming argname."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{argname} must be {what}, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{argname} must have {ndim} dimensions, got shape {arr.shape}")
    if finite and not np.all(np.isfinite(arr)):
        raise ValueError(f"{argname} contains NaN or inf")
    return arr


DEFAULT_MEMORY_LIMIT = 8 << 30


def size_text(nbytes) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def memory_limit(limit=None) -> int:
    """The working-memory limit in bytes: `limit` (an Array's memory_limit_bytes), else the
    ACCEL_SIM_MEMORY_LIMIT environment variable, else 8 GiB."""
    argname = "memory_limit_bytes"
    if limit is None:
        env = os.environ.get("ACCEL_SIM_MEMORY_LIMIT")
        if env is None:
            return DEFAULT_MEMORY_LIMIT
        argname = "ACCEL_SIM_MEMORY_LIMIT"
        try:
            limit = int(env)
        except ValueError:
            raise ValueError(f"ACCEL_SIM_MEMORY_LIMIT must be a number of bytes, got {env!r}") from None
    if isinstance(limit, (bool, np.bool_)) or not isinstance(limit, (int, np.integer)):
        raise TypeError(f"{argname} must be an integer number of bytes, got {type(limit).__name__}")
    if limit < 1:
        raise ValueError(f"{argname} must be positive, got {limit}")
    return int(limit)


def check_memory(size: int, bytes_per_element: int, argname: str) -> None:
    """Refuse, before anything is allocated or scanned, an argument of `size` elements whose
    working copies (bytes_per_element each) would exceed the memory limit: a broadcast view of
    terabytes costs nothing to pass but everything to convert."""
    need = int(size) * bytes_per_element
    limit = memory_limit()
    if need > limit:
        raise ValueError(f"{argname} has {int(size):,} elements: its working copies would need about {size_text(need)}, "
                         f"over the memory limit ({size_text(limit)}; ACCEL_SIM_MEMORY_LIMIT sets it)")


def pointer(array: np.ndarray, ctype: str):
    """A C pointer into a C-contiguous numpy array (the caller keeps the array alive)."""
    assert array.flags.c_contiguous
    return ffi.cast(ctype, ffi.from_buffer(array, require_writable=False))


class _EngineSwitch:
    """Context manager setting one of the engine's global switches for the duration of a block
    (tests compare the paths they choose between)."""

    setter = None

    def __init__(self, enabled: bool):
        self.enabled = bool(enabled)

    def __enter__(self):
        self.previous = type(self).setter(self.enabled)
        return self

    def __exit__(self, *exc):
        type(self).setter(self.previous)


class fast_paths(_EngineSwitch):
    """The exact fast paths on (default) or off (everything through the general step)."""

    setter = staticmethod(lambda on: lib.acs_set_fast_paths(on))


class vector_isa(_EngineSwitch):
    """Which builds the vector kernels take: True or 1 the best the CPU has (default), False or 0
    their portable C versions, 2 AVX2 where the CPU also has AVX-512."""

    setter = staticmethod(lambda level: lib.acs_set_vector_isa(level))

    def __init__(self, level):
        self.enabled = int(level)
