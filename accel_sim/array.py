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
from accel_sim._metrics import exact_accumulator as _exact_accumulator, gemm_metrics as _gemm_metrics

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
    seed: stochastic rounding's seed.  energy: an EnergyTable, a preset's name
    (EnergyTable.presets()) or the path of a TOML table (default: EnergyTable.default(45)).
    threads: engine threads over output rows (default: the ACCEL_SIM_THREADS environment
    variable, else every core); the bits never depend on it.
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
        self.seed = check_seed(seed)
        self.threads = _check_threads(threads)
        self.memory_limit_bytes = _check_memory_limit(memory_limit_bytes)
        _operands.check_headroom_for(self)
        if energy is None:
            energy = EnergyTable.default(45)
        elif isinstance(energy, str) and energy in EnergyTable.presets():
            energy = EnergyTable.preset(energy)
        elif isinstance(energy, (str, bytes)) or hasattr(energy, "__fspath__"):
            energy = EnergyTable.from_toml(energy)
        elif not isinstance(energy, EnergyTable):
            raise TypeError(f"energy must be an EnergyTable, a preset name ({', '.join(EnergyTable.presets())}) "
                            f"or a TOML path, got {type(energy).__name__}")
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
        plan.counts.update({key: getattr(counts, key) for key in _plan.MEASURED_COUNTS}, **overflow)
        return acc, output, _plan.with_energy(self, plan, measured=True)

    def gemm(self, A, B, bias=None, out_format=None, metrics=True, _names=("A", "B")) -> Result:
        """A (M, K) @ B (K, N) on the array: floats are quantized with the array's quant spec,
        QTensors used as they are.  Output: fp32(fp32(acc * fp32(scale_a * scale_b)) + bias),
        then rounded to out_format if given.  metrics=False skips the float64 reference
        products behind Result.metrics (they cost more than a fast-path GEMM).  Outputs that
        overflowed or saturated are reported in Result.overflow and by one
        AccumulatorOverflowWarning (accel_sim.overflow)."""
        return self._reported(self._gemm(A, B, bias, out_format, metrics, _names), out_format)

    def _reported(self, res, out_format=None, stacklevel=4) -> Result:
        """res with its overflow report, warned about once (stacklevel: the user's call's frame)."""
        blocks = self.quant["a"] in _BLOCK_SCALES or "scale_joins" in res.counts
        register = self.mac.scale_acc if blocks else self.mac.acc if self.dataflow == "os" else self.buffer_acc
        res.overflow = _overflow.report(res.counts, register, res.output.size, self.quant["a"], self.quant["b"],
                                        self.mac.a, self.mac.b, pe=self.mac.acc,
                                        out_format=None if out_format is None else formats.get(out_format))
        _overflow.warn(res.overflow, stacklevel=stacklevel)
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
        qa, qb = _operands.operand_pair(self, A, B, self.quant["a"], self.quant["b"], _names, 2, k_)
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

    # -- layers, lowered to GEMMs (layers.py) ----------------------------------------------------
    def linear(self, x, w, bias=None, out_format=None) -> Result:
        """y = x @ w.T + bias with PyTorch's layout: x (..., in), w (out, in)."""
        return layers.linear(self, x, w, bias, out_format)

    def matmul(self, a, b, out_format=None) -> Result:
        """Batched a (..., M, K) @ b (..., K, N), batch axes broadcast (attention's QK^T and PV).
        Each operand is quantized per tensor; every batch entry is one GEMM on the array."""
        return self._reported(layers.matmul(self, a, b, out_format), out_format)

    def conv2d(self, x, w, stride=1, padding=0, dilation=1, groups=1, bias=None, out_format=None) -> Result:
        """2-D convolution with PyTorch's layouts (x NCHW, w OIHW) and output sizes, lowered to
        GEMMs by im2col, one per group.  x is quantized per tensor, w per the quant spec's "b"
        ("channel": per output channel)."""
        return self._reported(layers.conv2d(self, x, w, stride, padding, dilation, groups, bias, out_format),
                             out_format)
