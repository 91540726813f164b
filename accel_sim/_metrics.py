"""Error metrics of a simulated output against float64 references (Result.metrics).

A reference A @ B (+ bias) is formed block by block (memory stays near that of the output)
and reduced as it is formed: the product through BLAS, then one C pass (csrc/metrics.c) that
applies the scales and bias and gathers every sum, no whole-block temporaries.  When both
operands are codes with per-tensor or per-channel scales, the codes' integer multiples of
their format's finest step are multiplied by sgemm (every partial sum an integer below
2**24, K split where needed) or dgemm (below 2**53): the product of the codes is then exact,
and the reference is that exact value times the scales, rounded once (docs/array.md, "Error
metrics")."""
from __future__ import annotations

import math
import threading

import numpy as np

from accel_sim._native import ffi, lib, pointer
from accel_sim.quant import QTensor

_PART = 1 << 19        # float64 elements in an operand part or reference block (4 MiB)
_STAGE = 1 << 15       # float64 staging for operands decoded to float32
_F32_EXACT = 1 << 24   # float32 holds every integer up to 2**24 ...
_F64_EXACT = 1 << 53   # ... float64 up to 2**53
_MIN_BLOCK = 256       # fewest rows or columns in a reference block
_MIN_CHUNK = 128       # shortest K chunk worth an sgemm (else dgemm)
_TINY = 2.0 ** -1022   # smallest normal float64
_KEEP = 1 << 23        # workspace elements kept between calls (64 MiB)


_ES_TYPES = {np.dtype(np.float64): lib.ACS_ES_F64, np.dtype(np.float32): lib.ACS_ES_F32,
             np.dtype(np.int32): lib.ACS_ES_I32, np.dtype(np.int64): lib.ACS_ES_I64}
_ONE, _NO_BIAS = np.ones(1), np.full(1, -0.0)    # exact identities: x * 1, x + -0.0


def _rows(x, out=False):
    """x as a 2-D array of a type the engine reads (out: float32 or float64), rows at any
    stride, each row contiguous."""
    x = np.asarray(x)
    if x.dtype not in _ES_TYPES or out and x.dtype.kind != "f":
        x = x.astype(np.float64)
    x = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(1, -1)
    if x.strides[1] != x.itemsize or x.strides[0] % x.itemsize:
        x = np.ascontiguousarray(x)
    return x


def _address(x, ctype):
    return ffi.cast(ctype, x.__array_interface__["data"][0])


class ErrorSums:
    """Error of an output against a reference, gathered block by block (so no whole-size
    float64 reference need exist); non-finite outputs (an accumulator that overflowed) are
    counted in "nonfinite" and make the error infinite."""

    def __init__(self):
        self.nonfinite, self.size = 0, 0
        self.ref_sq = self.err_sq = self.out_sq = self.dot = self.max_abs = 0.0

    def add(self, out, ref, row_scale=None, col_scale=None, bias=None):
        """Add a block of out against the reference (ref * (row_scale_i * col_scale_j)) + bias_j,
        formed and reduced element by element in one pass (csrc/metrics.c): ref a product block
        (float) or exact integer sums; row_scale a float64 vector (one per row) or one value,
        col_scale and bias float64 vectors (one per column) or None (1 and none)."""
        out = np.asarray(out)
        ref = np.asarray(ref)
        if out.shape != ref.shape:
            out, ref = np.broadcast_arrays(out, ref)
        self.size += out.size
        if not out.size:
            return
        out, ref = _rows(out, out=True), _rows(ref)
        rows, cols = out.shape
        row_scale = _ONE if row_scale is None else np.ascontiguousarray(row_scale, np.float64).reshape(-1)
        col_scale = np.broadcast_to(_ONE, (cols,)) if col_scale is None else col_scale
        bias = np.broadcast_to(_NO_BIAS, (cols,)) if bias is None else bias
        col_scale, bias = (np.ascontiguousarray(v, np.float64) for v in (col_scale, bias))
        assert row_scale.size in (1, rows) and col_scale.shape == bias.shape == (cols,)
        sums = np.empty(5)
        status = lib.acs_error_sums(_address(out, "void *"), _ES_TYPES[out.dtype], out.strides[0] // out.itemsize,
                                    _address(ref, "void *"), _ES_TYPES[ref.dtype], ref.strides[0] // ref.itemsize,
                                    rows, cols, pointer(row_scale, "double *"), int(row_scale.size > 1),
                                    pointer(col_scale, "double *"), pointer(bias, "double *"), pointer(sums, "double *"))
        assert status == lib.ACS_OK
        out_sq, ref_sq, dot, err_sq, max_abs = (float(v) for v in sums)
        if not math.isfinite(out_sq):   # a finite sum means every output is finite: no count needed
            self.nonfinite += int(out.size - np.count_nonzero(np.isfinite(out)))
        self.out_sq += out_sq
        self.ref_sq += ref_sq
        self.dot += dot
        self.err_sq += err_sq
        self._max(max_abs)

    def _max(self, value):
        if value > self.max_abs or math.isnan(value):    # a NaN stays
            self.max_abs = value

    def merge(self, other):
        self.nonfinite += other.nonfinite
        self.size += other.size
        self.ref_sq += other.ref_sq
        self.err_sq += other.err_sq
        self.out_sq += other.out_sq
        self.dot += other.dot
        self._max(other.max_abs)

    def result(self) -> dict:
        if self.nonfinite:
            return {"rel_fro": math.inf, "sqnr_db": -math.inf, "max_abs": math.inf, "cosine": math.nan,
                    "nonfinite": self.nonfinite}
        ref_sq, err_sq = self.ref_sq, self.err_sq
        norms = math.sqrt(self.out_sq) * math.sqrt(ref_sq)
        return {
            "rel_fro": math.sqrt(err_sq / ref_sq) if ref_sq else (0.0 if err_sq == 0 else math.inf),
            "sqnr_db": 10 * math.log10(ref_sq / err_sq) if err_sq else math.inf,
            "max_abs": self.max_abs,
            "cosine": self.dot / norms if norms else (1.0 if err_sq == 0 else 0.0),
            "nonfinite": 0,
        }


def error_metrics(out, ref):
    sums = ErrorSums()
    sums.add(out, ref)
    return sums.result()


def _part(x, axis, lo, hi):
    """float64 values of rows (axis 0) or columns (axis 1) lo:hi of a float array or QTensor."""
    idx = [slice(None)] * 2
    idx[axis] = slice(lo, hi)
    if not isinstance(x, QTensor):
        return np.asarray(np.asarray(x)[tuple(idx)], np.float64)
    s = x.scale_array()
    if s.ndim and s.shape[axis] > 1:
        s = s[tuple(idx)]
    values = x.format.decode(x.codes[tuple(idx)])
    if x.is_block_scaled:    # blocks run along the other axis: slice their scales alike
        values = values * np.repeat(x.block_scales()[tuple(idx)], x.block, axis=x.block_axis)
    return values * s


_GRIDS = {}


def _grid(fmt):
    """(every code's value in units of the format's finest step, as float64; that step; the
    largest finite |value| in steps), or None for a format too wide to tabulate."""
    if fmt not in _GRIDS:
        grid = None
        if fmt.bits <= 16:
            table = fmt.decode(fmt.all_codes())
            finite = table[np.isfinite(table)]
            nz = np.abs(finite[finite != 0])
            if not nz.size:
                grid = (table, 1.0, 0.0)
            else:
                man, exp = np.frexp(nz)
                ints = (man * 2.0 ** 53).astype(np.int64)    # exact: 53-bit significands
                low = exp - 53 + np.log2((ints & -ints).astype(np.float64)).astype(np.int64)
                unit = math.ldexp(1.0, int(low.min()))
                with np.errstate(over="ignore"):
                    grid = (table / unit, unit, float(nz.max()) / unit)  # exact: a power of two
                if not (math.isfinite(grid[2]) and np.all(np.isfinite(grid[0]) == np.isfinite(table))):
                    grid = None
        _GRIDS[fmt] = grid
    return _GRIDS[fmt]


def exact_accumulator(pe_acc, out_acc, a, b, k) -> bool:
    """Whether an integer GEMM's accumulators hold the exact sum of products: IntAcc registers
    (PE and buffer) add exactly and only wrap or saturate beyond their range, and every partial
    sum is bounded by K * max|a| * max|b|, here below 2^(bits-1) (and 2^53): no step can wrap."""
    from accel_sim.mac import IntAcc
    if not (isinstance(pe_acc, IntAcc) and isinstance(out_acc, IntAcc)) or _exact_plan(a, b, k) is None:
        return False
    ga, gb = _grid(a.format), _grid(b.format)
    return ga[1] == gb[1] == 1.0 and k * ga[2] * gb[2] < 2.0 ** (min(pe_acc.bits, out_acc.bits, 54) - 1)


def _channel_scales(q, axis):
    """float64 scales of a 2-D QTensor along axis (rows 0, columns 1): a vector, or a scalar."""
    s = q.scale.astype(np.float64)
    return s.reshape(-1) if q.axis == axis else float(s.reshape(()))


def _exact_plan(a, b, k):
    """How to multiply a's and b's values exactly: ("sgemm", K chunk) or ("dgemm", K), with
    the scales; None where that is not proven exact (then the dequantized operands are
    multiplied by dgemm, rounded as float64 rounds)."""
    if not (isinstance(a, QTensor) and isinstance(b, QTensor)) or a.is_block_scaled or b.is_block_scaled:
        return None
    if a.axis not in (None, 0) or b.axis not in (None, 1):
        return None
    ga, gb = _grid(a.format), _grid(b.format)
    if ga is None or gb is None:
        return None
    # every product is an integer multiple of unit below term units, every partial sum one
    # below K * term units: no rounding while that count fits the significand and the grid
    # stays in the type's normal range (values, products and sums alike)
    unit, term = ga[1] * gb[1], ga[2] * gb[2]
    f32 = min(ga[1], gb[1], unit) >= 2.0 ** -126 and max(ga[1] * ga[2], gb[1] * gb[2], unit) < 2.0 ** 100
    if f32 and (term == 0 or k * term <= _F32_EXACT):
        how = ("sgemm", max(k, 1))
    elif f32 and _F32_EXACT // term >= _MIN_CHUNK:
        how = ("sgemm", int(_F32_EXACT // term))
    elif min(ga[1], gb[1], unit) >= _TINY and unit < 2.0 ** 960 and k * term <= _F64_EXACT:
        how = ("dgemm", k)
    else:
        return None
    return how, _channel_scales(a, 0), _channel_scales(b, 1)


class _Workspace(threading.local):
    """One float64 buffer per thread for operand parts and reference blocks, kept between
    calls up to _KEEP elements: a fresh buffer costs page faults that, on some machines,
    rival the dgemm itself."""
    buf = np.empty(0)

    def take(self, sizes):
        need = sum(sizes)
        buf = self.buf if self.buf.size >= need else np.empty(need)
        if need <= _KEEP and buf is not self.buf:
            self.buf = buf
        views, at = [], 0
        for size in sizes:
            views.append(buf[at:at + size])
            at += size
        return views


_WORKSPACE = _Workspace()


def _exact_part(q, rows, cols, f32, buf, stage):
    """q's code values at [rows, cols] (exact) in buf: float64, or float32 through a small
    float64 staging buffer."""
    codes = q.codes[rows, cols]
    shape = codes.shape
    out = buf.view(np.float32)[:codes.size] if f32 else buf[:codes.size]
    out = out.reshape(shape)
    step = max(1, stage.size // max(shape[1], 1)) if f32 else max(shape[0], 1)
    for r0 in range(0, shape[0], step):
        c = np.ascontiguousarray(codes[r0:r0 + step], dtype=q.format.code_dtype)
        dst = stage[:c.size] if f32 else out[r0:r0 + step]
        lib.acs_decode(q.format._c, pointer(c, "void *"), c.size, pointer(dst, "double *"))
        if f32:
            np.copyto(out[r0:r0 + step], dst.reshape(c.shape))
    return out


def _float_part(x, rows, cols, buf):
    """float64 values of a float operand's block: a view when x is float64 already."""
    x = np.asarray(x)[rows, cols]
    if x.dtype == np.float64 and x.flags.c_contiguous:
        return x
    view = buf[:x.size].reshape(x.shape)
    np.copyto(view, x)
    return view


def _operand_part(x, axis, sl, plan, buf, stage):
    """Rows (axis 0) or columns (axis 1) sl of an operand, ready for the reference's matmul."""
    rows, cols = (sl, slice(None)) if axis == 0 else (slice(None), sl)
    if plan is not None:
        return _exact_part(x, rows, cols, plan[0][0] == "sgemm", buf, stage)
    if isinstance(x, QTensor):
        return _part(x, axis, sl.start, sl.stop)
    return _float_part(x, rows, cols, buf)


def _product(plan, xa, xb, ref, p32):
    """xa @ xb into ref (float64), or a float32 view of p32 where one sgemm is exact."""
    if plan is None or plan[0][0] == "dgemm":
        return np.matmul(xa, xb, out=ref)
    chunk, k = plan[0][1], xa.shape[1]
    out32 = p32.view(np.float32)[:ref.size].reshape(ref.shape)
    if chunk >= k:
        return np.matmul(xa, xb, out=out32)
    ref.fill(0.0)
    for k0 in range(0, k, chunk):    # each chunk's sgemm exact, and their sum in float64
        ref += np.matmul(xa[:, k0:k0 + chunk], xb[k0:k0 + chunk], out=out32)
    return ref


def gemm_metrics(output, pairs, products=None) -> dict:
    """Error metrics of output against float64 references A @ B (+ bias), one per
    (name, A, B, bias or None) in pairs, formed block by block: memory stays near that of the
    output.  A pair with the same operands and bias as an earlier one shares its result.
    products: {name: int64 array}, the exact sums of products of that pair's codes where the
    caller has them (an exact integer accumulator's; see exact_accumulator)."""
    sums = {name: ErrorSums() for name, *_ in pairs}
    add_gemm(sums, output, pairs, products)
    return {name: s.result() for name, s in sums.items()}


def add_gemm(sums, output, pairs, products=None):
    """Add output's errors against each pair's reference into sums[name] (ErrorSums), as
    gemm_metrics forms them (a layer's GEMMs, e.g. a grouped convolution's, gathered into
    one set of sums)."""
    m, n = output.shape
    done = []
    for name, a, b, bias in pairs:
        same = [d for (a2, b2, bias2, d) in done if a2 is a and b2 is b and (
            bias is None and bias2 is None or bias is not None and bias2 is not None and np.array_equal(bias, bias2))]
        if same:
            sums[name].merge(same[0])
            continue
        delta = ErrorSums()
        k = (a.codes if isinstance(a, QTensor) else np.asarray(a)).shape[1]
        # wide blocks (BLAS runs them faster, and A's rows are converted fewer times): B's
        # part of up to 2 _PART elements, A's part and the reference block of up to ~_PART
        bn = max(1, min(n, max(_MIN_BLOCK, 2 * _PART // max(k, 1))))
        bm = max(1, min(m, max(_MIN_BLOCK, _PART // max(k, bn))))
        plan = _exact_plan(a, b, k)
        given = plan is not None and products is not None and name in products
        f32 = plan is not None and not given and plan[0][0] == "sgemm"
        # the reference's scales (for codes: sa_i * sb_j is exact, two 24-bit significands;
        # times the exact product, rounded once) and bias, applied as the sums are reduced
        sa = None if plan is None else np.broadcast_to(plan[1], (m,) if np.ndim(plan[1]) else (1,))
        sb = None if plan is None else np.broadcast_to(plan[2], (n,))
        sa, sb, bias_ = (None if v is None else np.ascontiguousarray(v, np.float64) for v in (sa, sb, bias))
        # reference block, A and B parts, float32 product, staging
        half = 2 if f32 else 1     # float32 parts take half the float64 elements
        sizes = [bm * bn * (not given), -(-bm * k // half) * (not given), -(-k * bn // half) * (not given),
                 (bm * bn + 1) // 2 * f32, max(_STAGE, k, bn) * f32]
        ref_buf, pa, pb, p32, stage = _WORKSPACE.take(sizes)
        for j0 in range(0, n, bn):
            cols = slice(j0, min(j0 + bn, n))
            xb = None if given else _operand_part(b, 1, cols, plan, pb, stage)
            for i0 in range(0, m, bm):
                rows = slice(i0, min(i0 + bm, m))
                if given:    # the exact integer sums, as int64 (below 2^53: exact as float64)
                    ref = products[name][rows, cols]
                else:
                    xa = _operand_part(a, 0, rows, plan, pa, stage)
                    ref = _product(plan, xa, xb, ref_buf[:(rows.stop - i0) * (cols.stop - j0)].reshape(
                        rows.stop - i0, cols.stop - j0), p32)
                delta.add(output[rows, cols], ref, None if sa is None else sa[rows] if sa.size > 1 else sa,
                          None if sb is None else sb[cols], None if bias_ is None else bias_[cols])
        sums[name].merge(delta)
        done.append((a, b, bias, delta))
