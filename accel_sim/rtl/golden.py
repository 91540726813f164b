"""Golden vectors for RTL test benches: `vectors` writes a MAC's chains step by step, or an
array GEMM's per-PE, per-cycle operand streams, as $readmemh hex files plus a JSON manifest
(the layout is in docs/rtl.md, "Golden vectors"); `acc_bits` / `acc_values` convert exact
accumulator values to and from register bit patterns.

Accumulator layouts (the bits a generated PE's `acc` port holds):
- IntAcc(W): the W-bit two's complement integer.
- FloatAcc(e, m) (and a BlockFMA's FloatAcc): 1+e+m bits, sign | biased exponent | fraction,
  bias 2^(e-1)-1; exponent 0 holds zeros (both signs) and subnormals, all ones holds inf
  (fraction 0) and NaN.  NaN is written as the one canonical quiet NaN, sign 0, fraction
  100..0 (fp16 0x7E00, bf16 0x7FC0, fp32 0x7FC00000: what numpy/ml_dtypes write for nan); any
  NaN pattern reads back as NaN.  fp32, fp16 and bf16 are binary32, binary16 and bfloat16.
- FixedAcc(i, f): the (i+f)-bit two's complement integer value * 2^f (at most 53 bits: wider
  registers are read out of the engine rounded to float64, so their bits are not known).
The quire has no per-step register the engine reports (it reads out rounded to a posit).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from accel_sim._native import check_seed
from accel_sim._version import __version__
from accel_sim.mac import MAC, BlockFMA, FixedAcc, FloatAcc, IntAcc, Quire, accumulate

__all__ = ["vectors", "acc_bits", "acc_values", "acc_width", "check_lines"]

MAX_LINES = 1 << 26   # per file: beyond this a bench's $readmemh memory is no longer practical


def _acc_of(mac):
    """The accumulator description behind `mac` (a MAC or an accumulator)."""
    acc = mac.acc if isinstance(mac, MAC) else mac
    if isinstance(acc, BlockFMA):
        acc = acc.acc
    if isinstance(acc, Quire):
        raise ValueError("the quire's register is not read out by the engine (it rounds to a posit when read); "
                         "accumulator bits exist for IntAcc, FloatAcc, FixedAcc (<= 53 bits) and BlockFMA")
    if not isinstance(acc, (IntAcc, FloatAcc, FixedAcc)):
        raise TypeError(f"mac must be a MAC or an IntAcc/FloatAcc/FixedAcc/BlockFMA, got {type(mac).__name__}")
    if isinstance(acc, FixedAcc) and acc.int_bits + acc.frac_bits > 53:
        raise ValueError(f"{acc.name} is {acc.int_bits + acc.frac_bits} bits wide; the engine reads registers wider "
                         "than 53 bits out rounded to float64, so their bits are not known (at most 53)")
    return acc


def acc_width(mac) -> int:
    """Bits of the accumulator register of `mac` (a MAC or an accumulator description)."""
    acc = _acc_of(mac)
    if isinstance(acc, FloatAcc):
        return 1 + acc.exp_bits + acc.man_bits
    if isinstance(acc, IntAcc):
        return acc.bits
    return acc.int_bits + acc.frac_bits


def acc_bits(mac, values) -> np.ndarray:
    """The register bit patterns (uint64, same shape) of exact accumulator values of `mac`.

    values: what `accumulate` / `Array.gemm` return (int64 for IntAcc, float64 otherwise); each
    must lie on the accumulator's grid and in its range, else ValueError (nothing is rounded)."""
    acc = _acc_of(mac)
    v = np.asarray(values)
    if v.dtype.kind not in "fiu":
        raise TypeError(f"values must be numbers, got dtype {v.dtype}")
    if isinstance(acc, FloatAcc):
        return _float_bits(acc, v.astype(np.float64))
    width = acc_width(acc)
    if isinstance(acc, FixedAcc):
        if v.dtype.kind != "f":
            v = v.astype(np.float64)
        scaled = np.ldexp(v, acc.frac_bits)
        if not np.all(np.isfinite(scaled)) or not np.all(scaled == np.round(scaled)):
            raise ValueError(f"values must be finite multiples of 2^-{acc.frac_bits} for {acc.name}")
        ints = scaled.astype(np.int64)
    elif v.dtype.kind == "f":
        if not np.all(np.isfinite(v)) or not np.all(v == np.round(v)) or np.any(np.abs(v) > 2.0**63):
            raise ValueError(f"values must be integers for {acc.name}")
        ints = v.astype(np.int64)
    else:
        if v.dtype == np.uint64 and v.size and int(v.max()) >= 2**63:
            raise ValueError(f"values lie outside {acc.name}'s range")
        ints = v.astype(np.int64)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    if ints.size and (int(ints.min()) < lo or int(ints.max()) > hi):
        raise ValueError(f"values must lie in [{lo}, {hi}] for {acc.name}, got [{ints.min()}, {ints.max()}]")
    return ints.view(np.uint64) & np.uint64((1 << width) - 1) if width < 64 else ints.view(np.uint64).copy()


def acc_values(mac, bits) -> np.ndarray:
    """Exact values (int64 for IntAcc, float64 otherwise) of accumulator bit patterns."""
    acc = _acc_of(mac)
    width = acc_width(acc)
    b = np.asarray(bits)
    if b.dtype.kind not in "ui":
        raise TypeError(f"bits must be an integer array of {width}-bit patterns, got dtype {b.dtype}")
    if b.size and (int(b.min()) < 0 or (width < 64 and int(b.max()) >= 1 << width)):
        raise ValueError(f"bits must lie in [0, 2^{width} - 1] for {acc.name}")
    u = b.astype(np.uint64)
    if isinstance(acc, FloatAcc):
        return _float_values(acc, u)
    if width < 64:
        sign = np.uint64(1 << (width - 1))
        ints = (u ^ sign).astype(np.int64) - np.int64(1 << (width - 1))   # sign-extend
    else:
        ints = u.view(np.int64)
    if isinstance(acc, IntAcc):
        return ints
    return np.ldexp(ints.astype(np.float64), -acc.frac_bits)   # <= 53 bits: exact


def _float_bits(acc, v):
    e, m, bias = acc.exp_bits, acc.man_bits, acc.bias
    nan = np.isnan(v)
    if nan.any() and m == 0:
        raise ValueError(f"{acc.name} has no fraction bits, so no NaN pattern; values hold NaN")
    finite = np.isfinite(v)
    mag = np.abs(np.where(finite, v, 0.0))
    # binary exponent of each nonzero magnitude (frexp: mag = f * 2^x, f in [0.5, 1))
    _, x = np.frexp(mag)
    exp = np.maximum(x.astype(np.int64) - 1, acc.emin)            # subnormals share emin
    sig = np.ldexp(mag, (m - exp).astype(np.int32))              # significand in units of the last place
    normal = (mag >= np.ldexp(1.0, acc.emin))
    bad = finite & ((sig != np.floor(sig)) | (exp > bias))
    if bad.any():
        i = np.flatnonzero(bad.reshape(-1))[0]
        raise ValueError(f"values[{i}] = {v.reshape(-1)[i]!r} is not a value of {acc.name} "
                         f"(not on its grid, or beyond its max {acc.max})")
    sig_u = sig.astype(np.uint64)
    field = np.where(normal, (exp + bias).astype(np.uint64), np.uint64(0))
    frac = np.where(normal, sig_u - np.uint64(1 << m), sig_u)
    top = np.uint64((1 << e) - 1)
    field = np.where(finite, field, top)
    frac = np.where(finite, frac, np.where(nan, np.uint64(1 << (m - 1)) if m else np.uint64(0), np.uint64(0)))
    sign = np.signbit(v) & ~nan
    return (sign.astype(np.uint64) << np.uint64(e + m)) | (field.astype(np.uint64) << np.uint64(m)) | frac.astype(np.uint64)


def _float_values(acc, u):
    e, m = acc.exp_bits, acc.man_bits
    frac = (u & np.uint64((1 << m) - 1)).astype(np.float64)
    field = ((u >> np.uint64(m)) & np.uint64((1 << e) - 1)).astype(np.int64)
    negative = ((u >> np.uint64(e + m)) & np.uint64(1)).astype(bool)
    normal = field > 0
    mag = np.where(normal, np.ldexp(frac + 2.0**m, (field - acc.bias - m).astype(np.int32)), np.ldexp(frac, acc.emin - m))
    top = field == (1 << e) - 1
    mag = np.where(top, np.where(frac == 0, np.inf, np.nan), mag)
    return np.where(negative, -mag, mag)


# -- vectors --------------------------------------------------------------------------------------

def vectors(mac_or_array, A, B, path, *, seed=None, overwrite=False) -> dict:
    """Write golden vectors into the directory `path` and return the manifest (also written
    there as manifest.json).  Layouts: docs/rtl.md, "Golden vectors".

    MAC: A and B are codes of mac.a and mac.b shaped (chains, K) (or (K,) for one chain);
    each chain runs from +0, step by step (n products a step for an n-term BlockFMA, K
    zero-padded to whole steps): every step's operand codes and the accumulator's incoming and
    outgoing bits.  seed: stochastic rounding's seed (default 0).
    Array: A (M, K) and B (K, N) are codes, QTensors, or floats the array quantizes as gemm
    does; written: the operand codes, every PE's operands at every cycle in the dataflow's
    order, the final accumulator bits of every output and Result.cycles.  The array's own seed
    is used (`seed` must be None or equal to it).

    The directory is written whole or not at all: into a temporary directory beside it, then
    renamed.  An existing non-empty directory is replaced only with overwrite=True."""
    from accel_sim.array import Array
    path = _check_target(path, overwrite)
    if isinstance(mac_or_array, MAC):
        files, manifest = _mac_vectors(mac_or_array, A, B, 0 if seed is None else check_seed(seed))
    elif isinstance(mac_or_array, Array):
        files, manifest = _array_vectors(mac_or_array, A, B, seed)
    else:
        raise TypeError(f"mac_or_array must be a MAC or an Array, got {type(mac_or_array).__name__}")
    manifest = {"accel_sim_version": __version__, **manifest}
    _write_dir(path, files, manifest, overwrite)
    return manifest


def _mac_vectors(mac, A, B, seed):
    acc = _acc_of(mac)
    a, b = _codes(A, mac.a, "A"), _codes(B, mac.b, "B")
    if a.shape != b.shape:
        raise ValueError(f"A {a.shape} and B {b.shape} must have the same shape (chains, K)")
    a, b = (x.reshape(1, -1) if x.ndim == 1 else x for x in (a, b))
    if a.ndim != 2 or 0 in a.shape:
        raise ValueError(f"A and B must be shaped (chains, K) or (K,) with chains, K >= 1, got {A.shape if hasattr(A, 'shape') else np.shape(A)}")
    chains, k = a.shape
    n = mac.terms
    steps = -(-k // n)
    a, b = _pad_k(a, mac.a, steps * n, axis=1), _pad_k(b, mac.b, steps * n, axis=1)
    check_lines(chains * steps * n, "chains * K")
    # A step's incoming value is the last one's outgoing: one-step chains from it replay the
    # engine's step exactly, except where a chain's later steps see more than its value (the
    # draws of sr are numbered by step; init passes through float64, so IntAcc wider than 53
    # bits): there each prefix of the chain is run whole.
    rounding = getattr(acc, "rounding", None)
    prefixes = rounding == "sr" or (isinstance(acc, IntAcc) and acc.bits > 53)
    dtype = np.int64 if mac.int_output else np.float64
    acc_in, acc_out = np.zeros((chains, steps), dtype), np.zeros((chains, steps), dtype)
    current = np.zeros(chains, dtype)
    for t in range(steps):
        if prefixes:
            out = accumulate(a[:, :(t + 1) * n], b[:, :(t + 1) * n], mac, seed=seed)
        else:
            out = accumulate(a[:, t * n:(t + 1) * n], b[:, t * n:(t + 1) * n], mac, init=current, seed=seed)
        acc_in[:, t], acc_out[:, t] = current, out
        current = out
    width, da, db = acc_width(acc), _digits(mac.a.bits), _digits(mac.b.bits)
    files = {"a.hex": _hex(a, da), "b.hex": _hex(b, db),
             "acc_in.hex": _hex(acc_bits(acc, acc_in), _digits(width)),
             "acc_out.hex": _hex(acc_bits(acc, acc_out), _digits(width))}
    manifest = {
        "kind": "mac", "mac": _mac_info(mac), "rounding": rounding, "seed": seed,
        "shapes": {"chains": chains, "k": k, "terms": n, "steps": steps},
        "files": {
            "a.hex": _file_info(chains * steps * n, da, "A codes, order (chain, step, lane): line (c*steps + t)*terms + l"),
            "b.hex": _file_info(chains * steps * n, db, "B codes, same order as a.hex"),
            "acc_in.hex": _file_info(chains * steps, _digits(width),
                                     "accumulator bits before each step, order (chain, step): line c*steps + t"),
            "acc_out.hex": _file_info(chains * steps, _digits(width),
                                      "accumulator bits after each step, same order as acc_in.hex"),
        },
    }
    return files, manifest


def _array_vectors(arr, A, B, seed):
    from accel_sim.operands import BLOCK_SCALES
    from accel_sim.plan import gemm_cycles
    from accel_sim.quant import QTensor
    if seed is not None and seed != arr.seed:
        raise ValueError(f"seed: an Array's vectors use the array's own seed ({arr.seed}); pass seed=None or build "
                         f"the Array with seed={seed}")
    if arr.quant["a"] in BLOCK_SCALES:
        raise ValueError("vectors of block-scaled GEMMs (quant 'block'/'vector') are not supported: their "
                         "accumulator is rescaled per block outside the PEs")
    qa, qb = _array_operands(arr, A, B)
    (m, k), (k2, n_out) = qa.shape, qb.shape
    if k != k2:
        raise ValueError(f"A ({m}, {k}) and B ({k2}, {n_out}) do not multiply: K differs")
    if 0 in (m, k, n_out):
        raise ValueError(f"A ({m}, {k}) and B ({k2}, {n_out}) must not be empty")
    out_acc = arr.mac.acc if arr.dataflow == "os" else arr.buffer_acc
    _acc_of(arr.mac), _acc_of(out_acc)        # refuse accumulators without known bits before the GEMM
    R, C, n, df = arr.rows, arr.cols, arr.terms, arr.dataflow
    folds, stream_cycles = gemm_cycles(df, R, C, m, n_out, k, n)
    check_lines(stream_cycles * R * C * n, "cycles * rows * cols * terms of the streams")
    res = arr.gemm(QTensor(qa.codes, qa.format), QTensor(qb.codes, qb.format), metrics=False)
    kp = -(-k // n)
    a = _pad_k(qa.codes, arr.mac.a, kp * n, axis=1)
    b = _pad_k(qb.codes, arr.mac.b, kp * n, axis=0)
    valid, sa, sb, fold_list = _streams(df, R, C, n, a, b, m, n_out, kp)
    assert len(fold_list) == folds and valid.shape[0] == stream_cycles
    width, da, db = acc_width(out_acc), _digits(arr.mac.a.bits), _digits(arr.mac.b.bits)
    files = {"a.hex": _hex(qa.codes, da), "b.hex": _hex(qb.codes, db), "valid.hex": _hex(valid, 1),
             "stream_a.hex": _hex(sa, da), "stream_b.hex": _hex(sb, db),
             "acc.hex": _hex(acc_bits(out_acc, res.acc), _digits(width))}
    lines = stream_cycles * R * C
    manifest = {
        "kind": "array", "mac": _mac_info(arr.mac), "rounding": getattr(_acc_of(arr.mac), "rounding", None),
        "seed": arr.seed,
        "array": {"rows": R, "cols": C, "dataflow": df, "buffer_acc": _acc_info(arr.buffer_acc)},
        "shapes": {"m": m, "n": n_out, "k": k, "terms": n, "k_steps": kp},
        "cycles": res.cycles, "stream_cycles": stream_cycles, "stall_cycles": res.stall_cycles,
        "stream_offset": 0 if df == "os" else R,
        "fold_axes": {"os": ["m", "n"], "ws": ["k_step", "n"], "is": ["k_step", "m"]}[df],
        "folds": fold_list,
        "files": {
            "a.hex": _file_info(m * k, da, "A codes, row-major (M, K)"),
            "b.hex": _file_info(k * n_out, db, "B codes, row-major (K, N)"),
            "valid.hex": _file_info(lines, 1, "1 where PE (r, c) multiplies at cycle t; line (t*rows + r)*cols + c"),
            "stream_a.hex": _file_info(lines * n, da, "the A codes PE (r, c) multiplies at cycle t (0 when idle); "
                                       "line ((t*rows + r)*cols + c)*terms + l"),
            "stream_b.hex": _file_info(lines * n, db, "the B codes, same order as stream_a.hex"),
            "acc.hex": _file_info(m * n_out, _digits(width),
                                  "final accumulator bits of every output, row-major (M, N): the PE's register "
                                  "(os) or the accumulator buffer (ws, is)"),
        },
    }
    return files, manifest


def _streams(df, R, C, n, a, b, m, n_out, kp):
    """Per cycle, per PE: valid, and the n A and B codes it multiplies (SCALE-Sim's timing:
    in a fold, PE (r, c) takes streamed element s = t - offset - r - c; docs/rtl.md)."""
    sr, sc, t_len = {"os": (m, n_out, kp), "ws": (kp, n_out, m), "is": (kp, m, n_out)}[df]
    offset = 0 if df == "os" else R
    per_fold = t_len + R + C - 2 + offset
    r = np.arange(R)[None, :, None]
    c = np.arange(C)[None, None, :]
    tau = np.arange(per_fold)[:, None, None]
    lanes = np.arange(n)
    valids, a_parts, b_parts, folds = [], [], [], []
    start = 0
    for f0 in range(0, sr, R):
        for g0 in range(0, sc, C):
            rows_f, cols_f = min(R, sr - f0), min(C, sc - g0)
            s = tau - offset - r - c
            valid = (s >= 0) & (s < t_len) & (r < rows_f) & (c < cols_f)
            s = np.clip(s, 0, t_len - 1)
            rr, cc = np.minimum(f0 + r, sr - 1), np.minimum(g0 + c, sc - 1)
            if df == "os":      # output (f0+r, g0+c), step s
                i, j, step = rr, cc, s
            elif df == "ws":    # k step f0+r of output column g0+c, input row s
                i, j, step = s, cc, rr
            else:               # k step f0+r of output row g0+c, output column s
                i, j, step = cc, s, rr
            kk = step[..., None] * n + lanes                                    # (t, r, c, lane)
            i, j, kk = np.broadcast_arrays(i[..., None], j[..., None], kk)
            keep = valid[..., None]
            a_parts.append(np.where(keep, a[i, kk], 0))
            b_parts.append(np.where(keep, b[kk, j], 0))
            valids.append(valid.astype(np.uint8))
            folds.append({"start": start, "cycles": per_fold, "sr": [f0, rows_f], "sc": [g0, cols_f]})
            start += per_fold
    return np.concatenate(valids), np.concatenate(a_parts), np.concatenate(b_parts), folds


def _array_operands(arr, A, B):
    """A and B as QTensors: integer arrays are codes, floats quantized as Array.gemm does (its
    headroom, 'auto' from both operands)."""
    from accel_sim import operands
    from accel_sim.quant import QTensor
    ops = []
    for x, fmt, argname in ((A, arr.mac.a, "A"), (B, arr.mac.b, "B")):
        if isinstance(x, QTensor) or np.asarray(x).dtype.kind not in "ui":
            ops.append(x)
            continue
        codes = _codes(x, fmt, argname)
        if codes.ndim != 2:
            raise ValueError(f"{argname} must have 2 dimensions, got shape {codes.shape}")
        ops.append(QTensor(codes, fmt))
    shape = np.shape(ops[0].codes if isinstance(ops[0], QTensor) else ops[0])
    k = shape[1] if len(shape) == 2 else 1   # the reduction length, for "auto" headroom
    qa, qb = operands.operand_pair(arr, ops[0], ops[1], arr.quant["a"], arr.quant["b"], ("A", "B"), 2, k)
    for q, argname in ((qa, "A"), (qb, "B")):
        if q.is_block_scaled:
            raise ValueError(f"{argname} is block-scaled; vectors of block-scaled GEMMs are not supported")
    return qa, qb


def _codes(x, fmt, argname):
    arr = np.asarray(x)
    if arr.dtype.kind not in "ui":
        raise TypeError(f"{argname} must be an integer array of {fmt.name} codes, got dtype {arr.dtype}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >> fmt.bits):
        raise ValueError(f"{argname} holds values outside [0, {(1 << fmt.bits) - 1}], not {fmt.name} codes")
    return arr.astype(fmt.code_dtype)


def _pad_k(codes, fmt, k, axis):
    """codes with the K axis zero-padded (the code of +0) to length k."""
    missing = k - codes.shape[axis]
    if missing == 0:
        return codes
    widths = [(0, 0), (0, 0)]
    widths[axis] = (0, missing)
    return np.pad(codes, widths, constant_values=int(fmt.encode(0.0)))


def check_lines(lines, what):
    """Refuse `lines` lines per file over MAX_LINES (callers check before drawing operands)."""
    if lines > MAX_LINES:
        raise ValueError(f"{what} = {lines} lines per file, over the {MAX_LINES} a test bench memory can take; "
                         "write vectors of a smaller problem")


def _digits(bits):
    return -(-bits // 4)


def _hex(values, digits):
    flat = np.asarray(values).reshape(-1).astype(np.uint64).tolist()
    return "".join(f"{v:0{digits}x}\n" for v in flat).encode("ascii")


def _file_info(lines, digits, what):
    return {"lines": int(lines), "hex_digits": digits, "content": what}


def _fmt_info(fmt):
    return {"name": fmt.name, "bits": fmt.bits, "hex_digits": _digits(fmt.bits)}


def _acc_info(acc):
    info = {"name": acc.name}
    if isinstance(acc, BlockFMA):
        info.update(kind="block", terms=acc.terms, align_bits=acc.align_bits)
        acc = acc.acc
    width = acc_width(acc)
    info.update(bits=width, hex_digits=_digits(width))
    if isinstance(acc, FloatAcc):
        info.update(layout="sign|exponent|fraction", exp_bits=acc.exp_bits, man_bits=acc.man_bits, bias=acc.bias,
                    rounding=acc.rounding, subnormals=bool(acc.subnormals), overflow=acc.overflow,
                    nan=f"{int(_float_bits(acc, np.array([np.nan]))[0]):0{_digits(width)}x}" if acc.man_bits else None)
        info.setdefault("kind", "float")
    elif isinstance(acc, IntAcc):
        info.update(layout="two's complement", overflow=acc.overflow)
        info.setdefault("kind", "int")
    else:
        info.update(layout="two's complement, lsb 2^-frac_bits", int_bits=acc.int_bits, frac_bits=acc.frac_bits,
                    rounding=acc.rounding, overflow=acc.overflow)
        info.setdefault("kind", "fixed")
    return info


def _mac_info(mac):
    return {"name": mac.name, "a": _fmt_info(mac.a), "b": _fmt_info(mac.b), "acc": _acc_info(mac.acc),
            "terms": mac.terms}


# -- writing a directory whole ----------------------------------------------------------------------

def _check_target(path, overwrite):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a directory path, got {type(path).__name__}")
    if not isinstance(overwrite, (bool, np.bool_)):
        raise TypeError(f"overwrite must be a bool, got {type(overwrite).__name__}")
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise ValueError(f"path {str(path)!r} exists and is not a directory")
        if any(path.iterdir()) and not overwrite:
            raise ValueError(f"path {str(path)!r} is a non-empty directory; pass overwrite=True (--overwrite) to replace it")
    return path


def _write_dir(path, files, manifest, overwrite):
    _check_target(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    files = dict(files, **{"manifest.json": (json.dumps(manifest, indent=1) + "\n").encode()})
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    old = None
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)
        if path.exists() and any(path.iterdir()):   # overwrite: move the old one aside, then swap
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / "d")
        os.replace(tmp, path)          # onto nothing, or an empty directory
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not path.exists():
            os.replace(old / "d", path)            # put the user's directory back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
