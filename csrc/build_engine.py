"""cffi build of accel_sim._engine (out-of-line API mode), run by setup.py's cffi_modules.

The declarations come from the cdef section of engine.h, so the header is the one source
of truth.  Extra compiler flags (e.g. sanitizers in CI) come from ACCEL_SIM_CFLAGS."""
import os
import shlex
from pathlib import Path

from cffi import FFI

CSRC = Path(__file__).resolve().parent


def _cdef() -> str:
    header = (CSRC / "engine.h").read_text()
    return header.split("/* cdef-begin */", 1)[1].split("/* cdef-end */", 1)[0]


ffibuilder = FFI()
ffibuilder.cdef(_cdef())
ffibuilder.set_source(
    "accel_sim._engine",
    '#include "engine.h"',
    sources=[os.path.relpath(CSRC / "engine.c")],
    include_dirs=[os.path.relpath(CSRC)],
    depends=[os.path.relpath(p) for p in sorted(CSRC.glob("*.[ch]"))],
    extra_compile_args=["-O2", "-fno-math-errno", "-pthread", *shlex.split(os.environ.get("ACCEL_SIM_CFLAGS", ""))],
    extra_link_args=["-pthread", *shlex.split(os.environ.get("ACCEL_SIM_LDFLAGS", ""))],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
