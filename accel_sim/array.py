"""The systolic array: an R x C array of MACs that runs GEMMs bit-exactly in dataflow order in
the C engine (csrc/array.c) and returns a Result.  Array holds the configuration and the
engine call; the cycle and traffic model is in plan.py, operand quantization in operands.py,
block-scaled GEMMs in blockscaled.py, conv2d / linear / matmul lowering in layers.py, error
metrics in _metrics.py, overflow reports in overflow.py."""
from __future__ import annotations

import math
import os

import numpy as np

from accel_sim import blockscaled, formats, layers, operands as _operands, overflow as _overflow, plan as _plan
from accel_sim.epilogue import epilogue
from accel_sim.energy import EnergyTable
from accel_sim._native import DATAFLOWS, memory_limit as _check_memory_limit, size_text as _size, check_seed, ffi, lib, pointer, raise_for_status
from accel_sim.mac import MAC, IntAcc, get_acc
from accel_sim.quant import QTensor
from accel_sim.plan import Plan, gemm_cycles
from accel_sim.result import Result
from accel_sim._metrics import ErrorSums as _ErrorSums, add_gemm as _add_gemm, error_metrics as _error_metrics, \
    exact_accumulator as _exact_accumulator, gemm_metrics as _gemm_metrics

__all__ = ["Array", "Plan", "Result", "DATAFLOWS", "gemm_cycles"]

_BLOCK_SCALES = _operands.BLOCK_SCALES


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _check_threads(threads):
    if threads is None:
        env = os.environ.get("ACCEL_SIM_THREADS")
        if env is None:
            return min(256, os.cpu_count() or 1)
        try:
            threads = int(env)
        except ValueError:
            raise ValueError(f"ACCEL_SIM_THREADS must be a positive integer, got {env!r}") from None
        argname = "ACCEL_SIM_THREADS"
    else:
        argname = "threads"
        if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, (int, np.integer)):
            raise TypeError(f"threads must be a positive integer or None, got {type(threads).__name__}")
    if not 1 <= threads <= 256:
        raise ValueError(f"{argname} must be in [1, 256], got {threads}")
    return int(threads)


def _transposed(b, dtype, threads):
    """b (K x N codes) transposed into a new C-ordered N x K array, in the engine's threads
    when b is C-ordered already (numpy's copy is one thread)."""
    if b.dtype != dtype or not b.flags.c_contiguous or b.ndim != 2:
        return np.ascontiguousarray(b.T, dtype=dtype)
    bt = np.empty(b.shape[::-1], dtype=dtype)
    lib.acs_transpose(pointer(b, "void *"), pointer(bt, "void *"), b.shape[0], b.shape[1], dtype.itemsize, threads)
    return bt


class Array:
    """An R x C systolic array of one kind of MAC.

    dataflow: "os" (output-stationary), "ws" (weight-stationary), "is" (input-stationary).
    mac: the PE's MAC (default int8 x int8 -> int32).  buffer_acc: the accumulator buffer that
    sums ws/is tiles (default: the PE accumulator).  sram_kb: total on-chip SRAM split evenly
    among A, B and outputs, or a triple (a_kb, b_kb, out_kb); with dram_bytes_per_cycle it adds
    stall cycles (docs/array.md).  quant: how float inputs are quantized: dict with "a", "b"
    ("tensor"; "channel": per row of A, per column of B; "none": scale 1, a plain cast;
    "block" (OCP MX) or "vector" (VS-Quant) for both: scales per block of K, with "block" (the
    size) and "scale_format" keys as quant.quantize takes them; K is zero-padded to whole
    blocks), "calibration", "rounding", "headroom" (bits: amax maps to max / 2^bits for "tensor"
    and "channel" scales; "auto": the smallest headroom that keeps every partial sum within a
    float accumulator, from the formats and K, accel_sim.headroom; default 0).
    seed: stochastic rounding's seed.  energy: an EnergyTable, or the path of a TOML one
    (default: EnergyTable.default(45)).  threads: engine threads over output rows (default: the
    ACCEL_SIM_THREADS environment variable, else every core); the bits never depend on it.
    memory_limit_bytes: a GEMM whose outputs and working copies would need more is refused
    before anything is allocated (default: ACCEL_SIM_MEMORY_LIMIT, else 8 GiB)."""

    def __init__(self, rows, cols, dataflow="ws", mac=None, *, buffer_acc=None, clock_ghz=1.0,
                 sram_kb=None, dram_bytes_per_cycle=None, quant=None, energy=None, seed=0, threads=None,
                 memory_limit_bytes=None):
        for argname, v in (("rows", rows), ("cols", cols)):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{argname} must be an integer, got {type(v).__name__}")
            if not 1 <= v <= 4096:
                raise ValueError(f"{argname} must be in [1, 4096], got {v}")
        if dataflow not in DATAFLOWS:
            raise ValueError(f"dataflow must be one of {sorted(DATAFLOWS)}, got {dataflow!r}")
        self.rows, self.cols, self.dataflow = int(rows), int(cols), dataflow
        self.mac = MAC("int8", "int8", "int32") if mac is None else mac
        if not isinstance(self.mac, MAC):
            raise TypeError(f"mac must be a MAC, got {type(self.mac).__name__}")
        if self.mac.a.bits > 16 or self.mac.b.bits > 16:
            raise ValueError(f"the array's operand formats must be at most 16 bits, got {self.mac.name}")
        self.buffer_acc = self.mac.acc if buffer_acc is None else get_acc(buffer_acc, "buffer_acc")
        if isinstance(self.buffer_acc, IntAcc) and not isinstance(self.mac.acc, IntAcc):
            raise ValueError(f"buffer_acc {self.buffer_acc.name} is an integer register but the PEs "
                             f"accumulate {self.mac.acc.name}")
        if self.rows * self.cols * self.mac.terms > 1 << 22:
            raise ValueError(f"rows * cols * terms must be at most 2**22, got {self.rows * self.cols * self.mac.terms}")
        if not _is_number(clock_ghz) or not 0 < clock_ghz < 1e3:
            raise ValueError(f"clock_ghz must be a positive number, got {clock_ghz!r}")
        self.clock_ghz = float(clock_ghz)
        self.sram_kb = self._check_sram(sram_kb)
        if dram_bytes_per_cycle is not None and (not _is_number(dram_bytes_per_cycle) or not dram_bytes_per_cycle > 0
                                                 or not math.isfinite(dram_bytes_per_cycle)):
            raise ValueError(f"dram_bytes_per_cycle must be a positive number or None, got {dram_bytes_per_cycle!r}")
        self.dram_bytes_per_cycle = dram_bytes_per_cycle
        self.quant = _operands.check_quant(quant)
        if self.quant["headroom"] == "auto":
            _operands.headroom_bits(self, 1)   # a float accumulator, or the error now
        self.seed = check_seed(seed)
        self.threads = _check_threads(threads)
        self.memory_limit_bytes = _check_memory_limit(memory_limit_bytes)
        if energy is None:
            energy = EnergyTable.default(45)
        elif isinstance(energy, (str, bytes)) or hasattr(energy, "__fspath__"):
            energy = EnergyTable.from_toml(energy)
        elif not isinstance(energy, EnergyTable):
            raise TypeError(f"energy must be an EnergyTable or a TOML path, got {type(energy).__name__}")
        self.energy = energy
        self._buffer_c = ffi.new("acs_acc *")
        self.buffer_acc._fill(self._buffer_c)

    # -- configuration checks ---------------------------------------------------------------
    @staticmethod
    def _check_sram(sram_kb):
        if sram_kb is None:
            return None
        parts = (sram_kb / 3,) * 3 if _is_number(sram_kb) else sram_kb
        try:
            parts = tuple(float(p) for p in parts)
        except (TypeError, ValueError):
            raise TypeError(f"sram_kb must be a number or a triple (a_kb, b_kb, out_kb), got {sram_kb!r}") from None
        if len(parts) != 3 or not all(p > 0 and math.isfinite(p) for p in parts):
            raise ValueError(f"sram_kb must be a positive number or three positive numbers, got {sram_kb!r}")
        return parts

    @property
    def terms(self):
        return self.mac.terms

    def __repr__(self):
        return f"Array({self.rows}x{self.cols}, {self.dataflow}, {self.mac.name})"

    # -- cost model -----------------------------------------------------------------------------
    def plan_gemm(self, M, N, K) -> Plan:
        """Cycles, action counts and memory traffic of an M x K by K x N GEMM, without numerics."""
        for argname, v in (("M", M), ("N", N), ("K", K)):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{argname} must be an integer, got {type(v).__name__}")
            if v < 0:
                raise ValueError(f"{argname} must be non-negative, got {v}")
        return _plan.plan(self, int(M), int(N), int(K))

    # -- numerics -------------------------------------------------------------------------------
    def _check_memory(self, m, n, k, what="the GEMM"):
        """Refuse, before allocating, a GEMM whose outputs (accumulators, fp32 and float64
        outputs, float64 references for the metrics) and decoded operand copies exceed the limit."""
        need = int(m) * int(n) * 36 + 5 * (int(m) + int(n)) * int(k)
        if need > self.memory_limit_bytes:
            raise ValueError(f"{what} ({m}x{k} @ {k}x{n}) would need about {_size(need)}, over the array's "
                             f"memory_limit_bytes ({_size(self.memory_limit_bytes)}); raise the limit "
                             "(or ACCEL_SIM_MEMORY_LIMIT) or split the layer")

    def _gemm_codes(self, a_codes, bt_codes, sa, sb, bias, out_format):
        """Run one GEMM of codes (a: M x K, bt: N x K); returns acc, epilogue output, counts."""
        m, k = a_codes.shape
        n = bt_codes.shape[0]
        self._check_memory(m, n, k)
        a = np.ascontiguousarray(a_codes, dtype=self.mac.a.code_dtype)
        bt = _transposed(bt_codes.T, self.mac.b.code_dtype, self.threads)
        out_acc = self.mac.acc if self.dataflow == "os" else self.buffer_acc
        int_out = isinstance(out_acc, IntAcc)
        acc = np.empty((m, n), dtype=np.int64 if int_out else np.float64)
        counts = ffi.new("acs_gemm_counts *")
        status = lib.acs_gemm(self.mac._c, self._buffer_c, DATAFLOWS[self.dataflow], self.rows, self.cols,
                              pointer(a, "void *"), pointer(bt, "void *"), m, n, k,
                              ffi.NULL if int_out else pointer(acc, "double *"),
                              pointer(acc, "int64_t *") if int_out else ffi.NULL, self.seed, self.threads, counts)
        raise_for_status(status, out_acc.name, self)
        output, overflow = epilogue(self, acc, out_acc, sa, sb, bias, out_format, counts)
        plan = _plan.plan(self, m, n, k, 32 if out_format is None else formats.get(out_format).bits)
        plan.counts.update({key: getattr(counts, key) for key in ("zero_macs", "toggles_a", "toggles_b")}, **overflow)
        return acc, output, _plan.with_energy(self, plan, measured=True)

    def gemm(self, A, B, bias=None, out_format=None, metrics=True, _names=("A", "B")) -> Result:
        """A (M, K) @ B (K, N) on the array: floats are quantized with the array's quant spec,
        QTensors used as they are.  Output: fp32(fp32(acc * fp32(scale_a * scale_b)) + bias),
        then rounded to out_format if given.  metrics=False skips the float64 reference
        products behind Result.metrics (they cost more than a fast-path GEMM).  Outputs that
        overflowed or saturated are reported in Result.overflow and by one
        AccumulatorOverflowWarning (accel_sim.overflow)."""
        return self._reported(self._gemm(A, B, bias, out_format, metrics, _names))

    def _reported(self, res) -> Result:
        """res with its overflow report, warned about once."""
        blocks = self.quant["a"] in _BLOCK_SCALES or "scale_joins" in res.counts
        register = self.mac.scale_acc if blocks else self.mac.acc if self.dataflow == "os" else self.buffer_acc
        res.overflow = _overflow.report(res.counts, register, res.output.size, self.quant["a"], self.quant["b"],
                                        self.mac.a, self.mac.b)
        _overflow.warn(res.overflow, stacklevel=4)
        return res

    def _block_operands(self, A, B, names):
        return blockscaled.block_operands(self, A, B, names)

    def _gemm(self, A, B, bias, out_format, metrics, _names) -> Result:
        if self.quant["a"] in _BLOCK_SCALES or any(isinstance(v, QTensor) and v.is_block_scaled for v in (A, B)):
            qa, qb = self._block_operands(A, B, _names)
            return blockscaled.gemm_blocks(self, qa, qb, bias, out_format, metrics, _names, floats=(A, B))
        for argname, v in zip(_names, (A, B)):
            if np.ndim(v.codes if isinstance(v, QTensor) else v) != 2:
                raise ValueError(f"{argname} must have 2 dimensions, got shape {np.shape(v.codes if isinstance(v, QTensor) else v)}")
        (m_, k_), (k2, n_) = np.shape(A.codes if isinstance(A, QTensor) else A), np.shape(B.codes if isinstance(B, QTensor) else B)
        if k_ != k2:
            raise ValueError(f"{_names[0]} ({m_}, {k_}) and {_names[1]} ({k2}, {n_}) do not multiply: K differs")
        self._check_memory(m_, n_, k_)
        qa = _operands.operand(self, A, self.mac.a, self.quant["a"], 0, _names[0], 2, k_)
        qb = _operands.operand(self, B, self.mac.b, self.quant["b"], 1, _names[1], 2, k_)
        m, n = qa.shape[0], qb.shape[1]
        bias32 = _operands.bias32(bias, n)
        acc, output, plan = self._gemm_codes(qa.codes, qb.codes.T, _operands.scales(qa, 0, m), _operands.scales(qb, 1, n),
                                             bias32, out_format)
        if not metrics:
            return Result(**vars(plan), output=output, acc=acc, metrics={})
        pairs = [("vs_dequantized", qa, qb, None if bias is None else bias32.astype(np.float64)),
                 ("vs_float64", qa if isinstance(A, QTensor) else A, qb if isinstance(B, QTensor) else B,
                  None if bias is None else np.asarray(bias, np.float64))]
        out_acc = self.mac.acc if self.dataflow == "os" else self.buffer_acc
        exact = _exact_accumulator(self.mac.acc, out_acc, qa, qb, k_)   # the codes' product is acc
        metrics = _gemm_metrics(output, pairs, {"vs_dequantized": acc} if exact else None)
        return Result(**vars(plan), output=output, acc=acc, metrics={k: metrics[k] for k in ("vs_float64", "vs_dequantized")})

    def linear(self, x, w, bias=None, out_format=None) -> Result:
        """y = x @ w.T + bias with PyTorch's layout: x (..., in), w (out, in)."""
        for argname, v in (("x", x), ("w", w)):
            if isinstance(v, QTensor) and v.is_block_scaled:
                raise ValueError(f"{argname} is block-scaled; block-scaled operands are taken by Array.gemm, with "
                                 "both operands block-scaled along K")
        x_arr = x.dequantize() if isinstance(x, QTensor) else np.asarray(x)
        if x_arr.ndim < 1:
            raise ValueError("x must have at least one dimension (its last is in_features)")
        lead = x_arr.shape[:-1]
        if isinstance(x, QTensor):
            if x.axis is not None:
                raise ValueError("a QTensor x for linear must have one scale (axis None)")
            x2 = QTensor(x.codes.reshape(-1, x.shape[-1]), x.format, x.scale)
        else:
            x2 = x_arr.reshape(-1, x_arr.shape[-1])
        if isinstance(w, QTensor):
            w_t = QTensor(w.codes.T, w.format, w.scale, None if w.axis is None else 1 - w.axis)
        else:
            w_arr = np.asarray(w)
            if w_arr.ndim != 2:
                raise ValueError(f"w must be (out_features, in_features), got shape {w_arr.shape}")
            w_t = w_arr.T
        if w_t.shape[0] != x2.shape[-1]:
            raise ValueError(f"x has {x2.shape[-1]} input features but w {tuple(w_t.shape[::-1])} expects {w_t.shape[0]}")
        res = self.gemm(x2, w_t, bias=bias, out_format=out_format, _names=("x", "w"))
        res.output = res.output.reshape(*lead, -1)
        res.acc = res.acc.reshape(*lead, -1)
        return res

    def matmul(self, a, b, out_format=None) -> Result:
        """Batched a (..., M, K) @ b (..., K, N), batch axes broadcast (attention's QK^T and PV).
        Each operand is quantized per tensor; every batch entry is one GEMM on the array."""
        return self._reported(self._matmul(a, b, out_format))

    def _matmul(self, a, b, out_format) -> Result:
        for argname, v in (("a", a), ("b", b)):
            if np.ndim(v.codes if isinstance(v, QTensor) else v) < 2:
                raise ValueError(f"{argname} must have at least 2 dimensions, got shape {np.shape(v)}")
            if isinstance(v, QTensor) and v.axis is not None:
                raise ValueError(f"{argname} must be quantized per tensor for matmul")
        self._batch_shape(*(np.shape(v.codes if isinstance(v, QTensor) else v) for v in (a, b)))  # before quantizing
        if self.quant["a"] in _BLOCK_SCALES:
            return self._matmul_blocks(a, b, out_format)
        per_tensor = {k: "none" if self.quant[k] == "none" else "tensor" for k in ("a", "b")}
        k = np.shape(a.codes if isinstance(a, QTensor) else a)[-1]
        qa = _operands.operand(self, a, self.mac.a, per_tensor["a"], 0, "a", None, k)
        qb = _operands.operand(self, b, self.mac.b, per_tensor["b"], 1, "b", None, k)
        batch, ac, bc = self._batched(qa.codes, qb.codes)
        scales = (_operands.scales(qa, 0, 0), _operands.scales(qb, 1, 0))
        outs, accs, plans = [], [], []
        for i in range(ac.shape[0]):
            acc, output, plan = self._gemm_codes(ac[i], bc[i].T, *scales, None, out_format)
            outs.append(output), accs.append(acc), plans.append(plan)
        m, n = qa.shape[-2], qb.shape[-1]
        output = np.stack(outs).reshape(*batch, m, n) if outs else np.zeros((*batch, m, n))
        acc = np.stack(accs).reshape(*batch, m, n) if accs else np.zeros((*batch, m, n))
        # the metrics per batch entry, on the GEMMs the array ran (as gemm's)
        sums = {key: _ErrorSums() for key in ("vs_float64", "vs_dequantized")}
        out_acc = self.mac.acc if self.dataflow == "os" else self.buffer_acc
        fa, fb = (None if isinstance(v, QTensor) else np.broadcast_to(np.asarray(v), batch + q.shape[-2:])
                  for v, q in ((a, qa), (b, qb)))
        for i in range(ac.shape[0]):
            at = np.unravel_index(i, batch) if batch else ()
            qa_i, qb_i = QTensor(ac[i], qa.format, qa.scale), QTensor(bc[i], qb.format, qb.scale)
            exact = _exact_accumulator(self.mac.acc, out_acc, qa_i, qb_i, ac.shape[2])
            _add_gemm(sums, outs[i], [("vs_dequantized", qa_i, qb_i, None),
                                      ("vs_float64", qa_i if fa is None else fa[at], qb_i if fb is None else fb[at], None)],
                      {"vs_dequantized": accs[i]} if exact else None)
        metrics = {key: sums[key].result() for key in ("vs_float64", "vs_dequantized")}
        return _plan.sum_plans(plans, self.rows, self.cols, self.terms, self.clock_ghz, Result,
                          output=output, acc=acc, metrics=metrics)

    def _batch_shape(self, a_shape, b_shape):
        """The broadcast batch shape of a (..., M, K) @ b (..., K, N), checked to multiply and
        to fit the memory limit."""
        if a_shape[-1] != b_shape[-2]:
            raise ValueError(f"a {a_shape} and b {b_shape} do not multiply: K differs")
        try:
            batch = np.broadcast_shapes(a_shape[:-2], b_shape[:-2])
        except ValueError:
            raise ValueError(f"batch shapes of a {a_shape} and b {b_shape} do not broadcast") from None
        self._check_memory(int(np.prod(batch, dtype=object)) * a_shape[-2], b_shape[-1], a_shape[-1],
                           "the batched matmul")
        return batch

    def _batched(self, a, b):
        """The batch shape, and a and b broadcast to it and flattened to (entries, M, K) and
        (entries, K, N)."""
        batch = self._batch_shape(a.shape, b.shape)
        return (batch, *(np.broadcast_to(x, batch + x.shape[-2:]).reshape(-1, *x.shape[-2:]) for x in (a, b)))

    def _matmul_blocks(self, a, b, out_format) -> Result:
        """Batched matmul with block scaling: every batch entry quantized per block of K."""
        a64, b64 = _operands.float_operand(self, a, "a"), _operands.float_operand(self, b, "b")
        batch, ab, bb = self._batched(a64, b64)
        m, n = a64.shape[-2], b64.shape[-1]
        results, sums = blockscaled.block_gemms(self, ((x, y, None) for x, y in zip(ab, bb)), out_format)
        output = np.stack([r.output for r in results]).reshape(*batch, m, n) if results else np.zeros((*batch, m, n))
        acc = np.stack([r.acc for r in results]).reshape(*batch, m, n) if results else np.zeros((*batch, m, n))
        metrics = {"vs_float64": _error_metrics(output, a64 @ b64), "vs_dequantized": sums.result()}
        return _plan.sum_plans(results, self.rows, self.cols, self.terms, self.clock_ghz, Result,
                          output=output, acc=acc, metrics=metrics)

    def _conv_blocks(self, x, w, kernel, stride, padding, dilation, groups, bias, out_format, out_hw) -> Result:
        """conv2d with block scaling: per group, the im2col patches (A) and flattened filters (B)
        are quantized per block of K = C/groups * KH * KW and multiplied as a block-scaled GEMM."""
        nb, o, cg = x.shape[0], w.shape[0], w.shape[1]
        og = o // groups
        triples = ((layers.im2col(x[:, g * cg:(g + 1) * cg], kernel, stride, padding, dilation)[0],
                    w[g * og:(g + 1) * og].reshape(og, -1).T,
                    None if bias is None else np.asarray(bias, np.float64)[g * og:(g + 1) * og]) for g in range(groups))
        results, sums = blockscaled.block_gemms(self, triples, out_format)

        output, acc = (_nchw([getattr(r, key) for r in results], nb, out_hw, o) for key in ("output", "acc"))
        ref = _conv_reference(x, w, stride, padding, dilation, groups)
        if bias is not None:
            ref = ref + np.asarray(bias, np.float64)[None, :, None, None]
        metrics = {"vs_float64": _error_metrics(output, ref), "vs_dequantized": sums.result()}
        return _plan.sum_plans(results, self.rows, self.cols, self.terms, self.clock_ghz, Result,
                          output=output, acc=acc, metrics=metrics)

    def conv2d(self, x, w, stride=1, padding=0, dilation=1, groups=1, bias=None, out_format=None) -> Result:
        """2-D convolution with PyTorch's layouts (x NCHW, w OIHW) and output sizes, lowered to
        GEMMs by im2col, one per group.  x is quantized per tensor, w per the quant spec's "b"
        ("channel": per output channel)."""
        return self._reported(self._conv2d(x, w, stride, padding, dilation, groups, bias, out_format))

    def _conv2d(self, x, w, stride, padding, dilation, groups, bias, out_format) -> Result:
        stride, padding, dilation = (layers.pair(v, name) for v, name in
                                     ((stride, "stride"), (padding, "padding"), (dilation, "dilation")))
        if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
            raise ValueError(f"stride and dilation must be >= 1 and padding >= 0, got {stride}, {dilation}, {padding}")
        if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, (int, np.integer)) or groups < 1:
            raise ValueError(f"groups must be a positive integer, got {groups!r}")
        if self.quant["a"] == "channel":
            raise ValueError("conv2d quantizes x per tensor: quant['a'] must be 'tensor' or 'none', not 'channel'")
        blocks = self.quant["a"] in _BLOCK_SCALES
        if blocks:   # the im2col patches and flattened filters are quantized per block of K
            qx, qw = _operands.float_operand(self, x, "x"), _operands.float_operand(self, w, "w")
            for argname, v in (("x", qx), ("w", qw)):
                if v.ndim != 4:
                    raise ValueError(f"{argname} must have 4 dimensions, got shape {v.shape}")
        else:
            k = int(np.prod(np.shape(w.codes if isinstance(w, QTensor) else w)[1:]))   # C/groups * KH * KW
            qx = _operands.operand(self, x, self.mac.a, self.quant["a"], 0, "x", 4, k)
            qw = _operands.operand(self, w, self.mac.b, self.quant["b"], 0, "w", 4, k)
        nb, c, h, wd = qx.shape
        o, cg, kh, kw = qw.shape
        if c % groups or o % groups or cg != c // groups:
            raise ValueError(f"x has {c} channels and w {o}x{cg}: with groups={groups} w must be "
                             f"({o}, {c // groups if c % groups == 0 else '?'}, kh, kw) and both divisible by groups")
        oh = layers.conv_output_size(h, kh, stride[0], padding[0], dilation[0])
        ow = layers.conv_output_size(wd, kw, stride[1], padding[1], dilation[1])
        if oh < 1 or ow < 1:
            raise ValueError(f"the kernel ({kh}x{kw}, dilation {dilation}) does not fit the padded input {h}x{wd}")
        self._check_memory(nb * oh * ow, o, cg * kh * kw, "the convolution")
        bias32 = _operands.bias32(bias, o)
        og = o // groups
        if blocks:
            return self._conv_blocks(qx, qw, (kh, kw), stride, padding, dilation, groups, bias, out_format, (oh, ow))
        # per-sample scales: one per patch row of the lowered GEMM (rows are sample-major)
        sa = _operands.scales(qx, 0, 0) if qx.axis is None else \
            (np.ascontiguousarray(np.repeat(np.asarray(qx.scale, np.float32).reshape(-1), oh * ow)), 1)
        sw, sw_stride = _operands.scales(qw, 0, o)
        outs, accs, plans, lowered = [], [], [], []
        for g in range(groups):
            cols_, _ = layers.im2col(qx.codes[:, g * cg:(g + 1) * cg], (kh, kw), stride, padding, dilation)
            wt = qw.codes[g * og:(g + 1) * og].reshape(og, -1)
            sb = (np.ascontiguousarray(sw[g * og:(g + 1) * og]) if sw_stride else sw, sw_stride)
            bg = None if bias32 is None else np.ascontiguousarray(bias32[g * og:(g + 1) * og])
            acc, output, plan = self._gemm_codes(cols_, wt, sa, sb, bg, out_format)
            outs.append(output), accs.append(acc), plans.append(plan)
            lowered.append((cols_, wt))

        output, acc = _nchw(outs, nb, (oh, ow), o), _nchw(accs, nb, (oh, ow), o)
        # the metrics per group, on the GEMMs the array ran: codes (exact products where
        # provable) for vs_dequantized, the float inputs lowered alike for vs_float64
        sums = {key: _ErrorSums() for key in ("vs_float64", "vs_dequantized")}
        out_acc = self.mac.acc if self.dataflow == "os" else self.buffer_acc
        x64 = None if isinstance(x, QTensor) else np.asarray(x, np.float64)
        w64 = None if isinstance(w, QTensor) else np.asarray(w, np.float64)
        for g, (cols_, wt) in enumerate(lowered):
            qa_g = QTensor(cols_, qx.format, qx.scale, None) if qx.axis is None else \
                QTensor(cols_, qx.format, np.repeat(qx.scale, oh * ow), 0)   # per-sample scales, per patch row
            qb_g = QTensor(wt.T, qw.format, qw.scale if qw.axis is None else qw.scale[g * og:(g + 1) * og],
                           None if qw.axis is None else 1)
            fa = qa_g if x64 is None else layers.im2col(x64[:, g * cg:(g + 1) * cg], (kh, kw), stride, padding,
                                                        dilation)[0]
            fb = qb_g if w64 is None else w64[g * og:(g + 1) * og].reshape(og, -1).T
            gb = slice(g * og, (g + 1) * og)
            exact = _exact_accumulator(self.mac.acc, out_acc, qa_g, qb_g, cols_.shape[1])
            _add_gemm(sums, outs[g], [("vs_dequantized", qa_g, qb_g, None if bias is None else bias32[gb].astype(np.float64)),
                                      ("vs_float64", fa, fb, None if bias is None else np.asarray(bias, np.float64)[gb])],
                      {"vs_dequantized": accs[g]} if exact else None)
        metrics = {key: sums[key].result() for key in ("vs_float64", "vs_dequantized")}
        return _plan.sum_plans(plans, self.rows, self.cols, self.terms, self.clock_ghz, Result,
                          output=output, acc=acc, metrics=metrics)


def _nchw(parts, nb, out_hw, o):
    """Per-group GEMM outputs (N*OH*OW, O/groups) as one NCHW tensor."""
    return np.concatenate(parts, axis=1).reshape(nb, *out_hw, o).transpose(0, 3, 1, 2)


def _conv_reference(x, w, stride, padding, dilation, groups):
    """float64 convolution through the same lowering (for the Result's metrics)."""
    nb = x.shape[0]
    o, cg, kh, kw = w.shape
    og = o // groups
    parts = []
    for g in range(groups):
        cols_, (oh, ow) = layers.im2col(x[:, g * cg:(g + 1) * cg], (kh, kw), stride, padding, dilation)
        parts.append(cols_ @ w[g * og:(g + 1) * og].reshape(og, -1).T)
    return np.concatenate(parts, axis=1).reshape(nb, oh, ow, o).transpose(0, 3, 1, 2)
