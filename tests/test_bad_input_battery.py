"""A bad-input battery over every public function, each case in a process of its own.

Every case is a snippet of Python run in a fresh interpreter (or, for the CLI, an
`accel-sim` command line), so that a crash (a segfault, an abort), a hang or an attempted
allocation that would take the machine down fails that one case instead of the test runner:

* the snippet's exception is caught in the child and reported (type, base classes, message),
  and the test checks the type and that the message names the offending argument (or file);
* a child killed by a signal, or one that gives no answer within its time limit (30 s; 10 s
  for the memory-guard cases), fails the case;
* children run under an address-space limit (RLIMIT_AS, 4 GiB), so that an allocation of
  terabytes fails at once instead of driving the machine into its OOM killer;
* "ok" cases (non-contiguous, Fortran-ordered, strided, byte-swapped or empty inputs, and
  numpy scalars) must run to the end, and compare their bits with C-contiguous input;
* huge shapes whose outputs or working copies would need terabytes (broadcast views included)
  must be refused with a clear error before anything is allocated or scanned.

The cases run two (or the number of cores) at a time from a module fixture, so the whole
battery takes well under a minute; running one case (-k) runs only that one.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "traces"
TIMEOUT = 30
GUARD_TIMEOUT = 10
MEMORY_LIMIT = 4 << 30
MARK = "@@BATTERY@@"

PRELUDE = f"""
import json, os, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))
import numpy as np
import accel_sim as acs
from accel_sim.formats import FloatFormat, FixedFormat, IntFormat
from accel_sim.mac import MAC, BlockFMA, FixedAcc, FloatAcc, IntAcc, accumulate
TMP = os.environ["BATTERY_TMP"]
TRACES = {str(TRACES)!r}

def bits(x):
    x = np.asarray(x)
    if x.dtype.kind in "iub":
        return x.astype(np.int64).tolist(), x.shape
    return np.ascontiguousarray(x, np.float64).view(np.uint64).tolist(), x.shape

def same(x, y, what=""):
    assert bits(x) == bits(y), f"{{what}}: bits differ"

def rows1():
    return [{{"a": "int8", "acc": "int32", "energy_pj": 1.0, "error": 0.1}}]
"""

RUNNER = """
def _report(**kw):
    sys.stdout.flush()
    print({mark!r} + json.dumps(kw), flush=True)
try:
    exec(compile({code!r}, "<case>", "exec"), {{**globals()}})
except BaseException as e:
    _report(exc=type(e).__name__, mro=[c.__name__ for c in type(e).__mro__], msg=str(e))
else:
    _report(exc=None)
"""


@dataclass
class Case:
    id: str
    code: str = ""                      # Python run in the child (for "cli": unused)
    raises: tuple = ()                  # accepted exception type names (or base class names)
    match: str | None = None            # regex the message must match (names the argument)
    argv: list = field(default_factory=list)   # CLI cases: accel-sim arguments
    timeout: int = TIMEOUT
    env: dict = field(default_factory=dict)
    guard: bool = False                 # a memory-guard case: numpy's own allocation failure does not count

    @property
    def kind(self):
        return "cli" if self.argv else ("ok" if not self.raises else "raises")


def bad(id, code, raises, match, **kw):
    if isinstance(raises, str):
        raises = (raises,)
    return Case(id, textwrap.dedent(code).strip(), tuple(raises), match, **kw)


def ok(id, code, **kw):
    return Case(id, textwrap.dedent(code).strip(), (), None, **kw)


def cli(id, argv, match, setup="", **kw):
    return Case(id, textwrap.dedent(setup).strip(), (), match, argv=list(argv), **kw)


def guard(id, code, match, **kw):
    """A huge shape: a clear ValueError (or MemoryError raised by a guard) naming what is too
    large, fast, and no attempted allocation of the terabytes."""
    return bad(id, code, ("ValueError", "MemoryError"), match, timeout=GUARD_TIMEOUT, guard=True, **kw)


VALID_TRACE = "digits_cnn.npz"
F8 = "MAC('e4m3fn', 'e4m3fn', 'fp32')"

CASES = [
    # -- formats.get / FloatFormat / FixedFormat / IntFormat / register --------------------------
    bad("get-none", "acs.formats.get(None)", "TypeError", r"\bformat\b"),
    bad("get-nan", "acs.formats.get(float('nan'))", "TypeError", r"\bformat\b"),
    bad("get-empty-name", "acs.formats.get('')", "ValueError", r"unknown format ''"),
    bad("FloatFormat-exp-nan", "FloatFormat(float('nan'), 3)", "TypeError", r"\bexp_bits\b"),
    bad("FloatFormat-man-huge", "FloatFormat(4, 2**70)", "ValueError", r"\bman_bits\b"),
    bad("FloatFormat-bias-inf", "FloatFormat(4, 3, bias=float('inf'))", "TypeError", r"\bbias\b"),
    bad("FixedFormat-int-huge-negative", "FixedFormat(-2**63, 4)", "ValueError", r"\bint_bits\b"),
    bad("FixedFormat-frac-complex", "FixedFormat(4, 1j)", "TypeError", r"\bfrac_bits\b"),
    bad("IntFormat-bits-bool", "IntFormat(True)", "TypeError", r"bits"),
    bad("register-name-not-str", "acs.formats.register(FloatFormat(4, 3, name=5))", "TypeError", r"\bname\b"),
    # -- Format.encode --------------------------------------------------------------------------
    bad("encode-nan-int8-saturate", "acs.formats.get('int8').encode([np.inf, np.nan, -np.inf], saturate=True)",
        "ValueError", r"x\[1\] is NaN"),
    bad("encode-inf-fixed", "FixedFormat(4, 4).encode(np.array([[1.0, 2.0], [np.inf, 0.0]]))",
        "ValueError", r"x\[1, 0\] = inf is outside"),
    bad("encode-object", "acs.formats.get('e4m3fn').encode(np.array([1.0, None], dtype=object))",
        "TypeError", r"\bx\b.*object"),
    bad("encode-complex", "acs.formats.get('e4m3fn').encode(np.array([1 + 2j]))", "TypeError", r"\bx\b.*complex"),
    bad("encode-str", "acs.formats.get('e4m3fn').encode('1.0')", "TypeError", r"\bx\b"),
    bad("encode-longdouble", "acs.formats.get('fp16').encode(np.ones(3, np.longdouble))", "TypeError", r"\bx\b"),
    bad("encode-python-bigint", "acs.formats.get('int8').encode(10**30)", "TypeError", r"\bx\b"),
    bad("encode-uint64-max", "acs.formats.get('int8').encode(np.array([1, 2**64 - 1], np.uint64), saturate=True)",
        "ValueError", r"\bx\b.*2\*\*53"),
    bad("encode-seed-nan", "acs.formats.get('e4m3fn').encode([1.0], rounding='sr', seed=float('nan'))",
        "TypeError", r"\bseed\b"),
    bad("encode-rounding-none", "acs.formats.get('e4m3fn').encode([1.0], rounding=None)", "ValueError",
        r"\brounding\b"),
    bad("encode-saturate-str", "acs.formats.get('e4m3fn').encode([1.0], saturate='no')", "TypeError",
        r"\bsaturate\b"),
    ok("encode-empty-and-0d", """
        f = acs.formats.get('e4m3fn')
        assert f.encode(np.empty((0, 3))).shape == (0, 3)
        assert f.encode(np.empty((2, 0), np.float32)).shape == (2, 0)
        assert f.encode(np.array(0.5)).shape == () and isinstance(f.encode(np.array(0.5)), np.ndarray)
        assert np.ndim(f.encode(0.5)) == 0 and f.decode(f.encode(0.5)) == 0.5
        assert f.encode(np.float64(np.nan)) == f.encode(np.nan)
    """),
    ok("encode-layouts-give-the-same-bits", """
        rng = np.random.default_rng(0)
        x = rng.standard_normal((64, 48)) * 100
        x[3, 5], x[7, 1], x[0, 0] = np.nan, np.inf, -0.0
        for name in ('e4m3fn', 'e5m2', 'int8', 'fp16'):
            f = acs.formats.get(name)
            if name == 'int8':
                x = np.nan_to_num(x, nan=0.0)
            for rounding in ('rne', 'sr'):
                want = f.encode(x, rounding=rounding, saturate=True, seed=7)
                views = {'fortran': np.asfortranarray(x), 'reversed': x[::-1, ::-1].copy()[::-1, ::-1],
                         'big-endian': x.astype('>f8'), 'float32-fortran': np.asfortranarray(x.astype(np.float32))}
                for what, v in views.items():
                    w = want if 'float32' not in what else f.encode(x.astype(np.float32), rounding=rounding,
                                                                     saturate=True, seed=7)
                    same(f.encode(v, rounding=rounding, saturate=True, seed=7), w, f'{name} {rounding} {what}')
                strided = x[::2, 1::3]
                same(f.encode(strided, rounding=rounding, saturate=True, seed=7),
                     f.encode(np.ascontiguousarray(strided), rounding=rounding, saturate=True, seed=7), 'strided')
        # long enough for the engine's memo table, in Fortran order
        big = rng.standard_normal((200, 100))
        f = acs.formats.get('e4m3')
        same(f.encode(np.asfortranarray(big)), f.encode(big), 'table path, Fortran')
    """),
    guard("encode-terabytes-broadcast",
          "acs.formats.get('e4m3fn').encode(np.broadcast_to(np.float32(1), (10**7, 10**6)))",
          r"\bx\b|memory|large|bytes"),
    # -- Format.decode --------------------------------------------------------------------------
    bad("decode-nan", "acs.formats.get('int8').decode(np.array([np.nan]))", "TypeError", r"\bcodes\b"),
    bad("decode-negative", "acs.formats.get('e4m3fn').decode(np.array([3, -1]))", "ValueError", r"\bcodes\b"),
    bad("decode-bool", "acs.formats.get('int8').decode(np.array([True]))", "TypeError", r"\bcodes\b"),
    bad("decode-beyond-bits", "acs.formats.get('int4').decode(np.array([16], np.uint8))", "ValueError",
        r"\bcodes\b.*\[0, 15\]"),
    ok("decode-layouts-and-empty", """
        f = acs.formats.get('e5m2')
        c = np.arange(256, dtype=np.uint8).reshape(16, 16)
        want = f.decode(c)
        same(f.decode(np.asfortranarray(c)), want, 'fortran')
        same(f.decode(c.astype(np.int64)), want, 'int64')
        same(f.decode(c.astype('>u2')), want, 'big-endian uint16')
        same(f.decode(c[::-1, ::2]), want[::-1, ::2], 'strided')
        assert f.decode(np.empty((0, 4), np.uint8)).shape == (0, 4)
        assert f.decode(np.uint8(0x3C)).shape == () and f.decode(np.uint8(0x3C)) == 1.0
    """),
    guard("decode-terabytes-broadcast",
          "acs.formats.get('e4m3fn').decode(np.broadcast_to(np.uint8(1), (10**7, 10**6)))",
          r"\bcodes\b|memory|large|bytes"),
    # -- QTensor / quantize ---------------------------------------------------------------------
    bad("QTensor-object-codes", "acs.QTensor(np.array([1, None], dtype=object), 'int8')", "TypeError", r"\bcodes\b"),
    bad("QTensor-scale-overflows-float32", "acs.QTensor(np.ones(2, np.uint8), 'int8', scale=1e39)", "ValueError",
        r"\bscale\b"),
    bad("QTensor-scale-complex", "acs.QTensor(np.ones(2, np.uint8), 'int8', scale=1j)", "TypeError", r"\bscale\b"),
    bad("QTensor-axis-of-0d", "acs.QTensor(np.uint8(1), 'int8', scale=np.ones(1), axis=0)", "ValueError",
        r"\baxis\b"),
    guard("QTensor-terabytes-broadcast", "acs.QTensor(np.broadcast_to(np.uint8(1), (10**6, 10**6)), 'int8')",
          r"\bcodes\b|memory|large|bytes"),
    bad("quantize-nan", "acs.quant.quantize(np.array([[1.0, np.nan]]), 'int8')", "ValueError", r"\bx\b.*NaN"),
    bad("quantize-bool", "acs.quant.quantize(np.array([True, False]), 'int8')", "TypeError", r"\bx\b"),
    bad("quantize-percentile-nan", "acs.quant.quantize(np.ones(4), 'int8', calibration='percentile', "
        "percentile=float('nan'))", "ValueError", r"\bpercentile\b"),
    bad("quantize-axis-float", "acs.quant.quantize(np.ones((2, 2)), 'int8', scale='channel', axis=1.0)", "TypeError",
        r"\baxis\b"),
    bad("quantize-magnitude-beyond-float32-scales", "acs.quant.quantize(np.full(3, 1e300), 'e4m3fn')", "ValueError",
        r"\bx\b"),
    ok("quantize-channel-scales-of-empty-channels", """
        q = acs.quant.quantize(np.zeros((3, 0)), 'int8', scale='channel')
        assert q.shape == (3, 0) and q.scale.shape == (3,)
    """),
    ok("quantize-layouts-give-the-same-bits", """
        rng = np.random.default_rng(1)
        x = rng.standard_normal((24, 40))
        for kw in (dict(scale='channel', axis=1, calibration='mse'), dict(scale='tensor', calibration='percentile')):
            want = acs.quant.quantize(x, 'e4m3fn', **kw)
            for v in (np.asfortranarray(x), x[::-1].copy()[::-1], x.astype('>f8')):
                got = acs.quant.quantize(v, 'e4m3fn', **kw)
                same(got.codes, want.codes, str(kw)); same(got.scale, want.scale, str(kw))
    """),
    guard("quantize-terabytes-broadcast", "acs.quant.quantize(np.broadcast_to(1.0, (10**6, 10**6)), 'int8')",
          r"\bx\b|memory|large|bytes"),
    # -- MAC and accumulators -----------------------------------------------------------------
    bad("FloatAcc-exp-nan", "FloatAcc(float('nan'), 3)", "TypeError", r"\bexp_bits\b"),
    bad("IntAcc-bits-huge", "IntAcc(2**100)", "ValueError", r"\bbits\b"),
    bad("FixedAcc-int-negative", "FixedAcc(-5, 4)", "ValueError", r"\bint_bits\b"),
    bad("BlockFMA-terms-nan", "BlockFMA(float('nan'), 3)", "TypeError", r"\bterms\b"),
    bad("MAC-acc-none", "MAC('int8', 'int8', None)", "TypeError", r"\bacc\b"),
    bad("MAC-a-numpy-type", "MAC(np.float32)", "TypeError", r"\ba\b"),
    bad("accumulate-complex-codes", f"accumulate(np.ones(4, complex), np.ones(4, np.uint8), {F8})", "TypeError",
        r"\ba_codes\b"),
    bad("accumulate-int-init-nan", "accumulate(np.ones((2, 4), np.uint8), np.ones(4, np.uint8), "
        "MAC('int8', 'int8', 'int32'), init=[1.0, np.nan])", "ValueError", r"\binit\b"),
    bad("accumulate-object-init", f"accumulate(np.ones(4, np.uint8), np.ones(4, np.uint8), {F8}, "
        "init=np.array([None], dtype=object))", "TypeError", r"\binit\b"),
    ok("accumulate-layouts-give-the-same-bits", """
        rng = np.random.default_rng(2)
        mac = MAC('e4m3fn', 'e5m2', FloatAcc(5, 6, rounding='sr'))
        a = rng.integers(0, 256, (12, 33)).astype(np.uint8)
        b = rng.integers(0, 256, (12, 33)).astype(np.uint8)
        want = accumulate(a, b, mac, init=0.5, seed=3)
        same(accumulate(np.asfortranarray(a), np.asfortranarray(b), mac, init=0.5, seed=3), want, 'fortran')
        same(accumulate(a[::-1].copy()[::-1], b.astype(np.int64), mac, init=0.5, seed=3), want, 'reversed/int64')
        same(accumulate(a[:, ::2], b[:, ::2], mac, seed=3), accumulate(a[:, ::2].copy(), b[:, ::2].copy(), mac, seed=3),
             'strided')
        row = np.broadcast_to(b[0], (12, 33))
        same(accumulate(a, row, mac, seed=3), accumulate(a, np.ascontiguousarray(row), mac, seed=3), 'broadcast')
        im = MAC('int8', 'int8', IntAcc(12, 'saturate'))
        same(accumulate(np.asfortranarray(a), b.T.copy().T, im), accumulate(a, b, im), 'int fortran')
    """),
    ok("accumulate-empty", """
        mac = MAC('int8', 'int8', 'int32')
        out = accumulate(np.empty((3, 0), np.uint8), np.empty((3, 0), np.uint8), mac, init=[1, 2, 3])
        assert out.tolist() == [1, 2, 3]
        assert accumulate(np.empty((0, 4), np.uint8), np.ones(4, np.uint8), mac).shape == (0,)
        f = accumulate(np.empty(0, np.uint8), np.empty(0, np.uint8), MAC('e4m3fn', 'e4m3fn', 'fp32'), init=-0.0)
        assert f.shape == () and np.signbit(f)
    """),
    guard("accumulate-terabytes-broadcast", "accumulate(np.broadcast_to(np.uint8(1), (10**6, 10**6)), "
          "np.ones(1, np.uint8), MAC('int8', 'int8', 'int32'))", r"\ba_codes\b|memory|large|bytes"),
    # -- presets --------------------------------------------------------------------------------
    bad("tensor_core-gpu-nan", "acs.presets.tensor_core(float('nan'), 'e4m3')", ("TypeError", "ValueError"),
        r"\bgpu\b"),
    bad("tensor_core-gpu-list", "acs.presets.tensor_core(['h100'], 'e4m3')", ("TypeError", "ValueError"),
        r"\bgpu\b"),
    bad("tensor_core-out-bf16", "acs.presets.tensor_core('h100', 'e4m3', out='bf16')", "ValueError", r"\bout\b"),
    # -- Array construction and plan_gemm -------------------------------------------------------------
    bad("Array-rows-nan", "acs.Array(float('nan'), 4)", "TypeError", r"\brows\b"),
    bad("Array-cols-2**64", "acs.Array(4, 2**64)", "ValueError", r"\bcols\b"),
    bad("Array-clock-inf", "acs.Array(4, 4, clock_ghz=float('inf'))", "ValueError", r"\bclock_ghz\b"),
    bad("Array-sram-inf", "acs.Array(4, 4, sram_kb=float('inf'))", "ValueError", r"\bsram_kb\b"),
    bad("Array-threads-bool", "acs.Array(4, 4, threads=True)", "TypeError", r"\bthreads\b"),
    bad("Array-threads-env", "acs.Array(4, 4)", "ValueError", r"ACCEL_SIM_THREADS", env={"ACCEL_SIM_THREADS": "many"}),
    bad("Array-memory-limit-negative", "acs.Array(4, 4, memory_limit_bytes=-1)", "ValueError",
        r"\bmemory_limit_bytes\b"),
    bad("Array-memory-limit-env", "acs.Array(4, 4)", "ValueError", r"ACCEL_SIM_MEMORY_LIMIT",
        env={"ACCEL_SIM_MEMORY_LIMIT": "8GB"}),
    bad("Array-energy-folder", "acs.Array(4, 4, energy=TMP)", "ValueError", r"energy table .*Is a directory"),
    ok("Array-numpy-float-scalars", """
        a = acs.Array(4, 4, clock_ghz=np.float32(0.5), sram_kb=np.float32(48), dram_bytes_per_cycle=np.float32(8))
        assert a.plan_gemm(8, 8, 8).cycles > 0
    """),
    ok("plan_gemm-huge-shapes-are-formulas", """
        p = acs.Array(4, 4, 'os').plan_gemm(10**6, 10**6, 10**6)
        assert p.macs == 10**18 and p.cycles > 0
        q = acs.Array(32, 32, 'ws', sram_kb=96, dram_bytes_per_cycle=16).plan_gemm(10**9, 10**9, 10**9)
        assert q.cycles > 0 and q.stall_cycles >= 0
    """),
    bad("plan_gemm-numpy-negative", "acs.Array(4, 4).plan_gemm(np.int64(-1), 4, 4)", "ValueError", r"\bM\b"),
    bad("plan_gemm-nan", "acs.Array(4, 4).plan_gemm(4, float('nan'), 4)", "TypeError", r"\bN\b"),
    # -- gemm -----------------------------------------------------------------------------------
    bad("gemm-inf-in-B", "acs.Array(4, 4).gemm(np.ones((3, 4)), np.full((4, 2), -np.inf))", "ValueError", r"\bB\b"),
    bad("gemm-A-beyond-float32-scales", "acs.Array(4, 4).gemm(np.full((2, 2), 1e300), np.ones((2, 2)))",
        "ValueError", r"\bA\b"),
    bad("gemm-A-object", "acs.Array(4, 4).gemm(np.array([[1.0, None]], dtype=object), np.ones((2, 2)))",
        "TypeError", r"\bA\b"),
    bad("gemm-A-0d", "acs.Array(4, 4).gemm(np.float64(1.0), np.ones((1, 2)))", "ValueError", r"\bA\b"),
    ok("gemm-empty-shapes", """
        arr = acs.Array(4, 4)
        r = arr.gemm(np.ones((3, 0)), np.ones((0, 2)))
        assert r.acc.shape == (3, 2) and not r.acc.any() and r.output.shape == (3, 2)
        assert arr.gemm(np.ones((0, 5)), np.ones((5, 2))).output.shape == (0, 2)
        assert arr.gemm(np.ones((2, 5)), np.ones((5, 0))).output.shape == (2, 0)
    """),
    ok("gemm-empty-K-with-channel-scales", """
        r = acs.Array(4, 4, quant={'a': 'channel', 'b': 'channel'}).gemm(np.ones((3, 0)), np.ones((0, 2)))
        assert r.acc.shape == (3, 2) and not r.acc.any()
    """),
    ok("gemm-layouts-give-the-same-bits", """
        rng = np.random.default_rng(3)
        A, B = rng.standard_normal((13, 29)), rng.standard_normal((29, 11))
        for df in ('os', 'ws', 'is'):
            for mac in (MAC('e4m3fn', 'e4m3fn', 'fp32'), MAC('int8', 'int8', 'int32'),
                        MAC('e5m2', 'e5m2', FloatAcc(5, 7, rounding='sr')), acs.presets.tensor_core('h100', 'e4m3')):
                arr = acs.Array(3, 5, df, mac, quant={'b': 'channel'}, seed=9)
                want = arr.gemm(A, B)
                for a, b in ((np.asfortranarray(A), np.asfortranarray(B)), (A.T.copy().T, B[::-1].copy()[::-1]),
                             (A.astype('>f8'), np.asfortranarray(B.astype('>f8')))):
                    got = arr.gemm(a, b)
                    same(got.acc, want.acc, f'{df} {mac.name}'); same(got.output, want.output, f'{df} {mac.name}')
                qa = acs.quant.quantize(A, mac.a)
                qb = acs.quant.quantize(B, mac.b, scale='channel', axis=1)
                qf = acs.QTensor(np.asfortranarray(qa.codes), qa.format, qa.scale)
                qs = acs.QTensor(qb.codes[::-1].copy()[::-1], qb.format, qb.scale, 1)
                same(arr.gemm(qf, qs).acc, arr.gemm(qa, qb).acc, f'{df} {mac.name} QTensor layouts')
    """),
    guard("gemm-terabytes-of-outputs", "acs.Array(4, 4).gemm(np.broadcast_to(np.ones(1), (10**6, 1)), "
          "np.broadcast_to(np.ones(1), (1, 10**6)))", r"memory_limit_bytes"),
    guard("gemm-terabytes-of-input", "acs.Array(4, 4).gemm(np.broadcast_to(np.ones(1), (10**6, 10**6)), "
          "np.ones((10**6, 1)))", r"\bA\b|memory_limit_bytes"),
    # -- conv2d / linear / matmul -----------------------------------------------------------------
    bad("conv2d-nan-x", "acs.Array(4, 4).conv2d(np.full((1, 2, 5, 5), np.nan), np.ones((2, 2, 3, 3)))",
        "ValueError", r"\bx\b"),
    bad("conv2d-complex-w", "acs.Array(4, 4).conv2d(np.ones((1, 2, 5, 5)), np.ones((2, 2, 3, 3), complex))",
        "TypeError", r"\bw\b"),
    guard("conv2d-terabytes-of-padding", "acs.Array(4, 4).conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 3, 3)), "
          "padding=10**6)", r"memory_limit_bytes"),
    ok("conv2d-layouts-and-empty-batch", """
        rng = np.random.default_rng(4)
        x, w = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((6, 2, 3, 3))
        arr = acs.Array(4, 3, 'ws', MAC('e4m3fn', 'e4m3fn', 'fp32'), quant={'b': 'channel'})
        want = arr.conv2d(x, w, stride=(2, 1), padding=1, groups=2)
        got = arr.conv2d(np.asfortranarray(x), w[:, :, ::-1, ::-1].copy()[:, :, ::-1, ::-1], stride=(2, 1),
                         padding=1, groups=2)
        same(got.acc, want.acc, 'acc'); same(got.output, want.output, 'output')
        assert arr.conv2d(np.ones((0, 4, 7, 6)), w, groups=2).output.shape == (0, 6, 5, 4)
        assert arr.conv2d(x, w, stride=2**62, groups=2).output.shape == (2, 6, 1, 1)
    """),
    bad("linear-nan-x", "acs.Array(4, 4).linear(np.full((2, 3), np.nan), np.ones((4, 3)))", "ValueError", r"\bx\b"),
    bad("linear-bool-w", "acs.Array(4, 4).linear(np.ones((2, 3)), np.ones((4, 3), bool))", "TypeError", r"\bw\b"),
    bad("matmul-inf-b", "acs.Array(4, 4).matmul(np.ones((2, 3, 4)), np.full((4, 2), np.inf))", "ValueError",
        r"\bb\b"),
    ok("linear-matmul-layouts-and-empty-batch", """
        rng = np.random.default_rng(5)
        arr = acs.Array(3, 4, 'os', MAC('e5m2', 'e5m2', FloatAcc(6, 9, rounding='sr')), seed=4)
        x, w, bias = rng.standard_normal((2, 5, 17)), rng.standard_normal((7, 17)), rng.standard_normal(7)
        want = arr.linear(x, w, bias)
        got = arr.linear(np.asfortranarray(x), w.T.copy().T, bias[::-1].copy()[::-1])
        same(got.acc, want.acc, 'linear acc'); same(got.output, want.output, 'linear output')
        a, b = rng.standard_normal((3, 6, 9)), rng.standard_normal((9, 5))
        want = arr.matmul(a, b)
        got = arr.matmul(np.asfortranarray(a), np.asfortranarray(b))
        same(got.acc, want.acc, 'matmul acc'); same(got.output, want.output, 'matmul output')
        r = acs.Array(4, 4).matmul(np.ones((0, 2, 3)), np.ones((3, 4)))
        assert r.output.shape == (0, 2, 4) and r.acc.shape == (0, 2, 4)
    """),
    guard("matmul-terabytes-of-batch", "acs.Array(4, 4).matmul(np.broadcast_to(np.ones((1, 2, 2)), (10**12, 2, 2)), "
          "np.ones((2, 2)))", r"\ba\b|memory_limit_bytes"),
    # -- energy ---------------------------------------------------------------------------------
    bad("EnergyTable-nan-entry", "acs.energy.EnergyTable(int_add_8=float('nan'))", "ValueError", r"\bint_add_8\b"),
    bad("EnergyTable-default-node-str", "acs.energy.EnergyTable.default('45')", "ValueError", r"\bnode_nm\b"),
    bad("from_toml-folder", "acs.energy.EnergyTable.from_toml(TMP)", "ValueError", r"energy table"),
    bad("from_toml-truncated", """
        p = os.path.join(TMP, 'e.toml')
        text = acs.energy.EnergyTable.default(7).to_toml()
        open(p, 'w').write(text[: text.index('[energy]') + 4])
        acs.energy.EnergyTable.from_toml(p)
    """, "ValueError", r"e\.toml.*not valid TOML"),
    bad("from_toml-not-utf8", """
        p = os.path.join(TMP, 'bin.toml')
        open(p, 'wb').write(b'\\xff\\xfe\\x00[model]\\n')
        acs.energy.EnergyTable.from_toml(p)
    """, "ValueError", r"bin\.toml"),
    bad("from_toml-nan-value", """
        p = os.path.join(TMP, 'nan.toml')
        open(p, 'w').write('[energy]\\nint_add_8 = nan\\n')
        acs.energy.EnergyTable.from_toml(p)
    """, "ValueError", r"nan\.toml.*int_add_8"),
    bad("from_toml-int-is-not-a-path", "acs.energy.EnergyTable.from_toml(0)", ("TypeError", "ValueError"),
        r"\bpath\b"),
    ok("EnergyTable-float-node-round-trips", """
        try:
            t = acs.energy.EnergyTable.default(45.0)
        except (TypeError, ValueError) as e:
            assert 'node_nm' in str(e)
        else:
            p = os.path.join(TMP, 'e.toml')
            open(p, 'w').write(t.to_toml())
            assert acs.energy.EnergyTable.from_toml(p) == t
    """),
    # -- trace ----------------------------------------------------------------------------------
    bad("trace-load-folder", "acs.trace.load(TMP)", "ValueError", r"no such trace file"),
    bad("trace-load-empty-file", """
        p = os.path.join(TMP, 'empty.npz'); open(p, 'wb').close()
        acs.trace.load(p)
    """, "ValueError", r"empty\.npz"),
    bad("trace-load-truncated", f"""
        data = open(os.path.join(TRACES, {VALID_TRACE!r}), 'rb').read()
        p = os.path.join(TMP, 't.npz'); open(p, 'wb').write(data[: len(data) * 2 // 3])
        acs.trace.load(p)
    """, "ValueError", r"t\.npz.*(truncated|corrupt)"),
    bad("trace-load-flipped-byte", f"""
        import struct, zipfile
        data = bytearray(open(os.path.join(TRACES, {VALID_TRACE!r}), 'rb').read())
        with zipfile.ZipFile(os.path.join(TRACES, {VALID_TRACE!r})) as z:
            info = max(z.infolist(), key=lambda i: i.compress_size)
        name_len, extra_len = struct.unpack('<HH', data[info.header_offset + 26: info.header_offset + 30])
        at = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
        data[at] ^= 0x55
        p = os.path.join(TMP, 'flip.npz'); open(p, 'wb').write(bytes(data))
        acs.trace.load(p)
    """, "ValueError", r"flip\.npz"),
    bad("trace-load-declares-2**82-bytes", """
        import io, zipfile
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {'descr': '<f4', 'fortran_order': False, 'shape': (2**40, 2**40)})
        p = os.path.join(TMP, 'huge.npz')
        with zipfile.ZipFile(p, 'w') as z:
            z.writestr('x.npy', buf.getvalue() + bytes(64))
        acs.trace.load(p)
    """, "ValueError", r"huge\.npz.*declares"),
    bad("Trace-save-onto-folder", "acs.trace.Trace('m').save(TMP, overwrite=True)", ("OSError", "ValueError"),
        re.escape("Is a directory")),
    bad("Trace-save-missing-folder", "acs.trace.Trace('m').save(os.path.join(TMP, 'no', 'such', 't.npz'))",
        ("OSError", "ValueError"), r"no/such"),
    ok("trace-record-never-writes-an-unloadable-file", """
        from accel_sim import ops
        try:
            with acs.trace.record(None) as rec:
                ops.linear(np.ones((2, 3)), np.ones((4, 3)))
            p = os.path.join(TMP, 'r.npz')
            rec.trace.save(p)
        except (TypeError, ValueError) as e:
            assert 'model' in str(e), e
        else:
            acs.trace.load(p)
    """),
    ok("Trace-save-never-writes-an-unloadable-file", """
        p = os.path.join(TMP, 'o.npz')
        try:  # refused when built (or at the latest when saved), never written unreadable
            t = acs.trace.Trace('m', arrays={'x': np.array([1, None], dtype=object)})
            t.save(p)
        except (TypeError, ValueError) as e:
            assert "'x'" in str(e) or 'object' in str(e), e
        else:
            acs.trace.load(p)
    """),
    bad("replay-array-is-a-str", f"acs.trace.replay(os.path.join(TRACES, {VALID_TRACE!r}), 'array')", "TypeError",
        r"\barray\b"),
    bad("replay-folder", "acs.trace.replay(TMP, acs.Array(4, 4))", "ValueError", r"no such trace file"),
    # -- sweep / pareto ---------------------------------------------------------------------------
    bad("sweep-cache-folder", "acs.sweep((np.ones((2, 3)), np.ones((3, 2))), {'a': ['int8']}, cache=TMP, "
        "executor=False, progress=False)", "ValueError", r"\bcache\b"),
    bad("sweep-cache-truncated", """
        p = os.path.join(TMP, 'c.json')
        acs.sweep((np.ones((2, 3)), np.ones((3, 2))), {'a': ['int8']}, cache=p, executor=False, progress=False)
        text = open(p).read(); open(p, 'w').write(text[: len(text) // 2])
        acs.sweep((np.ones((2, 3)), np.ones((3, 2))), {'a': ['int8']}, cache=p, executor=False, progress=False)
    """, "ValueError", r"cache .*c\.json"),
    bad("sweep-cache-json-list", """
        p = os.path.join(TMP, 'c.json'); open(p, 'w').write('[1, 2, 3]')
        acs.sweep((np.ones((2, 3)), np.ones((3, 2))), {'a': ['int8']}, cache=p, executor=False, progress=False)
    """, "ValueError", r"cache .*c\.json"),
    bad("sweep-executor-str", "acs.sweep((np.ones((2, 3)), np.ones((3, 2))), {'a': ['int8']}, executor='threads', "
        "progress=False)", ("TypeError", "ValueError"), r"\bexecutor\b"),
    bad("sweep-grid-str", "acs.sweep((np.ones((2, 3)), np.ones((3, 2))), 'int8')", "TypeError", r"\bgrid\b"),
    bad("sweep-target-int", "acs.sweep(5, {'a': ['int8']})", "TypeError", r"\btarget\b"),
    bad("sweep-target-nan", "acs.sweep((np.full((2, 3), np.nan), np.ones((3, 2))), {'a': ['int8']}, "
        "executor=False, progress=False)", "ValueError", r"\bA\b"),
    bad("pareto-rows-not-dicts", "acs.pareto(['a', 'b'])", ("TypeError", "ValueError"), r"\btable\b|\brow"),
    ok("pareto-non-finite-rows-left-out", """
        rows = [{'energy_pj': float('nan'), 'error': 1.0}, {'energy_pj': 1.0, 'error': float('inf')},
                {'energy_pj': 2.0, 'error': 0.5}, {'energy_pj': float('-inf'), 'error': 0.1}]
        assert acs.pareto(rows) == [rows[2]]
        assert acs.pareto([]) == []
    """),
    # -- scalesim -------------------------------------------------------------------------------
    bad("load_config-folder", "acs.scalesim.load_config(TMP)", ("OSError", "ValueError"), re.escape("Is a directory")),
    bad("load_config-binary", """
        p = os.path.join(TMP, 'b.cfg'); open(p, 'wb').write(bytes(range(256)))
        acs.scalesim.load_config(p)
    """, "ValueError", r"b\.cfg"),
    bad("load_config-truncated", """
        p = os.path.join(TMP, 't.cfg')
        open(p, 'w').write('[general]\\nrun_name = x\\n[architecture_presets]\\nArrayHeight: 8\\nArrayWi')
        acs.scalesim.load_config(p)
    """, "ValueError", r"t\.cfg"),
    bad("load_topology-folder", "acs.scalesim.load_topology(TMP)", ("OSError", "ValueError"),
        re.escape("Is a directory")),
    bad("load_topology-truncated-row", """
        p = os.path.join(TMP, 't.csv')
        open(p, 'w').write('Layer, M, N, K,\\nfc1, 64, 32, 16,\\nfc2, 64, 3')
        acs.scalesim.load_topology(p)
    """, "ValueError", r"t\.csv: line 3"),
    bad("load_topology-nan-field", """
        p = os.path.join(TMP, 'n.csv')
        open(p, 'w').write('Layer, M, N, K,\\nfc1, nan, 32, 16,\\n')
        acs.scalesim.load_topology(p)
    """, "ValueError", r"n\.csv: line 2: M"),
    ok("load_topology-huge-layers-plan", """
        p = os.path.join(TMP, 'h.csv')
        open(p, 'w').write('Layer, M, N, K,\\nbig, 1000000000000, 1000000000000, 1000000000000,\\n')
        (layer,) = acs.scalesim.load_topology(p)
        assert acs.Array(8, 8, 'ws').plan_gemm(*layer.gemm_shape()).macs == 10**36
    """),
    # -- plot -----------------------------------------------------------------------------------
    bad("plot-energy_accuracy-onto-folder", "acs.plot.energy_accuracy(rows1(), TMP)", "ValueError",
        r"\bpath\b.*folder"),
    bad("plot-energy_accuracy-bytes-path", "acs.plot.energy_accuracy(rows1(), os.fsencode(TMP) + b'/p.png')",
        "TypeError", r"\bpath\b"),
    bad("plot-figsize-inf", "acs.plot.energy_accuracy(rows1(), os.path.join(TMP, 'p.png'), figsize=(float('inf'), 1))",
        "ValueError", r"\bfigsize\b"),
    bad("plot-energy_breakdown-nan", "acs.plot.energy_breakdown({'layers': [{'name': 'l', 'energy_breakdown': "
        "{k: float('nan') for k in acs.energy.ENERGY_PARTS}}], 'totals': {}}, os.path.join(TMP, 'p.png'))",
        "ValueError", r"energy mult"),
    bad("plot-error_vs_accumulator-empty", "acs.plot.error_vs_accumulator([], os.path.join(TMP, 'p.png'))",
        "ValueError", r"\btable\b.*empty"),
    ok("plot-non-finite-rows-are-drawn", """
        rows = [{'a': 'int8', 'acc': 'int32', 'energy_pj': float('nan'), 'error': float('nan')},
                {'a': 'e4m3fn', 'acc': 'fp16', 'energy_pj': 2.0, 'error': float('inf')},
                {'a': 'e5m2', 'acc': 'fp32', 'energy_pj': float('inf'), 'error': 'nan'}]
        for fn in (acs.plot.energy_accuracy, acs.plot.error_vs_accumulator):
            p = os.path.join(TMP, fn.__name__ + '.png')
            fn(rows, p)
            assert open(p, 'rb').read(8) == b'\\x89PNG\\r\\n\\x1a\\n'
    """),
    # -- the CLI (a real `python -m accel_sim.cli` process each) --------------------------------------
    cli("cli-gemm-negative-m", ["gemm", "--m", "-5"], r"--m\b"),
    cli("cli-gemm-array-zero", ["gemm", "--array", "0x4"], r"--array|\brows\b"),
    cli("cli-gemm-inputs-folder", ["gemm", "--inputs", "{TMP}"], r"Is a directory"),
    cli("cli-gemm-inputs-truncated", ["gemm", "--inputs", "{TMP}/ab.npz"], r"ab\.npz", setup="""
        np.savez(os.path.join(TMP, 'ab.npz'), A=np.ones((3, 4)), B=np.ones((4, 2)))
        data = open(os.path.join(TMP, 'ab.npz'), 'rb').read()
        open(os.path.join(TMP, 'ab.npz'), 'wb').write(data[: len(data) // 2])
    """),
    cli("cli-gemm-inputs-nan", ["gemm", "--inputs", "{TMP}/ab.npz"], r"\bA\b.*NaN", setup="""
        np.savez(os.path.join(TMP, 'ab.npz'), A=np.full((3, 4), np.nan), B=np.ones((4, 2)))
    """),
    cli("cli-gemm-terabytes-of-outputs", ["gemm", "--m", "1000000", "--n", "1000000", "--k", "1"],
        r"memory_limit_bytes", timeout=GUARD_TIMEOUT),
    cli("cli-gemm-terabytes-of-inputs", ["gemm", "--m", "1", "--n", "1", "--k", "1000000000000"],
        r"--k\b|memory|large|bytes", timeout=GUARD_TIMEOUT),
    cli("cli-conv-input-three-dims", ["conv", "--input", "1,2,3"], r"--input"),
    cli("cli-replay-folder", ["replay", "{TMP}"], r"no such trace file"),
    cli("cli-plan-folder", ["plan", "{TMP}", "{TMP}"], r"Is a directory"),
    cli("cli-sweep-cache-truncated", ["sweep", str(TRACES / VALID_TRACE), "--a", "int8", "--cache", "{TMP}/c.json",
                                      "--workers", "1", "--out", "{TMP}"], r"cache .*c\.json", setup="""
        open(os.path.join(TMP, 'c.json'), 'w').write('{"format": "accel_sim.sweep-cache", "rows": {')
    """),
    cli("cli-unknown-subcommand", ["frobnicate"], r"invalid choice"),
]

IDS = [c.id for c in CASES]
assert len(set(IDS)) == len(IDS), "duplicate case ids"


# -- running the cases ----------------------------------------------------------------------------
def _env(case, tmp):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_SIM_")}
    env.update(OPENBLAS_NUM_THREADS="1", BATTERY_TMP=tmp, PYTHONFAULTHANDLER="1", MPLBACKEND="Agg")
    env.update(case.env)
    return env


def _run(argv, env, cwd, timeout):
    """(returncode or None on timeout, stdout, stderr); on a timeout the child's whole process
    group (started here) is killed."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=cwd, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        return None, out, err


def run_case(case):
    with tempfile.TemporaryDirectory(prefix="battery-") as tmp:
        env = _env(case, tmp)
        if case.kind == "cli":
            if case.code:
                rc, out, err = _run([sys.executable, "-c", PRELUDE + "\n" + case.code], env, tmp, TIMEOUT)
                assert rc == 0, f"the case's setup failed: {err[-2000:]}"
            argv = [a.replace("{TMP}", tmp) for a in case.argv]
            rc, out, err = _run([sys.executable, "-m", "accel_sim.cli", *argv], env, tmp, case.timeout)
            return {"rc": rc, "out": out, "err": err, "tmp": tmp}
        script = PRELUDE + RUNNER.format(mark=MARK, code=case.code)
        rc, out, err = _run([sys.executable, "-c", script], env, tmp, case.timeout)
        report = None
        for line in out.splitlines():
            if line.startswith(MARK):
                report = json.loads(line[len(MARK):])
        return {"rc": rc, "out": out, "err": err, "report": report, "tmp": tmp}


@pytest.fixture(scope="module")
def results(request):
    """Every selected case, run two (or os.cpu_count()) at a time."""
    selected = [item.callspec.params["case"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec") and "case" in item.callspec.params]
    workers = max(2, os.cpu_count() or 2)
    with cf.ThreadPoolExecutor(workers) as pool:
        futures = {case.id: pool.submit(run_case, case) for case in selected}
        return {k: f.result() for k, f in futures.items()}


def _describe(res, case):
    tail = (res["err"] or "")[-3000:]
    if res["rc"] is None:
        return f"{case.id}: no answer within {case.timeout} s (a hang); stderr:\n{tail}"
    if res["rc"] < 0:
        name = signal.Signals(-res["rc"]).name
        return f"{case.id}: the process died of signal {-res['rc']} ({name}); stderr:\n{tail}"
    return f"{case.id}: exit status {res['rc']}; stderr:\n{tail}"


PARAMS = [pytest.param(c, id=c.id) for c in CASES]


@pytest.mark.parametrize("case", PARAMS)
def test_bad_input(case, results):
    res = results.get(case.id) or run_case(case)
    assert res["rc"] is not None and res["rc"] >= 0, _describe(res, case)
    if case.kind == "cli":
        err = res["err"]
        assert "Traceback" not in err, f"{case.id}: the CLI died with a traceback:\n{err[-3000:]}"
        assert res["rc"] in (1, 2), _describe(res, case)
        message = err.strip().splitlines()[-1] if err.strip() else ""
        assert "error:" in message, f"{case.id}: no 'error:' line on stderr:\n{err[-3000:]}"
        assert re.search(case.match.replace("{TMP}", re.escape(res["tmp"])), message), \
            f"{case.id}: the message does not name the offending argument ({case.match!r}): {message}"
        return
    report = res["report"]
    assert report is not None and res["rc"] == 0, _describe(res, case)
    if case.kind == "ok":
        assert report["exc"] is None, f"{case.id}: {report['exc']}: {report['msg']}"
        return
    assert report["exc"] is not None, f"{case.id}: no exception; expected {' or '.join(case.raises)}"
    if case.guard:   # numpy's "Unable to allocate ..." means the terabytes were asked of the OS
        assert not report["msg"].startswith("Unable to allocate"), \
            f"{case.id}: no guard; the allocation was attempted (and refused only by this test's RLIMIT_AS): " \
            f"{report['msg']}"
    assert set(case.raises) & set(report["mro"]), \
        f"{case.id}: raised {report['exc']} ({report['msg']}); expected {' or '.join(case.raises)}"
    assert re.search(case.match, report["msg"]), \
        f"{case.id}: the {report['exc']} message does not name the offending argument ({case.match!r}): {report['msg']}"


def test_the_battery_is_large_and_covers_every_public_function():
    assert len(CASES) >= 60
    code = "\n".join(c.code for c in CASES)
    for fn in ("formats.get", "encode(", "decode(", "FloatFormat(", "FixedFormat(", "IntFormat(", "quantize(",
               "QTensor(", "MAC(", "FloatAcc(", "IntAcc(", "FixedAcc(", "BlockFMA(", "accumulate(",
               "tensor_core(", "Array(", ".gemm(", "plan_gemm(", ".conv2d(", ".linear(", ".matmul(",
               "EnergyTable.from_toml(", "EnergyTable.default(", "trace.load(", ".save(", "trace.replay(",
               "trace.record(", "acs.sweep(", "acs.pareto(", "load_config(", "load_topology(",
               "plot.energy_accuracy(", "plot.energy_breakdown(", "plot.error_vs_accumulator("):
        assert fn in code, f"no case calls {fn}"
    assert {c.argv[0] for c in CASES if c.argv} >= {"gemm", "conv", "replay", "plan", "sweep"}
